using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>The extent map of a chunk (<see cref="ExtentMap"/>) alone: lookup, remap, punch and clone on
/// <see cref="ChunkRecord"/>s, checked against the format's invariants and a block-array model.</summary>
[Trait("Tier", "unit")]
public class ExtentMapTests
{
    private const int CB = FormatConstants.ChunkBlocks;

    /// <summary>Collects reported device ranges (a struct holding a list, as the engine's sinks are structs).</summary>
    private readonly struct Ranges() : IDeviceRangeSink
    {
        public readonly List<(uint Dev, long Addr, long Blocks)> List = new();
        public void Add(uint device, long address, long blocks) => List.Add((device, address, blocks));
    }

    private static ChunkRecord Chunk(long index = 0, params Extent[] extents)
    {
        var c = new ChunkRecord { Ino = 7, Index = index };
        c.Extents.AddRange(extents);
        foreach (var e in extents)
            for (uint b = e.First; b < e.End; b++) c.Sums[b] = SumOf(e.Device, e.Address + (b - e.First));
        return c;
    }

    private static uint SumOf(uint dev, long addr) => (uint)(addr * 31 + dev * 7 + 1);

    private static uint[] Sums(uint dev, long addr, int n) => Enumerable.Range(0, n).Select(i => SumOf(dev, addr + i)).ToArray();

    /// <summary>format.md 5.6/5.7: sorted, non-overlapping, non-empty, within the chunk; zero sums where unmapped.</summary>
    private static void AssertInvariants(ChunkRecord c, string why = "")
    {
        uint prevEnd = 0;
        var mapped = new bool[CB];
        foreach (var e in c.Extents)
        {
            Assert.True(e.Count > 0, $"empty extent {e} {why}");
            Assert.True(e.First >= prevEnd, $"extents overlap or are unsorted at {e} {why}");
            Assert.True(e.End <= CB, $"extent {e} passes the chunk {why}");
            for (uint b = e.First; b < e.End; b++) mapped[b] = true;
            prevEnd = e.End;
        }
        for (int b = 0; b < CB; b++)
            if (!mapped[b]) Assert.True(c.Sums[b] == 0, $"unmapped chunk block {b} has a checksum {why}");
    }

    // ---------------------------------------------------------------- lookup

    [Fact]
    public void FindRun_reports_holes_extents_and_stops_at_extent_and_chunk_ends()
    {
        var c = Chunk(2, new Extent(10, 5, 1, 100), new Extent(15, 5, 1, 900), new Extent(1000, 24, 2, 50));
        long base_ = 2L * CB;
        // A hole before the first extent ends where it starts.
        Assert.Equal(new BlockRun(base_, 10, 0, -1), ExtentMap.FindRun(c, base_, 100));
        // Inside an extent: the rest of it, device address offset; adjacent extents are separate runs.
        Assert.Equal(new BlockRun(base_ + 12, 3, 1, 102), ExtentMap.FindRun(c, base_ + 12, 100));
        Assert.Equal(new BlockRun(base_ + 15, 5, 1, 900), ExtentMap.FindRun(c, base_ + 15, 100));
        // maxBlocks shortens the run.
        Assert.Equal(new BlockRun(base_ + 15, 2, 1, 900), ExtentMap.FindRun(c, base_ + 15, 2));
        // A hole between extents; the last extent stops at the chunk end whatever maxBlocks says.
        Assert.Equal(new BlockRun(base_ + 20, 980, 0, -1), ExtentMap.FindRun(c, base_ + 20, 5000));
        Assert.Equal(new BlockRun(base_ + 1010, 14, 2, 60), ExtentMap.FindRun(c, base_ + 1010, 5000));
        // No chunk, or an empty one: a hole to the chunk end.
        Assert.Equal(new BlockRun(base_ + 1000, 24, 0, -1), ExtentMap.FindRun(null, base_ + 1000, 5000));
        Assert.Equal(new BlockRun(base_ + 3, 7, 0, -1), ExtentMap.FindRun(Chunk(2), base_ + 3, 7));
    }

