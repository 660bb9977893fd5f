using System.Diagnostics;
using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>Scrub on memory pools: a clean pool scrubs clean and every referenced block is checked once (what fsck
/// verifies); a damaged block is reported by device block, inode, offset and path in the live tree and in each
/// snapshot that sees it; scrubbing while writes, commits, snapshots and the cleaner run finds no false damage;
/// the rate limit holds; one scrub at a time, cancelled by the caller or by closing the pool.</summary>
[Trait("Tier", "engine")]
public class ScrubTests(ITestOutputHelper output)
{
    private const int Mi = 1 << 20;
    private static readonly ScrubSettings Unlimited = new() { RateBytesPerSecond = 0 };

    /// <summary>The device and block that file block <paramref name="fileBlock"/> of <paramref name="ino"/> is, as <paramref name="fs"/> sees it.</summary>
    private static (uint Device, long Block) BlockOf(FileSystemView fs, long ino, long fileBlock, int blockSize = 4096)
    {
        Assert.Equal(0, (int)fs.IomapBegin(ino, fileBlock * blockSize, blockSize, IomapOp.None, out var m));
        Assert.Equal(MappingType.Mapped, m.Read.Type);
        return (m.Read.Device, (long)m.Read.Address / blockSize);
    }

    /// <summary>Flips a byte of a device block, behind the pool's back (the memory device itself).</summary>
    private static void Corrupt(MemoryPool p, (uint Device, long Block) at, int blockSize = 4096)
    {
        var dev = at.Device == FormatConstants.LogCookie ? p.LogMem : p.BaseMem;
        var block = new byte[blockSize];
        dev.Read(at.Block * blockSize, block);
        block[123] ^= 0x5A;
        dev.Write(at.Block * blockSize, block);
    }

    [Fact]
    public void A_clean_pool_scrubs_clean_and_checks_every_referenced_block_once()
    {
        // Live data, data only snapshots hold, a range clone sharing blocks, data moved to the base device.
        using var p = LogCleanerTests.AgedPool();
        p.Engine.CleanLog(untilFreePercent: 60);
        var fs = p.Live;
        long e = CreateFile(fs, "/after-clean");
        WriteAt(fs, e, 0, Pattern(Mi + 100, 7));   // not fsynced: the scrub commits first
        var report = p.Pool.Scrub(Unlimited);
        output.WriteLine($"{report.BlocksChecked} blocks in {report.Seconds:0.000} s: {report.Stop}");
        Assert.Equal("complete", report.Stop);
        Assert.True(report.Clean, string.Join("\n", report.Damaged));
        Assert.Empty(report.Damaged);
        var fsck = p.Pool.Fsck();
        Assert.True(fsck.Clean, fsck.ToString());
        Assert.Equal(fsck.VerifiedBlocks, report.BlocksChecked);
        Assert.Equal(report.BlocksChecked * 4096, report.BytesChecked);
        Assert.True(p.Engine.DeviceUsage().All(u => u.UsedBlocks > 0), "blocks on both devices");
    }

    [Theory]
    [InlineData(16384)]
    [InlineData(65536)]
    public void Larger_blocks_are_checked_whole(int blockSize)
    {
        using var p = new MemoryPool(blockSize: blockSize);
        var fs = p.Live;
        long f = CreateFile(fs, "/f");
        WriteAt(fs, f, 0, Pattern(3 * blockSize + 5, 1));
        var clean = p.Pool.Scrub(Unlimited);
        Assert.True(clean.Clean);
        Assert.Equal(4, clean.BlocksChecked);
        Assert.Equal(p.Pool.Fsck().VerifiedBlocks, clean.BlocksChecked);
        Corrupt(p, BlockOf(fs, f, 3, blockSize), blockSize);
        var bad = p.Pool.Scrub(Unlimited);
        var d = Assert.Single(bad.Damaged);
        Assert.Equal(3L * blockSize, d.Offset);
        Assert.Equal("/f", d.PathsText);
    }

    [Fact]
    public void A_damaged_block_shared_with_snapshots_and_a_clone_is_named_in_every_view_that_sees_it()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        Assert.Equal(0, (int)fs.Mkdir(1, "dir", 0x1ED, 0, 0, out var dir));
        long f = CreateFile(fs, "/dir/f.txt");
        WriteAt(fs, f, 0, Pattern(4 * 4096, 1));
        long old = CreateFile(fs, "/old.txt");
        WriteAt(fs, old, 0, Pattern(2 * 4096, 2));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("monday", out _));
        Assert.Equal(0, (int)fs.Rename(dir.Ino, "f.txt", dir.Ino, "g.txt"));
        long clone = CreateFile(fs, "/clone.txt");
        Assert.Equal(0, (int)fs.CopyFileRange(f, 0, clone, 0, 4 * 4096, out _));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("tuesday", out _));
        WriteAt(fs, old, 0, Pattern(4096, 3));   // block 0 of old.txt now only in the snapshots
        Assert.Equal(0, (int)fs.Fsync(old));

        var shared = BlockOf(fs, f, 2);
        Assert.Equal(shared, BlockOf(fs, clone, 2));
        var snapOnly = BlockOf(p.Pool.Snapshot("tuesday")!, old, 0);
        Corrupt(p, shared);
        Corrupt(p, snapOnly);

        var report = p.Pool.Scrub(Unlimited);
        foreach (var d in report.Damaged) output.WriteLine(d.ToString());
        Assert.Equal("complete", report.Stop);
        Assert.Equal(2, report.DamagedBlocks);
        Assert.Equal(3, report.Damaged.Count);   // the shared block is two files' offset 8192

        var inF = report.Damaged.Single(d => d.Ino == f);
        Assert.Equal((shared.Device, shared.Block, 8192L), (inF.Device, inF.Block, inF.Offset));
        Assert.Equal("checksum mismatch", inF.Problem);
        Assert.Equal(new[] { new ScrubPath(null, "/dir/g.txt"), new ScrubPath("tuesday", "/dir/g.txt"), new ScrubPath("monday", "/dir/f.txt") }, inF.Paths);
        Assert.Equal("/dir/g.txt; snapshot tuesday: /dir/g.txt; snapshot monday: /dir/f.txt", inF.PathsText);
        var inClone = report.Damaged.Single(d => d.Ino == clone);
        Assert.Equal((shared.Block, 8192L), (inClone.Block, inClone.Offset));
        Assert.Equal("/clone.txt; snapshot tuesday: /clone.txt", inClone.PathsText);
        var inOld = report.Damaged.Single(d => d.Ino == old);
        Assert.Equal((snapOnly.Device, snapOnly.Block, 0L), (inOld.Device, inOld.Block, inOld.Offset));
        Assert.Equal("not in the live tree; snapshot tuesday: /old.txt; snapshot monday: /old.txt", inOld.PathsText);

        // fsck finds the same blocks.
        var fsck = p.Pool.Fsck().Problems.Where(x => x.Kind == "checksum").Select(x => (x.Device, x.Block)).Distinct().Order();
        Assert.Equal(report.Damaged.Select(d => (d.Device, d.Block)).Distinct().Order(), fsck);
    }

    [Fact]
    public void An_unreadable_device_reports_every_block_on_it_as_a_read_error()
    {
        using var p = new MemoryPool(faulty: true);
        var fs = p.Live;
        long f = CreateFile(fs, "/f");
        WriteAt(fs, f, 0, Pattern(5 * 4096, 1));
        Assert.Equal(0, (int)fs.Fsync(f));
        p.LogFault!.FailReads(true);
        var report = p.Pool.Scrub(Unlimited);
        p.LogFault.FailReads(false);
        Assert.Equal("complete", report.Stop);
        Assert.Equal(5, report.DamagedBlocks);
        Assert.All(report.Damaged, d => Assert.StartsWith("read error: ", d.Problem));
        Assert.Equal(new long[] { 0, 4096, 8192, 12288, 16384 }, report.Damaged.Select(d => d.Offset));
        Assert.True(p.Pool.Scrub(Unlimited).Clean);
    }

    [Fact]
    public void Blocks_released_and_rewritten_while_a_segment_is_loaded_make_the_scrub_read_it_again()
    {
        // A log of one segment, full: once f's blocks are freed, the next write reuses them.
        using var p = new MemoryPool(logSize: 1024 * 4096);
        p.Engine.CommitInterval = TimeSpan.Zero;
        var fs = p.Live;
        long f = CreateFile(fs, "/f"), filler = CreateFile(fs, "/filler");
        WriteAt(fs, f, 0, Pattern(64 * 4096, 1));
        WriteAt(fs, filler, 0, Pattern(959 * 4096, 2));
        Assert.Equal(0, (int)fs.Fsync(f));
        var old = BlockOf(fs, f, 0);
        Assert.Equal(FormatConstants.LogCookie, old.Device);
        int calls = 0;
        p.Engine.ScrubAfterLoadHook = () =>
        {
            if (Interlocked.Increment(ref calls) != 1) return;
            // The mappings just loaded go stale: f is overwritten (onto the base device: the log is full), the commit
            // releases its old blocks, and g is written over them.
            WriteAt(fs, f, 0, Pattern(64 * 4096, 3));
            Assert.Equal(0, (int)fs.Fsync(f));
            long g = CreateFile(fs, "/g");
            WriteAt(fs, g, 0, Pattern(64 * 4096, 4));
            Assert.Equal(old, BlockOf(fs, g, 0));
        };
        var report = p.Pool.Scrub(Unlimited);
        Assert.True(report.Clean, string.Join("\n", report.Damaged));
        Assert.Equal(1, p.Engine.ScrubRedone);
        // The log's committed blocks: the filler. g is not committed yet, and f's new blocks are on a device already scrubbed.
        Assert.Equal(959, report.BlocksChecked);
        Assert.True(p.Pool.Scrub(Unlimited).Clean);
        Assert.Equal(Pattern(64 * 4096, 3), ReadAll(fs, f));
    }

    [Fact]
    public async Task Scrubbing_while_writes_snapshots_and_the_cleaner_run_finds_no_false_damage()
    {
        int seed = Environment.TickCount;
        output.WriteLine($"seed {seed}");
        // A small log: overwritten blocks are freed and handed out again (rewritten) all the time.
        using var p = new MemoryPool(baseSize: 64L << 20, logSize: 12L << 20);
        // Commits come from the writers' fsyncs, the snapshots, the cleaner and each scrub's own. (No fast timer: each
        // tick is a thread-pool callback that blocks on the commit lock, and a commit needs a pool thread for LiteDB's
        // writer.) The workers run on threads of their own for the same reason.
        p.Engine.CommitInterval = TimeSpan.Zero;
        var fs = p.Live;
        const int files = 6, fileBlocks = 96;
        var inos = Enumerable.Range(0, files).Select(i => CreateFile(fs, $"/f{i}")).ToArray();
        foreach (var ino in inos) WriteAt(fs, ino, 0, Pattern(fileBlocks * 4096, (int)ino));
        Assert.Equal(0, (int)fs.Fsync(1));
        using var stop = new CancellationTokenSource();
        var errors = new List<string>();
        Task Worker(Action body) => Task.Factory.StartNew(body, TaskCreationOptions.LongRunning);
        var writers = Enumerable.Range(0, 3).Select(w => Worker(() =>
        {
            var rnd = new Random(seed + w);
            int n = 0;
            while (!stop.IsCancellationRequested)
            {
                long ino = inos[rnd.Next(files)];
                int at = rnd.Next(fileBlocks), len = 1 + rnd.Next(Math.Min(16, fileBlocks - at));
                if (fs.Write(ino, (long)at * 4096, Pattern(len * 4096, rnd.Next()), out _) != 0) { lock (errors) errors.Add("write failed"); }
                if (++n % 7 == 0) fs.Fsync(ino);
            }
        })).ToList();
        var snapshots = Worker(() =>
        {
            var rnd = new Random(seed + 100);
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                p.Engine.CreateSnapshot($"s{i}", out _);
                if (i >= 2) p.Engine.DeleteSnapshot($"s{i - 2}");
                Thread.Sleep(rnd.Next(5, 30));
            }
        });
        var cleaner = Worker(() =>
        {
            while (!stop.IsCancellationRequested) { p.Engine.CleanLog(untilFreePercent: 70, stop.Token); Thread.Sleep(10); }
        });
        var reports = new List<ScrubReport>();
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(4) || reports.Count < 5) reports.Add(p.Pool.Scrub(Unlimited));
        stop.Cancel();
        await Task.WhenAll([.. writers, snapshots, cleaner]);
        output.WriteLine($"{reports.Count} scrubs, {reports.Sum(r => r.BlocksChecked)} blocks checked, {p.Engine.ScrubRedone} segments read again");
        Assert.Empty(errors);
        foreach (var r in reports)
        {
            Assert.Equal("complete", r.Stop);
            Assert.True(r.Clean, $"seed {seed}: false damage:\n" + string.Join("\n", r.Damaged));
        }
        var last = p.Pool.Scrub(Unlimited);
        Assert.True(last.Clean);
        var fsck = p.Pool.Fsck();
        Assert.True(fsck.Clean, $"seed {seed}: {fsck}");
        Assert.Equal(fsck.VerifiedBlocks, last.BlocksChecked);
    }

    [Fact]
    public void The_rate_limit_bounds_how_fast_a_pass_reads()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        for (int i = 0; i < 4; i++) WriteAt(fs, CreateFile(fs, $"/f{i}"), 0, Pattern(2 * Mi, i));
        const long rate = 16L << 20;
        var report = p.Pool.Scrub(new ScrubSettings { RateBytesPerSecond = rate });
        double least = (double)report.BytesChecked / rate;
        output.WriteLine($"{report.BytesChecked} bytes in {report.Seconds:0.000} s at most {rate} bytes/s: at least {least:0.000} s");
        Assert.True(report.BytesChecked >= 8 * Mi);
        Assert.True(report.Seconds >= 0.9 * least, $"{report.BytesChecked} bytes in {report.Seconds:0.000} s, faster than {rate} bytes/s");
    }

    [Fact]
    public async Task One_scrub_at_a_time_cancelled_by_the_caller_or_by_closing_the_pool()
    {
        var p = new MemoryPool();
        try
        {
            var fs = p.Live;
            WriteAt(fs, CreateFile(fs, "/f"), 0, Pattern(8 * Mi, 1));
            var slow = new ScrubSettings { RateBytesPerSecond = 1 << 20 };   // 8 s for the whole pass
            int progressed = 0;
            var first = Task.Run(() => p.Pool.Scrub(slow, _ => Interlocked.Increment(ref progressed)));
            SpinWait.SpinUntil(() => Volatile.Read(ref progressed) > 0, TimeSpan.FromSeconds(30));
            Assert.Equal("busy", p.Pool.Scrub(Unlimited).Stop);
            Assert.True(p.Pool.CancelScrub());
            var cancelled = await first;
            Assert.Equal("cancelled", cancelled.Stop);
            Assert.InRange(cancelled.BlocksChecked, 1, 2047);
            Assert.False(p.Pool.CancelScrub());

            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
            Assert.Equal("cancelled", p.Pool.Scrub(slow, null, cts.Token).Stop);

            progressed = 0;
            var second = Task.Run(() => p.Pool.Scrub(slow, _ => Interlocked.Increment(ref progressed)));
            SpinWait.SpinUntil(() => Volatile.Read(ref progressed) > 0, TimeSpan.FromSeconds(30));
            p.Pool.Dispose();   // waits for the scrub
            Assert.True(second.IsCompleted);
            Assert.Equal("closed", (await second).Stop);
            Assert.Throws<ObjectDisposedException>(() => p.Pool.Scrub(Unlimited));
        }
        finally { p.Dispose(); }
    }
}
