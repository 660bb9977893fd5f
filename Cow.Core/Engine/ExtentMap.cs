using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>A run of file blocks with one mapping: <see cref="Address"/> is a device block, or -1 for a hole.</summary>
internal readonly record struct BlockRun(long FileBlock, long Blocks, uint Device, long Address)
{
    public bool IsHole => Address < 0;
}

/// <summary>Receives device block ranges from <see cref="ExtentMap"/>: the ranges a chunk stopped mapping
/// (the caller drops their references). A struct, so that the engine's hot paths pass it without allocating.</summary>
internal interface IDeviceRangeSink
{
    void Add(uint device, long address, long blocks);
}

/// <summary>
/// The extent map of one chunk of a file (format.md 5.6/5.7): lookup, remap, punch and the source side of a
/// clone, as pure functions of a <see cref="ChunkRecord"/>.
/// <para>Owns nothing but the chunk records given to it, and changes only their <c>Extents</c> and
/// <c>Sums</c>. It knows no device space maps, locks, dirty sets or record versions: the caller makes the
/// chunk private first (copy-on-write of the version), then drops or adds the references of the device
/// ranges these functions report, accounts the inode's block count and marks the chunk dirty.</para>
/// <para>Threading: none of its own. A chunk record is plain mutable data; the caller holds whatever guards
/// it (the engine: its <c>_lock</c>).</para>
/// <para>Invariants kept (and assumed on entry): extents sorted by <c>First</c>, non-overlapping, each
/// within the chunk (<c>End</c> ≤ <see cref="FormatConstants.ChunkBlocks"/>), no empty extent; one CRC-32C
/// per chunk block in <c>Sums</c>, zero where unmapped. Physically contiguous neighbours written by a remap
/// are merged, so sequential writes stay one extent.</para>
/// </summary>
internal static class ExtentMap
{
    private const int ChunkBlocks = FormatConstants.ChunkBlocks;

