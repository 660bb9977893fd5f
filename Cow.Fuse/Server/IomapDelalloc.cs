namespace Cow.Fuse.Server;

/// <summary>
/// The file ranges of one fuse-iomap connection that the kernel holds as dirty page cache Cow has not placed
/// yet: where Cow answered a buffered write, a page fault or a zeroing with a DELALLOC write mapping, until
/// the kernel's writeback completes them (IOMAP_IOEND, also a failed one), a short write gives part back
/// (IOMAP_END), or a truncate or hole punch drops them. The engine knows nothing of these bytes (its read
/// mapping says HOLE), so reports (SEEK_DATA, SEEK_HOLE, FIEMAP: IOMAP_BEGIN with OP_REPORT) answer DELALLOC
/// for them, as XFS and ext4 report their delayed allocations: otherwise SEEK_DATA skips data that was
/// written but not yet written back (and a `cp` that follows SEEK_DATA copies holes).
/// Ranges are kept in whole blocks, per node id; a range may over-cover (a write that dirtied part of a block
/// covers the block), which reports data where ext4 would too.
/// <para>Threading: thread-safe; every method takes <c>_gate</c> (no other lock is taken under it).</para>
/// </summary>
internal sealed class IomapDelalloc(int blockSize)
{
    private readonly object _gate = new();
    private readonly Dictionary<ulong, List<(long Start, long End)>> _byNode = new();   // sorted, disjoint, non-adjacent; bytes
    // The part of those ranges that was a hole in the engine when it was dirtied: blocks that writeback will
    // add to the file (st_blocks counts them now, as XFS and ext4 count their delayed allocations).
    private readonly Dictionary<ulong, List<(long Start, long End)>> _newByNode = new();

    private long Down(long b) => b / blockSize * blockSize;
    private long Up(long b) => b > long.MaxValue - blockSize ? long.MaxValue / blockSize * blockSize : (b + blockSize - 1) / blockSize * blockSize;

    /// <summary>Number of nodes with delalloc ranges (tests, diagnostics).</summary>
    public int Nodes { get { lock (_gate) return _byNode.Count; } }

    /// <summary>[pos, pos+count) of <paramref name="node"/> is dirty in the kernel's page cache, not yet placed;
    /// <paramref name="overHole"/>: the engine maps no block there (writeback will add blocks to the file).</summary>
    public void Add(ulong node, long pos, long count, bool overHole = false)
    {
        if (count <= 0) return;
        long s = Down(pos), e = Up(pos + count);
        lock (_gate)
        {
            Add(_byNode, node, s, e);
            if (overHole) Add(_newByNode, node, s, e);
        }
    }

    private static void Add(Dictionary<ulong, List<(long Start, long End)>> byNode, ulong node, long s, long e)
    {
        if (!byNode.TryGetValue(node, out var list)) byNode[node] = list = new();
        int i = 0;
        while (i < list.Count && list[i].End < s) i++;
        while (i < list.Count && list[i].Start <= e)
        {
            s = Math.Min(s, list[i].Start);
            e = Math.Max(e, list[i].End);
            list.RemoveAt(i);
        }
        list.Insert(i, (s, e));
    }

    /// <summary>[pos, pos+count) of <paramref name="node"/> is placed, given back or gone; whole blocks inside
    /// the range are forgotten (a partial block at either end stays: another write may still hold it).</summary>
    public void Remove(ulong node, long pos, long count)
    {
        if (count <= 0) return;
        long s = Up(pos), e = count >= long.MaxValue - pos ? long.MaxValue : Down(pos + count);
        if (s >= e) return;
        lock (_gate)
        {
            Remove(_byNode, node, s, e);
            Remove(_newByNode, node, s, e);
        }
    }

    private static void Remove(Dictionary<ulong, List<(long Start, long End)>> byNode, ulong node, long s, long e)
    {
        if (!byNode.TryGetValue(node, out var list)) return;
        for (int i = 0; i < list.Count; i++)
        {
            var (a, b) = list[i];
            if (b <= s || a >= e) continue;
            list.RemoveAt(i);
            if (b > e) list.Insert(i, (e, b));
            if (a < s) list.Insert(i, (a, s));
            i--;
            if (a < s) i++;
            if (b > e) i++;
        }
        if (list.Count == 0) byNode.Remove(node);
    }

    /// <summary>Writeback of [pos, pos+count) of <paramref name="node"/> completed or failed (IOMAP_IOEND): every
    /// block it touched is placed or discarded, also the last one when the write ended at EOF inside it.</summary>
    public void Placed(ulong node, long pos, long count)
    {
        if (count <= 0) return;
        long s = Down(pos), e = count >= long.MaxValue - pos ? long.MaxValue : Up(pos + count);
        lock (_gate)
        {
            Remove(_byNode, node, s, e);
            Remove(_newByNode, node, s, e);
        }
    }

    /// <summary>The file shrank to <paramref name="size"/>: ranges past it go.</summary>
    public void Truncate(ulong node, long size) => Remove(node, Up(Math.Max(0, size)), long.MaxValue);

    /// <summary>Forgets the node (the kernel forgot it).</summary>
    public void Forget(ulong node) { lock (_gate) { _byNode.Remove(node); _newByNode.Remove(node); } }

    /// <summary>Bytes (whole blocks) of <paramref name="node"/> dirtied over holes and not yet placed: what
    /// st_blocks adds to the engine's count until writeback places them.</summary>
    public long UnplacedBytes(ulong node)
    {
        lock (_gate)
        {
            if (!_newByNode.TryGetValue(node, out var list)) return 0;
            long sum = 0;
            foreach (var (a, b) in list) sum += b - a;
            return sum;
        }
    }

    /// <summary>The first delalloc range of <paramref name="node"/> overlapping [start, end), clipped to it; false if none.</summary>
    public bool FirstOverlap(ulong node, long start, long end, out long from, out long to)
    {
        from = to = 0;
        lock (_gate)
        {
            if (!_byNode.TryGetValue(node, out var list)) return false;
            foreach (var (a, b) in list)
            {
                if (b <= start) continue;
                if (a >= end) return false;
                from = Math.Max(a, start);
                to = Math.Min(b, end);
                return true;
            }
            return false;
        }
    }
}
