using Cow.Core.Format;

namespace Cow.Core.Engine;

/// <summary>
/// A run of a segment's space map: blocks <see cref="First"/>..<see cref="End"/> of the segment (indexes within it) each
/// mapped <see cref="Refs"/> times (≥ 1), <see cref="Live"/> of them by live chunk versions, and seen by the views
/// (snapshots, the live tree) whose generation lies in its eras: [<see cref="Birth"/>, <see cref="Until"/>) less the
/// <see cref="Gaps"/> (null: none), made when the blocks were mapped live again after no live version mapped them (a
/// restore, a rollback, a clone from a snapshot) with a snapshot taken in between. <see cref="Death"/> ends the last era
/// when no live version maps the blocks (0 while one does). The snapshot sizes come from this (format.md 5.7 <c>runs</c>).
/// </summary>
internal readonly record struct RefRun(int First, int Count, uint Refs, uint Live = 1, long Birth = 1, long Death = 0, EraGaps? Gaps = null)
{
    public int End => First + Count;
    /// <summary>The first generation after the last era: <see cref="Death"/>, or forever while live.</summary>
    public long Until => Live > 0 ? long.MaxValue : Death;
    public bool SameClass(RefRun o) => Refs == o.Refs && Live == o.Live && Eras == o.Eras;
    /// <summary>The eras as a key of the pool's histogram.</summary>
    public EraKey Eras => new(Birth, Until, Gaps);
}

/// <summary>The generations that see a block: [<see cref="Birth"/>, <see cref="Until"/>) less <see cref="Gaps"/>.</summary>
internal readonly record struct EraKey(long Birth, long Until, EraGaps? Gaps)
{
    /// <summary>The eras, in order, as [from, to) ranges of generations.</summary>
    public IEnumerable<(long From, long To)> Ranges()
    {
        long from = Birth;
        if (Gaps != null)
            for (int i = 0; i < Gaps.Count; i++)
            {
                yield return (from, Gaps[i].From);
                from = Gaps[i].To;
            }
        yield return (from, Until);
    }

    public override string ToString() => string.Join(" ∪ ", Ranges().Select(r => $"[{r.From}, {(r.To == long.MaxValue ? "∞" : r.To)})"));
}

/// <summary>The gaps between a block's eras: ascending, disjoint [from, to) ranges of generations. Immutable; equal by
/// value (a histogram key).</summary>
internal sealed class EraGaps : IEquatable<EraGaps>
{
    private readonly long[] _bounds;   // from0, to0, from1, to1, …
    private readonly int _hash;

    public EraGaps(params long[] bounds)
    {
        if (bounds.Length == 0 || bounds.Length % 2 != 0) throw new ArgumentException("gaps are pairs of generations", nameof(bounds));
        for (int i = 0; i < bounds.Length; i++)
            if (i > 0 && bounds[i] <= bounds[i - 1]) throw new InvalidDataException($"era gaps {string.Join(",", bounds)} are not ascending");
        _bounds = bounds;
        var h = new HashCode();
        foreach (long b in bounds) h.Add(b);
        _hash = h.ToHashCode();
    }

    public int Count => _bounds.Length / 2;
    public (long From, long To) this[int i] => (_bounds[2 * i], _bounds[2 * i + 1]);
    public (long From, long To) Last => this[Count - 1];

    /// <summary>These gaps and [<paramref name="from"/>, <paramref name="to"/>) after them.</summary>
    public static EraGaps Append(EraGaps? gaps, long from, long to) => new([.. gaps?._bounds ?? [], from, to]);

    /// <summary>These gaps without the last one; null when none is left.</summary>
    public EraGaps? WithoutLast() => Count == 1 ? null : new(_bounds[..^2]);

    public bool Equals(EraGaps? other) => other != null && _bounds.AsSpan().SequenceEqual(other._bounds);
    public override bool Equals(object? obj) => obj is EraGaps g && Equals(g);
    public override int GetHashCode() => _hash;
    public override string ToString() => string.Join(",", Enumerable.Range(0, Count).Select(i => $"{this[i].From}..{this[i].To}"));
}

