using Cow.Core.Format;

namespace Cow.Core.Engine;

/// <summary>
/// Space map of one device: a reference count per block (<c>refs</c> of format.md's <c>spacemaps</c>,
/// persisted per segment: how many mappings of it there are, one per chunk version and chunk block that
/// maps it, of any file and any generation; a block shared by a range clone counts each file's mapping) and a busy bit per block (referenced,
/// reserved by an iomap_begin not yet ended, freed but not yet durable as freed, or reserved by the
/// format: block 0 of each segment). Only non-busy blocks are handed out, so a block is never reused
/// before the commit that stops referencing it is durable. Freed blocks a failed mapping invalidation may
/// still be cached for are held back (busy) until the pool is reopened (<see cref="HoldBack"/>).
/// Threading: not thread-safe; every call is made under the engine's state lock.
/// </summary>
internal sealed class DeviceSpace
{
    public readonly uint Cookie;
    public readonly long Blocks;
    /// <summary>The device's role: log devices take new writes first and are cleaned; base devices hold what settles.</summary>
    public readonly DeviceRole Role;
    /// <summary>Being removed (device table <c>state</c> 1): no block of it is handed out, its data is being moved
    /// off, and it counts in neither the pool's size nor its free space.</summary>
    public bool Draining;
    private readonly uint[] _refs;
    private readonly ulong[] _busy;
    private readonly HashSet<long> _dirtySegments = new();
    private readonly List<(long Start, long Count)> _pendingFree = new();
    private long _busyCount;
    /// <summary>Free (not busy) blocks per segment: the allocator's choice of the next segment.</summary>
    private readonly int[] _segmentFree;
    /// <summary>Next block the next-fit allocator looks at.</summary>
    public long Cursor;
    /// <summary>Segment the cursor last opened (its header was written), or -1.</summary>
    public long OpenSegment = -1;

    /// <summary>The most blocks a device may have: the space map keeps a count per block in one array (format.md 1).</summary>
    public const long MaxBlocks = 0x7FFF_FFC7;   // Array.MaxLength

    /// <summary>Why a device of <paramref name="blocks"/> blocks of <paramref name="blockSize"/> bytes cannot be opened, or null.</summary>
    public static string? TooLarge(long blocks, int blockSize) => blocks <= MaxBlocks ? null
        : $"{blocks:N0} blocks of {blockSize} bytes ({blocks * (double)blockSize / (1L << 40):0.#} TiB) is more than this version opens: "
          + $"it keeps a reference count per block in memory, at most {MaxBlocks:N0} blocks per device "
          + $"({MaxBlocks * (double)blockSize / (1L << 40):0.#} TiB at this block size; a larger block size, up to 65536, allows more)";

    public DeviceSpace(uint cookie, long blocks, DeviceRole? role = null)
    {
        if (TooLarge(blocks, 4096) != null) throw new ArgumentOutOfRangeException(nameof(blocks), blocks, $"device {cookie}: more than {MaxBlocks} blocks");
        Cookie = cookie; Blocks = blocks;
        Role = role ?? (cookie == FormatConstants.LogCookie ? DeviceRole.Log : DeviceRole.Base);
        _refs = new uint[blocks];
        _busy = new ulong[(blocks + 63) / 64];
        _segmentFree = new int[(blocks + FormatConstants.SegmentBlocks - 1) / FormatConstants.SegmentBlocks];
        for (int s = 0; s < _segmentFree.Length; s++) _segmentFree[s] = SegmentCapacity(s) + 1;
        for (long b = 0; b < blocks; b += FormatConstants.SegmentBlocks) SetBusy(b, true);
        // Bits past the end of the device are busy so the allocator never returns them.
        for (long b = blocks; b < _busy.Length * 64L; b++) _busy[b >> 6] |= 1UL << (int)(b & 63);
    }

