using Cow.Core.Check;
using Cow.Core.Metadata;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>A snapshot deletion's purge (format.md 4, "Deleting snapshot"): the snapshot goes in one commit, its
/// records in batches of their own commits while the live tree keeps changing, and a purge cut short is finished by
/// the next open.</summary>
[Trait("Tier", "engine")]
public class SnapshotPurgeTests
{
    private const int Files = 200;

    /// <summary>A pool whose snapshot "a" alone holds <see cref="Files"/> one-block files (and their entries).</summary>
    private static long FillThenDeleteAfterSnapshot(MemoryPool p)
    {
        Assert.Equal(0, (int)p.Live.Mkdir(1, "d", 0x1ED, 0, 0, out _));
        for (int i = 0; i < Files; i++) WriteAt(p.Live, CreateFile(p.Live, $"/d/f{i}"), 0, Pattern(4096, i));
        p.Engine.Commit();
        long freeBefore = Free(p);
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("a", out _));
        for (int i = 0; i < Files; i++) Assert.Equal(0, (int)p.Live.Unlink(Ino(p.Live, "/d"), $"f{i}"));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("b", out _));
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("b"));
        return freeBefore + Files;
    }

    private static long Free(MemoryPool p) => p.Engine.DeviceUsage().Sum(u => u.FreeBlocks);

    [Fact]
    public async Task The_purge_runs_in_batches_while_the_live_tree_keeps_changing()
    {
        using var p = new MemoryPool();
        long freeAfter = FillThenDeleteAfterSnapshot(p);
        p.Engine.PurgeBatchRecords = 16;
        int creates = 0;
        var seen = new List<int>();
        // Each batch takes a moment under the state lock (as a large one would): the writer must get in between.
        p.Engine.CommitFaultHook = at => { if (at == "purge") { seen.Add(Volatile.Read(ref creates)); Thread.Sleep(2); } };
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested && creates < 10_000)
            {
                CreateFile(p.Live, $"/n{creates}");
                Interlocked.Increment(ref creates);
                Thread.Sleep(1);
            }
        });
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("a"));
        stop.Cancel();
        await writer;
        p.Engine.CommitFaultHook = null;

        // Every file's inode, entry and chunk went, 16 a commit; creates went on between the batches.
        Assert.True(seen.Count >= 3 * Files / 16, $"{seen.Count} batches");
        Assert.True(seen[^1] > seen[0], $"no create completed during the purge's {seen.Count} batches");
        Assert.Empty(p.Engine.PoolState.Purges);
        var root = new List<Cow.Core.FileSystem.DirEntryInfo>();
        Assert.Equal(0, (int)p.Live.ReadDir(1, 0, 100_000, root));
        Assert.Equal(["d"], root.Select(e => e.Name).Where(n => n is not ("." or "..") && !n.StartsWith('n')));
        Assert.Equal(0, (int)p.Live.ReadDir(Ino(p.Live, "/d"), 0, 100_000, root = new()));
        Assert.DoesNotContain(root, e => e.Name is not ("." or ".."));
        p.AssertClean();
        for (int i = 0; i < creates; i++) Assert.Equal(0, (int)p.Live.Unlink(1, $"n{i}"));
        p.Engine.Commit();
        Assert.Equal(freeAfter, Free(p));
    }

    [Fact]
    public void A_purge_cut_short_is_finished_by_the_next_open()
    {
        using var p = new MemoryPool();
        long freeAfter = FillThenDeleteAfterSnapshot(p);
        p.Engine.PurgeBatchRecords = 16;
        int batches = 0;
        p.Engine.CommitFaultHook = at => { if (at == "purge" && ++batches == 3) throw new IOException("injected fault in the third batch"); };
        Assert.ThrowsAny<IOException>(() => p.Engine.DeleteSnapshot("a"));
        p.Engine.CommitFaultHook = null;

        p.Reopen();
        Assert.Empty(p.Engine.ListSnapshots());
        Assert.Empty(p.Engine.PoolState.Purges);
        Assert.Equal(freeAfter, Free(p));
        p.AssertClean();
    }

    [Fact]
    public void In_the_background_a_delete_returns_before_its_purge_and_the_space_comes_back_after()
    {
        using var p = new MemoryPool();
        long freeAfter = FillThenDeleteAfterSnapshot(p);
        p.Engine.PurgeBatchRecords = 16;
        p.Engine.StartPurger();
        using var gate = new ManualResetEventSlim(false);
        bool? gateWasOpen = null;
        // The first batch waits for the test to open the gate: a delete that purged inline would wait with it, and find
        // the gate shut after 10 s.
        p.Engine.CommitFaultHook = at => { if (at == "purge" && gateWasOpen == null) gateWasOpen = gate.Wait(TimeSpan.FromSeconds(10)); };
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("a"));
        gate.Set();   // (nothing that takes the engine's locks before this: the first batch may hold them, waiting)
        Assert.Empty(p.Engine.ListSnapshots());
        Assert.True(p.Engine.WaitForPurges(TimeSpan.FromSeconds(60)));
        Assert.True(gateWasOpen, "the delete waited for its purge");
        p.Engine.CommitFaultHook = null;
        Assert.Equal(0, p.Engine.PendingPurges);
        Assert.Equal(freeAfter, Free(p));
        p.AssertClean();
    }

    [Fact]
    public async Task A_background_purge_stopped_by_a_close_is_finished_in_the_background_at_the_next_open()
    {
        using var p = new MemoryPool();
        long freeAfter = FillThenDeleteAfterSnapshot(p);
        p.Engine.PurgeBatchRecords = 16;
        p.Engine.StartPurger();
        using var reached = new ManualResetEventSlim(false);
        using var gate = new ManualResetEventSlim(false);
        int batches = 0;
        p.Engine.CommitFaultHook = at => { if (at == "purge" && ++batches == 2) { reached.Set(); gate.Wait(TimeSpan.FromSeconds(10)); } };
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("a"));
        Assert.True(reached.Wait(TimeSpan.FromSeconds(30)));
        var engine = p.Engine;
        var close = Task.Run(() => p.Pool.Dispose());   // stops the purger: it ends after the batch in progress
        Thread.Sleep(100);
        gate.Set();
        await close.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, batches);
        Assert.Single(engine.PoolState.Purges);   // left pending, as an unmount leaves it

        p.ReopenWithBackgroundPurges();
        Assert.True(p.Engine.WaitForPurges(TimeSpan.FromSeconds(60)));
        Assert.Empty(p.Engine.PoolState.Purges);
        Assert.Equal(freeAfter, Free(p));
        p.AssertClean();
    }

    [Fact]
    public async Task Background_purges_of_a_timeline_deleted_in_random_order_under_writes_leave_a_clean_pool()
    {
        int seed = Environment.TickCount;
        Console.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        using var p = new MemoryPool();
        p.Engine.PurgeBatchRecords = 8;
        p.Engine.StartPurger();
        Assert.Equal(0, (int)p.Live.Mkdir(1, "d", 0x1ED, 0, 0, out _));
        var inos = Enumerable.Range(0, 60).Select(i => CreateFile(p.Live, $"/d/f{i}")).ToList();
        for (int s = 0; s < 20; s++)
        {
            // Files 40..59 are rewritten at random; 0..19 unlinked one per snapshot, every third one.
            for (int k = 0; k < 10; k++) WriteAt(p.Live, inos[40 + rng.Next(20)], 4096L * rng.Next(4), Pattern(4096, s * 10 + k));
            if (s % 3 == 0) Assert.Equal(0, (int)p.Live.Unlink(Ino(p.Live, "/d"), $"f{s}"));
            Assert.Equal(0, (int)p.Engine.CreateSnapshot($"s{s}", out _));
        }
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(() =>
        {
            var r = new Random(seed + 1);
            for (int n = 0; !stop.IsCancellationRequested; n++)
            {
                long ino = CreateFile(p.Live, $"/w{n}");
                WriteAt(p.Live, ino, 0, Pattern(4096, n));
                if (n % 2 == 1) Assert.Equal(0, (int)p.Live.Unlink(1, $"w{n - 1}"));
            }
        });
        foreach (var s in Enumerable.Range(0, 20).OrderBy(_ => rng.Next()))
            Assert.Equal(0, (int)p.Engine.DeleteSnapshot($"s{s}"));
        stop.Cancel();
        await writer;
        Assert.True(p.Engine.WaitForPurges(TimeSpan.FromSeconds(60)));
        Assert.Empty(p.Engine.PoolState.Purges);
        p.AssertClean();
        p.Reopen();
        p.AssertClean();
    }

    [Fact]
    public void The_pool_documents_purges_round_trip_and_malformed_ones_are_refused()
    {
        var pool = new PoolRecord { PoolUuid = Guid.NewGuid(), BlockSize = 4096 };
        Assert.False(pool.ToBson().ContainsKey("purges"));   // absent when none
        pool.Purges.Add(new PendingPurge(7, 5, 10));
        pool.Purges.Add(new PendingPurge(3, 0, 5));
        Assert.Equal(pool.Purges, PoolBson.FromBson(pool.ToBson()).Purges);
        Assert.NotSame(pool.Purges, pool.Clone().Purges);

        var d = pool.ToBson();
        d["purges"] = new LiteDB.BsonArray(new LiteDB.BsonValue[] { new LiteDB.BsonDocument { ["gen"] = 5, ["prev"] = 7, ["next"] = 10 } });
        Assert.Contains("prev < gen < next", Assert.Throws<InvalidDataException>(() => PoolBson.FromBson(d)).Message);
        d["purges"] = 1;
        Assert.Throws<InvalidDataException>(() => PoolBson.FromBson(d));
    }

    [Fact]
    public void Fsck_takes_versions_a_pending_purge_covers_for_no_leak()
    {
        long[] views = [5, 10];   // a snapshot at 5, the live tree at 10
        var f = new FsckViews.Facts();
        f.Dirents.Add(new FsckViews.DirentFact(1, 1, 2, 6, 8, 0, 0, "seen by no view"));
        var leak = new FsckReport();
        FsckViews.CheckVersions(f, leak, views, 10, []);
        Assert.Contains(leak.Problems, x => x.Message.Contains("seen by no snapshot"));

        var pending = new FsckReport();
        FsckViews.CheckVersions(f, pending, views, 10, [new PendingPurge(7, 5, 10)]);
        Assert.True(pending.Clean, pending.ToString());

        var other = new FsckReport();   // a purge whose range does not hold it
        FsckViews.CheckVersions(f, other, views, 10, [new PendingPurge(9, 5, 10)]);
        Assert.False(other.Clean);
    }
}
