using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>Several processes' worth of threads on one file of a real mount: writers of disjoint regions,
/// readers of everything, and snapshots taken meanwhile. Checks that no read sees a torn or foreign block,
/// that the final bytes are the last ones written, and that snapshots hold whole writes.</summary>
[Trait("Tier", "mount")]
public sealed class ConcurrentMountTests
{
    private const int Block = 4096, Writers = 4, RegionBlocks = 64, Rounds = 60, ODirect = 0x4000;

    /// <remarks>Default mount only: there every open of a live file is direct I/O, so every read and write
    /// reaches the server, which applies a write to whole blocks at once. With the writeback cache the
    /// writers' pages live in the kernel and reach the server later, so nothing here would test Cow
    /// (and Linux promises no atomicity between page-cache writes and O_DIRECT reads).</remarks>
    [SkippableFact]
    public void Readers_and_writers_of_one_file_see_whole_blocks()
    {
        using var m = new MountedPool();
        var path = m.P("shared.bin");
        File.WriteAllBytes(path, new byte[Writers * RegionBlocks * Block]);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        int writersLeft = Writers;
        var threads = new List<Thread>();
        for (int w = 0; w < Writers; w++)
        {
            int id = w;
            threads.Add(new Thread(() =>
            {
                try
                {
                    using var fd = Fd.Open(path, Native.O_RDWR);
                    var buf = new byte[RegionBlocks * Block];
                    for (int round = 1; round <= Rounds; round++)
                    {
                        // Every block of writer id in round r holds the byte (r * Writers + id) % 251 + 1.
                        Array.Fill(buf, Value(id, round));
                        fd.WriteAt((long)id * RegionBlocks * Block, buf);
                    }
                }
                catch (Exception e) { failures.Enqueue($"writer {id}: {e.Message}"); }
                finally { Interlocked.Decrement(ref writersLeft); }
            }));
        }
        for (int r = 0; r < 3; r++)
        {
            int seed = r;
            threads.Add(new Thread(() =>
            {
                try
                {
                    var rnd = new Random(seed);
                    // O_DIRECT: every read reaches the server (a page-cache read may legitimately race a
                    // buffered write inside one page, on any Linux filesystem).
                    using var fd = Fd.Open(path, Native.O_RDONLY | ODirect);
                    while (Volatile.Read(ref writersLeft) > 0)
                    {
                        long first = rnd.Next(0, Writers * RegionBlocks - 8);
                        var buf = fd.ReadAt(first * Block, 8 * Block);
                        int n = buf.Length;
                        for (int b = 0; b < n / Block; b++)
                        {
                            var span = buf.AsSpan(b * Block, Block);
                            byte v = span[0];
                            int owner = (int)((first + b) / RegionBlocks);
                            if (span.IndexOfAnyExcept(v) >= 0) { failures.Enqueue($"torn block {first + b}"); return; }
                            if (v != 0 && !Enumerable.Range(1, Rounds).Any(round => Value(owner, round) == v))
                            { failures.Enqueue($"block {first + b} holds {v}, which writer {owner} never wrote"); return; }
                        }
                    }
                }
                catch (Exception e) { failures.Enqueue($"reader: {e.Message}"); }
            }));
        }
        foreach (var t in threads) t.Start();
        // Snapshots while the writers run: each must hold, per block, something some round wrote.
        for (int s = 0; s < 3 && Volatile.Read(ref writersLeft) > 0; s++)
            Assert.Equal(0, Syscall.mkdir(m.P($".snapshots/c{s}"), FilePermissions.ACCESSPERMS));
        foreach (var t in threads) Assert.True(t.Join(120_000), "a thread hung");
        Assert.True(failures.IsEmpty, string.Join("; ", failures));
        var final = File.ReadAllBytes(path);
        for (int w = 0; w < Writers; w++)
            Assert.True(final.AsSpan(w * RegionBlocks * Block, RegionBlocks * Block).IndexOfAnyExcept(Value(w, Rounds)) < 0, $"region {w} is not its last write");
        foreach (var dir in Directory.EnumerateDirectories(m.P(".snapshots")))
        {
            var snap = File.ReadAllBytes(Path.Combine(dir, "shared.bin"));
            for (int b = 0; b < snap.Length / Block; b++)
            {
                var span = snap.AsSpan(b * Block, Block);
                Assert.True(span.IndexOfAnyExcept(span[0]) < 0, $"torn block {b} in snapshot {dir}");
            }
        }
        m.UnmountNow();
        using var pool = Cow.Core.Pool.Open(m.PoolDir);
        var report = pool.Fsck();
        Assert.True(report.Clean, report.ToString());
    }

    private static byte Value(int writer, int round) => (byte)((round * Writers + writer) % 251 + 1);
}
