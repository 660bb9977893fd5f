using Cow.Core.Devices;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Devices;

/// <summary>
/// The O_DIRECT write-behind of <see cref="FileBlockDevice"/> (DirectWriteBehind) on real image files: every read
/// sees every write made before it, a flush puts every write in the file, unaligned writes are ordered after the
/// aligned writes they overlap, a failed write is retried and otherwise reported by the next flush, and a flush
/// does not wait for writes made after it began.
/// </summary>
[Trait("Tier", "unit")]
public sealed class DirectWriteBehindTests() : VarTmpImages("cow-wb-tests-")
{
    private FileBlockDevice NewDevice(long size = 64L * MiB)
    {
        var dev = FileBlockDevice.Create(Path.Combine(Dir, "d.img"), size);
        Assert.True(dev.WritesBehindDirect, "O_DIRECT refused on /var/tmp: the write-behind cannot be tested here");
        return dev;
    }

    /// <summary>The image file's bytes, read past the device object (what a remount would find).</summary>
    private static byte[] FileBytes(FileBlockDevice dev)
    {
        using var fs = new FileStream(dev.Name, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var bytes = new byte[fs.Length];
        fs.ReadExactly(bytes);
        return bytes;
    }

    [Fact]
    public void ConcurrentWritersReadBackWhatTheyWroteAndAFlushPutsItInTheFile()
    {
        int seed = Environment.GetEnvironmentVariable("COW_SEED") is { } s ? int.Parse(s) : Random.Shared.Next();
        const int threads = 3;
        const long region = 16L * MiB;
        using var dev = NewDevice(threads * region);
        var model = new byte[threads * region];
        Parallel.For(0, threads, t =>
        {
            var rng = new Random(seed + t);
            long baseOff = t * region;
            for (int i = 0; i < 300; i++)
            {
                int blocks = rng.Next(1, rng.Next(2) == 0 ? 8 : 520);   // up to 2 MiB + a bit: several buffers
                long off = baseOff + rng.NextInt64(0, region / 4096 - blocks) * 4096;
                var data = DeviceTestUtil.Pattern(blocks * 4096, rng.Next());
                dev.Write(off, data);
                data.CopyTo(model, off);
                // Read back a range around it at once: the write may still be in flight.
                long from = Math.Max(baseOff, off - rng.Next(0, 3) * 4096L);
                int len = (int)Math.Min(baseOff + region - from, data.Length + 8192);
                var back = DeviceTestUtil.ReadAll(dev, from, len);
                Assert.True(model.AsSpan((int)from, len).SequenceEqual(back), $"seed {seed}: read at {from} (+{len}) after write at {off} differs");
            }
        });
        Assert.True(dev.WritesBehind > 100, $"seed {seed}: only {dev.WritesBehind} writes were written behind");
        dev.Flush();
        Assert.True(model.AsSpan().SequenceEqual(FileBytes(dev)), $"seed {seed}: the file differs from what was written after the flush");
    }

    [Fact]
    public void AnUnalignedWriteLandsAfterTheAlignedWriteItOverlaps()
    {
        using var dev = NewDevice();
        var model = new byte[64 * MiB];
        for (int i = 0; i < 40; i++)
        {
            var big = DeviceTestUtil.Pattern(MiB, i);
            long off = (long)i * MiB + (i % 3) * 4096L;
            dev.Write(off, big);
            big.CopyTo(model, off);
            var small = DeviceTestUtil.Pattern(100 + i, 1000 + i);
            long smallOff = off + 4096L * i + 17;
            dev.Write(smallOff, small);
            small.CopyTo(model, smallOff);
        }
        Assert.True(model.AsSpan().SequenceEqual(DeviceTestUtil.ReadAll(dev, 0, 64 * MiB)), "read through the device differs");
        dev.Flush();
        Assert.True(model.AsSpan().SequenceEqual(FileBytes(dev)), "the file differs after the flush");
    }

    [Fact]
    public void ASequentialReaderSeesBytesWrittenBehindInsideItsReadAheadWindow()
    {
        using var dev = NewDevice();
        var model = DeviceTestUtil.Pattern(64 * MiB, 3);
        dev.Write(0, model);
        dev.Flush();
        var buf = new byte[256 << 10];
        for (long off = 0; off < 8L * MiB; off += buf.Length) dev.Read(off, buf);
        Assert.True(dev.ReadAheadHits > 0);
        for (int round = 0; round < 4; round++)
        {
            // Read-ahead holds the chunks ahead of the reader: overwrite one megabyte of them, then read on.
            long at = (10L + 12 * round) * MiB;
            var fresh = DeviceTestUtil.Pattern(MiB, 100 + round);
            dev.Write(at, fresh);
            fresh.CopyTo(model, at);
            for (long off = 8L * MiB + 12L * MiB * round; off < Math.Min(64L * MiB, 20L * MiB + 12L * MiB * round); off += buf.Length)
            {
                dev.Read(off, buf);
                Assert.True(model.AsSpan((int)off, buf.Length).SequenceEqual(buf), $"stale bytes in the read at {off}");
            }
        }
    }

    [Fact]
    public void AFailedDirectWriteIsRetriedThroughTheFallback()
    {
        string path = Path.Combine(Dir, "ro.img");
        File.WriteAllBytes(path, new byte[4 * MiB]);
        int fd = Syscall.open(path, OpenFlags.O_RDONLY);   // every pwrite on it fails (EBADF)
        Assert.True(fd >= 0);
        using var fallback = new MemoryBlockDevice("fallback", 4 * MiB);
        var landed = new List<long>();
        using var wb = DirectWriteBehind.OverDescriptor(fd, path, fallback.Write, (o, _) => { lock (landed) landed.Add(o); });
        var data = DeviceTestUtil.Pattern(2 * MiB, 9);
        Assert.True(wb.TryWrite(MiB, data));
        wb.Drain();
        Assert.True(data.AsSpan().SequenceEqual(DeviceTestUtil.ReadAll(fallback, MiB, 2 * MiB)));
        lock (landed) Assert.Equal(new long[] { MiB, 2L * MiB }, landed.Order().ToArray());
    }

    [Fact]
    public void AWriteThatFailsTwiceIsReportedByTheNextDrainOnly()
    {
        string path = Path.Combine(Dir, "ro.img");
        File.WriteAllBytes(path, new byte[4 * MiB]);
        int fd = Syscall.open(path, OpenFlags.O_RDONLY);
        Assert.True(fd >= 0);
        using var wb = DirectWriteBehind.OverDescriptor(fd, path,
            (o, d) => throw new IOException($"device {path}: write of {d.Length} bytes at offset {o} failed: injected"), (_, _) => { });
        Assert.True(wb.TryWrite(8192, new byte[DirectWriteBehind.MinBytes]));
        var e = Assert.Throws<IOException>(wb.Drain);
        Assert.Contains("at offset 8192", e.Message);
        wb.Drain();   // reported once, as the kernel reports a failed write-back at one fsync
        Assert.False(wb.TryWrite(100, new byte[DirectWriteBehind.MinBytes]), "an unaligned write must be left to the caller");
        Assert.False(wb.TryWrite(0, new byte[DirectWriteBehind.MinBytes - 4096]), "a small write must be left to the caller");
    }

    [Fact]
    public async Task ADrainDoesNotWaitForWritesQueuedAfterItBegan()
    {
        string path = Path.Combine(Dir, "d.img");
        File.WriteAllBytes(path, new byte[4 * MiB]);
        int fd = Syscall.open(path, OpenFlags.O_WRONLY | OpenFlags.O_DIRECT);
        Assert.True(fd >= 0);
        using var first = new ManualResetEventSlim();
        using var later = new ManualResetEventSlim();
        using var wb = DirectWriteBehind.OverDescriptor(fd, path, (_, _) => { },
            (o, _) => { if (o == 0) first.Wait(); else later.Wait(); });
        try
        {
            Assert.True(wb.TryWrite(0, new byte[DirectWriteBehind.MinBytes]));
            var drain = Task.Run(wb.Drain);
            await Task.Delay(200);
            Assert.False(drain.IsCompleted, "the drain returned before the first write landed");
            Assert.True(wb.TryWrite(MiB, new byte[DirectWriteBehind.MinBytes]));   // queued while the drain waits; held until the end
            first.Set();
            var done = await Task.WhenAny(drain, Task.Delay(TimeSpan.FromSeconds(10)));
            Assert.True(done == drain, "the drain waited for a write queued after it began");
            await drain;
        }
        finally
        {
            first.Set();
            later.Set();
        }
    }
}