    public long FreeBlocks => Blocks - _busyCount;
    /// <summary>Segments of the device (the last may be short).</summary>
    public int SegmentCount => _segmentFree.Length;
    /// <summary>Log device only: the <c>sequence</c> of each segment's header as far as known (0: not read yet),
    /// the age the cleaner weighs segments by (LogCleaner.cs).</summary>
    public long[]? HeaderSequence;
    public long DataBlocks => Blocks - (Blocks + FormatConstants.SegmentBlocks - 1) / FormatConstants.SegmentBlocks;
    public uint RefCount(long block) => _refs[block];
    public bool IsBusy(long block) => (_busy[block >> 6] & (1UL << (int)(block & 63))) != 0;
    public static bool IsReservedByFormat(long block) => block % FormatConstants.SegmentBlocks == 0;

    private void SetBusy(long block, bool busy)
    {
        ref ulong w = ref _busy[block >> 6];
        ulong bit = 1UL << (int)(block & 63);
        bool was = (w & bit) != 0;
        if (was == busy) return;
        if (busy) { w |= bit; _busyCount++; _segmentFree[block / FormatConstants.SegmentBlocks]--; }
        else { w &= ~bit; _busyCount--; _segmentFree[block / FormatConstants.SegmentBlocks]++; }
    }

    public void Load(SpaceMapRecordView seg)
    {
        long first = seg.Segment * FormatConstants.SegmentBlocks;
        for (int i = 0; i < seg.Refs.Length && first + i < Blocks; i++)
        {
            if (_refs[first + i] == 0 && seg.Refs[i] != 0) _referenced++;
            _refs[first + i] = seg.Refs[i];
            if (seg.Refs[i] != 0) SetBusy(first + i, true);
        }
    }

    public void AddRef(long start, long count)
    {
        CheckRange(start, count);
        for (long b = start; b < start + count; b++)
        {
            if (_refs[b] == uint.MaxValue) throw new InvalidOperationException($"space map of device {Cookie}: block {b} has 2^32-1 references");
            if (_refs[b]++ == 0) { SetBusy(b, true); _referenced++; }
            _dirtySegments.Add(b / FormatConstants.SegmentBlocks);
        }
    }

    /// <summary>Blocks of segment <paramref name="segment"/> that something maps (count above 0).</summary>
    public int LiveBlocks(int segment)
    {
        long first = (long)segment * FormatConstants.SegmentBlocks, end = Math.Min(Blocks, first + FormatConstants.SegmentBlocks);
        int n = 0;
        for (long b = first + 1; b < end; b++) if (_refs[b] != 0) n++;
        return n;
    }

    /// <summary>Blocks that something maps (count above 0), over the whole device: kept as counts change, so a device
    /// removal can ask after every batch without a scan of the device.</summary>
    public long ReferencedBlocks() => _referenced;
    private long _referenced;

    /// <summary>Data blocks of segment <paramref name="segment"/> (all but its reserved first block).</summary>
    public int Capacity(int segment) => SegmentCapacity(segment);

    /// <summary>The runs of mapped blocks (count above 0) of segment <paramref name="segment"/>, in address order.</summary>
    public List<(long Start, long Count)> LiveRuns(int segment)
    {
        var runs = new List<(long, long)>();
        long first = (long)segment * FormatConstants.SegmentBlocks, end = Math.Min(Blocks, first + FormatConstants.SegmentBlocks);
        for (long b = first + 1; b < end; b++)
        {
            if (_refs[b] == 0) continue;
            long s0 = b;
            while (b + 1 < end && _refs[b + 1] != 0) b++;
            runs.Add((s0, b - s0 + 1));
        }
        return runs;
    }

    /// <summary>Gives block <paramref name="block"/> (reserved, unmapped: just allocated) <paramref name="refs"/>
    /// mappings at once: the block the cleaner copied another's data to takes over all of its mappings.</summary>
    public void AdoptRefs(long block, uint refs)
    {
        CheckRange(block, 1);
        if (_refs[block] != 0) throw new InvalidOperationException($"space map of device {Cookie}: block {block} adopts mappings but has {_refs[block]}");
        if (refs == 0) return;
        _refs[block] = refs;
        _referenced++;
        SetBusy(block, true);
        _dirtySegments.Add(block / FormatConstants.SegmentBlocks);
    }

