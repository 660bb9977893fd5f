using Cow.Core.Format;

namespace Cow.Core.Engine;

/// <summary>
/// Space map of one device: a reference count per block (<c>runs</c> of format.md's <c>spacemaps</c>, persisted per
/// segment: how many mappings of it there are, one per chunk version and chunk block that maps it, of any file and any
/// generation; a block shared by a range clone counts each file's mapping) and whether each block is busy (referenced,
/// reserved by an iomap_begin not yet ended, freed but not yet durable as freed, held back, or reserved by the format:
/// block 0 of each segment). Only non-busy blocks are handed out, so a block is never reused before the commit that
/// stops referencing it is durable. Freed blocks a failed mapping invalidation may still be cached for are held back
/// (busy) until the pool is reopened (<see cref="HoldBack"/>).
/// <para>Memory follows fragmentation, not the device's size: a segment that is completely free, or whose every data
/// block is mapped exactly once, is two bits (<see cref="_present"/>, <see cref="_mappedOnce"/>: 64 KiB per TiB at
/// 4 KiB blocks); any other segment is a <see cref="SegmentSpace"/> of count runs and busy bits.</para>
/// <para>Threading: not thread-safe; every call is made under the engine's state lock.</para>
/// </summary>
internal sealed class DeviceSpace
{
    private const int SegmentBlocks = FormatConstants.SegmentBlocks;

    public readonly uint Cookie;
    public readonly long Blocks;
    /// <summary>The device's role: log devices take new writes first and are cleaned; base devices hold what settles.</summary>
    public readonly DeviceRole Role;
    /// <summary>Being removed (device table <c>state</c> 1): no block of it is handed out, its data is being moved
    /// off, and it counts in neither the pool's size nor its free space.</summary>
    public bool Draining;
    /// <summary>Segments neither completely free nor mapped once everywhere, by index.</summary>
    private readonly Dictionary<long, SegmentSpace> _partial = new();
    /// <summary>A bit per segment: set when it is not completely free (in <see cref="_partial"/> or mapped once).
    /// Bits past the last segment are set.</summary>
    private readonly ulong[] _present;
    /// <summary>A bit per segment: every data block mapped exactly once by a live version, nothing else busy (no
    /// object kept; its blocks' birth is in <see cref="_onceBirth"/>).</summary>
    private readonly ulong[] _mappedOnce;
    /// <summary>The birth generation of the blocks of each segment kept as a <see cref="_mappedOnce"/> bit.</summary>
    private readonly Dictionary<long, long> _onceBirth = new();
    /// <summary>Where the blocks each era class gains and loses are counted (the pool's histogram), or null.</summary>
    private readonly IGenerationSink? _classes;
    /// <summary>Whether a snapshot lies in a range of generations (eras of visibility end only where one does), or null: none.</summary>
    private readonly ViewsIn? _views;
    /// <summary>Log device: the header <c>sequence</c> of segments that hold data, as far as known, the age the cleaner
    /// weighs segments by (LogCleaner.cs); dropped when a segment becomes free.</summary>
    private readonly Dictionary<long, long> _sequence = new();
    private readonly HashSet<long> _dirtySegments = new();
    private readonly List<(long Start, long Count)> _pendingFree = new();
    private readonly List<(int Start, int Count)> _reachedZero = new();
    private long _busyCount;
    private long _referenced;
    /// <summary>Next block the next-fit allocator looks at.</summary>
    public long Cursor;
    /// <summary>Segment the cursor last opened (its header was written), or -1.</summary>
    public long OpenSegment = -1;

    /// <summary>The most blocks a device may have: a segment index is below 2^30 (format.md 5.7 <c>_id</c> and 5.6
    /// <c>segs</c> keep it below 2^40; the per-segment bits are .NET arrays).</summary>
    public const long MaxBlocks = (1L << 30) * SegmentBlocks;

    /// <summary>Why a device of <paramref name="blocks"/> blocks of <paramref name="blockSize"/> bytes cannot be opened, or null.</summary>
    public static string? TooLarge(long blocks, int blockSize) => blocks <= MaxBlocks ? null
        : $"{blocks:N0} blocks of {blockSize} bytes ({blocks * (double)blockSize / (1L << 40):0.#} TiB) is more than this version opens: "
          + $"at most {MaxBlocks:N0} blocks per device ({MaxBlocks * (double)blockSize / (1L << 50):0.#} PiB at this block size)";

