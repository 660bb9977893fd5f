using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>The log cleaner on memory pools: it moves live blocks off the log onto the base device, every view
/// (live tree, snapshots, clones) reads the same bytes before and after, fsck stays clean, log segments become
/// free, and a full log no longer means a full pool.</summary>
[Trait("Tier", "engine")]
public class LogCleanerTests(ITestOutputHelper output)
{
    private const int Mi = 1 << 20;

    /// <summary>A pool whose log holds live data in partly dead segments, shared by a snapshot and a clone.</summary>
    internal static MemoryPool AgedPool(long baseSize = 64L << 20, long logSize = 32L << 20, bool faulty = false)
    {
        var p = new MemoryPool(baseSize: baseSize, logSize: logSize, faulty: faulty);
        p.Engine.CommitInterval = TimeSpan.Zero;
        var fs = p.Live;
        long a = CreateFile(fs, "/a"), b = CreateFile(fs, "/b");
        WriteAt(fs, a, 0, Pattern(6 * Mi, 1));
        WriteAt(fs, b, 0, Pattern(3 * Mi + 1234, 2));
        Assert.Equal(0, (int)fs.Fsync(a));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s1", out _));
        // Overwrite half of a in scattered pieces: its old blocks stay live for s1.
        for (int i = 0; i < 24; i += 2) WriteAt(fs, a, (long)i * 256 * 1024, Pattern(256 * 1024, 10 + i));
        // A clone shares a's blocks; then b is partly overwritten and c written and deleted (dead space).
        long c = CreateFile(fs, "/a-clone");
        Assert.Equal(0, (int)fs.CopyFileRange(a, 0, c, 0, 6 * Mi, out _));
        WriteAt(fs, b, 4096, Pattern(2 * Mi, 3));
        long d = CreateFile(fs, "/dead");
        WriteAt(fs, d, 0, Pattern(5 * Mi, 4));
        Assert.Equal(0, (int)fs.Fsync(d));
        Assert.Equal(0, (int)fs.ResolveParent("/dead", out var root, out var name));
        Assert.Equal(0, (int)fs.Unlink(root, name));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s2", out _));
        WriteAt(fs, b, 3 * Mi, Pattern(100_000, 5));
        Assert.Equal(0, (int)fs.Fsync(b));
        return p;
    }

    /// <summary>Every file of the live tree and of every snapshot, with a hash of its bytes.</summary>
    internal static string Contents(MemoryPool p)
    {
        var lines = new List<string>();
        void Walk(FileSystemView fs, string label)
        {
            foreach (var path in new[] { "/a", "/b", "/a-clone" })
            {
                if (fs.Resolve(path, out var attr) != 0) { lines.Add($"{label}{path}: absent"); continue; }
                var bytes = ReadAll(fs, attr.Ino);
                lines.Add($"{label}{path}: {bytes.Length} {Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(bytes))[..16]}");
            }
        }
        Walk(p.Live, "live");
        foreach (var s in p.Pool.Snapshots.List()) Walk(p.Pool.Snapshot(s.Name)!, s.Name);
        return string.Join("\n", lines);
    }

    private static DeviceUsage Usage(MemoryPool p, uint cookie) => p.Engine.DeviceUsage().Single(u => u.Cookie == cookie);

    [Fact]
    public void A_pass_moves_live_blocks_to_the_base_device_and_every_view_reads_the_same()
    {
        using var p = AgedPool();
        string before = Contents(p);
        var log0 = Usage(p, FormatConstants.LogCookie);
        var base0 = Usage(p, FormatConstants.BaseCookie);
        var st0 = p.Live.StatFs();

        var pass = p.Engine.CleanLog(untilFreePercent: 100);
        output.WriteLine(pass.ToString());
        Assert.True(pass.BlocksMoved > 0, pass.ToString());
        Assert.True(pass.SegmentsCleaned > 0, pass.ToString());
        Assert.Equal("nothing to move", pass.Stop);

        var log1 = Usage(p, FormatConstants.LogCookie);
        var base1 = Usage(p, FormatConstants.BaseCookie);
        Assert.Equal(log0.UsedBlocks - pass.BlocksMoved, log1.UsedBlocks);
        Assert.Equal(base0.UsedBlocks + pass.BlocksMoved, base1.UsedBlocks);
        Assert.Equal(st0.FreeBlocks, p.Live.StatFs().FreeBlocks);   // moved, not copied: the pool's free space is the same
        Assert.Equal(before, Contents(p));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(before, Contents(p));
        p.AssertClean();
        var status = p.Engine.CleanerStatus();
        Assert.Equal(0, status.BlocksMoved);   // totals are per open
    }

