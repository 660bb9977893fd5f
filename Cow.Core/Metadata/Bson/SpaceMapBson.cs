using System.Buffers.Binary;
using Cow.Core.Format;
using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="SpaceMapRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class SpaceMapBson
{
    internal static BsonDocument ToBson(this SpaceMapRecord r)
    {
        var refs = new byte[r.Refs.Length * 4];
        for (int i = 0; i < r.Refs.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(refs.AsSpan(i * 4), r.Refs[i]);
        return new BsonDocument { ["_id"] = SpaceMapRecord.Id(r.Device, r.Segment), ["dev"] = (int)r.Device, ["segment"] = r.Segment, ["refs"] = refs };
    }

    internal static SpaceMapRecord FromBson(BsonDocument d)
    {
        var r = new SpaceMapRecord { Device = (uint)d["dev"].AsInt32, Segment = d["segment"].AsInt64 };
        var refs = d["refs"].AsBinary;
        if (refs.Length != FormatConstants.SegmentBlocks * 4) throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: refs is {refs.Length} bytes");
        for (int i = 0; i < r.Refs.Length; i++) r.Refs[i] = BinaryPrimitives.ReadUInt32LittleEndian(refs.AsSpan(i * 4));
        return r;
    }
}
