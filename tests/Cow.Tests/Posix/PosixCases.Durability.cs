using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Larger files across a reopen, fsync and fdatasync, and what statfs reports.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void CreateReadWriteOverwrite()
    {
        var data = Pattern(300_000, 1);
        WriteFile("f", data);
        Assert.Equal(data, ReadAll("f"));
        var st = St("f");
        Assert.Equal(S_IFREG, st.Type);
        Assert.Equal(data.Length, st.Size);
        // overwrite in the middle, unaligned and across a 4 KiB boundary
        var patch = Pattern(10_000, 2);
        using (var f = Open("f", O_RDWR)) WriteAt(f, 4000, patch);
        patch.CopyTo(data, 4000);
        Assert.Equal(data, ReadAll("f"));
        // write past the end: the gap reads zero, the size follows
        using (var f = Open("f", O_WRONLY)) WriteAt(f, 400_000, "tail"u8);
        var all = ReadAll("f");
        Assert.Equal(400_004, all.Length);
        Assert.Equal(data, all[..data.Length]);
        Assert.True(AllZero(all.AsSpan(data.Length, 400_000 - data.Length)), "gap is not zero");
        Assert.Equal("tail"u8.ToArray(), all[400_000..]);
        T.Reopen();
        Assert.Equal(all, ReadAll("f"));
        T.AssertClean();
    }

    [SkippableFact]
    public void SparseFileAtOneGiB()
    {
        var data = Pattern(4096, 4);
        using (var f = Open("sparse", O_RDWR | O_CREAT)) WriteAt(f, GiB, data);
        var st = St("sparse");
        Assert.Equal(GiB + 4096, st.Size);
        Assert.True(st.Blocks512 * 512 < MiB, $"st_blocks {st.Blocks512} for a file with 4 KiB of data");
        using (var f = Open("sparse", O_RDONLY))
        {
            Assert.True(AllZero(ReadRange(f, 0, 65536)), "start of the hole is not zero");
            Assert.True(AllZero(ReadRange(f, 512 * MiB + 123, 70_000)), "middle of the hole is not zero");
            var edge = ReadRange(f, GiB - 4096, 8192);
            Assert.True(AllZero(edge.AsSpan(0, 4096)), "end of the hole is not zero");
            Assert.Equal(data, edge[4096..]);
            Assert.Empty(ReadRange(f, GiB + 4096, 100));
        }
        T.Reopen();
        Assert.Equal(GiB + 4096, St("sparse").Size);
        Assert.Equal(data, ReadRange("sparse", GiB, 4096));
        T.AssertClean();
    }

    [SkippableFact]
    public void PunchHoleAndFallocateInAMebibyte()
    {
        var data = Pattern((int)MiB, 6);
        using (var f = Open("f", O_RDWR | O_CREAT))
        {
            PosixStat Fst()
            {
                Ok(f.Fstat(out var s), "fstat");
                return s;
            }
            WriteAt(f, 0, data);
            Ok(f.Fsync(), "fsync");
            long before = Fst().Blocks512;
            Assert.True(before * 512 >= MiB, $"st_blocks {before} for 1 MiB of data");
            Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 256 * KiB, 512 * KiB), "punch hole");
            var st = Fst();
            Assert.Equal(MiB, st.Size);
            Assert.True(st.Blocks512 <= before - 512 * KiB / 512, $"st_blocks {before} -> {st.Blocks512} after punching 512 KiB");
            var back = ReadRange(f, 0, (int)MiB);
            Assert.Equal(data.AsSpan(0, 256 * 1024).ToArray(), back[..(256 * 1024)]);
            Assert.True(AllZero(back.AsSpan(256 * 1024, 512 * 1024)), "punched range is not zero");
            Assert.Equal(data.AsSpan(768 * 1024).ToArray(), back[(768 * 1024)..]);
            // plain fallocate past the end: the size grows and the bytes read zero (copy-on-write cannot reserve
            // blocks for later overwrites, so st_blocks is not asserted to grow; it must not shrink)
            long blocks = Fst().Blocks512;
            Ok(f.Fallocate(FallocateMode.None, MiB, MiB), "fallocate mode 0");
            st = Fst();
            Assert.Equal(2 * MiB, st.Size);
            Assert.True(st.Blocks512 >= blocks, $"st_blocks {blocks} -> {st.Blocks512} after fallocate mode 0");
            Assert.True(AllZero(ReadRange(f, MiB, (int)MiB)), "allocated range is not zero");
            // KEEP_SIZE past the end: size unchanged
            Ok(f.Fallocate(FallocateMode.KeepSize, 2 * MiB, MiB), "fallocate keep size");
            Assert.Equal(2 * MiB, Fst().Size);
        }
        T.AssertClean();
    }

    [SkippableFact]
    public void FsyncAndFdatasyncOfFilesAndDirectories()
    {
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        using (var f = Open("d/f", O_RDWR | O_CREAT))
        {
            WriteAt(f, 0, Pattern(50_000, 12));
            Ok(f.Fsync(), "fsync");
            WriteAt(f, 50_000, Pattern(5000, 13));
            Ok(f.Fdatasync(), "fdatasync");
        }
        using (var dir = Open("d", O_RDONLY | O_DIRECTORY)) Ok(dir.Fsync(), "fsync a directory");
        using (var root = Open(".", O_RDONLY | O_DIRECTORY)) Ok(root.Fdatasync(), "fdatasync the root");
        using (var ro = Open("d/f", O_RDONLY)) Ok(ro.Fsync(), "fsync a read-only descriptor");
        T.Reopen();
        Assert.Equal(55_000, St("d/f").Size);
        Assert.Equal(Pattern(5000, 13), ReadRange("d/f", 50_000, 5000));
        T.AssertClean();
    }

    [SkippableFact]
    public void StatFsFollowsWritesAndDeletes()
    {
        T.Sync();
        var s0 = T.StatFs();
        Assert.Equal(Bs, s0.BlockSize);
        Assert.True(s0.IoBlockSize > 0, $"{s0}");
        Assert.Equal(255, s0.NameMax);
        Assert.True(s0.Blocks > 0 && s0.FreeBlocks > 0 && s0.FreeBlocks <= s0.Blocks, $"{s0}");
        Assert.True(s0.AvailableBlocks <= s0.FreeBlocks, $"{s0}");
        Touch("f");
        Assert.True(T.StatFs().FreeFiles < s0.FreeFiles, "a new file takes an inode");
        WriteAt("f", 0, Pattern(1 << 20, 24));
        var s1 = T.StatFs();
        Assert.Equal(s0.FreeBlocks - 256, s1.FreeBlocks);
        // overwriting in place (copy on write) costs nothing once committed
        using (var f = Open("f", O_RDWR))
        {
            WriteAt(f, 0, Pattern(1 << 20, 25));
            Ok(f.Fsync(), "fsync");
        }
        Assert.Equal(s1.FreeBlocks, T.StatFs().FreeBlocks);
        Ok(T.Unlink("f"), "unlink");
        AssertFreeBlocks(s0.FreeBlocks, "an unlinked file's blocks are free");
        Assert.Equal(s0.Blocks, T.StatFs().Blocks);
        // 8 MiB more: free space drops by about that much, the size of the pool does not change
        using (var g = Open("g", O_RDWR | O_CREAT))
        {
            WriteAt(g, 0, Pattern((int)(8 * MiB), 11));
            Ok(g.Fsync(), "fsync");
        }
        var s2 = T.StatFs();
        long used = (s0.FreeBlocks - s2.FreeBlocks) * s2.BlockSize;
        Assert.True(used >= 6 * MiB && used <= 64 * MiB, $"8 MiB written, free space dropped by {used} bytes");
        Assert.Equal(s0.Blocks, s2.Blocks);
        T.AssertClean();
    }
}