    /// <summary>A build from before <c>segs</c> writes chunks without it and drops <c>chunk_segs</c> from the pool
    /// document: the next open gives every chunk its segs again, and the cleaner then moves their blocks too.
    /// fsck names a chunk whose segs is wrong.</summary>
    [Fact]
    public void Chunks_an_older_build_wrote_without_segs_get_them_at_open_and_fsck_checks_them()
    {
        using var p = AgedPool();
        string before = Contents(p);
        void EditMetadata(Action<LiteDB.ILiteCollection<LiteDB.BsonDocument>, LiteDB.ILiteCollection<LiteDB.BsonDocument>> edit)
        {
            using var db = new LiteDB.LiteDatabase(Cow.Core.Devices.BlockDeviceStream.Open(p.MetaMem), new LiteDB.BsonMapper(),
                Cow.Core.Devices.BlockDeviceStream.Open(p.MetaLogMem));
            edit(db.GetCollection("chunks"), db.GetCollection("pool"));
            db.Checkpoint();
        }
        p.ReopenAfter(() => EditMetadata((chunks, pool) =>
        {
            foreach (var d in chunks.FindAll().ToList()) { d.Remove("segs"); chunks.Update(d); }
            var pd = pool.FindById(1);
            pd.Remove("chunk_segs");
            pool.Update(pd);
        }));
        p.AssertClean();   // segs were filled in at open
        Assert.True(p.Engine.CleanLog(100).BlocksMoved > 0);
        Assert.Equal(before, Contents(p));
        p.AssertClean();
        // A wrong segs (not what an older build leaves: it keeps chunk_segs, so nothing fills it in) is found.
        p.ReopenAfter(() => EditMetadata((chunks, _) =>
        {
            var d = chunks.FindAll().First(x => x["map"].AsBinary.Length > 0);
            d["segs"] = new LiteDB.BsonArray(new LiteDB.BsonValue(12345L));
            chunks.Update(d);
        }));
        var report = p.Pool.Fsck();
        Assert.False(report.Clean);
        Assert.Contains("segs", report.ToString());
    }

    /// <summary>A write error on the base device while a batch copies: the pass stops and says so, the batch is
    /// undone (its room given back, nothing committed), the failure is reported, the pool keeps working and the
    /// next pass moves everything.</summary>
    [Fact]
    public void A_write_error_while_copying_undoes_the_batch_and_the_next_pass_succeeds()
    {
        using var p = AgedPool(faulty: true);
        var problems = new List<string>();
        p.Engine.Problem += m => { lock (problems) problems.Add(m); };
        string before = Contents(p);
        long baseUsed = Usage(p, FormatConstants.BaseCookie).UsedBlocks;
        p.BaseFault!.FailWriteNumber(3);
        var pass = p.Engine.CleanLog(100);
        Assert.StartsWith("failed: ", pass.Stop);
        Assert.Equal(0, pass.BlocksMoved);
        Assert.Equal(baseUsed, Usage(p, FormatConstants.BaseCookie).UsedBlocks);
        Assert.Contains(problems, m => m.Contains("log cleaner: a batch failed"));
        Assert.Equal(before, Contents(p));
        long f = CreateFile(p.Live, "/still-writable");
        WriteAt(p.Live, f, 0, Pattern(100_000, 6));
        Assert.Equal(0, (int)p.Live.Fsync(f));
        Assert.True(p.Engine.CleanLog(100).BlocksMoved > 0);
        Assert.Equal(before, Contents(p));
        p.AssertClean();
    }

