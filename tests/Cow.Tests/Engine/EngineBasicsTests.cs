using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

[Trait("Tier", "engine")]
public class EngineBasicsTests
{
    [Fact]
    public void WriteReadOverwriteAcrossReopen()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/a");
        var data = Pattern(300_000, 1);
        WriteAt(p.Live, ino, 0, data);
        var patch = Pattern(5000, 2);
        WriteAt(p.Live, ino, 4097, patch);
        patch.CopyTo(data, 4097);
        Assert.Equal(data, ReadAll(p.Live, ino));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(data, ReadAll(p.Live, Ino(p.Live, "/a")));
        p.AssertClean();
    }

    [Fact]
    public void SnapshotKeepsOldBytesAndIsReadOnly()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/f");
        var v1 = Pattern(100_000, 3);
        WriteAt(p.Live, ino, 0, v1);
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s1", out _));
        var v2 = Pattern(100_000, 4);
        WriteAt(p.Live, ino, 0, v2);
        var snap = p.Pool.Snapshot("s1")!;
        Assert.Equal(v1, ReadAll(snap, Ino(snap, "/f")));
        Assert.Equal(v2, ReadAll(p.Live, ino));
        Assert.Equal(Errno.EROFS, snap.Write(ino, 0, new byte[1], out _));
        Assert.Equal(Errno.EROFS, snap.Unlink(1, "f"));
        Assert.Equal(ino, Ino(snap, "/f")); // inode numbers are stable across snapshots
        p.AssertClean();
        p.Reopen();
        snap = p.Pool.Snapshot("s1")!;
        Assert.Equal(v1, ReadAll(snap, Ino(snap, "/f")));
        p.AssertClean();
    }

    [Fact]
    public void WriteMappingNeverTargetsSharedBlocks()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/f");
        WriteAt(p.Live, ino, 0, Pattern(65536, 5));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        Assert.Equal(0, (int)p.Engine.IomapBegin(ino, 100, 8192, IomapOp.Write, out var pair));
        Assert.Equal(MappingType.Mapped, pair.Read.Type);
        Assert.Equal(MappingType.Mapped, pair.Write.Type);
        Assert.Equal(FormatConstants.LogCookie, pair.Write.Device);
        Assert.NotEqual(pair.Read.Address, pair.Write.Address);
        Assert.True(pair.Write.Flags.HasFlag(MappingFlags.Shared));
        Assert.Equal(0, pair.Write.Offset);
        Assert.Equal(pair.Read.Offset, pair.Write.Offset);
        Assert.Equal(pair.Read.Length, pair.Write.Length);
        Assert.Null(pair.Read.Validate(4096, c => p.Engine.DeviceBytes(c)));
        Assert.Null(pair.Write.Validate(4096, c => p.Engine.DeviceBytes(c)));
        Assert.Equal(0, (int)p.Engine.IomapEnd(ino, 100, 8192, 0, IomapOp.Write, pair.Write)); // nothing written: released
        p.AssertClean();
    }

    [Fact]
    public void HoleMappingsHaveNoDeviceOrAddress()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/sparse");
        WriteAt(p.Live, ino, 1 << 20, new byte[] { 1 });
        Assert.Equal(0, (int)p.Engine.IomapBegin(ino, 0, 2 << 20, IomapOp.None, out var pair));
        Assert.Equal(MappingType.Hole, pair.Read.Type);
        Assert.Equal(0u, pair.Read.Device);
        Assert.Equal(FormatConstants.NoAddress, pair.Read.Address);
        Assert.Equal(1 << 20, pair.Read.Length);
        Assert.Null(pair.Read.Validate(4096, c => p.Engine.DeviceBytes(c)));
        Assert.Equal(0, (int)p.Live.Seek(ino, 0, SeekWhence.Data, out long d));
        Assert.Equal(1 << 20, d);
        Assert.Equal(0, (int)p.Live.Seek(ino, 0, SeekWhence.Hole, out long h));
        Assert.Equal(0, h);
        Assert.Equal(0, (int)p.Live.Seek(ino, 1 << 20, SeekWhence.Hole, out h));
        Assert.Equal((1 << 20) + 1, h);
    }

    [Fact]
    public void DirectIoEndWithoutAddressUsesWhatWasHandedOutAndRefusesOthers()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/d");
        Assert.Equal(0, (int)p.Engine.IomapBegin(ino, 0, 8192, IomapOp.Write | IomapOp.Direct, out var pair));
        var data = Pattern(8192, 9);
        p.Engine.Device(pair.Write.Device).Write((long)pair.Write.Address, data); // the "kernel" writes
        Assert.Equal(Errno.EINVAL, p.Engine.IoEnd(ino, 0, 8192, 0, pair.Write.Device, pair.Write.Address + 4096, out _));
        Assert.Equal(0, (int)p.Engine.IoEnd(ino, 0, 8192, 0, 0, FormatConstants.NoAddress, out long size));
        Assert.Equal(8192, size);
        Assert.Equal(0, (int)p.Engine.IomapEnd(ino, 0, 8192, 8192, IomapOp.Write, pair.Write));
        Assert.Equal(data, ReadAll(p.Live, ino));
        p.AssertClean();
    }

    [Fact]
    public void ShortWriteReleasesTheUnusedTail()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/s");
        long freeBefore = p.Live.StatFs().FreeBlocks;
        Assert.Equal(0, (int)p.Engine.IomapBegin(ino, 0, 16384, IomapOp.Write, out var pair));
        Assert.Equal(freeBefore - 4, p.Live.StatFs().FreeBlocks);
        p.Engine.Device(pair.Write.Device).Write((long)pair.Write.Address, Pattern(4096, 1));
        Assert.Equal(0, (int)p.Engine.IomapEnd(ino, 0, 16384, 4096, IomapOp.Write, pair.Write));
        Assert.Equal(freeBefore - 1, p.Live.StatFs().FreeBlocks);
        Assert.Equal(0, (int)p.Engine.IoEnd(ino, 0, 4096, 0, pair.Write.Device, pair.Write.Address, out long size));
        Assert.Equal(4096, size);
        p.AssertClean();
    }

    [Fact]
    public void BurstOfSmallWritesMakesFewCommits()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/burst");
        long before = p.Engine.CommitCount;
        var rnd = new Random(7);
        var buf = new byte[512];
        for (int i = 0; i < 10_000; i++)
        {
            rnd.NextBytes(buf);
            Assert.Equal(0, (int)p.Live.Write(ino, rnd.Next(0, 4 << 20), buf, out _));
        }
        long commits = p.Engine.CommitCount - before;
        Assert.True(commits <= 10, $"10,000 writes made {commits} metadata commits");
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        Assert.Equal(before + commits + 1, p.Engine.CommitCount);
        p.AssertClean();
    }

    [Fact]
    public void DeleteSnapshotFreesOnlyWhatItAloneHeld()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/f");
        WriteAt(p.Live, ino, 0, Pattern(1 << 20, 1));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("old", out _));
        WriteAt(p.Live, ino, 0, Pattern(256 << 10, 2)); // overwrite the first quarter
        p.Live.Fsync(ino);
        var report = p.Engine.SpaceReport();
        var old = report.Single(s => s.Name == "old");
        Assert.Equal(1 << 20, old.ReferencedBytes);
        Assert.Equal(256 << 10, old.ExclusiveBytes);
        var live = report.Single(s => s.Name == "");
        Assert.Equal(1 << 20, live.ReferencedBytes);
        Assert.Equal(256 << 10, live.ExclusiveBytes);
        long free = p.Live.StatFs().FreeBlocks;
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("old"));
        Assert.Equal(free + 64, p.Live.StatFs().FreeBlocks);
        Assert.Equal(Errno.ENOENT, p.Engine.DeleteSnapshot("old"));
        p.AssertClean();
    }

    [Fact]
    public void SnapshotNamesDifferingOnlyInCaseAreDistinct()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/f");
        WriteAt(p.Live, ino, 0, Pattern(4096, 1));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("A", out _));
        WriteAt(p.Live, ino, 0, Pattern(4096, 2));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("a", out _));
        p.Reopen();
        Assert.Equal(new[] { "A", "a" }, p.Engine.ListSnapshots().Select(s => s.Name).ToArray());
        var big = p.Pool.Snapshot("A")!;
        Assert.Equal(Pattern(4096, 1), ReadAll(big, Ino(big, "/f")));
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("a"));
        Assert.Single(p.Engine.ListSnapshots());
        p.AssertClean();
    }

    [Fact]
    public void ExtentMapCacheIsBoundedAndEvictedChunksReloadCorrectly()
    {
        using var p = new MemoryPool(logSize: 512 << 20);
        p.Engine.ChunkCacheLimit = 8;
        long ino = CreateFile(p.Live, "/big");
        var data = Pattern(40 << 20, 6); // 10 chunks of 4 MiB
        WriteAt(p.Live, ino, 0, data);
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        Assert.True(p.Engine.CachedChunks <= 8, $"{p.Engine.CachedChunks} chunks cached");
        var patch = Pattern(10000, 7);
        WriteAt(p.Live, ino, 33 << 20, patch);
        patch.CopyTo(data, 33 << 20);
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        Assert.Equal(data, ReadAll(p.Live, ino));
        p.AssertClean();
    }

    [Fact]
    public void AFullPoolGivesEnospcLosesNothingAndDeletesFreeSpace()
    {
        using var p = new MemoryPool(baseSize: 8 << 20, logSize: 16 << 20); // full: the log, then the base device
        long keep = CreateFile(p.Live, "/keep");
        var kept = Pattern(4 << 20, 1);
        WriteAt(p.Live, keep, 0, kept);
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        long fill = CreateFile(p.Live, "/fill");
        var chunk = Pattern(1 << 20, 2);
        Mono.Unix.Native.Errno e = 0;
        long off = 0;
        while (e == 0)
        {
            e = p.Live.Write(fill, off, chunk, out int n);
            off += n;
            Assert.True(off < 64 << 20, "the pool never filled up");
            if (e == 0 && n < chunk.Length) { e = p.Live.Write(fill, off, chunk, out n); off += n; }
        }
        Assert.Equal(Mono.Unix.Native.Errno.ENOSPC, e);
        Assert.Equal(0, p.Live.StatFs().FreeBlocks);
        Assert.Equal(kept, ReadAll(p.Live, keep));         // nothing lost
        Assert.Equal(0, (int)p.Live.Fsync(fill));            // what was written is committed
        p.AssertClean();
        // Deleting needs no data space and makes room at once (the write commits the frees).
        Assert.Equal(0, (int)p.Live.Unlink(1, "fill"));
        WriteAt(p.Live, keep, 0, Pattern(1 << 20, 3));
        p.AssertClean();
    }

    [Fact]
    public void ViewOfADeletedSnapshotIsStale()
    {
        using var p = new MemoryPool();
        long ino = CreateFile(p.Live, "/f");
        WriteAt(p.Live, ino, 0, Pattern(8192, 1));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        var view = p.Pool.Snapshot("s")!;
        Assert.Equal(0, (int)view.GetAttr(ino, out _));
        Assert.Equal(0, (int)p.Engine.DeleteSnapshot("s"));
        Assert.True(view.Stale);
        Assert.Equal(Errno.ESTALE, view.Read(ino, 0, new byte[10], out _));
        Assert.Equal(Errno.ESTALE, view.Lookup(1, "f", out _));
        Assert.Null(p.Pool.Snapshot("s"));
        p.AssertClean();
    }

    [Fact]
    public void FsckFindsABlockMarkedInUseThatNothingReferences()
    {
        using var p = new MemoryPool();
        p.AssertClean();
        long n = p.Engine.Space[FormatConstants.LogCookie].Allocate(3, out long start); // leaked on purpose
        Assert.Equal(3, n);
        var report = p.Pool.Fsck();
        Assert.Equal(3, report.Problems.Count(x => x.Kind == "leak" && x.Device == FormatConstants.LogCookie && x.Block >= start && x.Block < start + 3));
    }
}
