using Cow.Core.Devices;
using Xunit;

namespace Cow.Tests.Devices;

/// <summary>
/// The O_DIRECT read-ahead of <see cref="FileBlockDevice"/> (DirectReadAhead) on real image files: it serves
/// sequential readers, never serves stale bytes after a write or after <see cref="IBlockDevice.DropCached"/>,
/// and stays out of the way of random and sparse readers.
/// </summary>
public sealed class DirectReadAheadTests() : VarTmpImages("cow-ra-tests-")
{
    /// <summary>An image (64 MiB unless told) whose every byte is a function of its offset.</summary>
    private FileBlockDevice Patterned(out byte[] expected, long size = 64L * MiB)
    {
        var dev = FileBlockDevice.Create(Path.Combine(Dir, "d.img"), size);
        expected = new byte[size];
        for (int i = 0; i < expected.Length; i += 4) BitConverter.TryWriteBytes(expected.AsSpan(i), i * 2654435761u);
        dev.Write(0, expected);
        dev.Flush();
        return dev;
    }

    /// <summary>Reads [<paramref name="from"/>, <paramref name="to"/>) in pieces of <paramref name="piece"/> bytes and
    /// compares every piece with <paramref name="expected"/>.</summary>
    private static void ReadAndCompare(FileBlockDevice dev, byte[] expected, long from, long to, int piece, string what = "bytes differ")
    {
        var buf = new byte[piece];
        for (long off = from; off + piece <= to; off += piece)
        {
            dev.Read(off, buf);
            Assert.True(expected.AsSpan((int)off, piece).SequenceEqual(buf), $"{what} in the read at {off}");
        }
    }

    [Fact]
    public void SequentialReadsAreServedAheadAndCorrect()
    {
        using var dev = Patterned(out var expected);
        Assert.True(dev.ReadsAheadDirect, "O_DIRECT refused on /var/tmp: the read-ahead cannot be tested here");
        ReadAndCompare(dev, expected, 4096, expected.Length, 256 << 10);
        Assert.True(dev.ReadAheadHits > 200, $"only {dev.ReadAheadHits} of 255 reads came from read-ahead");
    }

    [Fact]
    public void ASecondStreamLowerOnTheDeviceIsServedToo()
    {
        // The log's cursor wraps: the next file read lies below the last one. Once the first stream has filled
        // every buffer with chunks above the second stream's window, those chunks must be reused for it (they
        // once were not, and read-ahead stayed off until the mount ended).
        const int chunk = DirectReadAhead.ChunkBytes;
        long size = 2L * DirectReadAhead.SlotCount * chunk;
        using var dev = Patterned(out var expected, size);
        ReadAndCompare(dev, expected, size - (DirectReadAhead.SlotCount + 2L) * chunk, size, 256 << 10);
        long first = dev.ReadAheadHits, reads = (DirectReadAhead.SlotCount + 2L) * chunk / (256 << 10);
        Assert.True(first > reads / 2, $"only {first} of {reads} reads of the first stream came from read-ahead");
        long second = (long)DirectReadAhead.Window * chunk, secondReads = second / (256 << 10);
        ReadAndCompare(dev, expected, 0, second, 256 << 10);
        Assert.True(dev.ReadAheadHits - first > secondReads * 3 / 4,
            $"only {dev.ReadAheadHits - first} of {secondReads} reads of the second stream came from read-ahead");
    }

    [Fact]
    public void ReadsOutOfOrderWithinTheStreamAreServed()
    {
        using var dev = Patterned(out var expected);
        var buf = new byte[256 << 10];
        // Four "workers" deliver each megabyte's quarters in a scrambled order.
        int[] order = [2, 0, 3, 1];
        for (long mb = 0; mb < 60; mb++)
            foreach (int q in order)
            {
                long off = mb * MiB + q * buf.Length;
                dev.Read(off, buf);
                Assert.True(expected.AsSpan((int)off, buf.Length).SequenceEqual(buf), $"bytes differ at {off}");
            }
        Assert.True(dev.ReadAheadHits > 150, $"only {dev.ReadAheadHits} reads came from read-ahead");
    }

    [Fact]
    public void AWriteIsSeenByTheNextReadEvenWhenItsChunkWasReadAhead()
    {
        using var dev = Patterned(out var expected);
        var buf = new byte[256 << 10];
        for (long off = 0; off < 8L * MiB; off += buf.Length) dev.Read(off, buf);
        Assert.True(dev.ReadAheadHits > 0);
        // Chunks 8..15 are read ahead now; write into the middle of them, then read on through them.
        var fresh = new byte[12288];
        Array.Fill(fresh, (byte)0xA5);
        dev.Write(10L * MiB + 4096, fresh);
        fresh.CopyTo(expected, 10 * MiB + 4096);
        ReadAndCompare(dev, expected, 8L * MiB, 16L * MiB, buf.Length, "stale bytes");
    }

    [Fact]
    public void DropCachedForgetsBytesWrittenPastTheDevice()
    {
        using var dev = Patterned(out var expected);
        var buf = new byte[256 << 10];
        for (long off = 0; off < 8L * MiB; off += buf.Length) dev.Read(off, buf);
        // Another writer (the kernel, with fuse-iomap) changes bytes inside the read-ahead window.
        var fresh = new byte[8192];
        Array.Fill(fresh, (byte)0x5A);
        using (var other = FileBlockDevice.Open(dev.Name, writable: true)) { other.Write(12L * MiB, fresh); other.Flush(); }
        fresh.CopyTo(expected, 12 * MiB);
        dev.DropCached(12L * MiB, fresh.Length);
        ReadAndCompare(dev, expected, 8L * MiB, 16L * MiB, buf.Length, "stale bytes");
    }

    [Fact]
    public void RandomAndSparseReadsDoNotStartReadAhead()
    {
        using var dev = Patterned(out var expected);
        var rng = new Random(7);
        var block = new byte[4096];
        for (int i = 0; i < 500; i++)
        {
            long off = rng.Next(0, 64 * 256) * 4096L;
            dev.Read(off, block);
            Assert.True(expected.AsSpan((int)off, 4096).SequenceEqual(block));
        }
        // A writer's read-modify-write: one block per megabyte, always ahead of the last.
        for (long mb = 0; mb < 60; mb++) dev.Read(mb * (MiB + 4096), block);
        Assert.Equal(0L, dev.ReadAheadHits);
    }

    [Fact]
    public void TheLastChunkOfTheDeviceIsServedToTheEnd()
    {
        using var dev = Patterned(out var expected);
        ReadAndCompare(dev, expected, 48L * MiB, 64L * MiB, MiB);
        Assert.True(dev.ReadAheadHits > 0);
    }
}