    [Fact]
    public void Freed_log_blocks_are_reused_and_snapshots_read_through_their_new_place()
    {
        using var p = AgedPool();
        // Read a snapshot file first, so its tree caches the old mappings.
        var s1 = p.Pool.Snapshot("s1")!;
        long s1a = Ino(s1, "/a");
        var s1Bytes = ReadAll(s1, s1a);
        string before = Contents(p);
        p.Engine.CleanLog(100);
        // Fill the log with new data: the blocks the cleaner freed are handed out again.
        var fs = p.Live;
        long n = CreateFile(fs, "/new");
        long free = Usage(p, FormatConstants.LogCookie).FreeBlocks;
        var fresh = Pattern((int)Math.Min(free * 4096 - Mi, 24L * Mi), 77);
        WriteAt(fs, n, 0, fresh);
        Assert.Equal(0, (int)fs.Fsync(n));
        Assert.Equal(s1Bytes, ReadAll(s1, s1a));
        Assert.Equal(before, Contents(p));
        Assert.Equal(fresh, ReadAll(fs, n));
        p.AssertClean();
    }

    [Fact]
    public void Blocks_freed_while_they_are_copied_are_not_moved_and_nothing_is_lost()
    {
        using var p = AgedPool();
        var fs = p.Live;
        long b = Ino(fs, "/b");
        var patch = Pattern(2 * Mi, 55);
        bool fired = false;
        p.Engine.CleanerAfterCopyHook = () =>
        {
            if (fired) return;
            fired = true;
            // Between the copy and its commit, b's blocks are overwritten and the overwrite committed: their
            // old blocks are freed (and released) while the cleaner holds copies of them.
            WriteAt(fs, b, 0, patch);
            Assert.Equal(0, (int)fs.Fsync(b));
        };
        var pass = p.Engine.CleanLog(100);
        Assert.True(fired);
        output.WriteLine(pass.ToString());
        var expected = ReadAll(fs, b);
        Assert.Equal(patch, expected[..patch.Length]);
        p.AssertClean();
        p.Reopen();
        Assert.Equal(expected, ReadAll(p.Live, Ino(p.Live, "/b")));
        p.AssertClean();
    }

    [Fact]
    public void Mappings_of_moved_live_blocks_are_invalidated()
    {
        using var p = AgedPool();
        var listener = new RecordingListener();
        p.Engine.AddMappingListener(listener);
        long a = Ino(p.Live, "/a"), clone = Ino(p.Live, "/a-clone");
        p.Engine.CleanLog(100);
        lock (listener.Ranges)
        {
            Assert.Contains(listener.Ranges, r => r.Ino == a);
            Assert.Contains(listener.Ranges, r => r.Ino == clone);
        }
    }

    private sealed class RecordingListener : IMappingInvalidationListener
    {
        public readonly List<MappingRange> Ranges = new();

        public void MappingsInvalidated(ReadOnlySpan<MappingRange> ranges)
        {
            lock (Ranges) Ranges.AddRange(ranges.ToArray());
        }
    }

    [Fact]
    public void A_full_log_sends_new_writes_to_the_base_device_and_the_pool_fills_to_its_capacity()
    {
        const long baseSize = 48L << 20, logSize = 16L << 20;
        using var p = new MemoryPool(baseSize: baseSize, logSize: logSize);
        var st = p.Live.StatFs();
        long capacity = st.Blocks * 4096;
        var fs = p.Live;
        long written = 0;
        var chunk = Pattern(Mi, 9);
        for (int i = 0; ; i++)
        {
            long f = CreateFile(fs, $"/fill{i}");
            var e = fs.Write(f, 0, chunk, out int n);
            written += n;
            if (e != 0) { Assert.Equal(Mono.Unix.Native.Errno.ENOSPC, e); break; }
            Assert.Equal(0, (int)fs.Fsync(f));
        }
        output.WriteLine($"capacity {capacity >> 20} MiB (base {baseSize >> 20} + log {logSize >> 20} less the reserve), written {written >> 20} MiB before ENOSPC");
        long devicesLessReserve = (baseSize + logSize) - p.Engine.DeviceUsage().Sum(u => u.DataBlocks) / 100 * 4096;
        Assert.True(written >= 0.95 * devicesLessReserve, $"{written} < 0.95 × {devicesLessReserve}");
        var full = p.Live.StatFs();
        Assert.Equal(st.Blocks, full.Blocks);
        Assert.True(full.FreeBlocks * 4096 < Mi, $"free {full.FreeBlocks} blocks after ENOSPC");
        Assert.Equal(full.Blocks - full.FreeBlocks, full.UsedBlocks);
        p.AssertClean();
    }