    /// <summary>
    /// The run starting at file block <paramref name="fileBlock"/> of the chunk <paramref name="c"/> (null: no
    /// chunk, all hole): mapped or hole, at most <paramref name="maxBlocks"/> long and never past the chunk.
    /// </summary>
    public static BlockRun FindRun(ChunkRecord? c, long fileBlock, long maxBlocks)
    {
        long chunkIndex = fileBlock / ChunkBlocks;
        uint cb = (uint)(fileBlock - chunkIndex * ChunkBlocks);
        long max = Math.Min(maxBlocks, ChunkBlocks - cb);
        if (c == null || c.Extents.Count == 0) return new BlockRun(fileBlock, max, 0, -1);
        var ext = c.Extents;
        int lo = 0, hi = ext.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            var e = ext[mid];
            if (cb < e.First) hi = mid - 1;
            else if (cb >= e.End) lo = mid + 1;
            else return new BlockRun(fileBlock, Math.Min(max, e.End - cb), e.Device, e.Address + (cb - e.First));
        }
        // lo is the first extent starting after cb
        if (lo < ext.Count) max = Math.Min(max, ext[lo].First - cb);
        return new BlockRun(fileBlock, max, 0, -1);
    }

    /// <summary>
    /// Points chunk blocks [<paramref name="at"/>, +<paramref name="count"/>) at device blocks
    /// [<paramref name="address"/>, +<paramref name="count"/>) of <paramref name="device"/> with checksums
    /// <paramref name="sums"/> (one per block; what a write's ioend commits). What the range mapped before
    /// goes to <paramref name="unmapped"/>. Returns how many mapped blocks were replaced. The caller adds the
    /// reference of the new range.
    /// </summary>
    public static long Remap<TSink>(ChunkRecord c, uint at, uint count, uint device, long address, ReadOnlySpan<uint> sums, ref TSink unmapped)
        where TSink : struct, IDeviceRangeSink
    {
        long removed = Splice(c, at, at + count, new Extent(at, count, device, address), ref unmapped);
        sums[..(int)count].CopyTo(c.Sums.AsSpan((int)at));
        return removed;
    }

    /// <summary>Unmaps chunk blocks [<paramref name="from"/>, <paramref name="to"/>); the device ranges they
    /// mapped go to <paramref name="unmapped"/>. Returns how many mapped blocks it removed.</summary>
    public static long Punch<TSink>(ChunkRecord c, uint from, uint to, ref TSink unmapped) where TSink : struct, IDeviceRangeSink =>
        Splice(c, from, to, null, ref unmapped);

    /// <summary>
    /// The source side of a clone: appends to <paramref name="into"/> what <paramref name="c"/> maps in chunk
    /// blocks [<paramref name="from"/>, <paramref name="to"/>), cut to the range, in order (holes are absent).
    /// These are the device ranges that gain a reference when mapped again elsewhere; the caller copies them
    /// (they stay valid when the destination is the same chunk) before remapping them with
    /// <see cref="Remap"/> and the source's <c>Sums</c>.
    /// </summary>
    public static void MappedIn(ChunkRecord c, uint from, uint to, List<Extent> into)
    {
        foreach (var e in c.Extents)
        {
            if (e.End <= from) continue;
            if (e.First >= to) break;
            uint a = Math.Max(from, e.First), b = Math.Min(to, e.End);
            into.Add(new Extent(a, b - a, e.Device, e.Address + (a - e.First)));
        }
    }

    /// <summary>
    /// Clones chunk blocks [<paramref name="from"/>, <paramref name="to"/>) of <paramref name="src"/> to
    /// <paramref name="at"/> of <paramref name="dst"/> (which may be <paramref name="src"/> when the ranges
    /// do not overlap): the destination range maps what the source range maps, holes included, with the
    /// source's checksums. What the destination range mapped before goes to <paramref name="unmapped"/>;
    /// the source's device ranges mapped again go to <paramref name="gained"/>. Returns the destination's
    /// change in mapped blocks.
    /// </summary>
    public static long Clone<TUnmapped, TGained>(ChunkRecord src, uint from, uint to, ChunkRecord dst, uint at,
        List<Extent> scratch, ref TUnmapped unmapped, ref TGained gained)
        where TUnmapped : struct, IDeviceRangeSink where TGained : struct, IDeviceRangeSink
    {
        if (to <= from) return 0;
        if (at + (to - from) > ChunkBlocks) throw new ArgumentOutOfRangeException(nameof(at), $"clone of {to - from} blocks to chunk block {at} passes the chunk");
        if (ReferenceEquals(src, dst) && from < at + (to - from) && at < to) throw new ArgumentException("clone within one chunk with overlapping ranges");
        scratch.Clear();
        MappedIn(src, from, to, scratch);
        long delta = -Punch(dst, at, at + (to - from), ref unmapped);
        foreach (var p in scratch)
        {
            uint dAt = at + (p.First - from);
            delta += p.Count - Remap(dst, dAt, p.Count, p.Device, p.Address, src.Sums.AsSpan((int)p.First, (int)p.Count), ref unmapped);
            gained.Add(p.Device, p.Address, p.Count);
        }
        return delta;
    }

    /// <summary>
    /// Replaces whatever <paramref name="c"/> maps in [a, b) by <paramref name="insert"/> (or nothing),
    /// reporting the device ranges no longer mapped and clearing their checksums. One binary search and one
    /// splice of the sorted extent list; the new extent merges with physically contiguous neighbours.
    /// Returns how many mapped blocks were removed.
    /// </summary>
    private static long Splice<TSink>(ChunkRecord c, uint a, uint b, Extent? insert, ref TSink unmapped) where TSink : struct, IDeviceRangeSink
    {
        if (a > b || b > ChunkBlocks) throw new ArgumentOutOfRangeException(nameof(b), $"chunk blocks [{a}, {b}) are not within a chunk");
        var ext = c.Extents;
        // First extent ending after a.
        int lo = 0, hi = ext.Count;
        while (lo < hi) { int mid = (lo + hi) >> 1; if (ext[mid].End <= a) lo = mid + 1; else hi = mid; }
        int i = lo, j = lo;
        long removed = 0;
        Extent? left = null, right = null;
        while (j < ext.Count && ext[j].First < b)
        {
            var e = ext[j];
            uint ovFrom = Math.Max(a, e.First), ovTo = Math.Min(b, e.End);
            unmapped.Add(e.Device, e.Address + (ovFrom - e.First), ovTo - ovFrom);
            removed += ovTo - ovFrom;
            if (e.First < a) left = new Extent(e.First, a - e.First, e.Device, e.Address);
            if (e.End > b) right = new Extent(b, e.End - b, e.Device, e.Address + (b - e.First));
            j++;
        }
        c.Sums.AsSpan((int)a, (int)(b - a)).Clear();
        // Merge the new extent with what will sit right before and after it.
        if (insert is Extent x)
        {
            if (left is Extent l && Contiguous(l, x)) { x = new Extent(l.First, l.Count + x.Count, x.Device, l.Address); left = null; }
            else if (left == null && i > 0 && Contiguous(ext[i - 1], x)) { var p = ext[--i]; x = new Extent(p.First, p.Count + x.Count, x.Device, p.Address); }
            if (right is Extent r && Contiguous(x, r)) { x = new Extent(x.First, x.Count + r.Count, x.Device, x.Address); right = null; }
            else if (right == null && j < ext.Count && Contiguous(x, ext[j])) { var nx = ext[j++]; x = new Extent(x.First, x.Count + nx.Count, x.Device, x.Address); }
            insert = x;
        }
        Span<Extent> repl = stackalloc Extent[3];
        int m = 0;
        if (left is Extent l2) repl[m++] = l2;
        if (insert is Extent x2) repl[m++] = x2;
        if (right is Extent r2) repl[m++] = r2;
        int k = j - i, common = Math.Min(k, m);
        for (int t = 0; t < common; t++) ext[i + t] = repl[t];
        if (k > m) ext.RemoveRange(i + m, k - m);
        else if (m > k) ext.InsertRange(i + k, repl[k..m].ToArray());
        return removed;
    }

    private static bool Contiguous(Extent p, Extent x) => p.End == x.First && p.Device == x.Device && p.Address + p.Count == x.Address;
}
