using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Data: read, write, O_APPEND, sparse files up to the size limit, truncate.
public abstract partial class PosixCases
{
    /// <summary>The largest file size (the engine's limit, Engine.MaxFileSize): writes and sizes past it are EFBIG.</summary>
    protected const long MaxFileSize = Core.Engine.Engine.MaxFileSize;
    protected const long ChunkBytes = 1024L * Bs;

    [SkippableFact]
    public void ReadWriteSparseAppendAndSubBlock()
    {
        // sparse: a write far past the end leaves a hole that reads as zeros
        WriteAt("f", (1 << 20) + 10, new byte[] { 1, 2, 3 });
        var a = St("f");
        Assert.Equal((1 << 20) + 13, a.Size);
        Assert.Equal(Bs / 512, a.Blocks512);
        var all = ReadAll("f");
        Assert.True(AllZero(all.AsSpan(0, (1 << 20) + 10)));
        Assert.Equal(new byte[] { 1, 2, 3 }, all[((1 << 20) + 10)..]);
        // reads clamp at the end; at or past the end they return nothing
        Assert.Equal(new byte[] { 2, 3 }, ReadRange("f", (1 << 20) + 11, 100));
        Assert.Empty(ReadRange("f", (1 << 20) + 13, 100));
        Assert.Empty(ReadRange("f", 1L << 40, 100));
        using (var f = Open("f", O_RDONLY)) Fails(Errno.EINVAL, f.Pread(new byte[1], -1, out _), "read at -1");
        // sub-block writes against a model
        var model = Array.Empty<byte>();
        using (var g = Open("g", O_RDWR | O_CREAT))
        {
            void W(long off, byte[] d)
            {
                WriteAt(g, off, d);
                if (off + d.Length > model.Length) Array.Resize(ref model, (int)(off + d.Length));
                d.CopyTo(model, off);
                Ok(g.Fstat(out var st), "fstat");
                Assert.Equal(model.Length, st.Size);
                Assert.Equal(model, ReadRange(g, 0, model.Length));
            }
            W(0, new byte[] { 7 });
            W(4095, new byte[] { 1 });
            W(4094, new byte[] { 2, 3, 4 }); // crosses a block boundary
            W(1, Pattern(10, 12));
            W(5000, Pattern(3, 13)); // past the end inside the next block: the gap is zeros
            W(2 * Bs - 1, Pattern(Bs + 2, 14)); // partial, whole, partial
            W(100, Pattern(1, 15));
            W(ChunkBytes - 3, Pattern(7, 16)); // crosses a chunk boundary of the extent map
            W(ChunkBytes - Bs, Pattern(3 * Bs, 17));
            Fails(Errno.EINVAL, g.Pwrite(new byte[1], -1, out _), "write at -1");
            Fails(Errno.EFBIG, g.Pwrite(new byte[1], MaxFileSize, out _), "write at the size limit");
        }
        // O_APPEND goes to the end whatever the offset says
        int before = model.Length;
        using (var ap = Open("g", O_WRONLY | O_APPEND))
        {
            Ok(ap.Pwrite(new byte[] { 0xAA, 0xBB }, 0, out int n), "append");
            Assert.Equal(2, n);
            model = model.Concat(new byte[] { 0xAA, 0xBB }).ToArray();
            Assert.Equal(before + 2, St("g").Size);
            Assert.Equal(model, ReadAll("g"));
            Ok(ap.Pwrite(new byte[] { 0xCC }, 12345, out n), "append");
            Assert.Equal(0xCC, ReadRange("g", before + 2, 1)[0]);
            model = model.Concat(new byte[] { 0xCC }).ToArray();
            // empty writes change nothing
            Ok(ap.Pwrite(ReadOnlySpan<byte>.Empty, 1L << 30, out n), "empty write");
            Assert.Equal(0, n);
        }
        Assert.Equal(before + 3, St("g").Size);
        // directories are not for data
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        Fails(Errno.EISDIR, OpenErrno("d", O_WRONLY), "open a directory for writing");
        using (var d = Open("d", O_RDONLY)) Fails(Errno.EISDIR, d.Pread(new byte[1], 0, out _), "read a directory");
        T.Reopen();
        Assert.Equal((1 << 20) + 13, St("f").Size);
        Assert.Equal(new byte[] { 1, 2, 3 }, ReadRange("f", (1 << 20) + 10, 3));
        Assert.Equal(model, ReadRange("g", 0, model.Length));
        T.AssertClean();
    }

