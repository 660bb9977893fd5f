using Cow.Core;
using Cow.Core.Devices;
using Cow.Tests.Devices;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>
/// <see cref="Cow.Core.FileSystem.FileSystemView.ReadInto"/> on a pool of image files: what FUSE READ uses. A
/// sequential reader's bytes are lent from the log device's read-ahead buffers instead of copied; whatever
/// the path, the read is the file's bytes, holes read as zeros, and a corrupt block is EIO with a report
/// that names it, also when its checksum was computed by the read-ahead.
/// </summary>
[Trait("Tier", "engine")]
public sealed unsafe class LentReadTests() : VarTmpImages("cow-lent-tests-")
{
    private const int FileBytes = 24 * MiB;
    private const long HoleStart = 8L * MiB, HoleEnd = 9L * MiB;

    /// <summary>Each 4 KiB block of the file starts with "COWBLK" and its index, then a pattern; [8, 9) MiB is a hole.</summary>
    private static byte[] Expected()
    {
        var b = new byte[FileBytes];
        for (int i = 0; i < b.Length; i += 4) BitConverter.TryWriteBytes(b.AsSpan(i), i * 2654435761u);
        for (int blk = 0; blk < FileBytes / 4096; blk++)
        {
            "COWBLK"u8.CopyTo(b.AsSpan(blk * 4096));
            BitConverter.TryWriteBytes(b.AsSpan(blk * 4096 + 6), blk);
        }
        b.AsSpan((int)HoleStart, (int)(HoleEnd - HoleStart)).Clear();
        return b;
    }

    private string MakePool(byte[] expected, out long ino, int blockSize = 4096)
    {
        var dir = Path.Combine(Dir, "pool");
        using var pool = Pool.Create(dir, new PoolCreateOptions { BaseSize = 32L << 20, LogSize = 256L << 20, BlockSize = blockSize });
        Assert.Equal(0, (int)pool.Live.Create(pool.Live.RootIno, "f", 0x81A4, 0, 0, out var attr));
        ino = attr.Ino;
        for (long off = 0; off < FileBytes; off += MiB)
        {
            if (off >= HoleStart && off < HoleEnd) continue;
            Assert.Equal(0, (int)pool.Live.Write(ino, off, expected.AsSpan((int)off, MiB), out int n));
            Assert.Equal(MiB, n);
        }
        return dir;
    }

    [Fact]
    public void ReadIntoGivesTheFileWhetherLentOrNot()
    {
        var expected = Expected();
        var dir = MakePool(expected, out long ino);
        using var pool = Pool.Open(dir);
        byte* scratch = DirectIo.AllocateBuffer(MiB);
        try
        {
            var segments = new ReadSegments(scratch, MiB);
            int lent = 0;
            for (long off = 0; off < FileBytes; off += MiB)
            {
                var e = pool.Live.ReadInto(ino, off, MiB, segments, out int count);
                try
                {
                    Assert.Equal(0, (int)e);
                    Assert.Equal(MiB, count);
                    Assert.Equal(MiB, segments.Length);
                    if (segments.LentBytes > 0) lent++;
                    Assert.True(expected.AsSpan((int)off, MiB).SequenceEqual(DirectReadAheadTests.Gather(segments)), $"bytes differ in the read at {off}");
                }
                finally { segments.Release(); }
            }
            Assert.True(lent > 8, $"only {lent} of {FileBytes / MiB} sequential reads were lent");
            // Unaligned and short reads, a read across the hole, a read past the end of the file.
            foreach (var (off, size) in new (long, int)[] { (12345, 70000), (HoleStart - 6000, 20000), (FileBytes - 4096, MiB), (FileBytes + 1, 4096) })
            {
                var e = pool.Live.ReadInto(ino, off, size, segments, out int count);
                try
                {
                    Assert.Equal(0, (int)e);
                    int want = (int)Math.Clamp(FileBytes - off, 0, size);
                    Assert.Equal(want, count);
                    Assert.Equal(want, segments.Length);
                    Assert.True(expected.AsSpan((int)Math.Min(off, FileBytes), want).SequenceEqual(DirectReadAheadTests.Gather(segments)), $"bytes differ in the read of {size} at {off}");
                }
                finally { segments.Release(); }
            }
        }
        finally { DirectIo.FreeBuffer(scratch); }
    }

    [Theory]
    [InlineData(8192)]
    [InlineData(65536)]
    public void SequentialReadsOfAPoolWithLargerBlocksVerify(int blockSize)
    {
        // The read-ahead's checksums are of 4 KiB blocks: a pool with larger blocks must not compare them with
        // its own (every sequential read would be EIO), but read and verify as before.
        var expected = Expected();
        var dir = MakePool(expected, out long ino, blockSize);
        using var pool = Pool.Open(dir);
        var problems = new List<string>();
        pool.Engine.Problem += problems.Add;
        ReadInMiBs(pool, ino, (off, e, count, segments) =>
        {
            Assert.True(e == 0, $"read at {off}: {e}; {string.Join("; ", problems)}");
            Assert.Equal(MiB, count);
            Assert.True(expected.AsSpan((int)off, MiB).SequenceEqual(DirectReadAheadTests.Gather(segments)), $"bytes differ in the read at {off}");
        });
    }

    [Fact]
    public void ACorruptBlockInALentStretchIsEioAndNamed()
    {
        var expected = Expected();
        var dir = MakePool(expected, out long ino);
        // Flip a byte of file block 4000 (at 15.6 MiB, well inside the stretch the read-ahead serves) on the log image.
        const int victim = 4000;
        var stamp = new byte[10];
        "COWBLK"u8.CopyTo(stamp);
        BitConverter.TryWriteBytes(stamp.AsSpan(6), victim);
        var log = File.ReadAllBytes(Path.Combine(dir, "log.img"));
        long at = -1;
        for (long p = 0; p + 4096 <= log.Length && at < 0; p += 4096)
            if (log.AsSpan((int)p, 10).SequenceEqual(stamp)) at = p;
        Assert.True(at >= 0, "block 4000 not found on the log image");
        using (var f = File.OpenHandle(Path.Combine(dir, "log.img"), FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.Write(f, new byte[] { (byte)(log[at + 100] ^ 0xFF) }, at + 100);

        using var pool = Pool.Open(dir);
        var problems = new List<string>();
        pool.Engine.Problem += problems.Add;
        long victimOffset = victim * 4096L;
        ReadInMiBs(pool, ino, (off, e, _, _) =>
        {
            bool holdsVictim = victimOffset >= off && victimOffset < off + MiB;
            Assert.True(holdsVictim ? e == Errno.EIO : e == 0, $"read at {off}: {e}");
        });
        Assert.Contains(problems, p => p.Contains("checksum mismatch") && p.Contains($"offset {victimOffset}"));
    }

    /// <summary>Reads the file front to back in 1 MiB <see cref="Cow.Core.FileSystem.FileSystemView.ReadInto"/>
    /// calls, hands each result to <paramref name="check"/> (offset, errno, count, segments) and releases it.</summary>
    private static void ReadInMiBs(Pool pool, long ino, Action<long, Errno, int, ReadSegments> check)
    {
        byte* scratch = DirectIo.AllocateBuffer(MiB);
        try
        {
            var segments = new ReadSegments(scratch, MiB);
            for (long off = 0; off < FileBytes; off += MiB)
            {
                var e = pool.Live.ReadInto(ino, off, MiB, segments, out int count);
                try { check(off, e, count, segments); }
                finally { segments.Release(); }
            }
        }
        finally { DirectIo.FreeBuffer(scratch); }
    }
}
