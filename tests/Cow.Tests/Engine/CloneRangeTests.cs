using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>Range clone (copy_file_range with shared blocks): space, isolation of the two files after
/// sharing, snapshots, unaligned ranges, errors, persistence, and fsck's reference-count check.</summary>
[Trait("Tier", "engine")]
public class CloneRangeTests
{
    private const int Bs = 4096;

    private static long Clone(FileSystemView fs, long src, long srcOff, long dst, long dstOff, long len)
    {
        var e = fs.CopyFileRange(src, srcOff, dst, dstOff, len, out long copied);
        Assert.True(e == 0, $"copy_file_range {src}@{srcOff} -> {dst}@{dstOff} {len}: {e}");
        return copied;
    }

    private static long Free(MemoryPool p) => p.Live.StatFs().FreeBlocks;

    private static void Sync(MemoryPool p) => Assert.Equal(0, (int)p.Live.Fsync(1));

    /// <summary>The device block file block <paramref name="fileBlock"/> maps (read with the engine locked).</summary>
    private static (uint Device, long Block) Where(MemoryPool p, long ino, long fileBlock) => p.Engine.Exclusive(() =>
    {
        var run = Core.Engine.ExtentMap.FindRun(p.Engine.LiveTree.Chunk(ino, fileBlock / FormatConstants.ChunkBlocks), fileBlock, 1);
        Assert.False(run.IsHole, $"inode {ino} block {fileBlock} is a hole");
        return (run.Device, run.Address);
    });

    /// <summary>References on the device block that file block <paramref name="fileBlock"/> maps.</summary>
    private static uint Refs(MemoryPool p, long ino, long fileBlock)
    {
        var (dev, block) = Where(p, ino, fileBlock);
        return p.Engine.Exclusive(() => p.Engine.Space[dev].RefCount(block));
    }

    [Fact]
    public void LargeCloneSharesEveryBlockAndUsesNoSpace()
    {
        using var p = new MemoryPool();
        const int size = 64 << 20;
        long src = CreateFile(p.Live, "/big");
        var data = Pattern(size, 1);
        WriteAt(p.Live, src, 0, data);
        long dst = CreateFile(p.Live, "/copy");
        Sync(p);
        long free = Free(p);
        Assert.Equal(size, Clone(p.Live, src, 0, dst, 0, size));
        Sync(p);
        Assert.Equal(free, Free(p)); // not one data block allocated
        Assert.Equal(data, ReadAll(p.Live, dst));
        Assert.Equal(data, ReadAll(p.Live, src));
        Assert.Equal(2u, Refs(p, dst, 0));
        Assert.Equal(2u, Refs(p, dst, size / Bs - 1));
        Assert.Equal(0, (int)p.Live.GetAttr(dst, out var a));
        Assert.Equal(size, a.Size);
        Assert.Equal(size / 512, a.Blocks512);
        var live = p.Engine.SpaceReport().Single(s => s.Name == "");
        Assert.Equal(size, live.ReferencedBytes); // shared blocks count once
        Assert.Equal(size, live.ExclusiveBytes);
        p.AssertClean();
    }

    [Fact]
    public void OverwritingEitherSideLeavesTheOtherIntact()
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/a");
        var a = Pattern(3 << 20, 2);
        WriteAt(p.Live, src, 0, a);
        long dst = CreateFile(p.Live, "/b");
        Assert.Equal(a.Length, Clone(p.Live, src, 0, dst, 0, a.Length));
        var b = (byte[])a.Clone();

        var patch = Pattern(10_000, 3);
        WriteAt(p.Live, src, 5000, patch);
        patch.CopyTo(a, 5000);
        WriteAt(p.Live, src, 0, Pattern(Bs, 4)); // a whole shared block
        Pattern(Bs, 4).CopyTo(a, 0);
        Assert.Equal(b, ReadAll(p.Live, dst));