/// <summary>Receives the change in blocks of each era class a space-map change made (the pool's generation histogram,
/// SpaceAllocator.cs).</summary>
internal interface IGenerationSink
{
    void Add(EraKey eras, long blocks);
}

/// <summary>Whether a snapshot's generation lies in [from, to): an era of a block's visibility ends only where no view
/// would be left out.</summary>
internal delegate bool ViewsIn(long from, long to);

/// <summary>
/// The space of one segment that is neither completely free nor mapped exactly once in every data block (DeviceSpace
/// keeps those two states as bits, with no object): its reference counts as sorted runs (blocks counted 0 are in no
/// run; neighbouring runs of equal count are merged, so a segment written in one piece is one run), and a busy bit
/// per block (referenced, reserved, freed but not yet durable, held back, or the reserved first block).
/// <para>Owns its arrays. Not thread-safe: DeviceSpace's callers hold the engine's state lock. A change of counts is
/// checked whole before anything changes, so a refused change (a count below 0 or past 2^32−1) leaves it as it was.</para>
/// </summary>
internal sealed class SegmentSpace
{
    private const int Words = FormatConstants.SegmentBlocks / 64;
    private RefRun[] _runs;
    private int _runCount;
    private readonly ulong[] _busy = new ulong[Words];

    /// <summary>Blocks of the segment on the device (1024, or fewer for a device's last segment).</summary>
    public readonly int Length;
    /// <summary>Busy blocks of the segment, its reserved first block included (blocks past the device's end are not).</summary>
    public int BusyCount { get; private set; }
    /// <summary>Blocks with a count above 0.</summary>
    public int Referenced { get; private set; }

    /// <summary>An empty segment: only its first block (the segment header or superblock) is busy.</summary>
    public SegmentSpace(int length)
    {
        Length = length;
        _runs = new RefRun[2];
        _busy[0] = 1;
        BusyCount = 1;
        for (int i = length; i < FormatConstants.SegmentBlocks; i++) _busy[i >> 6] |= 1UL << (i & 63);
    }

    /// <summary>A segment every data block of which is mapped once, by a live version, since generation
    /// <paramref name="birth"/> (the state DeviceSpace keeps as a bit and a birth).</summary>
    public static SegmentSpace MappedOnce(int length, long birth)
    {
        var s = new SegmentSpace(length);
        s._runs[0] = new RefRun(1, length - 1, 1, 1, birth);
        s._runCount = length > 1 ? 1 : 0;
        Array.Fill(s._busy, ulong.MaxValue);
        s.BusyCount = length;
        s.Referenced = length - 1;
        return s;
    }

    /// <summary>True when every data block is mapped exactly once, by a live version, all since one generation (and so
    /// busy): DeviceSpace drops the object for a bit and that birth.</summary>
    public bool IsMappedOnce => _runCount == 1 && _runs[0].First == 1 && _runs[0].Count == Length - 1 && _runs[0].Refs == 1 && _runs[0].Live == 1 && _runs[0].Gaps == null;

    /// <summary>The runs of counts, in block order.</summary>
    public ReadOnlySpan<RefRun> Runs => _runs.AsSpan(0, _runCount);

    public uint RefCount(int i) => RunAt(i)?.Refs ?? 0;