    public DeviceSpace(uint cookie, long blocks, DeviceRole? role = null, IGenerationSink? classes = null, ViewsIn? views = null)
    {
        _classes = classes;
        _views = views;
        if (blocks < 1 || TooLarge(blocks, 4096) != null) throw new ArgumentOutOfRangeException(nameof(blocks), blocks, $"device {cookie}: more than {MaxBlocks} blocks");
        Cookie = cookie; Blocks = blocks;
        Role = role ?? (cookie == FormatConstants.LogCookie ? DeviceRole.Log : DeviceRole.Base);
        SegmentCount = (blocks + SegmentBlocks - 1) / SegmentBlocks;
        _present = new ulong[(SegmentCount + 63) / 64];
        _mappedOnce = new ulong[_present.Length];
        for (long s = SegmentCount; s < _present.Length * 64L; s++) _present[s >> 6] |= 1UL << (int)(s & 63);
        _busyCount = SegmentCount;   // block 0 of each segment
    }

    public long FreeBlocks => Blocks - _busyCount;
    /// <summary>Segments of the device (the last may be short).</summary>
    public long SegmentCount { get; }
    public long DataBlocks => Blocks - SegmentCount;
    /// <summary>Segments kept as objects (neither free nor mapped once): what this map's memory grows with.</summary>
    public int PartialSegments => _partial.Count;
    public static bool IsReservedByFormat(long block) => block % SegmentBlocks == 0;

    private int Length(long seg) => (int)Math.Min(SegmentBlocks, Blocks - seg * SegmentBlocks);
    private static bool Bit(ulong[] bits, long i) => (bits[i >> 6] & (1UL << (int)(i & 63))) != 0;
    private static void SetBit(ulong[] bits, long i, bool on)
    {
        if (on) bits[i >> 6] |= 1UL << (int)(i & 63);
        else bits[i >> 6] &= ~(1UL << (int)(i & 63));
    }

    /// <summary>The object of segment <paramref name="seg"/>, made from its bits when it has none.</summary>
    private SegmentSpace Open(long seg)
    {
        if (_partial.TryGetValue(seg, out var s)) return s;
        int len = Length(seg);
        if (Bit(_mappedOnce, seg))
        {
            s = SegmentSpace.MappedOnce(len, _onceBirth[seg]);
            _onceBirth.Remove(seg);
            SetBit(_mappedOnce, seg, false);
        }
        else s = new SegmentSpace(len);
        SetBit(_present, seg, true);
        _partial[seg] = s;
        return s;
    }

    /// <summary>After a change: a segment back to completely free or mapped once everywhere drops its object.</summary>
    private void Settle(long seg, SegmentSpace s)
    {
        if (s.BusyCount == 1)
        {
            _partial.Remove(seg);
            SetBit(_present, seg, false);
            if (seg != OpenSegment) _sequence.Remove(seg);   // the allocator's segment keeps its header
        }
        else if (s.IsMappedOnce)
        {
            _partial.Remove(seg);
            SetBit(_mappedOnce, seg, true);
            _onceBirth[seg] = s.Runs[0].Birth;
        }
    }

    public uint RefCount(long block) => RunAt(block)?.Refs ?? 0;

    /// <summary>Block <paramref name="block"/>'s counts and generations as a one-block run (its segment index as
    /// <see cref="RefRun.First"/>), or null when nothing maps it.</summary>
    public RefRun? RunAt(long block)
    {
        long seg = block / SegmentBlocks;
        int i = (int)(block % SegmentBlocks);
        if (_partial.TryGetValue(seg, out var s)) return s.RunAt(i) is { } r ? r with { First = i, Count = 1 } : null;
        return Bit(_mappedOnce, seg) && i != 0 ? new RefRun(i, 1, 1, 1, _onceBirth[seg]) : null;
    }

    public bool IsBusy(long block)
    {
        long seg = block / SegmentBlocks;
        int i = (int)(block % SegmentBlocks);
        if (_partial.TryGetValue(seg, out var s)) return s.IsBusy(i);
        return i == 0 || Bit(_mappedOnce, seg);
    }

