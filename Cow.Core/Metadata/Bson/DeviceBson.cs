using Cow.Core.Format;
using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="DeviceRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class DeviceBson
{
    internal static BsonDocument ToBson(this DeviceRecord r)
    {
        var d = new BsonDocument
        {
            ["_id"] = (int)r.Cookie, ["device_uuid"] = r.DeviceUuid, ["role"] = (int)r.Role, ["path"] = r.Path, ["device_size"] = r.DeviceSize,
        };
        if (r.State != DeviceState.InService) d["state"] = (int)r.State;   // absent means in service (version 1 tables)
        return d;
    }

    internal static DeviceRecord FromBson(BsonDocument d) => new()
    {
        Cookie = (uint)d["_id"].AsInt32, DeviceUuid = d["device_uuid"].AsGuid, Role = (DeviceRole)d["role"].AsInt32,
        Path = d["path"].AsString, DeviceSize = d["device_size"].AsInt64,
        State = d.TryGetValue("state", out var st) ? (DeviceState)st.AsInt32 : DeviceState.InService,
    };
}
