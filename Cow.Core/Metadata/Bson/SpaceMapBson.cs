using System.Buffers.Binary;
using Cow.Core.Engine;
using Cow.Core.Format;
using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="SpaceMapRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class SpaceMapBson
{
    /// <summary>Bytes of one entry of <c>runs</c>: u16 <c>first</c>, u16 <c>count</c>, u32 <c>refs</c>.</summary>
    public const int RunBytes = 8;

    internal static BsonDocument ToBson(this SpaceMapRecord r)
    {
        var d = new BsonDocument { ["_id"] = SpaceMapRecord.Id(r.Device, r.Segment), ["dev"] = (int)r.Device, ["segment"] = r.Segment };
        if (r.Dense)
        {
            var refs = new byte[FormatConstants.SegmentBlocks * 4];
            foreach (var run in r.Runs)
                for (int i = run.First; i < run.End; i++) BinaryPrimitives.WriteUInt32LittleEndian(refs.AsSpan(i * 4), run.Refs);
            d["refs"] = refs;
        }
        else
        {
            var runs = new byte[r.Runs.Length * RunBytes];
            for (int k = 0; k < r.Runs.Length; k++)
            {
                var span = runs.AsSpan(k * RunBytes);
                BinaryPrimitives.WriteUInt16LittleEndian(span, (ushort)r.Runs[k].First);
                BinaryPrimitives.WriteUInt16LittleEndian(span[2..], (ushort)r.Runs[k].Count);
                BinaryPrimitives.WriteUInt32LittleEndian(span[4..], r.Runs[k].Refs);
            }
            d["runs"] = runs;
        }
        return d;
    }

    internal static SpaceMapRecord FromBson(BsonDocument d)
    {
        var r = new SpaceMapRecord { Device = (uint)d["dev"].AsInt32, Segment = d["segment"].AsInt64 };
        if (d.TryGetValue("runs", out var runsValue))
        {
            var runs = runsValue.AsBinary ?? throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: runs is not binary");
            if (runs.Length % RunBytes != 0) throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: runs is {runs.Length} bytes, not a multiple of {RunBytes}");
            r.Runs = new RefRun[runs.Length / RunBytes];
            for (int k = 0; k < r.Runs.Length; k++)
            {
                var span = runs.AsSpan(k * RunBytes);
                r.Runs[k] = new RefRun(BinaryPrimitives.ReadUInt16LittleEndian(span), BinaryPrimitives.ReadUInt16LittleEndian(span[2..]), BinaryPrimitives.ReadUInt32LittleEndian(span[4..]));
            }
            return r;
        }
        var refs = d["refs"].AsBinary;
        if (refs == null || refs.Length != FormatConstants.SegmentBlocks * 4) throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: refs is {refs?.Length ?? 0} bytes");
        var list = new List<RefRun>();
        for (int i = 0; i < FormatConstants.SegmentBlocks; i++)
        {
            uint c = BinaryPrimitives.ReadUInt32LittleEndian(refs.AsSpan(i * 4));
            if (c == 0) continue;
            if (list.Count > 0 && list[^1].End == i && list[^1].Refs == c) list[^1] = list[^1] with { Count = list[^1].Count + 1 };
            else list.Add(new RefRun(i, 1, c));
        }
        r.Runs = list.ToArray();
        r.Dense = true;
        return r;
    }
}
