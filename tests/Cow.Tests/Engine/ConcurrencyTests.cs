using Cow.Core.FileSystem;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>The engine's threading contract under load: writers on their own files and on disjoint
/// blocks of one shared file, readers, snapshot create/delete and commits, all at once; then every byte
/// is compared with what each writer knows it wrote, and fsck must be clean.</summary>
[Trait("Tier", "engine")]
public class ConcurrencyTests
{
    [Fact]
    public async Task WritersReadersSnapshotsAndCommitsAtOnce()
    {
        using var p = new MemoryPool(logSize: 512 << 20);
        p.Engine.CommitEveryBlocks = 256; // background and inline commits happen throughout
        p.Engine.InodeCacheLimit = 4;     // and inodes are evicted and reloaded
        const int writers = 4, fileSize = 1 << 20, sharedBlocks = 64;
        long shared = CreateFile(p.Live, "/shared");
        var files = Enumerable.Range(0, writers).Select(i => CreateFile(p.Live, $"/w{i}")).ToArray();
        var models = Enumerable.Range(0, writers).Select(_ => new byte[fileSize]).ToArray();
        var sharedModel = new byte[sharedBlocks * 4096];
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var stop = new CancellationTokenSource();
        var deadline = DateTime.UtcNow.AddSeconds(4);

        var tasks = new List<Task>();
        for (int w = 0; w < writers; w++)
        {
            int id = w;
            tasks.Add(Task.Run(() =>
            {
                var rnd = new Random(100 + id);
                for (int op = 0; DateTime.UtcNow < deadline && op < 4000; op++)
                {
                    // Own file: any offset, any length.
                    int off = rnd.Next(fileSize - 1), len = rnd.Next(1, Math.Min(20000, fileSize - off));
                    var data = new byte[len]; rnd.NextBytes(data);
                    var e = p.Live.Write(files[id], off, data, out int n);
                    if (e != 0 || n != len) { errors.Enqueue($"writer {id}: write {len}@{off}: {e} n={n}"); return; }
                    lock (models[id]) data.CopyTo(models[id], off);
                    // Shared file: only this writer's blocks (block b belongs to writer b % writers).
                    int blk = rnd.Next(sharedBlocks / writers) * writers + id;
                    var bd = new byte[4096]; rnd.NextBytes(bd);
                    e = p.Live.Write(shared, (long)blk * 4096, bd, out n);
                    if (e != 0) { errors.Enqueue($"writer {id}: shared block {blk}: {e}"); return; }
                    lock (sharedModel) bd.CopyTo(sharedModel, blk * 4096);
                }
            }));
        }
        tasks.Add(Task.Run(() =>
        {
            var rnd = new Random(7); var buf = new byte[65536];
            while (DateTime.UtcNow < deadline)
            {
                var e = p.Live.Read(files[rnd.Next(writers)], rnd.Next(fileSize), buf, out _);
                if (e != 0) { errors.Enqueue($"reader: {e}"); return; }
            }
        }));
        tasks.Add(Task.Run(() =>
        {
            int n = 0;
            while (DateTime.UtcNow < deadline)
            {
                var e = p.Engine.CreateSnapshot($"s{n++}", out _);
                if (e != 0) { errors.Enqueue($"snapshot create: {e}"); return; }
                var snap = p.Pool.Snapshot($"s{n - 1}")!;
                var buf = new byte[4096];
                if (snap.Read(files[0], 0, buf, out _) is var re && re != 0) { errors.Enqueue($"snapshot read: {re}"); return; }
                if (n > 3 && p.Engine.DeleteSnapshot($"s{n - 3}") is var de && de != 0) { errors.Enqueue($"snapshot delete: {de}"); return; }
                if (p.Live.Fsync(shared) is var fe && fe != 0) { errors.Enqueue($"fsync: {fe}"); return; }
            }
        }));
        await Task.WhenAll(tasks);
        Assert.True(errors.IsEmpty, string.Join("\n", errors));
        for (int w = 0; w < writers; w++)
        {
            var got = ReadAll(p.Live, files[w]);
            Assert.True(models[w].AsSpan(0, got.Length).SequenceEqual(got), $"file w{w} differs from what its writer wrote");
        }
        var sharedGot = new byte[sharedModel.Length];
        Assert.Equal(0, (int)p.Live.Read(shared, 0, sharedGot, out _));
        Assert.Equal(sharedModel, sharedGot);
        p.AssertClean();
        p.Reopen();
        // The shared file ends at the highest block written, which under load need not be the last one.
        var sharedAfter = ReadAll(p.Live, Ino(p.Live, "/shared"));
        Assert.True(sharedAfter.Length <= sharedModel.Length, $"shared file grew to {sharedAfter.Length}");
        Assert.Equal(sharedModel.AsSpan(0, sharedAfter.Length).ToArray(), sharedAfter);
        Assert.True(sharedModel.AsSpan(sharedAfter.Length).IndexOfAnyExcept((byte)0) < 0, "bytes past the end of the reopened shared file were written");
        p.AssertClean();
    }