    /// <summary>On a pool full to ENOSPC the cleaner still moves (into the reserve), and deleting a snapshot and
    /// files makes room for writes again.</summary>
    [Fact]
    public void On_a_full_pool_the_cleaner_moves_and_deletes_make_room()
    {
        using var p = new MemoryPool(baseSize: 24L << 20, logSize: 16L << 20);
        var fs = p.Live;
        long keep = CreateFile(fs, "/keep");
        WriteAt(fs, keep, 0, Pattern(6 * Mi, 1));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        WriteAt(fs, keep, 0, Pattern(6 * Mi, 2));   // s alone holds the first 6 MiB now
        var chunk = Pattern(Mi, 3);
        Mono.Unix.Native.Errno e = 0;
        for (int i = 0; e == 0; i++)
        {
            long f = CreateFile(fs, $"/fill{i}");
            e = fs.Write(f, 0, chunk, out _);
        }
        Assert.Equal(Mono.Unix.Native.Errno.ENOSPC, e);
        Assert.Equal(0, (int)fs.Fsync(fs.RootIno));
        string before = Contents(p);
        var pass = p.Engine.CleanLog(100);
        output.WriteLine(pass.ToString());
        Assert.True(pass.BlocksMoved > 0, pass.ToString());
        Assert.Equal(before, Contents(p));
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("s"));
        Assert.Equal(0, (int)fs.Unlink(fs.RootIno, "fill0"));
        long n = CreateFile(fs, "/after");
        WriteAt(fs, n, 0, Pattern(4 * Mi, 4));
        Assert.Equal(0, (int)fs.Fsync(n));
        p.AssertClean();
    }

    [Fact]
    public void Writes_and_snapshots_while_the_background_cleaner_runs_lose_nothing()
    {
        int seed = Environment.GetEnvironmentVariable("COW_SEED") is { } s ? int.Parse(s) : Random.Shared.Next();
        output.WriteLine($"seed {seed} (rerun with COW_SEED={seed})");
        var rng = new Random(seed);
        using var p = new MemoryPool(baseSize: 96L << 20, logSize: 24L << 20);
        p.Engine.StartCleaner(new CleanerSettings { StartBelowFreePercent = 60, StopAtFreePercent = 80, Share = 1, Poll = TimeSpan.FromMilliseconds(5) });
        var fs = p.Live;
        var model = new Dictionary<string, byte[]>();
        for (int f = 0; f < 4; f++)
        {
            model[$"/f{f}"] = new byte[4 * Mi];
            long ino = CreateFile(fs, $"/f{f}");
            WriteAt(fs, ino, 0, model[$"/f{f}"]);
        }
        var snapshots = new Dictionary<string, Dictionary<string, byte[]>>();
        for (int round = 0; round < 150; round++)
        {
            string path = $"/f{rng.Next(4)}";
            int len = rng.Next(1, 64) * 4096 - rng.Next(2) * 100, off = rng.Next(4 * Mi - len);
            var data = Pattern(len, rng.Next());
            WriteAt(fs, Ino(fs, path), off, data);
            data.CopyTo(model[path], off);
            if (round % 25 == 24)
            {
                Assert.Equal(0, (int)p.Engine.CreateSnapshot($"r{round}", out _));
                snapshots[$"r{round}"] = model.ToDictionary(kv => kv.Key, kv => (byte[])kv.Value.Clone());
                if (snapshots.Count > 3)
                {
                    var oldest = snapshots.Keys.First();
                    Assert.Equal(0, (int)p.Engine.DeleteSnapshot(oldest));
                    snapshots.Remove(oldest);
                }
            }
            if (round % 10 == 0) Assert.Equal(0, (int)fs.Fsync(fs.RootIno));
        }
        p.Engine.StopCleaner();
        var status = p.Engine.CleanerStatus();
        output.WriteLine(status.ToString());
        Assert.True(status.BlocksMoved > 0, "the background cleaner moved nothing: the test proves nothing");
        foreach (var (path, bytes) in model) Assert.Equal(bytes, ReadAll(fs, Ino(fs, path)));
        foreach (var (name, files) in snapshots)
            foreach (var (path, bytes) in files) Assert.Equal(bytes, ReadAll(p.Pool.Snapshot(name)!, Ino(p.Pool.Snapshot(name)!, path)));
        p.AssertClean();
        p.Reopen();
        foreach (var (path, bytes) in model) Assert.Equal(bytes, ReadAll(p.Live, Ino(p.Live, path)));
        p.AssertClean();
    }
}
