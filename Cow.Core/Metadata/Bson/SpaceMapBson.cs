using System.Buffers.Binary;
using Cow.Core.Engine;
using Cow.Core.Format;
using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="SpaceMapRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class SpaceMapBson
{
    /// <summary>Bytes of one entry of <c>runs</c>: u16 <c>first</c>, u16 <c>count</c>, u32 <c>refs</c>, u32 <c>live</c>,
    /// u32 reserved (0), i64 <c>birth</c>, i64 <c>death</c>, i64 <c>gap_from</c>, i64 <c>gap_to</c>.</summary>
    public const int RunBytes = 48;

    /// <summary>Bytes of one entry of <c>gaps</c> (a run's gaps after its first): u32 <c>run</c>, u32 reserved (0), i64
    /// <c>gap_from</c>, i64 <c>gap_to</c>.</summary>
    public const int GapBytes = 24;

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
            var more = new List<(int Run, long From, long To)>();
            for (int k = 0; k < r.Runs.Length; k++)
            {
                var span = runs.AsSpan(k * RunBytes);
                BinaryPrimitives.WriteUInt16LittleEndian(span, (ushort)r.Runs[k].First);
                BinaryPrimitives.WriteUInt16LittleEndian(span[2..], (ushort)r.Runs[k].Count);
                BinaryPrimitives.WriteUInt32LittleEndian(span[4..], r.Runs[k].Refs);
                BinaryPrimitives.WriteUInt32LittleEndian(span[8..], r.Runs[k].Live);
                BinaryPrimitives.WriteInt64LittleEndian(span[16..], r.Runs[k].Birth);
                BinaryPrimitives.WriteInt64LittleEndian(span[24..], r.Runs[k].Death);
                if (r.Runs[k].Gaps is { } g)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(span[32..], g[0].From);
                    BinaryPrimitives.WriteInt64LittleEndian(span[40..], g[0].To);
                    for (int i = 1; i < g.Count; i++) more.Add((k, g[i].From, g[i].To));
                }
            }
            d["runs"] = runs;
            if (more.Count > 0)
            {
                var gaps = new byte[more.Count * GapBytes];
                for (int i = 0; i < more.Count; i++)
                {
                    var span = gaps.AsSpan(i * GapBytes);
                    BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)more[i].Run);
                    BinaryPrimitives.WriteInt64LittleEndian(span[8..], more[i].From);
                    BinaryPrimitives.WriteInt64LittleEndian(span[16..], more[i].To);
                }
                d["gaps"] = gaps;
            }
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
            var extra = new List<long>[r.Runs.Length];
            if (d.TryGetValue("gaps", out var gapsValue))
            {
                var gaps = gapsValue.AsBinary ?? throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: gaps is not binary");
                if (gaps.Length % GapBytes != 0) throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: gaps is {gaps.Length} bytes, not a multiple of {GapBytes}");
                for (int i = 0; i < gaps.Length / GapBytes; i++)
                {
                    var span = gaps.AsSpan(i * GapBytes);
                    uint run = BinaryPrimitives.ReadUInt32LittleEndian(span);
                    if (run >= r.Runs.Length) throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: a gap names run {run} of {r.Runs.Length}");
                    (extra[run] ??= new()).AddRange([BinaryPrimitives.ReadInt64LittleEndian(span[8..]), BinaryPrimitives.ReadInt64LittleEndian(span[16..])]);
                }
            }
            for (int k = 0; k < r.Runs.Length; k++)
            {
                var span = runs.AsSpan(k * RunBytes);
                long gapFrom = BinaryPrimitives.ReadInt64LittleEndian(span[32..]), gapTo = BinaryPrimitives.ReadInt64LittleEndian(span[40..]);
                EraGaps? g = null;
                if (gapFrom != 0 || gapTo != 0) g = new EraGaps([gapFrom, gapTo, .. extra[k] ?? []]);
                else if (extra[k] != null) throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: run {k} has more gaps but no first one");
                r.Runs[k] = new RefRun(BinaryPrimitives.ReadUInt16LittleEndian(span), BinaryPrimitives.ReadUInt16LittleEndian(span[2..]), BinaryPrimitives.ReadUInt32LittleEndian(span[4..]),
                    BinaryPrimitives.ReadUInt32LittleEndian(span[8..]), BinaryPrimitives.ReadInt64LittleEndian(span[16..]), BinaryPrimitives.ReadInt64LittleEndian(span[24..]), g);
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
            else list.Add(new RefRun(i, 1, c));   // live counts and generations unknown: rebuilt at open (SpaceMapRebuild)
        }
        r.Runs = list.ToArray();
        r.Dense = true;
        return r;
    }
}