    /// <summary>A log device whose next data write, once armed, waits until released.</summary>
    private sealed class GatedDevice(Cow.Core.Devices.IBlockDevice inner) : Cow.Core.Devices.IBlockDevice
    {
        public readonly ManualResetEventSlim Entered = new(), Release = new();
        public volatile bool Armed;
        public string Name => inner.Name;
        public long Length => inner.Length;
        public void Read(long offset, Span<byte> buffer) => inner.Read(offset, buffer);
        public void Write(long offset, ReadOnlySpan<byte> data)
        {
            if (Armed && data.Length >= 4096) { Armed = false; Entered.Set(); Release.Wait(); }
            inner.Write(offset, data);
        }
        public void Flush() => inner.Flush();
        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public async Task ASnapshotWaitsForTheWritesInProgressWhenItIsTaken()
    {
        // With the FUSE writeback cache, syncfs hands the dirty pages to the server as WRITEs and returns
        // without waiting for them (Linux 6.18): the snapshot request can arrive while they are still being
        // written. The snapshot must contain them, as it contains every write that returned before it.
        var log = new GatedDevice(new Cow.Core.Devices.MemoryBlockDevice("log", 64 << 20));
        using var pool = Cow.Core.Pool.Create(new Cow.Core.PoolMedia(new Cow.Core.Devices.MemoryBlockDevice("base", 16 << 20), log,
            new Cow.Core.Devices.BlockDeviceStream(new Cow.Core.Devices.MemoryBlockDevice("meta", 1L << 30)),
            new Cow.Core.Devices.BlockDeviceStream(new Cow.Core.Devices.MemoryBlockDevice("meta-log", 1L << 30))), new Cow.Core.PoolCreateOptions());
        long ino = CreateFile(pool.Live, "/f");
        var data = Enumerable.Range(0, 8192).Select(i => (byte)(i * 7 + 1)).ToArray();
        // Twice: a second snapshot must wait as well (the barrier flips between two counts of writes in progress).
        foreach (var (name, at) in new[] { ("s", 0L), ("t", 8192L) })
        {
            log.Release.Reset(); log.Entered.Reset(); log.Armed = true;
            var write = Task.Run(() => pool.Live.Write(ino, at, data, out _));
            Assert.True(log.Entered.Wait(TimeSpan.FromSeconds(10)), "the write never reached the device");
            var snapshot = Task.Run(() => pool.Engine.CreateSnapshot(name, out _));
            await Task.Delay(300);
            Assert.False(snapshot.IsCompleted, $"snapshot {name} was taken while a write that began before it was still in progress");
            log.Release.Set();
            Assert.Equal(0, (int)await write);
            Assert.Equal(0, (int)await snapshot);
            var back = new byte[data.Length];
            Assert.Equal(0, (int)pool.Snapshot(name)!.Read(ino, at, back, out int n));
            Assert.Equal(data.Length, n);
            Assert.Equal(data, back);
        }
    }
}