    /// <summary>Applies <paramref name="op"/> at generation <paramref name="gen"/> to the blocks of [<paramref name="start"/>,
    /// +<paramref name="count"/>), a segment at a time; blocks reaching 0 go to <paramref name="freed"/> (device blocks).</summary>
    private void Change(long start, long count, SegmentSpace.CountChange op, long gen, RefRun template, List<(long Start, long Count)>? freed)
    {
        CheckRange(start, count);
        for (long b = start, end = start + count; b < end;)
        {
            long seg = b / SegmentBlocks, first = seg * SegmentBlocks;
            int a = (int)(b - first), e = (int)Math.Min(SegmentBlocks, end - first);
            var s = Open(seg);
            int busy = s.BusyCount, refd = s.Referenced;
            _reachedZero.Clear();
            try { s.Change(a, e, op, gen, template, Cookie, seg, freed != null ? _reachedZero : null, _classes, _views); }
            finally { Settle(seg, s); }
            _busyCount += s.BusyCount - busy;
            _referenced += s.Referenced - refd;
            _dirtySegments.Add(seg);
            if (freed != null)
                foreach (var (zs, zc) in _reachedZero) AddRange(freed, first + zs, zc);
            b = first + e;
        }
    }

    /// <summary>Appends a range, joining it to the last one when they touch (a freed extent is one entry).</summary>
    private static void AddRange(List<(long Start, long Count)> list, long start, long count)
    {
        int last = list.Count - 1;
        if (last >= 0 && list[last].Start + list[last].Count == start) list[last] = (list[last].Start, list[last].Count + count);
        else list.Add((start, count));
    }

    /// <summary>Loads a persisted segment's runs (opening the pool); every referenced block becomes busy.</summary>
    public void Load(long segment, ReadOnlySpan<RefRun> runs)
    {
        if (segment < 0 || segment >= SegmentCount) throw new InvalidDataException($"space map of device {Cookie}: segment {segment} is outside the device ({SegmentCount} segments)");
        if (runs.IsEmpty) return;
        var s = Open(segment);
        int busy = s.BusyCount;
        s.Load(runs, $"space map of device {Cookie} segment {segment}");
        _busyCount += s.BusyCount - busy;
        _referenced += s.Referenced;
        if (_classes != null) foreach (var r in s.Runs) _classes.Add(r.Eras, r.Count);
        Settle(segment, s);
    }

    /// <summary>A live version maps the blocks (a write, a copy-on-write copy, a clone), at live generation <paramref name="gen"/>.</summary>
    public void AddRef(long start, long count, long gen) => Change(start, count, SegmentSpace.CountChange.MapLive, gen, default, null);

    /// <summary>A live version that maps the blocks is retired at generation <paramref name="gen"/> (a snapshot keeps
    /// its mappings).</summary>
    public void Retire(long start, long count, long gen) => Change(start, count, SegmentSpace.CountChange.Retire, gen, default, null);

    /// <summary>A purged retired version drops its mapping of the blocks; those reaching zero stay busy until
    /// <see cref="ReleasePendingFrees"/>.</summary>
    public void ReleaseRetired(long start, long count) => Change(start, count, SegmentSpace.CountChange.UnmapRetired, 0, default, _pendingFree);

    /// <summary>Blocks of segment <paramref name="segment"/> that something maps (count above 0).</summary>
    public int LiveBlocks(long segment)
    {
        if (_partial.TryGetValue(segment, out var s)) return s.Referenced;
        return Bit(_mappedOnce, segment) ? Length(segment) - 1 : 0;
    }

    /// <summary>Blocks that something maps (count above 0), over the whole device: kept as counts change, so a device
    /// removal can ask after every batch without a scan of the device.</summary>
    public long ReferencedBlocks() => _referenced;

    /// <summary>Data blocks of segment <paramref name="segment"/> (all but its reserved first block).</summary>
    public int Capacity(long segment) => Length(segment) - 1;

    /// <summary>The segments holding mapped blocks, ascending: the cleaner's, the scrubber's and a removal's work list.
    /// Costs a pass over the segment bits and the segments that are not free.</summary>
    public List<long> UsedSegments() => Segments(mappedOnly: true);

    /// <summary>The segments that are not completely free (a block other than the first is busy), ascending.</summary>
    public List<long> OccupiedSegments() => Segments(mappedOnly: false);

    private List<long> Segments(bool mappedOnly)
    {
        var used = new List<long>();
        for (int w = 0; w < _present.Length; w++)
        {
            ulong bits = _present[w];
            while (bits != 0)
            {
                int k = System.Numerics.BitOperations.TrailingZeroCount(bits);
                bits &= bits - 1;
                long seg = ((long)w << 6) + k;
                if (seg < SegmentCount && (!mappedOnly || LiveBlocks(seg) > 0)) used.Add(seg);
            }
        }
        return used;
    }

