using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Holes: fallocate (mode 0, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE) and lseek SEEK_DATA / SEEK_HOLE.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void FallocateModes()
    {
        SkipUnderIomap("fuse-iomap test kernel: every fallocate moves the mtime of an iomap inode, also one that does not grow the "
            + "file (fuse_file_fallocate calls file_modified, and the kernel keeps the times of iomap inodes; docs/iomap.md, Known limits)");
        using var f = Open("f", O_RDWR | O_CREAT);
        PosixStat Fst()
        {
            Ok(f.Fstat(out var st), "fstat");
            return st;
        }
        byte[] All() => ReadRange(f, 0, (int)Fst().Size);
        // mode 0 extends the size (and, as on ext4, mtime with it); the new range reads zeros
        var t0 = Fst();
        Tick();
        Ok(f.Fallocate(FallocateMode.None, 0, 10_000), "fallocate");
        var t1 = Fst();
        Assert.Equal(10_000, t1.Size);
        Assert.True(t1.MtimeNs > t0.MtimeNs && t1.CtimeNs > t0.CtimeNs, "fallocate growing the file moves mtime and ctime");
        Assert.True(AllZero(All()));
        Tick();
        Ok(f.Fallocate(FallocateMode.None, 0, 100), "fallocate inside");
        var t2 = Fst();
        Assert.Equal(t1.MtimeNs, t2.MtimeNs); // not growing: only ctime moves
        Assert.True(t2.CtimeNs > t1.CtimeNs);
        // inside the file: no change to size or data
        var data = Pattern(64 * 1024, 20);
        WriteAt(f, 0, data);
        Ok(f.Fallocate(FallocateMode.None, 100, 1000), "fallocate inside");
        Assert.Equal(data, All());
        // KeepSize does not change the size
        Ok(f.Fallocate(FallocateMode.KeepSize, 60_000, 100_000), "fallocate keep size");
        Assert.Equal(64 * 1024, Fst().Size);
        Assert.Equal(data, All());
        // punch hole: zeros, blocks freed, size kept
        long blocks = Fst().Blocks512;
        Assert.Equal(16 * Bs / 512, blocks);
        Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 5000, 20_000), "punch");
        var a = Fst();
        Assert.Equal(64 * 1024, a.Size);
        Assert.Equal(blocks - 4 * Bs / 512, a.Blocks512); // blocks 2..5 are wholly inside [5000, 25000)
        var expect = data.ToArray();
        Array.Clear(expect, 5000, 20_000);
        Assert.Equal(expect, All());
        Ok(f.Seek(5000, SeekWhence.Hole, out long hole), "seek hole");
        Assert.Equal(2 * Bs, hole);
        // punching past the end changes nothing beyond it
        Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 60 * 1024, 1 << 20), "punch past the end");
        Assert.Equal(64 * 1024, Fst().Size);
        Array.Clear(expect, 60 * 1024, 4 * 1024);
        Assert.Equal(expect, All());
        // punching to the end of a file whose size is not block-aligned frees its last block too (as ext4)
        using (var u = Open("u", O_RDWR | O_CREAT))
        {
            WriteAt(u, 0, Pattern(3 * Bs + 100, 32));
            Ok(u.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, Bs, 1 << 20), "punch to past the end");
            Ok(u.Fstat(out var ua), "fstat");
            Assert.Equal(3 * Bs + 100, ua.Size);
            Assert.Equal(Bs / 512, ua.Blocks512);
            Assert.Equal(Pattern(Bs, 32), ReadRange(u, 0, Bs));
            Assert.True(AllZero(ReadRange(u, Bs, 3 * Bs)));
            Ok(u.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 3 * Bs + 100), "punch exactly to the end");
            Ok(u.Fstat(out ua), "fstat");
            Assert.Equal(0, ua.Blocks512);
            Ok(u.Ftruncate(5 * Bs), "ftruncate");
            Assert.True(AllZero(ReadRange(u, 0, 5 * Bs)));
        }
        // punching a hole that is already a hole (unaligned) allocates nothing
        long b0 = Fst().Blocks512;
        Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 3 * Bs + 100, 200), "punch in a hole");
        Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 2 * Bs + 5, 2 * Bs), "punch across holes");
        Assert.Equal(b0, Fst().Blocks512);
        Assert.Equal(expect, All());
        // unaligned punch: partial blocks are zeroed, the rest kept
        WriteAt(f, 0, data);
        Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 1000, 3000), "unaligned punch");
        var back = ReadRange(f, 0, 8192);
        Assert.Equal(data[..1000], back[..1000]);
        Assert.True(AllZero(back.AsSpan(1000, 3000)), "unaligned punched range is not zero");
        Assert.Equal(data[4000..8192], back[4000..]);
        // zero range: zeros, size kept with KeepSize, extended without
        WriteAt(f, 0, data);
        Ok(f.Fallocate(FallocateMode.ZeroRange | FallocateMode.KeepSize, 1000, 3000), "zero range");
        expect = data.ToArray();
        Array.Clear(expect, 1000, 3000);
        Assert.Equal(expect, All());
        Ok(f.Fallocate(FallocateMode.ZeroRange | FallocateMode.KeepSize, 60_000, 100_000), "zero range keep size past the end");
        Array.Clear(expect, 60_000, expect.Length - 60_000);
        Assert.Equal(expect, All());
        Ok(f.Fallocate(FallocateMode.ZeroRange, 50_000, 50_000), "zero range extending");
        Assert.Equal(100_000, Fst().Size);
        Array.Resize(ref expect, 100_000);
        Array.Clear(expect, 50_000, 50_000);
        Assert.Equal(expect, All());
        // errors
        Fails(Errno.EOPNOTSUPP, f.Fallocate(FallocateMode.PunchHole, 0, 100), "punch hole without KEEP_SIZE");
        Fails(Errno.EOPNOTSUPP, f.Fallocate(FallocateMode.PunchHole | FallocateMode.ZeroRange | FallocateMode.KeepSize, 0, 100), "punch and zero range");
        Fails(Errno.EOPNOTSUPP, f.Fallocate(FallocateMode.CollapseRange, 0, Bs), "collapse range");
        Fails(Errno.EOPNOTSUPP, f.Fallocate(FallocateMode.InsertRange, 0, Bs), "insert range");
        Fails(Errno.EOPNOTSUPP, f.Fallocate(FallocateMode.UnshareRange, 0, Bs), "unshare range");
        Fails(Errno.EOPNOTSUPP, f.Fallocate((FallocateMode)0x80, 0, Bs), "mode 0x80");
        Fails(Errno.EINVAL, f.Fallocate(FallocateMode.None, 0, 0), "fallocate length 0");
        Fails(Errno.EINVAL, f.Fallocate(FallocateMode.None, -1, 10), "fallocate a negative offset");
        Fails(Errno.EFBIG, f.Fallocate(FallocateMode.None, MaxFileSize, 1), "fallocate past the size limit");
        using (var ro = Open("f", O_RDONLY)) Fails(Errno.EBADF, ro.Fallocate(FallocateMode.None, 0, 4096), "fallocate on a read-only descriptor");
        Ok(T.Mknod("fifo", S_IFIFO | 0x1A4, 0), "mkfifo");
        using (var fifo = Open("fifo", O_RDWR))
            Assert.NotEqual(0, (int)fifo.Fallocate(FallocateMode.None, 0, 100)); // the kernel answers ESPIPE itself
        Assert.Equal(0, Lst("fifo").Size);
        Assert.Equal(100_000, Fst().Size);
        f.Dispose();
        T.AssertClean();
    }

    [SkippableFact]
    public void SeekDataAndHole()
    {
        using (var f = Open("f", O_RDWR | O_CREAT))
        {
            // empty file: ENXIO both ways
            Fails(Errno.ENXIO, f.Seek(0, SeekWhence.Data, out _), "SEEK_DATA in an empty file");
            Fails(Errno.ENXIO, f.Seek(0, SeekWhence.Hole, out _), "SEEK_HOLE in an empty file");
            // leading hole, then data, then a trailing hole
            long dataAt = 1 << 20;
            WriteAt(f, dataAt, Pattern(2 * Bs, 26));
            Ok(f.Ftruncate(3 << 20), "ftruncate");
            long size = 3 << 20;
            long r;
            Ok(f.Seek(0, SeekWhence.Data, out r), "data from 0"); Assert.Equal(dataAt, r);
            Ok(f.Seek(5, SeekWhence.Data, out r), "data from 5"); Assert.Equal(dataAt, r);
            Ok(f.Seek(dataAt + 100, SeekWhence.Data, out r), "data inside data"); Assert.Equal(dataAt + 100, r);
            Ok(f.Seek(0, SeekWhence.Hole, out r), "hole from 0"); Assert.Equal(0, r);
            Ok(f.Seek(7, SeekWhence.Hole, out r), "hole inside a hole"); Assert.Equal(7, r);
            Ok(f.Seek(dataAt, SeekWhence.Hole, out r), "hole from data"); Assert.Equal(dataAt + 2 * Bs, r);
            Ok(f.Seek(dataAt + 2 * Bs + 1, SeekWhence.Hole, out r), "hole in the trailing hole"); Assert.Equal(dataAt + 2 * Bs + 1, r);
            Fails(Errno.ENXIO, f.Seek(dataAt + 2 * Bs, SeekWhence.Data, out _), "SEEK_DATA when only a hole follows");
            Fails(Errno.ENXIO, f.Seek(size, SeekWhence.Data, out _), "SEEK_DATA at EOF");
            Fails(Errno.ENXIO, f.Seek(size, SeekWhence.Hole, out _), "SEEK_HOLE at EOF");
            Fails(Errno.ENXIO, f.Seek(size + 1000, SeekWhence.Hole, out _), "SEEK_HOLE past EOF");
            Fails(Errno.ENXIO, f.Seek(-1, SeekWhence.Data, out _), "SEEK_DATA at -1");
            Ok(f.Seek(size - 1, SeekWhence.Hole, out r), "hole at the last byte"); Assert.Equal(size - 1, r);
        }
        // a file that ends in data: the hole is at EOF (the virtual hole), even mid-block
        using (var g = Open("g", O_RDWR | O_CREAT))
        {
            long r;
            WriteAt(g, 0, Pattern(3 * Bs + 10, 27));
            Ok(g.Seek(0, SeekWhence.Hole, out r), "virtual hole"); Assert.Equal(3 * Bs + 10, r);
            Ok(g.Seek(3 * Bs + 5, SeekWhence.Data, out r), "data in the last block"); Assert.Equal(3 * Bs + 5, r);
            Fails(Errno.ENXIO, g.Seek(3 * Bs + 10, SeekWhence.Data, out _), "SEEK_DATA at EOF");
            // a hole punched in the middle of data
            Ok(g.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, Bs, Bs), "punch");
            Ok(g.Seek(0, SeekWhence.Hole, out r), "punched hole"); Assert.Equal(Bs, r);
            Ok(g.Seek(Bs, SeekWhence.Data, out r), "data after the punched hole"); Assert.Equal(2 * Bs, r);
        }
        // data across a chunk boundary of the extent map, then a hole, then data in a later chunk
        using (var h = Open("h", O_RDWR | O_CREAT))
        {
            long r;
            WriteAt(h, ChunkBytes - 2 * Bs, Pattern(4 * Bs, 28));
            WriteAt(h, 3 * ChunkBytes + Bs, Pattern(Bs, 29));
            Ok(h.Seek(0, SeekWhence.Data, out r), "data h"); Assert.Equal(ChunkBytes - 2 * Bs, r);
            Ok(h.Seek(ChunkBytes - 2 * Bs, SeekWhence.Hole, out r), "hole h"); Assert.Equal(ChunkBytes + 2 * Bs, r);
            Ok(h.Seek(ChunkBytes + 2 * Bs, SeekWhence.Data, out r), "data h 2"); Assert.Equal(3 * ChunkBytes + Bs, r);
            Ok(h.Seek(2 * ChunkBytes, SeekWhence.Hole, out r), "hole in an empty chunk"); Assert.Equal(2 * ChunkBytes, r);
            Ok(h.Seek(3 * ChunkBytes + Bs, SeekWhence.Hole, out r), "virtual hole h"); Assert.Equal(3 * ChunkBytes + 2 * Bs, r);
        }
        // 64 KiB of data, a hole, 64 KiB at 1 MiB
        using (var k = Open("k", O_RDWR | O_CREAT))
        {
            WriteAt(k, 0, Pattern(64 * 1024, 7));
            WriteAt(k, MiB, Pattern(64 * 1024, 8));
            long end = MiB + 64 * KiB, r;
            Ok(k.Seek(0, SeekWhence.Data, out r), "data at 0"); Assert.Equal(0, r);
            Ok(k.Seek(0, SeekWhence.Hole, out r), "hole after 64 KiB"); Assert.Equal(64 * KiB, r);
            Ok(k.Seek(10_000, SeekWhence.Hole, out r), "hole from inside data"); Assert.Equal(64 * KiB, r);
            Ok(k.Seek(64 * KiB, SeekWhence.Data, out r), "data after the hole"); Assert.Equal(MiB, r);
            Ok(k.Seek(500 * KiB, SeekWhence.Data, out r), "data from inside the hole"); Assert.Equal(MiB, r);
            Ok(k.Seek(MiB + 5, SeekWhence.Data, out r), "data inside data"); Assert.Equal(MiB + 5, r);
            Ok(k.Seek(MiB, SeekWhence.Hole, out r), "the virtual hole at EOF"); Assert.Equal(end, r);
            Fails(Errno.ENXIO, k.Seek(end, SeekWhence.Data, out _), "SEEK_DATA at EOF");
            Fails(Errno.ENXIO, k.Seek(end, SeekWhence.Hole, out _), "SEEK_HOLE at EOF");
            Fails(Errno.ENXIO, k.Seek(end + 12345, SeekWhence.Data, out _), "SEEK_DATA past EOF");
            // a trailing hole made by truncate: no data after the last extent
            Ok(k.Ftruncate(4 * MiB), "ftruncate grow");
            Fails(Errno.ENXIO, k.Seek(2 * MiB, SeekWhence.Data, out _), "SEEK_DATA in the trailing hole");
            Ok(k.Seek(MiB, SeekWhence.Hole, out r), "hole after the data"); Assert.Equal(end, r);
            Ok(k.Seek(3 * MiB, SeekWhence.Hole, out r), "hole inside the trailing hole"); Assert.Equal(3 * MiB, r);
        }
        T.AssertClean();
    }
}
