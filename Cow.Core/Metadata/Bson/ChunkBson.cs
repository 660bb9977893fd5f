using System.Buffers.Binary;
using Cow.Core.Format;
using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="ChunkRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class ChunkBson
{
    internal static BsonDocument ToBson(this ChunkRecord r)
    {
        var map = new byte[r.Extents.Count * 24];
        for (int i = 0; i < r.Extents.Count; i++)
        {
            var s = map.AsSpan(i * 24);
            var e = r.Extents[i];
            BinaryPrimitives.WriteUInt32LittleEndian(s, e.First);
            BinaryPrimitives.WriteUInt32LittleEndian(s[4..], e.Count);
            BinaryPrimitives.WriteUInt32LittleEndian(s[8..], e.Device);
            BinaryPrimitives.WriteInt64LittleEndian(s[16..], e.Address);
        }
        var sums = new byte[r.Sums.Length * 4];
        for (int i = 0; i < r.Sums.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(sums.AsSpan(i * 4), r.Sums[i]);
        return new BsonDocument
        {
            ["_id"] = r.Rid, ["ino"] = r.Ino, ["index"] = r.Index, ["key"] = ChunkRecord.Key(r.Ino, r.Index), ["birth"] = r.Birth,
            ["death"] = r.Death, ["map"] = map, ["sums"] = sums, ["segs"] = SegsOf(r.Extents),
        };
    }

    /// <summary><c>segs</c>: every device segment the chunk maps a block of (<see cref="Relocation.SegmentsOf"/>).</summary>
    internal static BsonArray SegsOf(IReadOnlyList<Extent> extents) => new(Relocation.SegmentsOf(extents).Select(k => new BsonValue(k)));

    internal static ChunkRecord FromBson(BsonDocument d)
    {
        var r = new ChunkRecord
        {
            Rid = d["_id"].AsInt64, Ino = d["ino"].AsInt64, Index = d["index"].AsInt64, Birth = d["birth"].AsInt64,
            Death = d["death"].AsInt64,
        };
        var map = d["map"].AsBinary;
        if (map.Length % 24 != 0) throw new InvalidDataException($"chunk record {r.Rid} (inode {r.Ino}, chunk {r.Index}): map is {map.Length} bytes, not a multiple of 24");
        for (int i = 0; i < map.Length; i += 24)
        {
            var s = map.AsSpan(i);
            r.Extents.Add(new Extent(BinaryPrimitives.ReadUInt32LittleEndian(s), BinaryPrimitives.ReadUInt32LittleEndian(s[4..]),
                BinaryPrimitives.ReadUInt32LittleEndian(s[8..]), BinaryPrimitives.ReadInt64LittleEndian(s[16..])));
        }
        var sums = d["sums"].AsBinary;
        if (sums.Length != FormatConstants.ChunkBlocks * 4) throw new InvalidDataException($"chunk record {r.Rid} (inode {r.Ino}, chunk {r.Index}): sums is {sums.Length} bytes, expected {FormatConstants.ChunkBlocks * 4}");
        for (int i = 0; i < r.Sums.Length; i++) r.Sums[i] = BinaryPrimitives.ReadUInt32LittleEndian(sums.AsSpan(i * 4));
        return r;
    }
}