    /// <summary>The runs of mapped blocks (count above 0) of segment <paramref name="segment"/>, in address order.</summary>
    public List<(long Start, long Count)> LiveRuns(long segment)
    {
        var runs = new List<(long, long)>();
        long first = segment * SegmentBlocks;
        if (_partial.TryGetValue(segment, out var s))
            foreach (var r in s.Runs) AddRange(runs, first + r.First, r.Count);
        else if (Bit(_mappedOnce, segment) && Length(segment) > 1) runs.Add((first + 1, Length(segment) - 1));
        return runs;
    }

    /// <summary>The count runs of segment <paramref name="segment"/> (what format.md 5.7 persists), in block order.</summary>
    public RefRun[] CountRuns(long segment)
    {
        if (_partial.TryGetValue(segment, out var s)) return s.Runs.ToArray();
        return Bit(_mappedOnce, segment) && Length(segment) > 1 ? [new RefRun(1, Length(segment) - 1, 1, 1, _onceBirth[segment])] : [];
    }

    /// <summary>Gives block <paramref name="block"/> (reserved, unmapped: just allocated) the mappings, live mappings
    /// and generations of <paramref name="from"/> at once: the block the cleaner copied another's data to takes over all
    /// of its mappings.</summary>
    public void AdoptRefs(long block, RefRun from)
    {
        CheckRange(block, 1);
        if (RefCount(block) != 0) throw new InvalidOperationException($"space map of device {Cookie}: block {block} adopts mappings but has {RefCount(block)}");
        if (from.Refs == 0) return;
        Change(block, 1, SegmentSpace.CountChange.Set, 0, from, null);
    }

    /// <summary>Drops every mapping of block <paramref name="block"/> (they moved to a copy): freed, deferred to
    /// the commit like any free. Returns what it had (null: nothing mapped it).</summary>
    public RefRun? ReleaseAll(long block)
    {
        var had = RunAt(block);
        if (had == null) return null;
        Change(block, 1, SegmentSpace.CountChange.Set, 0, default, _pendingFree);
        return had;
    }

    /// <summary>A live version stops mapping the blocks at generation <paramref name="gen"/>; blocks reaching zero stay
    /// busy until <see cref="ReleasePendingFrees"/>.</summary>
    public void Release(long start, long count, long gen) => Change(start, count, SegmentSpace.CountChange.UnmapLive, gen, default, _pendingFree);

    /// <summary>Makes the blocks of a range that nothing maps free (not busy) at once, segment by segment.</summary>
    private void FreeUnreferenced(long start, long count)
    {
        for (long b = start, end = start + count; b < end;)
        {
            long seg = b / SegmentBlocks, first = seg * SegmentBlocks;
            int a = (int)Math.Max(1, b - first), e = (int)Math.Min(Length(seg), end - first);
            if (_partial.TryGetValue(seg, out var s) && a < e)
            {
                _busyCount -= s.FreeUnreferenced(a, e);
                Settle(seg, s);
            }
            b = first + SegmentBlocks;
        }
    }

    /// <summary>Returns reserved (never referenced) blocks to the free pool at once.</summary>
    public void Unreserve(long start, long count)
    {
        CheckRange(start, count);
        FreeUnreferenced(start, count);
    }

    public bool HasPendingFrees => _pendingFree.Count > 0;

    /// <summary>Blocks freed but held back from reuse for the rest of this mount (see <see cref="HoldBack"/>).</summary>
    public long HeldBackBlocks { get; private set; }
    /// <summary>The held-back ranges (rare: only after a failed mapping invalidation), not overlapping.</summary>
    private readonly List<(long Start, long Count)> _heldBack = new();

    public bool IsHeldBack(long block)
    {
        foreach (var (s, c) in _heldBack) if (block >= s && block < s + c) return true;
        return false;
    }

