using Cow.Core.Format;

namespace Cow.Core.Engine;

/// <summary>A run of a segment's reference counts: blocks <see cref="First"/>..<see cref="End"/> of the segment (indexes
/// within it) each mapped <see cref="Refs"/> times (≥ 1). The in-memory and the persisted form (format.md 5.7 <c>runs</c>).</summary>
internal readonly record struct RefRun(int First, int Count, uint Refs)
{
    public int End => First + Count;
}

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

    /// <summary>A segment every data block of which is mapped once (the state DeviceSpace keeps as a bit).</summary>
    public static SegmentSpace MappedOnce(int length)
    {
        var s = new SegmentSpace(length);
        s._runs[0] = new RefRun(1, length - 1, 1);
        s._runCount = length > 1 ? 1 : 0;
        Array.Fill(s._busy, ulong.MaxValue);
        s.BusyCount = length;
        s.Referenced = length - 1;
        return s;
    }

    /// <summary>True when every data block is mapped exactly once (and so busy): DeviceSpace drops the object for a bit.</summary>
    public bool IsMappedOnce => _runCount == 1 && _runs[0].First == 1 && _runs[0].Count == Length - 1 && _runs[0].Refs == 1;

    /// <summary>The runs of counts, in block order.</summary>
    public ReadOnlySpan<RefRun> Runs => _runs.AsSpan(0, _runCount);

    public uint RefCount(int i)
    {
        int lo = 0, hi = _runCount - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            var r = _runs[mid];
            if (i < r.First) hi = mid - 1;
            else if (i >= r.End) lo = mid + 1;
            else return r.Refs;
        }
        return 0;
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

    /// <summary>What <see cref="Change"/> does to each count of its range.</summary>
    public enum CountChange { Increment, Decrement, Set }

    [ThreadStatic] private static List<RefRun>? t_next;
    [ThreadStatic] private static List<(int, int, bool)>? t_crossings;

    /// <summary>
    /// Changes the count of every block of [<paramref name="a"/>, <paramref name="b"/>): one more, one fewer, or set to
    /// <paramref name="value"/>. A block whose count leaves 0 becomes busy; a block whose count reaches 0 stays busy (the
    /// caller decides when it is free) and its range is added to <paramref name="reachedZero"/> (segment indexes).
    /// Throws <see cref="InvalidOperationException"/>, with nothing changed, when a count would go below 0 or past
    /// 2^32−1: a bug in the reference counting, which the commit path turns into fail-stop.
    /// </summary>
    public void Change(int a, int b, CountChange op, uint value, uint device, long segment, List<(int Start, int Count)>? reachedZero)
    {
        if (a < 1 || b > Length || a > b) throw new InvalidOperationException($"{Where(device, segment)}: blocks {a}..{b} of a segment of {Length}");
        if (a == b) return;
        var next = t_next ??= new List<RefRun>();
        var crossings = t_crossings ??= new List<(int, int, bool)>();
        next.Clear(); crossings.Clear();
        int pos = a;
        for (int k = 0; k < _runCount; k++)
        {
            var r = _runs[k];
            if (r.End <= a) { Emit(next, r.First, r.Count, r.Refs); continue; }
            if (r.First >= b)
            {
                if (pos < b) { Changed(pos, b, 0); pos = b; }
                Emit(next, r.First, r.Count, r.Refs);
                continue;
            }
            if (r.First < a) Emit(next, r.First, a - r.First, r.Refs);
            int s = Math.Max(r.First, a), e = Math.Min(r.End, b);
            if (pos < s) Changed(pos, s, 0);
            Changed(s, e, r.Refs);
            pos = e;
            if (r.End > b) Emit(next, b, r.End - b, r.Refs);
        }
        if (pos < b) Changed(pos, b, 0);

        // Checked: now change.
        if (_runs.Length < next.Count) _runs = new RefRun[Math.Max(next.Count, _runs.Length * 2)];
        next.CopyTo(_runs);
        _runCount = next.Count;
        foreach (var (s, e, rose) in crossings)
        {
            if (rose) { Referenced += e - s; SetBusy(s, e, true); }
            else { Referenced -= e - s; reachedZero?.Add((s, e - s)); }
        }

        void Changed(int s, int e, uint old)
        {
            uint now = op switch
            {
                CountChange.Increment => old == uint.MaxValue ? throw new InvalidOperationException($"{Where(device, segment)}: block {s} has 2^32-1 references") : old + 1,
                CountChange.Decrement => old == 0 ? throw new InvalidOperationException($"{Where(device, segment)}: block {s} released with no reference") : old - 1,
                _ => value,
            };
            if (old == 0 && now != 0) crossings.Add((s, e, true));
            else if (old != 0 && now == 0) crossings.Add((s, e, false));
            Emit(next, s, e - s, now);
        }
    }

    private static string Where(uint device, long segment) => $"space map of device {device} segment {segment}";

    private static void Emit(List<RefRun> runs, int first, int count, uint refs)
    {
        if (refs == 0 || count == 0) return;
        int last = runs.Count - 1;
        if (last >= 0 && runs[last].End == first && runs[last].Refs == refs)
            runs[last] = runs[last] with { Count = runs[last].Count + count };
        else runs.Add(new RefRun(first, count, refs));
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
            prevEnd = r.End;
            Emit(next, r.First, r.Count, r.Refs);
        }
        _runs = next.Count > 0 ? next.ToArray() : new RefRun[2];
        _runCount = next.Count;
        foreach (var r in next) { Referenced += r.Count; SetBusy(r.First, r.End, true); }
    }
}