    // ---------------------------------------------------------------- remap

    [Fact]
    public void Remap_in_the_middle_of_an_extent_splits_it_and_reports_the_old_blocks()
    {
        var c = Chunk(0, new Extent(0, 100, 1, 1000));
        var unmapped = new Ranges();
        long removed = ExtentMap.Remap(c, 40, 10, 1, 5000, Sums(1, 5000, 10), ref unmapped);
        Assert.Equal(10, removed);
        Assert.Equal([(1u, 1040L, 10L)], unmapped.List);
        Assert.Equal([new Extent(0, 40, 1, 1000), new Extent(40, 10, 1, 5000), new Extent(50, 50, 1, 1050)], c.Extents);
        Assert.Equal(SumOf(1, 5003), c.Sums[43]);
        Assert.Equal(SumOf(1, 1050), c.Sums[50]);
        AssertInvariants(c);
    }

    [Fact]
    public void Remap_merges_with_physically_contiguous_neighbours_so_sequential_writes_stay_one_extent()
    {
        var c = Chunk();
        var unmapped = new Ranges();
        for (uint i = 0; i < 8; i++)
            Assert.Equal(0, ExtentMap.Remap(c, i * 16, 16, 1, 300 + i * 16, Sums(1, 300 + i * 16, 16), ref unmapped));
        Assert.Equal([new Extent(0, 128, 1, 300)], c.Extents);
        Assert.Empty(unmapped.List);

        // Filling a hole between two extents with the block that continues both joins all three.
        var d = Chunk(0, new Extent(0, 4, 1, 10), new Extent(6, 4, 1, 16));
        ExtentMap.Remap(d, 4, 2, 1, 14, Sums(1, 14, 2), ref unmapped);
        Assert.Equal([new Extent(0, 10, 1, 10)], d.Extents);
        // Same addresses on another device do not merge.
        var e = Chunk(0, new Extent(0, 4, 1, 10));
        ExtentMap.Remap(e, 4, 2, 2, 14, Sums(2, 14, 2), ref unmapped);
        Assert.Equal([new Extent(0, 4, 1, 10), new Extent(4, 2, 2, 14)], e.Extents);
        AssertInvariants(d); AssertInvariants(e);
    }

    [Fact]
    public void Remap_across_several_extents_and_holes_replaces_them_all()
    {
        var c = Chunk(0, new Extent(0, 10, 1, 100), new Extent(20, 10, 1, 200), new Extent(40, 10, 1, 300));
        var unmapped = new Ranges();
        long removed = ExtentMap.Remap(c, 5, 40, 1, 7000, Sums(1, 7000, 40), ref unmapped);
        Assert.Equal(5 + 10 + 5, removed);
        Assert.Equal([(1u, 105L, 5L), (1u, 200L, 10L), (1u, 300L, 5L)], unmapped.List);
        Assert.Equal([new Extent(0, 5, 1, 100), new Extent(5, 40, 1, 7000), new Extent(45, 5, 1, 305)], c.Extents);
        AssertInvariants(c);
    }

    [Fact]
    public void Remap_and_punch_refuse_a_range_past_the_chunk()
    {
        var c = Chunk();
        var sink = new Ranges();
        Assert.Throws<ArgumentOutOfRangeException>(() => ExtentMap.Remap(c, CB - 2, 4, 1, 0, new uint[4], ref sink));
        Assert.Throws<ArgumentOutOfRangeException>(() => ExtentMap.Punch(c, 5, 4, ref sink));
        Assert.Empty(c.Extents);
    }

    // ---------------------------------------------------------------- punch

