using Cow.Core.Format;

namespace Cow.Core.Metadata;

/// <summary>
/// One move of the log cleaner (format.md 5.6 "segs", 6 "Relocation"): the <c>Blocks</c> device blocks at
/// <c>FromAddress</c> of device <c>FromDevice</c> now live at <c>ToAddress</c> of <c>ToDevice</c>, byte for byte,
/// so every extent that mapped them is pointed at the new place and keeps its checksums. Immutable.
/// </summary>
internal readonly record struct Relocation(uint FromDevice, long FromAddress, long Blocks, uint ToDevice, long ToAddress)
{
    public long FromEnd => FromAddress + Blocks;

    /// <summary>The <c>segs</c> value of a device segment: <c>dev</c> × 2^40 + <c>segment</c>, as a space map's <c>_id</c>.</summary>
    public static long SegmentKey(uint device, long segment) => ((long)device << 40) + segment;

    /// <summary>The distinct <c>segs</c> values of <paramref name="extents"/>: every device segment they map a block of, sorted.</summary>
    public static long[] SegmentsOf(IReadOnlyList<Extent> extents)
    {
        var keys = new SortedSet<long>();
        foreach (var e in extents)
        {
            long first = e.Address / FormatConstants.SegmentBlocks, last = (e.Address + e.Count - 1) / FormatConstants.SegmentBlocks;
            for (long s = first; s <= last; s++) keys.Add(SegmentKey(e.Device, s));
        }
        return [.. keys];
    }

    /// <summary>
    /// <paramref name="extents"/> (sorted by chunk block, not overlapping) with every block that
    /// <paramref name="moves"/> (sorted by device then address, not overlapping) moved pointed at its new place;
    /// an extent partly moved is split. Null when nothing in <paramref name="extents"/> was moved. Pure.
    /// </summary>
    public static List<Extent>? Apply(IReadOnlyList<Extent> extents, IReadOnlyList<Relocation> moves)
    {
        List<Extent>? result = null;
        for (int i = 0; i < extents.Count; i++)
        {
            var e = extents[i];
            var pieces = Split(e, moves);
            if (pieces == null) { result?.Add(e); continue; }
            if (result == null) { result = new List<Extent>(extents.Count + 2); for (int j = 0; j < i; j++) result.Add(extents[j]); }
            result.AddRange(pieces);
        }
        return result;
    }

    /// <summary>The pieces of <paramref name="e"/> after the moves, or null if none touches it.</summary>
    private static List<Extent>? Split(Extent e, IReadOnlyList<Relocation> moves)
    {
        long start = e.Address, end = e.Address + e.Count;
        int k = FirstEndingAfter(moves, e.Device, start);
        if (k >= moves.Count || moves[k].FromDevice != e.Device || moves[k].FromAddress >= end) return null;
        var pieces = new List<Extent>(3);
        long at = start;
        for (; k < moves.Count && moves[k].FromDevice == e.Device && moves[k].FromAddress < end; k++)
        {
            var m = moves[k];
            long from = Math.Max(at, m.FromAddress), to = Math.Min(end, m.FromEnd);
            if (from > at) pieces.Add(new Extent(e.First + (uint)(at - start), (uint)(from - at), e.Device, at));
            pieces.Add(new Extent(e.First + (uint)(from - start), (uint)(to - from), m.ToDevice, m.ToAddress + (from - m.FromAddress)));
            at = to;
        }
        if (at < end) pieces.Add(new Extent(e.First + (uint)(at - start), (uint)(end - at), e.Device, at));
        return pieces;
    }

    /// <summary>Index of the first move on <paramref name="device"/> whose range ends after <paramref name="address"/>
    /// (or of the first move on a later device, or the count).</summary>
    private static int FirstEndingAfter(IReadOnlyList<Relocation> moves, uint device, long address)
    {
        int lo = 0, hi = moves.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            var m = moves[mid];
            if (m.FromDevice < device || (m.FromDevice == device && m.FromEnd <= address)) lo = mid + 1; else hi = mid;
        }
        return lo;
    }
}