    [SkippableFact]
    public void AppendersOnTwoDescriptorsBothLandAtTheEnd()
    {
        WriteFile("log", "head:"u8);
        var expected = new List<byte>("head:"u8.ToArray());
        using (var a = Open("log", O_WRONLY | O_APPEND))
        using (var b = Open("log", O_WRONLY | O_APPEND))
        {
            for (int i = 0; i < 50; i++)
            {
                var fd = i % 3 == 0 ? b : a;
                var chunk = System.Text.Encoding.ASCII.GetBytes($"[{(fd == a ? 'a' : 'b')}{i}:{new string('x', i * 37 % 5000)}]");
                Ok(fd.Write(chunk, out int n), "append");
                Assert.Equal(chunk.Length, n);
                expected.AddRange(chunk);
                // the other descriptor's position is stale; O_APPEND must still land at the end
                Ok(fd.Fstat(out var st), "fstat");
                Assert.Equal(expected.Count, st.Size);
            }
        }
        Assert.Equal(expected.ToArray(), ReadAll("log"));
        T.AssertClean();
    }

    [SkippableFact]
    public void HugeSparseFilesUpToTheSizeLimit()
    {
        long max = MaxFileSize;
        using (var f = Open("huge", O_RDWR | O_CREAT))
        {
            WriteAt(f, 0, new byte[] { 1 });
            WriteAt(f, 1L << 30, new byte[] { 2 });
            WriteAt(f, max - 1, new byte[] { 3 });
            Ok(f.Fstat(out var a), "fstat");
            Assert.Equal(max, a.Size);
            Assert.Equal(3 * Bs / 512, a.Blocks512);
            Assert.Equal(new byte[] { 3 }, ReadRange(f, max - 1, 100));
            Assert.Equal(new byte[] { 0, 2, 0 }, ReadRange(f, (1L << 30) - 1, 3));
            Assert.True(AllZero(ReadRange(f, max - (1 << 20), (1 << 20) - 1)));
            long r;
            Ok(f.Seek(1, SeekWhence.Data, out r), "data in the first block"); Assert.Equal(1, r);
            Ok(f.Seek(1, SeekWhence.Hole, out r), "hole after the first block"); Assert.Equal(Bs, r);
            Ok(f.Seek(Bs, SeekWhence.Data, out r), "data after the first hole"); Assert.Equal(1L << 30, r);
            Ok(f.Seek((1L << 30) + Bs, SeekWhence.Data, out r), "data near the end"); Assert.Equal(max - Bs, r);
            Ok(f.Seek(1L << 30, SeekWhence.Hole, out r), "hole after 1 GiB"); Assert.Equal((1L << 30) + Bs, r);
            Ok(f.Seek(max - Bs, SeekWhence.Hole, out r), "virtual hole at the limit"); Assert.Equal(max, r);
            Fails(Errno.EFBIG, f.Pwrite(new byte[] { 4 }, max, out _), "write at the limit");
            Ok(f.Pwrite(new byte[] { 4, 5, 6 }, max - 2, out int n), "write across the limit"); // short, as Linux
            Assert.Equal(2, n);
            Assert.Equal(new byte[] { 4, 5 }, ReadRange(f, max - 2, 3));
            Ok(f.Fstat(out a), "fstat");
            Assert.Equal(max, a.Size);
            Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 1L << 20, max - (1L << 20)), "punch nearly all");
            Ok(f.Fstat(out a), "fstat");
            Assert.Equal(max, a.Size);
            Assert.Equal(Bs / 512, a.Blocks512);
            WriteAt(f, max - 1, new byte[] { 3 });
            WriteAt(f, 1L << 30, new byte[] { 2 });
            Assert.Equal(new byte[] { 3 }, ReadRange(f, max - 1, 1));
        }
        using (var ap = Open("huge", O_WRONLY | O_APPEND)) Fails(Errno.EFBIG, ap.Write(new byte[] { 4 }, out _), "append at the limit");
        Ok(T.Truncate("huge", 1), "truncate"); // spans far more chunks than are mapped
        Assert.Equal(Bs / 512, St("huge").Blocks512);
        Assert.Equal(new byte[] { 1 }, ReadAll("huge"));
        T.AssertClean();
    }

    [SkippableFact]
    public void TruncateShrinksAndGrowsWithZeros()
    {
        SkipUnderIomap(IomapSetattrTimes + ": truncate moves neither mtime nor ctime");
        var data = Pattern(20_000, 1);
        WriteAt("f", 0, data);
        var a0 = St("f");
        Tick();
        // non-block-aligned shrink, then grow: the bytes past the shrink point read as zeros
        Ok(T.Truncate("f", 5000), "truncate 5000");
        var a = St("f");
        Assert.Equal(5000, a.Size);
        Assert.True(a.MtimeNs > a0.MtimeNs && a.CtimeNs > a0.CtimeNs, "truncate moves mtime and ctime");
        Assert.Equal(2 * Bs / 512, a.Blocks512);
        Assert.Equal(data[..5000], ReadAll("f"));
        Ok(T.Truncate("f", 30_000), "truncate 30000");
        Assert.Equal(2 * Bs / 512, St("f").Blocks512); // growing makes a hole
        var all = ReadAll("f");
        Assert.Equal(30_000, all.Length);
        Assert.Equal(data[..5000], all[..5000]);
        Assert.True(AllZero(all.AsSpan(5000)), "bytes after a shrink then grow are zeros");
        // shrink inside a block, then grow by writing past the end
        Ok(T.Truncate("f", 4097), "truncate 4097");
        WriteAt("f", 10_000, new byte[] { 9 });
        all = ReadAll("f");
        Assert.Equal(10_001, all.Length);
        Assert.Equal(data[..4097], all[..4097]);
        Assert.True(AllZero(all.AsSpan(4097, 10_000 - 4097)));
        Assert.Equal(9, all[10_000]);
        // block-aligned shrink then grow
        WriteAt("f", 0, data);
        Ok(T.Truncate("f", 8192), "truncate 8192");
        Assert.Equal(2 * Bs / 512, St("f").Blocks512);
        Ok(T.Truncate("f", 12_000), "truncate 12000");
        all = ReadAll("f");
        Assert.Equal(data[..8192], all[..8192]);
        Assert.True(AllZero(all.AsSpan(8192)));
        // grow a short file far, shrink unaligned, grow again with ftruncate: the cut bytes never come back
        WriteFile("g", data[..10_000]);
        Ok(T.Truncate("g", 100_000), "truncate grow");
        all = ReadAll("g");
        Assert.Equal(100_000, all.Length);
        Assert.Equal(data[..10_000], all[..10_000]);
        Assert.True(AllZero(all.AsSpan(10_000)), "grown part is not zero");
        Ok(T.Truncate("g", 5000), "truncate shrink (unaligned)");
        Assert.Equal(data[..5000], ReadAll("g"));
        using (var g = Open("g", O_RDWR)) Ok(g.Ftruncate(20_000), "ftruncate grow");
        all = ReadAll("g");
        Assert.Equal(20_000, all.Length);
        Assert.Equal(data[..5000], all[..5000]);
        Assert.True(AllZero(all.AsSpan(5000)), "old bytes reappeared after shrink + grow");
        // to zero and back
        Ok(T.Truncate("f", 0), "truncate to 0");
        Assert.Equal((0L, 0L), (St("f").Size, St("f").Blocks512));
        Ok(T.Truncate("f", 1 << 20), "truncate to 1 MiB");
        Assert.Equal(0, St("f").Blocks512);
        Assert.True(AllZero(ReadAll("f")));
        // same size: nothing changes in the data
        WriteAt("f", 0, data);
        Ok(T.Truncate("f", 1 << 20), "truncate to the same size");
        Assert.Equal(data, ReadRange("f", 0, data.Length));
        // errors
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        Ok(T.Mknod("fifo", S_IFIFO | 0x1A4, 0), "mkfifo");
        Fails(Errno.EISDIR, T.Truncate("d", 0), "truncate a directory");
        Fails(Errno.EINVAL, T.Truncate("fifo", 0), "truncate a fifo");
        Fails(Errno.EINVAL, T.Truncate("f", -1), "truncate to a negative size");
        Fails(Errno.EFBIG, T.Truncate("f", MaxFileSize + 1), "truncate past the size limit");
        Fails(Errno.ENOENT, T.Truncate("missing", 0), "truncate a missing file");
        using (var ro = Open("f", O_RDONLY)) Fails(Errno.EINVAL, ro.Ftruncate(10), "ftruncate a read-only descriptor");
        Assert.Equal(1 << 20, St("f").Size);
        T.AssertClean();
    }

    [SkippableFact]
    public void OTruncEmptiesTheFile()
    {
        WriteFile("f", Pattern(100_000, 3));
        using (var f = Open("f", O_WRONLY | O_TRUNC))
        {
            Ok(f.Fstat(out var st), "fstat");
            Assert.Equal(0, st.Size);
            WriteAt(f, 0, "new"u8);
        }
        Assert.Equal("new"u8.ToArray(), ReadAll("f"));
        var s = St("f");
        Assert.Equal(3, s.Size);
        Assert.Equal(Bs / 512, s.Blocks512);
        // Linux truncates on O_RDONLY|O_TRUNC too (ext4 does; the access mode does not matter)
        using (var f = Open("f", O_RDONLY | O_TRUNC))
        {
            Ok(f.Fstat(out var st), "fstat");
            Assert.Equal(0, st.Size);
        }
        Assert.Equal(0, St("f").Size);
        T.AssertClean();
    }

    [SkippableFact]
    public void TruncateInsideAHoleAllocatesNothing()
    {
        // ext4 zeroes the tail of the last block only when that block is mapped: shrinking a sparse
        // file must not allocate space.
        WriteAt("sparse", 100_000, new byte[] { 1 });
        Assert.Equal(Bs / 512, St("sparse").Blocks512);
        Ok(T.Truncate("sparse", 50_000), "truncate inside a hole"); // not block-aligned
        Assert.Equal(0, St("sparse").Blocks512);
        Ok(T.Truncate("sparse", 100_001), "truncate grow");
        Assert.Equal(0, St("sparse").Blocks512);
        Assert.True(AllZero(ReadAll("sparse")));
        T.AssertClean();
    }
}