    [Fact]
    public void Punch_at_edges_and_in_the_middle()
    {
        var c = Chunk(0, new Extent(10, 20, 1, 100), new Extent(50, 10, 2, 500));
        var unmapped = new Ranges();
        // Left edge of the first extent, from inside a hole.
        Assert.Equal(5, ExtentMap.Punch(c, 0, 15, ref unmapped));
        // Right edge of it.
        Assert.Equal(5, ExtentMap.Punch(c, 25, 30, ref unmapped));
        // The middle of the second.
        Assert.Equal(4, ExtentMap.Punch(c, 53, 57, ref unmapped));
        // A hole: nothing.
        Assert.Equal(0, ExtentMap.Punch(c, 30, 50, ref unmapped));
        Assert.Equal([(1u, 100L, 5L), (1u, 115L, 5L), (2u, 503L, 4L)], unmapped.List);
        Assert.Equal([new Extent(15, 10, 1, 105), new Extent(50, 3, 2, 500), new Extent(57, 3, 2, 507)], c.Extents);
        Assert.Equal(0u, c.Sums[12]);
        Assert.Equal(0u, c.Sums[55]);
        Assert.Equal(SumOf(2, 507), c.Sums[57]);
        AssertInvariants(c);
        // The whole chunk: empty.
        Assert.Equal(16, ExtentMap.Punch(c, 0, CB, ref unmapped));
        Assert.Empty(c.Extents);
        AssertInvariants(c);
    }

    // ---------------------------------------------------------------- clone

    [Fact]
    public void Clone_between_maps_shares_extents_and_checksums_and_keeps_holes()
    {
        var src = Chunk(0, new Extent(0, 10, 1, 100), new Extent(20, 10, 1, 200));
        var dst = Chunk(3, new Extent(100, 50, 2, 9000));
        var scratch = new List<Extent>();
        var unmapped = new Ranges();
        var gained = new Ranges();
        long delta = ExtentMap.Clone(src, 5, 25, dst, 110, scratch, ref unmapped, ref gained);
        // Destination [110, 130) mapped 20 blocks; now 5 + 5.
        Assert.Equal(-10, delta);
        Assert.Equal([(2u, 9010L, 20L)], unmapped.List);
        Assert.Equal([(1u, 105L, 5L), (1u, 200L, 5L)], gained.List);
        Assert.Equal([new Extent(100, 10, 2, 9000), new Extent(110, 5, 1, 105), new Extent(125, 5, 1, 200), new Extent(130, 20, 2, 9030)], dst.Extents);
        Assert.Equal(SumOf(1, 107), dst.Sums[112]);
        Assert.Equal(0u, dst.Sums[118]);
        // The source is unchanged.
        Assert.Equal([new Extent(0, 10, 1, 100), new Extent(20, 10, 1, 200)], src.Extents);
        AssertInvariants(src); AssertInvariants(dst);
    }

    [Fact]
    public void Clone_within_one_map_to_a_disjoint_range()
    {
        var c = Chunk(0, new Extent(0, 8, 1, 100), new Extent(8, 8, 1, 500));
        var scratch = new List<Extent>();
        var unmapped = new Ranges();
        var gained = new Ranges();
        Assert.Equal(16, ExtentMap.Clone(c, 0, 16, c, 600, scratch, ref unmapped, ref gained));
        Assert.Empty(unmapped.List);
        Assert.Equal([(1u, 100L, 8L), (1u, 500L, 8L)], gained.List);
        Assert.Equal([new Extent(0, 8, 1, 100), new Extent(8, 8, 1, 500), new Extent(600, 8, 1, 100), new Extent(608, 8, 1, 500)], c.Extents);
        Assert.Equal(c.Sums[9], c.Sums[609]);
        AssertInvariants(c);
        Assert.Throws<ArgumentException>(() => ExtentMap.Clone(c, 0, 16, c, 8, scratch, ref unmapped, ref gained));
    }

    // ---------------------------------------------------------------- against a model

