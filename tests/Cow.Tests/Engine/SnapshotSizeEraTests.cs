using Cow.Core.FileSystem;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>Snapshot sizes kept from the space maps' eras (<c>cow snapshot list</c>, <c>cow df</c>) when a block is mapped
/// again after the live tree let it go (a restore) with a snapshot in between: the views that see it are two ranges of
/// generations, and what each view references and alone holds matches a scan of every extent map, through deletes,
/// purges and a reopen.</summary>
[Trait("Tier", "engine")]
public class SnapshotSizeEraTests(ITestOutputHelper output)
{
    private const int Blocks = 64;

    private static Dictionary<string, (long Ref, long Excl)> Sizes(MemoryPool p)
    {
        var scanned = p.Engine.SpaceReportByScan();
        var kept = p.Engine.SpaceReport();
        Assert.Equal(scanned, kept);
        return kept.ToDictionary(s => s.Name, s => (s.ReferencedBytes / 4096, s.ExclusiveBytes / 4096));
    }

    private void Step(MemoryPool p, string what, params (string View, long Ref, long Excl)[] expect)
    {
        var sizes = Sizes(p);
        output.WriteLine($"{what}: {string.Join(", ", sizes.Select(kv => $"{(kv.Key == "" ? "live" : kv.Key)} {kv.Value.Ref}/{kv.Value.Excl}"))}");
        foreach (var (view, r, x) in expect) Assert.Equal((r, x), sizes[view]);
        p.AssertClean();
    }

    private static void Restore(MemoryPool p, string snapshot)
    {
        Assert.Equal(0, (int)p.Engine.RestoreFromSnapshot(snapshot, ["/f"], false, out _, out var bad));
        Assert.Null(bad);
    }

    [Fact]
    public void A_block_restored_across_a_snapshot_is_seen_by_two_ranges_of_views()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        WriteAt(p.Live, f, 0, Pattern(Blocks * 4096, 1));
        long g = CreateFile(p.Live, "/g");
        WriteAt(p.Live, g, 0, Pattern(8 * 4096, 2));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("a", out _));
        Assert.Equal(0, (int)p.Live.Unlink(1, "f"));
        Step(p, "f deleted after a", ("a", Blocks + 8, Blocks), ("", 8, 0));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("b", out _));
        Restore(p, "a");
        // f's blocks: seen by a and the live tree, not by b (taken while f was gone).
        Step(p, "f restored after b", ("a", Blocks + 8, 0), ("b", 8, 0), ("", Blocks + 8, 0));

        Assert.Equal(0, (int)p.Live.Unlink(1, "f"));
        // No snapshot saw the restored f: its blocks are a's alone again.
        Step(p, "restored f deleted before any snapshot", ("a", Blocks + 8, Blocks), ("b", 8, 0), ("", 8, 0));

        Restore(p, "a");
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("c", out _));
        Assert.Equal(0, (int)p.Live.Unlink(1, "f"));
        Step(p, "restored, c taken, deleted", ("a", Blocks + 8, 0), ("b", 8, 0), ("c", Blocks + 8, 0), ("", 8, 0));

        // A third era: e is taken while f is gone, then f comes back.
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("e", out _));
        Restore(p, "a");
        Step(p, "restored after e", ("a", Blocks + 8, 0), ("b", 8, 0), ("c", Blocks + 8, 0), ("e", 8, 0), ("", Blocks + 8, 0));
        Assert.Equal(0, (int)p.Live.Unlink(1, "f"));
        Step(p, "third era gone unseen", ("a", Blocks + 8, 0), ("c", Blocks + 8, 0), ("e", 8, 0), ("", 8, 0));
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("e"));

        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("a"));
        Step(p, "a deleted", ("b", 8, 0), ("c", Blocks + 8, Blocks), ("", 8, 0));
        p.Reopen();
        Step(p, "reopened", ("b", 8, 0), ("c", Blocks + 8, Blocks), ("", 8, 0));
        long free = p.Live.StatFs().FreeBlocks;
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("c"));
        Assert.Equal(free + Blocks, p.Live.StatFs().FreeBlocks);   // what c alone held is what its delete freed
        Step(p, "c deleted", ("b", 8, 0), ("", 8, 0));
    }

    [Fact]
    public void Sizes_of_a_thousand_snapshots_come_from_a_histogram_not_a_scan()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        for (int i = 0; i < 1000; i++)
        {
            WriteAt(p.Live, f, (i % 200) * 4096L, Pattern(4096, i));
            Assert.Equal(0, (int)p.Engine.CreateSnapshot($"s{i}", out _));
        }
        var sizes = Sizes(p);
        Assert.Equal(1001, sizes.Count);
        Assert.True(p.Engine.GenerationClasses.Count < 3000, $"{p.Engine.GenerationClasses.Count} classes");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < 10; i++) p.Engine.SpaceReport();
        output.WriteLine($"{p.Engine.GenerationClasses.Count} classes; a report of 1,001 views in {clock.Elapsed.TotalMilliseconds / 10:F2} ms");
        p.AssertClean();
    }
}