    /// <summary>Instead of <see cref="ReleasePendingFrees"/>: the freed blocks stay busy (never allocated again
    /// in this mount; free on disk, so free after a reopen). Used when a cached mapping of them may not have
    /// been dropped (Engine.FailStop.cs). Returns the number of blocks held back.</summary>
    public long HoldBack(List<(long Start, long Count)> frees)
    {
        long n = 0;
        foreach (var (s, c) in frees)
            for (long b = s; b < s + c; b++)
                if (RefCount(b) == 0 && !IsHeldBack(b))
                {
                    AddRange(_heldBack, b, 1);
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
        foreach (var (s, c) in frees) FreeUnreferenced(s, c);
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
        long b = FindFreeInSegment(Math.Clamp(Cursor, 0, Blocks - 1));
        if (b < 0)
        {
            long seg = ChooseSegment(Math.Clamp(Cursor, 0, Blocks - 1) / SegmentBlocks);
            if (seg < 0) return 0;
            b = FindFreeInSegment(seg * SegmentBlocks);
            if (b < 0) return 0;
        }
        long segment = b / SegmentBlocks, first = segment * SegmentBlocks;
        var s = Open(segment);
        int i = (int)(b - first), n = 0;
        while (n < want && i + n < s.Length && !s.IsBusy(i + n)) n++;
        _busyCount += s.SetBusy(i, i + n, true);
        start = b;
        Cursor = b + n >= Blocks ? 0 : b + n;
        return n;
    }

    /// <summary>The next segment after <paramref name="current"/> (wrapping, <paramref name="current"/> itself
    /// last) that is completely free, else the one with the most free blocks (the nearest after
    /// <paramref name="current"/> among equals); -1 when none has any.</summary>
    private long ChooseSegment(long current)
    {
        long free = NextFreeSegment(current + 1, SegmentCount);
        if (free < 0) free = NextFreeSegment(0, current + 1);
        if (free >= 0) return free;
        long best = -1, bestDistance = 0;
        int bestFree = 0;
        foreach (var (seg, s) in _partial)
        {
            int f = s.Length - s.BusyCount;
            if (f <= 0) continue;
            long distance = (seg - current - 1 + SegmentCount) % SegmentCount;
            if (f > bestFree || (f == bestFree && distance < bestDistance)) { best = seg; bestFree = f; bestDistance = distance; }
        }
        return best;
    }

    /// <summary>The first completely free segment with a data block in [<paramref name="from"/>, <paramref name="to"/>), or -1.</summary>
    private long NextFreeSegment(long from, long to)
    {
        for (long w = from >> 6; w < _present.Length && (w << 6) < to; w++)
        {
            ulong bits = _present[w];
            if (w == from >> 6) bits |= (1UL << (int)(from & 63)) - 1;
            while (bits != ulong.MaxValue)
            {
                long seg = (w << 6) + System.Numerics.BitOperations.TrailingZeroCount(~bits);
                if (seg >= to) return -1;
                if (Length(seg) > 1) return seg;
                bits |= 1UL << (int)(seg & 63);   // a last segment of only its first block has no room
            }
        }
        return -1;
    }

    /// <summary>The first free block at or after <paramref name="from"/> in the segment of <paramref name="from"/>, or -1.</summary>
    private long FindFreeInSegment(long from)
    {
        if (from >= Blocks) return -1;
        long seg = from / SegmentBlocks, first = seg * SegmentBlocks;
        int i = (int)Math.Max(1, from - first);
        if (i >= Length(seg)) return -1;
        if (_partial.TryGetValue(seg, out var s))
        {
            int f = s.FirstFree(i);
            return f < 0 ? -1 : first + f;
        }
        return Bit(_present, seg) ? -1 : first + i;   // mapped once everywhere, or completely free
    }

    /// <summary>The header <c>sequence</c> of log segment <paramref name="segment"/> as far as known, else 0.</summary>
    public long SegmentSequence(long segment) => _sequence.GetValueOrDefault(segment);

    /// <summary>Records a log segment's header <c>sequence</c> (written now, or read), keeping the larger.</summary>
    public void NoteSegmentSequence(long segment, long sequence)
    {
        if (sequence > _sequence.GetValueOrDefault(segment)) _sequence[segment] = sequence;
    }

    /// <summary>Log device: the segments' header sequences were read since the pool was opened.</summary>
    public bool SequencesRead;

    /// <summary>Every segment that is not free is written by the next commit (its space maps were rebuilt).</summary>
    public void MarkAllDirty()
    {
        foreach (long seg in OccupiedSegments()) _dirtySegments.Add(seg);
    }

    /// <summary>The segments changed since the last take, with their count runs (empty: every count is 0).</summary>
    public List<(long Segment, RefRun[] Runs)> TakeDirtySegments()
    {
        var list = new List<(long, RefRun[])>(_dirtySegments.Count);
        foreach (var s in _dirtySegments) list.Add((s, CountRuns(s)));
        _dirtySegments.Clear();
        return list;
    }

    private void CheckRange(long start, long count)
    {
        if (start < 0 || count < 0 || start + count > Blocks)
            throw new InvalidDataException($"device {Cookie}: block range {start}+{count} is outside the device ({Blocks} blocks)");
    }
}