    /// <summary>Drops every mapping of block <paramref name="block"/> (they moved to a copy): freed, deferred to
    /// the commit like any free. Returns how many there were.</summary>
    public uint ReleaseAll(long block)
    {
        uint n = _refs[block];
        if (n == 0) return 0;
        _refs[block] = 1;
        Release(block, 1);
        return n;
    }

    /// <summary>Drops one reference; blocks reaching zero stay busy until <see cref="ReleasePendingFrees"/>.</summary>
    public void Release(long start, long count)
    {
        CheckRange(start, count);
        for (long b = start; b < start + count; b++)
        {
            if (_refs[b] == 0) throw new InvalidOperationException($"space map of device {Cookie}: block {b} released with no reference");
            _dirtySegments.Add(b / FormatConstants.SegmentBlocks);
            if (--_refs[b] == 0)
            {
                _referenced--;
                // Runs of consecutive blocks are kept as one range (a freed extent is one entry, not one per block).
                int last = _pendingFree.Count - 1;
                if (last >= 0 && _pendingFree[last].Start + _pendingFree[last].Count == b)
                    _pendingFree[last] = (_pendingFree[last].Start, _pendingFree[last].Count + 1);
                else _pendingFree.Add((b, 1));
            }
        }
    }

    /// <summary>Returns reserved (never referenced) blocks to the free pool at once.</summary>
    public void Unreserve(long start, long count)
    {
        CheckRange(start, count);
        for (long b = start; b < start + count; b++) if (_refs[b] == 0) SetBusy(b, false);
    }

    public bool HasPendingFrees => _pendingFree.Count > 0;

    /// <summary>Blocks freed but held back from reuse for the rest of this mount (see <see cref="HoldBack"/>).</summary>
    public long HeldBackBlocks { get; private set; }
    private ulong[]? _heldBack; // bit per block, allocated on the first hold-back

    public bool IsHeldBack(long block) => _heldBack != null && (_heldBack[block >> 6] & (1UL << (int)(block & 63))) != 0;

    /// <summary>Instead of <see cref="ReleasePendingFrees"/>: the freed blocks stay busy (never allocated again
    /// in this mount; free on disk, so free after a reopen). Used when a cached mapping of them may not have
    /// been dropped (Engine.FailStop.cs). Returns the number of blocks held back.</summary>
    public long HoldBack(List<(long Start, long Count)> frees)
    {
        long n = 0;
        foreach (var (s, c) in frees)
            for (long b = s; b < s + c; b++)
                if (_refs[b] == 0 && !IsHeldBack(b))
                {
                    _heldBack ??= new ulong[_busy.Length];
                    _heldBack[b >> 6] |= 1UL << (int)(b & 63);
                    n++;
                }
        HeldBackBlocks += n;
        return n;
    }

    public List<(long Start, long Count)> TakePendingFrees()
    {
        var l = new List<(long, long)>(_pendingFree);
        _pendingFree.Clear();
        return l;
    }

    /// <summary>After the commit that dropped their last reference is durable, freed blocks become allocatable.</summary>
    public void ReleasePendingFrees(List<(long Start, long Count)> frees)
    {
        foreach (var (s, c) in frees)
            for (long b = s; b < s + c; b++) if (_refs[b] == 0) SetBusy(b, false);
    }