    /// <summary>Random remaps, punches and clones on two chunks, each step checked against an array of
    /// (device, address, sum) per block, and every reported range against the model's change in references.</summary>
    [Fact]
    public void Random_operations_agree_with_a_block_array_model()
    {
        int seed = Environment.TickCount;
        var rnd = new Random(seed);
        var chunks = new[] { Chunk(0), Chunk(1) };
        var model = new (uint Dev, long Addr)?[2][] { new (uint, long)?[CB], new (uint, long)?[CB] };
        var scratch = new List<Extent>();
        long nextAddr = 1;
        for (int step = 0; step < 3000; step++)
        {
            string why = $"(seed {seed}, step {step})";
            int which = rnd.Next(2);
            var c = chunks[which];
            var m = model[which];
            uint a = (uint)rnd.Next(CB);
            uint n = (uint)rnd.Next(1, (int)Math.Min(CB - a, rnd.Next(2) == 0 ? 8 : 300) + 1);
            var unmapped = new Ranges();
            var gained = new Ranges();
            var expectUnmapped = new List<(uint, long)>();
            for (uint b = a; b < a + n; b++) if (m[b] is { } v) expectUnmapped.Add(v);
            var expectGained = new List<(uint, long)>();
            long delta;
            switch (rnd.Next(3))
            {
                case 0:
                {
                    uint dev = (uint)rnd.Next(1, 3);
                    // Sometimes continue the block before, so merging is exercised.
                    long addr = a > 0 && m[a - 1] is { } p && rnd.Next(2) == 0 ? p.Addr + 1 : (nextAddr += 1000);
                    if (a > 0 && m[a - 1] is { } q && addr == q.Addr + 1) dev = q.Dev;
                    delta = n - ExtentMap.Remap(c, a, n, dev, addr, Sums(dev, addr, (int)n), ref unmapped);
                    for (uint b = 0; b < n; b++) m[a + b] = (dev, addr + b);
                    break;
                }
                case 1:
                    delta = -ExtentMap.Punch(c, a, a + n, ref unmapped);
                    for (uint b = a; b < a + n; b++) m[b] = null;
                    break;
                default:
                {
                    int from = rnd.Next(2);
                    var sc = chunks[from];
                    var sm = model[from];
                    uint s = (uint)rnd.Next((int)(CB - n + 1));
                    if (from == which && s < a + n && a < s + n) { step--; continue; }
                    for (uint b = 0; b < n; b++) if (sm[s + b] is { } v) expectGained.Add(v);
                    delta = ExtentMap.Clone(sc, s, s + n, c, a, scratch, ref unmapped, ref gained);
                    var copy = sm.AsSpan((int)s, (int)n).ToArray();
                    copy.CopyTo(m.AsSpan((int)a));
                    break;
                }
            }
            Assert.True(Expand(unmapped).SequenceEqual(expectUnmapped), $"unmapped ranges differ {why}");
            Assert.True(Expand(gained).SequenceEqual(expectGained), $"gained ranges differ {why}");
            int mappedAfter = m.AsSpan((int)a, (int)n).ToArray().Count(x => x != null);
            Assert.True(delta == mappedAfter - expectUnmapped.Count,
                $"mapped-block change {delta} is wrong {why}");
            for (int k = 0; k < 2; k++)
            {
                AssertInvariants(chunks[k], why);
                for (int b = 0; b < CB; b++)
                {
                    var run = ExtentMap.FindRun(chunks[k], chunks[k].Index * CB + b, 1);
                    var want = model[k][b];
                    Assert.True(want == null ? run.IsHole : !run.IsHole && run.Device == want.Value.Dev && run.Address == want.Value.Addr,
                        $"chunk {k} block {b}: map says {run}, model {want} {why}");
                    if (want is { } w) Assert.True(chunks[k].Sums[b] == SumOf(w.Dev, w.Addr), $"chunk {k} block {b}: wrong checksum {why}");
                }
            }
        }
    }

    private static IEnumerable<(uint, long)> Expand(Ranges r) =>
        r.List.SelectMany(x => Enumerable.Range(0, (int)x.Blocks).Select(i => (x.Dev, x.Addr + i)));
}