    /// <summary>The run holding block <paramref name="i"/>, or null when its count is 0.</summary>
    public RefRun? RunAt(int i)
    {
        int lo = 0, hi = _runCount - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            var r = _runs[mid];
            if (i < r.First) hi = mid - 1;
            else if (i >= r.End) lo = mid + 1;
            else return r;
        }
        return null;
    }

    public bool IsBusy(int i) => (_busy[i >> 6] & (1UL << (i & 63))) != 0;

    /// <summary>Marks blocks [<paramref name="a"/>, <paramref name="b"/>) busy or not; the number whose state changed.</summary>
    public int SetBusy(int a, int b, bool busy)
    {
        int changed = 0;
        for (int i = a; i < b; i++)
        {
            ref ulong w = ref _busy[i >> 6];
            ulong bit = 1UL << (i & 63);
            if (((w & bit) != 0) == busy) continue;
            w ^= bit;
            changed++;
        }
        BusyCount += busy ? changed : -changed;
        return changed;
    }

    /// <summary>Makes the blocks of [<paramref name="a"/>, <paramref name="b"/>) that no mapping counts free (not
    /// busy); the number made free.</summary>
    public int FreeUnreferenced(int a, int b)
    {
        int freed = 0, pos = a;
        foreach (var r in Runs)
        {
            if (r.End <= pos) continue;
            if (r.First >= b) break;
            if (r.First > pos) freed += SetBusy(pos, r.First, false);
            pos = r.End;
            if (pos >= b) break;
        }
        if (pos < b) freed += SetBusy(pos, b, false);
        return freed;
    }

    /// <summary>The first block at or after <paramref name="from"/> that is not busy, or -1.</summary>
    public int FirstFree(int from)
    {
        for (int w = from >> 6; w < Words; w++)
        {
            ulong bits = _busy[w];
            if (w == from >> 6) bits |= (1UL << (from & 63)) - 1;
            if (bits == ulong.MaxValue) continue;
            int i = (w << 6) + System.Numerics.BitOperations.TrailingZeroCount(~bits);
            return i < Length ? i : -1;
        }
        return -1;
    }

    /// <summary>What <see cref="Change"/> does to each block of its range (format.md 5.7, "Reference counting").</summary>
    public enum CountChange
    {
        /// <summary>A live chunk version maps the block (a write, a copy-on-write copy, a clone): one more mapping and
        /// live mapping; a block mapped for the first time is born at the generation given.</summary>
        MapLive,
        /// <summary>A live version stops mapping it (overwrite, punch, truncate, delete of a live-only version): one
        /// mapping and live mapping fewer; the last live one gone, the block dies at the generation given.</summary>
        UnmapLive,
        /// <summary>A live version that maps it is retired (a snapshot keeps it): one live mapping fewer, as many mappings.</summary>
        Retire,
        /// <summary>A retired version that maps it is purged (snapshot delete): one mapping fewer, as many live ones.</summary>
        UnmapRetired,
        /// <summary>Every attribute set from a template run (the cleaner's copy adopts its source's).</summary>
        Set,
    }

    [ThreadStatic] private static List<RefRun>? t_next;
    [ThreadStatic] private static List<(int, int, bool)>? t_crossings;
    [ThreadStatic] private static List<(EraKey Eras, long Blocks)>? t_classes;

    /// <summary>
    /// Applies <paramref name="op"/> to every block of [<paramref name="a"/>, <paramref name="b"/>) at generation
    /// <paramref name="gen"/> (<see cref="CountChange.Set"/>: to the attributes of <paramref name="template"/>). A block
    /// whose count leaves 0 becomes busy; a block whose count reaches 0 stays busy (the caller decides when it is free)
    /// and its range is added to <paramref name="reachedZero"/> (segment indexes). The blocks each (birth, until) class
    /// gains and loses go to <paramref name="classes"/>. Throws <see cref="InvalidOperationException"/>, with nothing
    /// changed, when a count would go below 0, past 2^32−1, or live mappings would outnumber mappings: a bug in the
    /// reference counting, which the commit path turns into fail-stop.
    /// </summary>
    public void Change(int a, int b, CountChange op, long gen, RefRun template, uint device, long segment,
        List<(int Start, int Count)>? reachedZero, IGenerationSink? classes, ViewsIn? views)
    {
        if (a < 1 || b > Length || a > b) throw new InvalidOperationException($"{Where(device, segment)}: blocks {a}..{b} of a segment of {Length}");
        if (a == b) return;
        var next = t_next ??= new List<RefRun>();
        var crossings = t_crossings ??= new List<(int, int, bool)>();
        var changed = t_classes ??= new List<(EraKey, long)>();
        next.Clear(); crossings.Clear(); changed.Clear();
        int pos = a;
        for (int k = 0; k < _runCount; k++)
        {
            var r = _runs[k];
            if (r.End <= a) { Emit(next, r); continue; }
            if (r.First >= b)
            {
                if (pos < b) { Changed(pos, b, null); pos = b; }
                Emit(next, r);
                continue;
            }
            if (r.First < a) Emit(next, r with { Count = a - r.First });
            int s = Math.Max(r.First, a), e = Math.Min(r.End, b);
            if (pos < s) Changed(pos, s, null);
            Changed(s, e, r);
            pos = e;
            if (r.End > b) Emit(next, r with { First = b, Count = r.End - b });
        }
        if (pos < b) Changed(pos, b, null);

        // Checked: now change.
        if (_runs.Length < next.Count) _runs = new RefRun[Math.Max(next.Count, _runs.Length * 2)];
        next.CopyTo(_runs);
        _runCount = next.Count;
        foreach (var (s, e, rose) in crossings)
        {
            if (rose) { Referenced += e - s; SetBusy(s, e, true); }
            else { Referenced -= e - s; reachedZero?.Add((s, e - s)); }
        }
        if (classes != null) foreach (var (eras, n) in changed) classes.Add(eras, n);

        void Changed(int s, int e, RefRun? old)
        {
            var r = old ?? new RefRun(s, e - s, 0, 0, 0, 0);
            uint refs = r.Refs, live = r.Live;
            long birth = r.Birth, death = r.Death;
            var gaps = r.Gaps;
            switch (op)
            {
                case CountChange.MapLive:
                    if (refs == uint.MaxValue) throw new InvalidOperationException($"{Where(device, segment)}: block {s} has 2^32-1 references");
                    if (refs == 0) { birth = gen; gaps = null; }
                    else if (live == 0) Resurrect(views, gen, ref birth, death, ref gaps);
                    refs++; live++; death = 0;
                    break;
                case CountChange.UnmapLive:
                    if (refs == 0) throw new InvalidOperationException($"{Where(device, segment)}: block {s} released with no reference");
                    if (live == 0) throw new InvalidOperationException($"{Where(device, segment)}: block {s} released by a live version but no live version maps it");
                    refs--; live--;
                    if (live == 0) Die(views, gen, ref birth, ref death, ref gaps);
                    break;
                case CountChange.Retire:
                    if (live == 0) throw new InvalidOperationException($"{Where(device, segment)}: block {s} retired by a live version but no live version maps it");
                    live--;
                    if (live == 0) Die(views, gen, ref birth, ref death, ref gaps);
                    break;
                case CountChange.UnmapRetired:
                    if (refs <= live) throw new InvalidOperationException($"{Where(device, segment)}: block {s} released with no reference by a retired version ({refs} references, {live} live)");
                    refs--;
                    break;
                default:
                    refs = template.Refs; live = template.Live; birth = template.Birth; death = template.Live > 0 ? 0 : template.Death;
                    gaps = template.Gaps;
                    break;
            }
            if (old is { } o) changed.Add((o.Eras, -(e - s)));
            var now = new RefRun(s, e - s, refs, live, birth, death, gaps);
            if (refs != 0) changed.Add((now.Eras, e - s));
            if (old == null && refs != 0) crossings.Add((s, e, true));
            else if (old != null && refs == 0) crossings.Add((s, e, false));
            Emit(next, now);
        }
    }

    /// <summary>A block no live version mapped (its last era ended at <paramref name="death"/>) is mapped live again at
    /// <paramref name="gen"/>: its last era goes on when no snapshot lies in between, else a new era begins there.</summary>
    private static void Resurrect(ViewsIn? views, long gen, ref long birth, long death, ref EraGaps? gaps)
    {
        if (views == null || !views(death, gen)) return;
        gaps = EraGaps.Append(gaps, death, gen);
        Prune(views, ref birth, long.MaxValue, ref gaps);
    }

    /// <summary>The last live mapping of a block goes at <paramref name="gen"/>: its last era ends there, or, when no
    /// snapshot saw that era, is dropped (the era before it is the last again).</summary>
    private static void Die(ViewsIn? views, long gen, ref long birth, ref long death, ref EraGaps? gaps)
    {
        if (gaps != null && views != null && !views(gaps.Last.To, gen))
        {
            death = gaps.Last.From;
            gaps = gaps.WithoutLast();
        }
        else death = gen;
        if (views != null) Prune(views, ref birth, death, ref gaps);
    }

    /// <summary>Drops the gaps no snapshot lies in and the eras before the last that no snapshot lies in any more (their
    /// snapshots were deleted): the same views see the block, with fewer gaps. Views are only ever added at the live
    /// generation, after every bound, so what no view sees now none ever will.</summary>
    private static void Prune(ViewsIn views, ref long birth, long until, ref EraGaps? gaps)
    {
        if (gaps == null) return;
        var eras = new EraKey(birth, until, gaps).Ranges().ToList();
        var kept = new List<(long From, long To)>();
        for (int i = 0; i < eras.Count; i++)
        {
            var (from, to) = eras[i];
            if (i < eras.Count - 1 && !views(from, to)) continue;          // an era no snapshot sees (the last one stays)
            if (kept.Count > 0 && !views(kept[^1].To, from)) kept[^1] = (kept[^1].From, to);   // a gap no snapshot is in
            else kept.Add((from, to));
        }
        if (kept.Count == 0) return;
        birth = kept[0].From;
        if (kept.Count == 1) { gaps = null; return; }
        var bounds = new long[2 * (kept.Count - 1)];
        for (int i = 0; i + 1 < kept.Count; i++) { bounds[2 * i] = kept[i].To; bounds[2 * i + 1] = kept[i + 1].From; }
        gaps = new EraGaps(bounds);
    }

    private static string Where(uint device, long segment) => $"space map of device {device} segment {segment}";

    private static void Emit(List<RefRun> runs, RefRun r)
    {
        if (r.Refs == 0 || r.Count == 0) return;
        int last = runs.Count - 1;
        if (last >= 0 && runs[last].End == r.First && runs[last].SameClass(r))
            runs[last] = runs[last] with { Count = runs[last].Count + r.Count };
        else runs.Add(r);
    }

    /// <summary>Replaces the counts with persisted runs (opening the pool): every referenced block becomes busy.
    /// Throws <see cref="InvalidDataException"/> for runs that are unsorted, overlapping, empty, zero or outside the
    /// segment's data blocks.</summary>
    public void Load(ReadOnlySpan<RefRun> runs, string where)
    {
        if (_runCount != 0) throw new InvalidOperationException($"{where}: loaded twice");
        int prevEnd = 1;
        var next = new List<RefRun>(runs.Length);
        foreach (var r in runs)
        {
            if (r.Count < 1 || r.Refs == 0 || r.First < prevEnd || r.End > Length)
                throw new InvalidDataException($"{where}: run {r.First}+{r.Count}×{r.Refs} is empty, zero, unsorted, overlapping or outside the segment's blocks 1..{Length - 1}");
            if (r.Live > r.Refs || (r.Live == 0 && r.Death < r.Birth) || (r.Gaps != null && (r.Gaps[0].From <= r.Birth || (r.Live == 0 && r.Gaps.Last.To >= r.Death))))
                throw new InvalidDataException($"{where}: run {r.First}+{r.Count} has {r.Live} live of {r.Refs} mappings, eras {r.Eras}");
            prevEnd = r.End;
            Emit(next, r.Live > 0 ? r with { Death = 0 } : r);
        }
        _runs = next.Count > 0 ? next.ToArray() : new RefRun[2];
        _runCount = next.Count;
        foreach (var r in next) { Referenced += r.Count; SetBusy(r.First, r.End, true); }
    }
}
