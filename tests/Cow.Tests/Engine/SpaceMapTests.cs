using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Engine;

/// <summary>The space map of a device (<see cref="DeviceSpace"/>, <see cref="SegmentSpace"/>): counts kept as runs,
/// free and mapped-once segments as bits, checked against a dense model of a count and a busy bit per block; its
/// persisted form in both versions; its memory on a 64 TiB device.</summary>
[Trait("Tier", "unit")]
public class SpaceMapTests(ITestOutputHelper output)
{
    private const int Seg = FormatConstants.SegmentBlocks;

    /// <summary>The dense model: what the space map was before it was made sparse.</summary>
    private sealed class Model(long blocks)
    {
        public readonly uint[] Refs = new uint[blocks];
        public readonly bool[] Busy = InitBusy(blocks);
        public readonly List<(long, long)> Pending = new();
        private static bool[] InitBusy(long blocks)
        {
            var b = new bool[blocks];
            for (long i = 0; i < blocks; i += Seg) b[i] = true;
            return b;
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    public void Random_operations_match_a_dense_model_and_survive_a_persist_and_reload(int seedArg)
    {
        int seed = seedArg >= 0 ? seedArg : Environment.TickCount & 0x7FFFFFFF;
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        long blocks = 6L * Seg + 333;
        var sp = new DeviceSpace(FormatConstants.LogCookie, blocks) { Cursor = 1 };
        var m = new Model(blocks);
        var mapped = new List<(long S, long N)>();     // ranges holding a reference we may drop
        var reserved = new List<(long S, long N)>();   // allocated, not yet referenced
        for (int op = 0; op < 6000; op++)
        {
            int kind = rng.Next(10);
            try
            {
                switch (kind)
                {
                    case 0 or 1 or 2:
                    {
                        long got = sp.Allocate(rng.Next(1, 700), out long start);
                        if (got == 0) { Assert.Equal(0, m.Busy.Count(b => !b)); break; }
                        Assert.Equal(start / Seg, (start + got - 1) / Seg);
                        for (long b = start; b < start + got; b++) { Assert.False(m.Busy[b], $"op {op}: block {b} handed out while busy"); m.Busy[b] = true; }
                        reserved.Add((start, got));
                        break;
                    }
                    case 3 when reserved.Count > 0:
                    {   // a write's ioend: the reserved blocks are mapped
                        var (s, n) = reserved[rng.Next(reserved.Count)]; reserved.Remove((s, n));
                        sp.AddRef(s, n, 1);
                        for (long b = s; b < s + n; b++) { m.Refs[b]++; m.Busy[b] = true; }
                        mapped.Add((s, n));
                        break;
                    }
                    case 4 when reserved.Count > 0:
                    {
                        var (s, n) = reserved[rng.Next(reserved.Count)]; reserved.Remove((s, n));
                        sp.Unreserve(s, n);
                        for (long b = s; b < s + n; b++) if (m.Refs[b] == 0) m.Busy[b] = false;
                        break;
                    }
                    case 5 when mapped.Count > 0:
                    {   // a clone: one more mapping of part of a mapped range
                        var (s, n) = mapped[rng.Next(mapped.Count)];
                        long a = s + rng.Next((int)n), c = rng.Next(1, (int)(s + n - a) + 1);
                        sp.AddRef(a, c, 1);
                        for (long b = a; b < a + c; b++) { m.Refs[b]++; m.Busy[b] = true; }
                        mapped.Add((a, c));
                        break;
                    }
                    case 6 or 7 when mapped.Count > 0:
                    {
                        var (s, n) = mapped[rng.Next(mapped.Count)]; mapped.Remove((s, n));
                        sp.Release(s, n, 1);
                        for (long b = s; b < s + n; b++) if (--m.Refs[b] == 0) m.Pending.Add((b, 1));
                        break;
                    }
                    case 8:
                    {   // a commit made the frees durable
                        var frees = sp.TakePendingFrees();
                        Assert.Equal(m.Pending.Sum(p => p.Item2), frees.Sum(f => f.Count));
                        sp.ReleasePendingFrees(frees);
                        foreach (var (b, _) in m.Pending) if (m.Refs[b] == 0) m.Busy[b] = false;
                        m.Pending.Clear();
                        break;
                    }
                    case 9 when reserved.Count > 0 && mapped.Count > 0:
                    {   // the cleaner: a reserved block adopts every mapping of a mapped one
                        var (rs, rn) = reserved[rng.Next(reserved.Count)];
                        var (ms, mn) = mapped[rng.Next(mapped.Count)];
                        long from = ms + rng.Next((int)mn), to = rs + rng.Next((int)rn);
                        if (m.Refs[to] != 0 || m.Refs[from] == 0) break;
                        var had = sp.ReleaseAll(from)!.Value;
                        uint n = had.Refs;
                        Assert.Equal(m.Refs[from], n);
                        sp.AdoptRefs(to, had);
                        m.Refs[to] = n; m.Busy[to] = true; m.Refs[from] = 0; m.Pending.Add((from, 1));
                        // Every range that mapped 'from' now maps 'to' in the model's bookkeeping.
                        for (int k = 0; k < mapped.Count; k++)
                            if (mapped[k].S <= from && from < mapped[k].S + mapped[k].N)
                            {
                                var (s, c) = mapped[k];
                                mapped.RemoveAt(k--);
                                if (from > s) mapped.Add((s, from - s));
                                if (from + 1 < s + c) mapped.Add((from + 1, s + c - from - 1));
                                mapped.Add((to, 1));
                            }
                        // 'to' stays reserved in the list: it is referenced now, so an Unreserve leaves it busy.
                        break;
                    }
                }
            }
            catch (Exception e) { throw new Xunit.Sdk.XunitException($"seed {seed} op {op} kind {kind}: {e}"); }
            if (op % 97 == 0 || op == 5999) Compare(sp, m, $"seed {seed} op {op} kind {kind}");
        }

        // Persisted and loaded into a fresh map: the same counts, in both document forms.
        foreach (bool dense in new[] { false, true })
        {
            var again = new DeviceSpace(FormatConstants.LogCookie, blocks);
            foreach (long s in sp.OccupiedSegments())
            {
                var doc = new SpaceMapRecord { Device = sp.Cookie, Segment = s, Runs = sp.CountRuns(s), Dense = dense }.ToBson();
                var back = SpaceMapBson.FromBson(doc);
                Assert.Equal(dense, back.Dense);
                again.Load(s, back.Runs);
            }
            for (long b = 0; b < blocks; b++) Assert.Equal(m.Refs[b], again.RefCount(b));
            Assert.Equal(sp.ReferencedBlocks(), again.ReferencedBlocks());
        }
    }

    private static void Compare(DeviceSpace sp, Model m, string where)
    {
        long busy = 0, referenced = 0;
        for (long b = 0; b < sp.Blocks; b++)
        {
            if (sp.RefCount(b) != m.Refs[b]) throw new Xunit.Sdk.XunitException($"{where}: block {b} counts {sp.RefCount(b)}, model {m.Refs[b]}");
            if (sp.IsBusy(b) != m.Busy[b]) throw new Xunit.Sdk.XunitException($"{where}: block {b} busy {sp.IsBusy(b)}, model {m.Busy[b]}");
            if (m.Busy[b]) busy++;
            if (m.Refs[b] > 0) referenced++;
        }
        Assert.Equal(sp.Blocks - busy, sp.FreeBlocks);
        Assert.Equal(referenced, sp.ReferencedBlocks());
        var used = new List<long>();
        for (long s = 0; s < sp.SegmentCount; s++)
        {
            long first = s * Seg, end = Math.Min(sp.Blocks, first + Seg);
            var runs = new List<(long, long)>();
            int live = 0;
            for (long b = first; b < end; b++)
            {
                if (m.Refs[b] == 0) continue;
                live++;
                if (runs.Count > 0 && runs[^1].Item1 + runs[^1].Item2 == b) runs[^1] = (runs[^1].Item1, runs[^1].Item2 + 1);
                else runs.Add((b, 1));
            }
            Assert.Equal(live, sp.LiveBlocks(s));
            Assert.Equal(runs, sp.LiveRuns(s));
            if (live > 0) used.Add(s);
            // The persisted runs say the same counts.
            foreach (var r in sp.CountRuns(s))
                for (int i = r.First; i < r.End; i++) Assert.Equal(m.Refs[first + i], r.Refs);
            Assert.Equal(live, sp.CountRuns(s).Sum(r => r.Count));
        }
        Assert.Equal(used, sp.UsedSegments());
    }

    [Fact]
    public void A_refused_change_leaves_the_counts_as_they_were()
    {
        var sp = new DeviceSpace(FormatConstants.BaseCookie, 4L * Seg);
        long n = sp.Allocate(100, out long start);
        sp.AddRef(start, n, 1);
        long free = sp.FreeBlocks;
        // The range runs past the mapped blocks: the release is refused whole.
        var e = Assert.Throws<InvalidOperationException>(() => sp.Release(start + 50, 100, 1));
        Assert.Contains("released with no reference", e.Message);
        for (long b = start; b < start + n; b++) Assert.Equal(1u, sp.RefCount(b));
        Assert.Equal(free, sp.FreeBlocks);
        Assert.Equal(n, sp.ReferencedBlocks());
        Assert.False(sp.HasPendingFrees);
    }

    /// <summary>A 64 TiB device holding 1 TiB written as 1 MiB extents: the written segments are bits, not objects, and
    /// allocation, release and reuse still work; its per-segment bits are 4 MiB.</summary>
    [Fact]
    public void A_64_TiB_device_with_1_TiB_mapped_keeps_no_object_per_segment()
    {
        long blocks = (64L << 40) / 4096;
        var sp = new DeviceSpace(FormatConstants.LogCookie, blocks) { Cursor = 1 };
        long before = GC.GetAllocatedBytesForCurrentThread();
        long mapped = 0, extents = 0;
        while (mapped < (1L << 40) / 4096)
        {
            long n = sp.Allocate(256, out long start);
            Assert.True(n > 0);
            sp.AddRef(start, n, 1);
            mapped += n; extents++;
        }
        Assert.True(sp.PartialSegments <= 1, $"{sp.PartialSegments} segments kept as objects");
        Assert.Equal(mapped, sp.ReferencedBlocks());
        // An overwrite in the middle frees blocks: that segment alone becomes an object, and its blocks are reused
        // only once no segment is completely free.
        long mid = 1000L * Seg + 5;
        sp.Release(mid, 10, 1);
        sp.ReleasePendingFrees(sp.TakePendingFrees());
        Assert.Equal(0u, sp.RefCount(mid));
        Assert.Equal(1u, sp.RefCount(mid + 10));
        Assert.True(sp.PartialSegments <= 2);
        long got = sp.Allocate(10, out long next);
        Assert.NotEqual(mid, next);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"{extents} extents of 1 MiB on a 64 TiB device: {sp.UsedSegments().Count} segments used, {sp.PartialSegments} kept as objects, {allocated / 1024} KiB allocated while writing");
        Assert.Equal(10, got);
    }

    [Fact]
    public void Malformed_persisted_runs_are_refused_with_the_segment_named()
    {
        var sp = new DeviceSpace(FormatConstants.BaseCookie, 4L * Seg);
        var e = Assert.Throws<InvalidDataException>(() => sp.Load(2, [new RefRun(10, 5, 1), new RefRun(12, 5, 1)]));
        Assert.Contains("segment 2", e.Message);
        e = Assert.Throws<InvalidDataException>(() => sp.Load(1, [new RefRun(0, 5, 1)]));
        Assert.Contains("outside", e.Message);
        e = Assert.Throws<InvalidDataException>(() => sp.Load(9, [new RefRun(1, 5, 1)]));
        Assert.Contains("outside the device", e.Message);
        var doc = new SpaceMapRecord { Device = 1, Segment = 3, Runs = [new RefRun(1, 1, 1)] }.ToBson();
        doc["runs"] = new byte[7];
        e = Assert.Throws<InvalidDataException>(() => SpaceMapBson.FromBson(doc));
        Assert.Contains("not a multiple", e.Message);
    }
}