    /// <summary>
    /// Allocates at most <paramref name="want"/> blocks, never crossing a segment boundary, and marks them
    /// busy. Within a segment the allocator is next-fit from the cursor; when the cursor's segment has no
    /// free block left after the cursor, it moves to the next completely free segment (searching forward,
    /// wrapping), or, when no segment is free, to the one with the most free blocks. So writes go to the log
    /// as long sequential runs while free segments last, and blocks freed here and there by overwrites are
    /// reused only when they have to be. Returns 0 when the device is full.
    /// </summary>
    public long Allocate(long want, out long start)
    {
        start = -1;
        if (want <= 0 || _busyCount >= Blocks) return 0;
        long b = FindFreeInSegment(Cursor);
        if (b < 0)
        {
            int seg = ChooseSegment((int)(Cursor / FormatConstants.SegmentBlocks));
            if (seg < 0) return 0;
            b = FindFreeInSegment((long)seg * FormatConstants.SegmentBlocks);
            if (b < 0) return 0;
        }
        long segEnd = Math.Min(Blocks, (b / FormatConstants.SegmentBlocks + 1) * FormatConstants.SegmentBlocks);
        long n = 0;
        while (n < want && b + n < segEnd && !IsBusy(b + n)) { SetBusy(b + n, true); n++; }
        start = b;
        Cursor = b + n >= Blocks ? 0 : b + n;
        return n;
    }

    /// <summary>Data blocks of segment <paramref name="s"/> (its first block is the segment header or, in
    /// segment 0, the superblock).</summary>
    private int SegmentCapacity(int s) => (int)(Math.Min(Blocks, (s + 1L) * FormatConstants.SegmentBlocks) - (long)s * FormatConstants.SegmentBlocks) - 1;

    /// <summary>The next segment after <paramref name="current"/> (wrapping, <paramref name="current"/> itself
    /// last) that is completely free, else the one with the most free blocks; -1 when none has any.</summary>
    private int ChooseSegment(int current)
    {
        int n = _segmentFree.Length, best = -1, bestFree = 0;
        for (int i = 1; i <= n; i++)
        {
            int s = (current + i) % n, free = _segmentFree[s];
            if (free <= 0) continue;
            if (free == SegmentCapacity(s)) return s;
            if (free > bestFree) { best = s; bestFree = free; }
        }
        return best;
    }

    /// <summary>The first free block at or after <paramref name="from"/> in the segment of <paramref name="from"/>, or -1.</summary>
    private long FindFreeInSegment(long from)
    {
        if (from >= Blocks) return -1;
        int seg = (int)(from / FormatConstants.SegmentBlocks);
        if (_segmentFree[seg] <= 0) return -1;
        long end = Math.Min(Blocks, (seg + 1L) * FormatConstants.SegmentBlocks);
        for (long w = from >> 6; (w << 6) < end; w++)
        {
            ulong bits = _busy[w];
            if (w == from >> 6) bits |= (1UL << (int)(from & 63)) - 1; // ignore blocks before 'from'
            if (bits == ulong.MaxValue) continue;
            long b = (w << 6) + System.Numerics.BitOperations.TrailingZeroCount(~bits);
            return b < end ? b : -1;
        }
        return -1;
    }

    public List<(long Segment, uint[] Refs, bool AllZero)> TakeDirtySegments()
    {
        var list = new List<(long, uint[], bool)>();
        foreach (var s in _dirtySegments)
        {
            var refs = new uint[FormatConstants.SegmentBlocks];
            long first = s * FormatConstants.SegmentBlocks;
            int n = (int)Math.Min(FormatConstants.SegmentBlocks, Blocks - first);
            Array.Copy(_refs, first, refs, 0, n);
            list.Add((s, refs, Array.TrueForAll(refs, r => r == 0)));
        }
        _dirtySegments.Clear();
        return list;
    }

    private void CheckRange(long start, long count)
    {
        if (start < 0 || count < 0 || start + count > Blocks)
            throw new InvalidDataException($"device {Cookie}: block range {start}+{count} is outside the device ({Blocks} blocks)");
    }
}

/// <summary>What <see cref="DeviceSpace.Load"/> needs of a persisted space map segment.</summary>
internal readonly record struct SpaceMapRecordView(long Segment, uint[] Refs);
