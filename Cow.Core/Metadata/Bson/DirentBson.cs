using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="DirentRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class DirentBson
{
    internal static BsonDocument ToBson(this DirentRecord r) => new()
    {
        ["_id"] = r.Rid, ["dir"] = r.Dir, ["name"] = r.Name, ["pos"] = r.Pos, ["child"] = r.Child, ["type"] = (int)r.Type,
        ["birth"] = r.Birth, ["death"] = r.Death,
    };

    internal static DirentRecord FromBson(BsonDocument d) => new()
    {
        Rid = d["_id"].AsInt64, Dir = d["dir"].AsInt64, Name = d["name"].AsString, Pos = d["pos"].AsInt64,
        Child = d["child"].AsInt64, Type = (uint)d["type"].AsInt32, Birth = d["birth"].AsInt64, Death = d["death"].AsInt64,
    };
}