        var patch2 = Pattern(70_000, 5);
        WriteAt(p.Live, dst, 1 << 20, patch2);
        patch2.CopyTo(b, 1 << 20);
        Assert.Equal(0, (int)p.Live.Fallocate(dst, FallocateMode.PunchHole | FallocateMode.KeepSize, 2 << 20, 100_000));
        Array.Clear(b, 2 << 20, 100_000);
        Assert.Equal(0, (int)p.Live.SetAttr(src, new SetAttrRequest { Size = 1_500_000 }, out _));
        Array.Resize(ref a, 1_500_000);

        Assert.Equal(a, ReadAll(p.Live, src));
        Assert.Equal(b, ReadAll(p.Live, dst));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(a, ReadAll(p.Live, src));
        Assert.Equal(b, ReadAll(p.Live, dst));
        p.AssertClean();
    }

    [Fact]
    public void DeletingTheSourceKeepsTheCloneAndFreesNothingUntilBothAreGone()
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/src");
        var data = Pattern(2 << 20, 6);
        WriteAt(p.Live, src, 0, data);
        long dst = CreateFile(p.Live, "/dst");
        Assert.Equal(data.Length, Clone(p.Live, src, 0, dst, 0, data.Length));
        Sync(p);
        long free = Free(p);
        Assert.Equal(0, (int)p.Live.Unlink(1, "src"));
        Sync(p);
        Assert.Equal(free, Free(p));
        Assert.Equal(data, ReadAll(p.Live, dst));
        Assert.Equal(1u, Refs(p, dst, 0));
        p.AssertClean();
        Assert.Equal(0, (int)p.Live.Unlink(1, "dst"));
        Sync(p);
        Assert.Equal(free + data.Length / Bs, Free(p));
        p.AssertClean();
    }

    [Fact]
    public void CloneWithSnapshotsThenDeletingThemStaysConsistent()
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/src");
        var v1 = Pattern(1 << 20, 7);
        WriteAt(p.Live, src, 0, v1);
        Sync(p);
        long baseline = Free(p) + v1.Length / Bs; // what is free once nothing maps v1
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s1", out _));
        long dst = CreateFile(p.Live, "/dst");
        Assert.Equal(v1.Length, Clone(p.Live, src, 0, dst, 0, v1.Length));
        var v2 = Pattern(v1.Length, 8);
        WriteAt(p.Live, src, 0, v2); // src no longer maps v1; s1 and dst do
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s2", out _));
        Assert.Equal(0, (int)p.Live.Unlink(1, "dst")); // now only s1 and s2 map v1 (s2 through dst)
        p.AssertClean();

        var report = p.Engine.SpaceReport();
        Assert.Equal(v1.Length, report.Single(s => s.Name == "s1").ReferencedBytes);
        Assert.Equal(0, report.Single(s => s.Name == "s1").ExclusiveBytes); // s2 shares v1 through dst
        Assert.Equal(2L * v1.Length, report.Single(s => s.Name == "s2").ReferencedBytes);

        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("s1"));
        p.AssertClean();
        var s2 = p.Pool.Snapshot("s2")!;
        Assert.Equal(v1, ReadAll(s2, Ino(s2, "/dst")));
        Assert.Equal(v2, ReadAll(s2, Ino(s2, "/src")));
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("s2"));
        p.AssertClean();
        Assert.Equal(v2, ReadAll(p.Live, src));
        Sync(p);
        Assert.Equal(baseline - v2.Length / Bs, Free(p)); // v1 is free again, v2 is what src holds
    }

    [Fact]
    public void CloneIntoAFileSharedWithASnapshotReleasesItsOldBlocksOnlyWhenTheSnapshotGoes()
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/src");
        var s = Pattern(1 << 20, 9);
        WriteAt(p.Live, src, 0, s);
        long dst = CreateFile(p.Live, "/dst");
        var d = Pattern(2 << 20, 10);
        WriteAt(p.Live, dst, 0, d);
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        Sync(p);
        long free = Free(p);
        Assert.Equal(s.Length, Clone(p.Live, src, 0, dst, 512 << 10, s.Length));
        Sync(p);
        Assert.Equal(free, Free(p)); // the replaced blocks are still the snapshot's
        var expect = (byte[])d.Clone();
        s.CopyTo(expect, 512 << 10);
        Assert.Equal(expect, ReadAll(p.Live, dst));
        var snap = p.Pool.Snapshot("s")!;
        Assert.Equal(d, ReadAll(snap, dst));
        p.AssertClean();
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("s"));
        Assert.Equal(free + s.Length / Bs, Free(p));
        p.AssertClean();
    }

    [Theory]
    [InlineData(0, 0, 100_000)]                 // aligned: 24 blocks shared, the partial tail copied (dst is longer)
    [InlineData(100, 100, 300_000)]             // mutually aligned: head copied, body shared, tail copied
    [InlineData(100, 5000, 300_000)]            // not mutually aligned: all copied
    [InlineData(4095, 8191, 9000)]              // one-byte head
    [InlineData(4_292_608, 0, 1_000_000)]       // clamped at the source's end; tail copied (dst is longer)
    [InlineData(4_292_608, 196_608, 1_000_000)] // clamped; the range passes dst's end: tail block shared
    [InlineData(0, 999_424, 50_000)]            // past dst's end: the gap reads as zeros
    [InlineData(5000, 4_096_904, 250_000)]      // across a chunk boundary of the destination
    [InlineData(4_144_304, 11_440, 100_000)]    // across a chunk boundary of the source
    public void UnalignedAndClampedClonesCopyCorrectly(long srcOff, long dstOff, long len)
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/src");
        var a = Pattern(4_300_000, 11);
        WriteAt(p.Live, src, 0, a);
        long dst = CreateFile(p.Live, "/dst");
        var b = Pattern(200_000, 12);
        WriteAt(p.Live, dst, 0, b);
        long n = Math.Min(len, a.Length - srcOff);
        Assert.Equal(n, Clone(p.Live, src, srcOff, dst, dstOff, len));
        var expect = new byte[Math.Max(b.Length, dstOff + n)];
        b.CopyTo(expect, 0);
        Array.Copy(a, srcOff, expect, dstOff, n);
        Assert.Equal(expect, ReadAll(p.Live, dst));
        Assert.Equal(a, ReadAll(p.Live, src));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(expect, ReadAll(p.Live, dst));
        p.AssertClean();
    }

    [Fact]
    public void CloneOntoALargerDestinationKeepsItsSizeAndCopiesThePartialTail()
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/src");
        var a = Pattern((1 << 20) + 100, 13); // partial last block
        WriteAt(p.Live, src, 0, a);
        long dst = CreateFile(p.Live, "/dst");
        var b = Pattern(3 << 20, 14);
        WriteAt(p.Live, dst, 0, b);
        Sync(p);
        long free = Free(p);
        Assert.Equal(a.Length, Clone(p.Live, src, 0, dst, 0, a.Length));
        Assert.Equal(0, (int)p.Live.GetAttr(dst, out var attr));
        Assert.Equal(b.Length, attr.Size);
        var expect = (byte[])b.Clone();
        a.CopyTo(expect, 0);
        Assert.Equal(expect, ReadAll(p.Live, dst));
        Sync(p);
        // 256 of dst's blocks were replaced by shared ones and freed; the tail block was rewritten (one new, one freed).
        Assert.Equal(free + 256, Free(p));
        p.AssertClean();
    }

    [Fact]
    public void PartialLastBlockIsSharedWhenBothRangesEndAtEndOfFile()
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/src");
        var a = Pattern(10_000, 15);
        WriteAt(p.Live, src, 0, a);
        long dst = CreateFile(p.Live, "/dst");
        WriteAt(p.Live, dst, 0, Pattern(5000, 16)); // shorter than the clone: replaced whole
        Sync(p);
        long free = Free(p);
        Assert.Equal(a.Length, Clone(p.Live, src, 0, dst, 0, a.Length));
        Sync(p);
        Assert.Equal(free + 2, Free(p)); // dst's two old blocks freed, nothing allocated
        Assert.Equal(2u, Refs(p, dst, 2));
        Assert.Equal(a, ReadAll(p.Live, dst));
        // Growing the clone reads zeros after the old end, in the shared block too.
        Assert.Equal(0, (int)p.Live.SetAttr(dst, new SetAttrRequest { Size = 20_000 }, out _));
        var grown = new byte[20_000];
        a.CopyTo(grown, 0);
        Assert.Equal(grown, ReadAll(p.Live, dst));
        Assert.Equal(a, ReadAll(p.Live, src));
        p.AssertClean();
    }

    [Fact]
    public void CloneWithinOneFileAndErrors()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        var a = Pattern(1 << 20, 17);
        WriteAt(p.Live, f, 0, a);
        Assert.Equal(0, (int)p.Live.Mkdir(1, "d", 0x1ED, 0, 0, out var dir));
        Assert.Equal(0, (int)p.Live.Symlink(1, "l", "f", 0, 0, out var link));
        Assert.Equal(0, (int)p.Live.Mknod(1, "fifo", 0x1000 | 0x1A4, 0, 0, 0, out var fifo));
        long g = CreateFile(p.Live, "/g");

        Assert.Equal(Errno.EISDIR, p.Live.CopyFileRange(dir.Ino, 0, g, 0, 10, out _));
        Assert.Equal(Errno.EISDIR, p.Live.CopyFileRange(f, 0, dir.Ino, 0, 10, out _));
        Assert.Equal(Errno.EINVAL, p.Live.CopyFileRange(link.Ino, 0, g, 0, 10, out _));
        Assert.Equal(Errno.EINVAL, p.Live.CopyFileRange(f, 0, fifo.Ino, 0, 10, out _));
        Assert.Equal(Errno.EINVAL, p.Live.CopyFileRange(f, -1, g, 0, 10, out _));
        Assert.Equal(Errno.EINVAL, p.Live.CopyFileRange(f, 0, g, -4096, 10, out _));
        Assert.Equal(Errno.ENOENT, p.Live.CopyFileRange(f, 0, 99999, 0, 10, out _));
        Assert.Equal(Errno.EINVAL, p.Live.CopyFileRange(f, 0, f, 4096, 8192, out _));     // overlapping
        Assert.Equal(Errno.EINVAL, p.Live.CopyFileRange(f, 8192, f, 4096, 8192, out _));
        Assert.Equal(Errno.EFBIG, p.Live.CopyFileRange(f, 0, g, Core.Engine.Engine.MaxFileSize - 4096, 8192, out _));
        Assert.Equal(0, (int)p.Live.CopyFileRange(f, a.Length, g, 0, 10, out long none)); // at EOF
        Assert.Equal(0, none);
        Assert.Equal(0, (int)p.Live.CopyFileRange(f, a.Length + 5, g, 0, 10, out none));
        Assert.Equal(0, none);

        // Within one file: the second half becomes the first, shared; then an unaligned piece past the end.
        Assert.Equal(a.Length / 2, Clone(p.Live, f, a.Length / 2, f, 0, a.Length / 2));
        var expect = (byte[])a.Clone();
        Array.Copy(a, a.Length / 2, expect, 0, a.Length / 2);
        Assert.Equal(2u, Refs(p, f, 0));
        Assert.Equal(1000, Clone(p.Live, f, 100, f, (1 << 20) + 777, 1000));
        Array.Resize(ref expect, (1 << 20) + 1777);
        Array.Copy(expect, 100, expect, (1 << 20) + 777, 1000);
        Assert.Equal(expect, ReadAll(p.Live, f));
        // Mutually aligned within one file, past the end.
        long size = expect.Length, at = ((size + 4095) & ~4095L) + 4096 + 100;
        Assert.Equal(size - 4196, Clone(p.Live, f, 4196, f, at, 1L << 40));
        var expect2 = new byte[at + size - 4196];
        expect.CopyTo(expect2, 0);
        Array.Copy(expect, 4196, expect2, at, size - 4196);
        Assert.Equal(expect2, ReadAll(p.Live, f));
        p.AssertClean();

        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        var snap = p.Pool.Snapshot("s")!;
        Assert.Equal(Errno.EROFS, snap.CopyFileRange(f, 0, g, 0, 4096, out _));
        p.AssertClean();
    }

    [Fact]
    public void CloneSurvivesReopenAndPowerCut()
    {
        using var p = new MemoryPool(faulty: true);
        long src = CreateFile(p.Live, "/src");
        var a = Pattern((3 << 20) + 1234, 18);
        WriteAt(p.Live, src, 0, a);
        long dst = CreateFile(p.Live, "/dst");
        Assert.Equal(a.Length, Clone(p.Live, src, 0, dst, 0, a.Length));
        Sync(p);
        p.PowerCutAndReboot();
        Assert.Equal(a, ReadAll(p.Live, Ino(p.Live, "/src")));
        Assert.Equal(a, ReadAll(p.Live, Ino(p.Live, "/dst")));
        Assert.Equal(2u, Refs(p, dst, 0));
        p.AssertClean();

        // A clone never committed is gone after a power cut, and its references with it.
        long other = CreateFile(p.Live, "/other");
        Sync(p);
        Assert.Equal(a.Length, Clone(p.Live, src, 0, other, 0, a.Length));
        p.PowerCutAndReboot(PowerCutMode.DropUnflushed);
        Assert.Equal(0, (int)p.Live.GetAttr(Ino(p.Live, "/other"), out var o));
        Assert.Equal(0, o.Size);
        Assert.Equal(2u, Refs(p, dst, 0));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(a, ReadAll(p.Live, Ino(p.Live, "/dst")));
        p.AssertClean();
    }

    [Fact]
    public void FsckStillFindsWrongReferenceCountsOnSharedBlocks()
    {
        using var p = new MemoryPool();
        long src = CreateFile(p.Live, "/src");
        WriteAt(p.Live, src, 0, Pattern(64 << 10, 19));
        long dst = CreateFile(p.Live, "/dst");
        Clone(p.Live, src, 0, dst, 0, 64 << 10);
        p.AssertClean();
        var (dev, block) = Where(p, dst, 0);
        var space = p.Engine.Space[dev];
        p.Engine.Exclusive(() => { space.AddRef(block, 1, 1); return 0; }); // a leaked reference: 3 for two mappings
        var r = p.Pool.Fsck();
        Assert.Contains(r.Problems, x => x.Kind == "space-map" && x.Block == block);
        p.Engine.Exclusive(() => { space.Release(block, 1, 1); space.Release(block, 1, 1); return 0; }); // one reference for two mappings
        r = p.Pool.Fsck();
        Assert.Contains(r.Problems, x => x.Kind == "space-map" && x.Block == block);
        p.Engine.Exclusive(() => { space.AddRef(block, 1, 1); return 0; });
        p.AssertClean();
    }

    [Fact]
    public async Task ConcurrentClonesInOppositeDirectionsDoNotDeadlock()
    {
        using var p = new MemoryPool();
        long a = CreateFile(p.Live, "/a"), b = CreateFile(p.Live, "/b");
        WriteAt(p.Live, a, 0, Pattern(256 << 10, 20));
        WriteAt(p.Live, b, 0, Pattern(256 << 10, 21));
        var t1 = Task.Run(() => { for (int i = 0; i < 200; i++) Clone(p.Live, a, 0, b, 4096 * (i % 7), 100_000 + i); });
        var t2 = Task.Run(() => { for (int i = 0; i < 200; i++) Clone(p.Live, b, 8192, a, 100 * (i % 5), 90_000 + i); });
        var both = Task.WhenAll(t1, t2);
        Assert.True(await Task.WhenAny(both, Task.Delay(TimeSpan.FromSeconds(60))) == both, "clones in opposite directions deadlocked");
        await both;
        p.AssertClean();
    }
}
