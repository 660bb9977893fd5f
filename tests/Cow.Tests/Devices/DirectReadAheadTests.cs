using Cow.Core.Devices;
using Cow.Core.Format;
using Xunit;

namespace Cow.Tests.Devices;

/// <summary>
/// The O_DIRECT read-ahead of <see cref="FileBlockDevice"/> (DirectReadAhead) on real image files: it serves
/// sequential readers, never serves stale bytes after a write or after <see cref="IBlockDevice.DropCached"/>,
/// and stays out of the way of random and sparse readers.
/// </summary>
[Trait("Tier", "unit")]
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

    /// <summary>The bytes of <paramref name="segments"/>, gathered in order.</summary>
    internal static unsafe byte[] Gather(ReadSegments segments)
    {
        var all = new byte[segments.Length];
        int at = 0;
        for (int i = 0; i < segments.Count; i++)
        {
            new ReadOnlySpan<byte>((void*)segments.Address(i), segments.SegmentLength(i)).CopyTo(all.AsSpan(at));
            at += segments.SegmentLength(i);
        }
        return all;
    }

    [Fact]
    public unsafe void LentReadsCarryTheBytesAndTheChecksumsOfTheirBlocks()
    {
        using var dev = Patterned(out var expected);
        byte* scratch = DirectIo.AllocateBuffer(MiB);
        try
        {
            var segments = new ReadSegments(scratch, MiB);
            var sums = new uint[MiB / 4096];
            int lent = 0, twoPieces = 0;
            // 1 MiB reads, every fourth one straddling a 4 MiB chunk boundary.
            for (long off = 0; off + MiB <= 60L * MiB; off += MiB - (off % (4 * MiB) == 2 * MiB ? MiB / 2 : 0))
            {
                segments.Reset();
                var how = dev.ReadOrLend(off, new Span<byte>(scratch, MiB), sums, segments);
                if (how == DeviceReadResult.Lent)
                {
                    lent++;
                    if (segments.Count == 2) twoPieces++;
                    Assert.Equal(MiB, segments.LentBytes);
                    Assert.True(expected.AsSpan((int)off, MiB).SequenceEqual(Gather(segments)), $"lent bytes differ in the read at {off}");
                }
                else Assert.True(expected.AsSpan((int)off, MiB).SequenceEqual(new ReadOnlySpan<byte>(scratch, MiB)), $"bytes differ in the read at {off}");
                if (how != DeviceReadResult.Read)
                    for (int b = 0; b < sums.Length; b++)
                        Assert.True(Crc32C.Compute(expected.AsSpan((int)off + b * 4096, 4096)) == sums[b], $"block sum {b} wrong in the read at {off} ({how})");
                segments.Release();
            }
            Assert.True(lent > 40, $"only {lent} reads were lent");
            Assert.True(twoPieces > 5, $"only {twoPieces} reads across a chunk boundary were lent in two pieces");
        }
        finally { DirectIo.FreeBuffer(scratch); }
    }

    [Fact]
    public unsafe void ALentBufferKeepsItsBytesUntilItIsReturned()
    {
        var dev = Patterned(out var expected);
        byte* scratch = DirectIo.AllocateBuffer(MiB);
        try
        {
            var segments = new ReadSegments(scratch, MiB);
            var sums = new uint[MiB / 4096];
            var buf = new byte[MiB];
            for (long off = 0; off < 4L * MiB; off += MiB) dev.Read(off, buf);
            var how = dev.ReadOrLend(4L * MiB, new Span<byte>(scratch, MiB), sums, segments);
            Assert.Equal(DeviceReadResult.Lent, how);
            Assert.Throws<InvalidOperationException>(segments.Reset);   // still lent
            // Overwrite the lent range and read on far past the window, so that every other buffer is reused.
            dev.Write(4L * MiB, new byte[MiB]);
            for (long off = 5L * MiB; off < 60L * MiB; off += MiB) dev.Read(off, buf);
            Assert.True(expected.AsSpan(4 * MiB, MiB).SequenceEqual(Gather(segments)), "a lent buffer was reused before it was returned");
            segments.Release();
            segments.Release();   // idempotent
            segments.Reset();
            dev.Read(4L * MiB, buf);
            Assert.True(buf.AsSpan().IndexOfAnyExcept((byte)0) < 0, "the write is not seen after the buffer came back");
            var disposing = System.Diagnostics.Stopwatch.StartNew();
            dev.Dispose();
            Assert.True(disposing.Elapsed < TimeSpan.FromSeconds(5), $"Dispose took {disposing.Elapsed} with every buffer returned");
        }
        finally
        {
            dev.Dispose();
            DirectIo.FreeBuffer(scratch);
        }
    }
}
