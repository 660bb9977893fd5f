using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Mono.Unix.Native;
using Xunit;
using Cow.Fuse.Server;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// The file data path through a real mount that only a mount can show: the kernel's writeback cache (each case
/// with it; without it, the same case is shared with the inode API in <see cref="Cow.Tests.Posix.PosixCases"/>),
/// a cached reader beside a direct writer, sparse files, fallocate and SEEK_DATA/SEEK_HOLE as the kernel
/// reports them, and an unlinked file kept open.
/// </summary>
[Trait("Tier", "mount")]
public class PosixDataMountTests : PosixMountTestBase
{
    // ---------------------------------------------------------------- create / read / write

    /// <summary>With the kernel's writeback cache; without it, this is the shared case PosixCases.CreateReadWriteOverwrite.</summary>
    [SkippableTheory]
    [InlineData(true)]
    public void CreateReadWriteOverwrite(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        var data = Bytes(300_000, 1);
        File.WriteAllBytes(m.P("f"), data);
        Assert.Equal(data, File.ReadAllBytes(m.P("f")));
        var st = StatOf(m.P("f"));
        Assert.Equal(S_IFREG, Type(st));
        Assert.Equal(data.Length, st.st_size);

        // Overwrite in the middle, unaligned and across a 4 KiB boundary.
        var patch = Bytes(10_000, 2);
        using (var fd = Fd.Open(m.P("f"), O_RDWR)) fd.WriteAt(4000, patch);
        patch.CopyTo(data, 4000);
        Assert.Equal(data, File.ReadAllBytes(m.P("f")));
        // Write past the end: the gap reads zero, the size follows.
        using (var fd = Fd.Open(m.P("f"), O_WRONLY)) fd.WriteAt(400_000, "tail"u8);
        var all = File.ReadAllBytes(m.P("f"));
        Assert.Equal(400_004, all.Length);
        Assert.Equal(data, all[..data.Length]);
        Assert.True(AllZero(all.AsSpan(data.Length, 400_000 - data.Length)), "gap is not zero");
        Assert.Equal("tail"u8.ToArray(), all[400_000..]);

        m.Remount();
        Assert.Equal(all, File.ReadAllBytes(m.P("f")));

        OpenFails(Errno.ENOENT, m.P("missing"), O_RDONLY, "open missing without O_CREAT");
        OpenFails(Errno.ENOENT, m.P("nodir/f"), O_RDWR | O_CREAT, "create in missing dir");
        Directory.CreateDirectory(m.P("d"));
        OpenFails(Errno.EISDIR, m.P("d"), O_WRONLY, "open a directory for writing");
        OpenFails(Errno.ENOTDIR, m.P("f"), O_RDONLY | O_DIRECTORY, "O_DIRECTORY on a file");
        OpenFails(Errno.ENOTDIR, m.P("f/x"), O_RDWR | O_CREAT, "create under a file");
    }

    /// <summary>Read-only opens are served through the page cache, opens for writing bypass it: a reader
    /// that cached the file sees every later write of a writer, at once, on the same open descriptor.</summary>
    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void CachedReaderSeesWritesOfADirectWriter(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        var data = Bytes(1 << 20, 11);
        File.WriteAllBytes(m.P("f"), data);
        using var reader = Fd.Open(m.P("f"), O_RDONLY);
        Assert.Equal(data, reader.ReadAt(0, data.Length));          // now in the page cache
        using var writer = Fd.Open(m.P("f"), O_RDWR);
        for (int round = 0; round < 3; round++)
        {
            var patch = Bytes(5000 + round, 20 + round);
            long at = 4096L * 37 * (round + 1) - 100;
            writer.WriteAt(at, patch);
            patch.CopyTo(data, at);
            Assert.Equal(data, reader.ReadAt(0, data.Length));
        }
        // Growth through the writer is visible to the reader (size and bytes).
        var tail = Bytes(70_000, 30);
        writer.WriteAt(data.Length, tail);
        var all = reader.ReadAt(0, data.Length + tail.Length + 10);
        Assert.Equal(data.Length + tail.Length, all.Length);
        Assert.Equal(tail, all[data.Length..]);
    }

    /// <summary>With the kernel's writeback cache; without it, this is the shared case PosixCases.AppendersOnTwoDescriptorsBothLandAtTheEnd.</summary>
    [SkippableTheory]
    [InlineData(true)]
    public void AppendWithTwoAppenders(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        File.WriteAllBytes(m.P("log"), "head:"u8.ToArray());
        var expected = new List<byte>("head:"u8.ToArray());
        using (var a = Fd.Open(m.P("log"), O_WRONLY | O_APPEND))
        using (var b = Fd.Open(m.P("log"), O_WRONLY | O_APPEND))
        {
            for (int i = 0; i < 50; i++)
            {
                var fd = i % 3 == 0 ? b : a;
                var chunk = Encoding.ASCII.GetBytes($"[{(fd == a ? 'a' : 'b')}{i}:{new string('x', i * 37 % 5000)}]");
                fd.Append(chunk);
                expected.AddRange(chunk);
                // The other descriptor's position is stale; O_APPEND must still land at the end.
                Assert.Equal(expected.Count, fd.Stat().st_size);
            }
        }
        Assert.Equal(expected.ToArray(), File.ReadAllBytes(m.P("log")));
    }

    /// <summary>With the kernel's writeback cache; without it, this is the shared case PosixCases.OTruncEmptiesTheFile.</summary>
    [SkippableTheory]
    [InlineData(true)]
    public void OTruncEmptiesTheFile(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        File.WriteAllBytes(m.P("f"), Bytes(100_000, 3));
        using (var fd = Fd.Open(m.P("f"), O_WRONLY | O_TRUNC))
        {
            var st = fd.Stat();
            Assert.Equal(0, st.st_size);
            fd.WriteAt(0, "new"u8);
        }
        Assert.Equal("new"u8.ToArray(), File.ReadAllBytes(m.P("f")));
        var s = StatOf(m.P("f"));
        Assert.Equal(3, s.st_size);
        Assert.True(s.st_blocks <= 8, $"st_blocks {s.st_blocks} after O_TRUNC and a 3-byte write");
        // Linux truncates on O_RDONLY|O_TRUNC too (ext4 does; the access mode does not matter).
        using (var fd = Fd.Open(m.P("f"), O_RDONLY | O_TRUNC)) Assert.Equal(0, fd.Stat().st_size);
        Assert.Equal(0, StatOf(m.P("f")).st_size);
        // O_TRUNC on a directory: EISDIR.
        Directory.CreateDirectory(m.P("d"));
        OpenFails(Errno.EISDIR, m.P("d"), O_WRONLY | O_TRUNC, "O_TRUNC on a directory");
    }

    // ---------------------------------------------------------------- sparse files, truncate, fallocate, lseek

    /// <summary>With the kernel's writeback cache; without it, this is the shared case PosixCases.SparseFileAtOneGiB.</summary>
    [SkippableTheory]
    [InlineData(true)]
    public void SparseFileAtOneGiB(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        var data = Bytes(4096, 4);
        using (var fd = Fd.Open(m.P("sparse"), O_RDWR | O_CREAT)) fd.WriteAt(GiB, data);
        var st = StatOf(m.P("sparse"));
        Assert.Equal(GiB + 4096, st.st_size);
        Assert.True(st.st_blocks * 512 < MiB, $"st_blocks {st.st_blocks} for a file with 4 KiB of data");
        using (var fd = Fd.Open(m.P("sparse"), O_RDONLY))
        {
            Assert.True(AllZero(fd.ReadAt(0, 65536)), "start of the hole is not zero");
            Assert.True(AllZero(fd.ReadAt(512 * MiB + 123, 70_000)), "middle of the hole is not zero");
            var edge = fd.ReadAt(GiB - 4096, 8192);
            Assert.True(AllZero(edge.AsSpan(0, 4096)), "end of the hole is not zero");
            Assert.Equal(data, edge[4096..]);
            Assert.Empty(fd.ReadAt(GiB + 4096, 100));
        }
        m.Remount();
        Assert.Equal(GiB + 4096, StatOf(m.P("sparse")).st_size);
        using (var fd = Fd.Open(m.P("sparse"), O_RDONLY)) Assert.Equal(data, fd.ReadAt(GiB, 4096));
    }

    /// <summary>With the kernel's writeback cache; without it, this is the shared case PosixCases.TruncateShrinksAndGrowsWithZeros.</summary>
    [SkippableTheory]
    [InlineData(true)]
    public void TruncateGrowAndShrink(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        var data = Bytes(10_000, 5);
        File.WriteAllBytes(m.P("f"), data);
        Ok(Truncate(m.P("f"), 100_000), "truncate grow");
        var all = File.ReadAllBytes(m.P("f"));
        Assert.Equal(100_000, all.Length);
        Assert.Equal(data, all[..10_000]);
        Assert.True(AllZero(all.AsSpan(10_000)), "grown part is not zero");

        Ok(Truncate(m.P("f"), 5000), "truncate shrink (unaligned)");
        Assert.Equal(data[..5000], File.ReadAllBytes(m.P("f")));
        // Grow again: the bytes cut off must not come back, not even in the tail of the last block.
        using (var fd = Fd.Open(m.P("f"), O_RDWR)) Ok(Ftruncate(fd.Handle, 20_000), "ftruncate grow");
        all = File.ReadAllBytes(m.P("f"));
        Assert.Equal(20_000, all.Length);
        Assert.Equal(data[..5000], all[..5000]);
        Assert.True(AllZero(all.AsSpan(5000)), "old bytes reappeared after shrink + grow");

        Ok(Truncate(m.P("f"), 0), "truncate to 0");
        Assert.Equal(0, StatOf(m.P("f")).st_size);
        Assert.Equal(0, StatOf(m.P("f")).st_blocks);

        Fails(Errno.EINVAL, Truncate(m.P("f"), -1), "truncate to a negative size");
        Directory.CreateDirectory(m.P("d"));
        Fails(Errno.EISDIR, Truncate(m.P("d"), 0), "truncate a directory");
        Fails(Errno.ENOENT, Truncate(m.P("missing"), 0), "truncate a missing file");
        using (var ro = Fd.Open(m.P("f"), O_RDONLY)) Fails(Errno.EINVAL, Ftruncate(ro.Handle, 10), "ftruncate a read-only descriptor");
    }

    /// <summary>st_blocks of an open file, after an fsync: with the writeback cache, the blocks are placed by the
    /// writes of writeback, and the server then drops the kernel's cached attributes (no waiting for them to time out).</summary>
    private static long Blocks(Fd fd, bool writebackCache)
    {
        _ = writebackCache;
        return fd.Stat().st_blocks;
    }

    /// <summary>With the kernel's writeback cache; without it, this is the shared case PosixCases.PunchHoleAndFallocateInAMebibyte and PosixCases.FallocateModes.</summary>
    [SkippableTheory]
    [InlineData(true)]
    public void FallocateAndPunchHole(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        var data = Bytes((int)MiB, 6);
        using var fd = Fd.Open(m.P("f"), O_RDWR | O_CREAT);
        fd.WriteAt(0, data);
        Ok(Fsync(fd.Handle), "fsync");
        long before = fd.Stat().st_blocks;   // writeback placed the blocks; the server dropped the cached attributes
        Assert.True(before * 512 >= MiB, $"st_blocks {before} for 1 MiB of data");

        Ok(Fallocate(fd.Handle, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 * KiB, 512 * KiB), "punch hole");
        var st = fd.Stat();
        Assert.Equal(MiB, st.st_size);
        st.st_blocks = fd.Stat().st_blocks;
        Assert.True(st.st_blocks <= before - 512 * KiB / 512, $"st_blocks {before} -> {st.st_blocks} after punching 512 KiB");
        var back = fd.ReadAt(0, (int)MiB);
        Assert.Equal(data.AsSpan(0, 256 * 1024).ToArray(), back[..(256 * 1024)]);
        Assert.True(AllZero(back.AsSpan(256 * 1024, 512 * 1024)), "punched range is not zero");
        Assert.Equal(data.AsSpan(768 * 1024).ToArray(), back[(768 * 1024)..]);

        // Unaligned punch: partial blocks are zeroed, the rest kept.
        Ok(Fallocate(fd.Handle, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 3000), "unaligned punch");
        back = fd.ReadAt(0, 8192);
        Assert.Equal(data[..1000], back[..1000]);
        Assert.True(AllZero(back.AsSpan(1000, 3000)), "unaligned punched range is not zero");
        Assert.Equal(data[4000..8192], back[4000..]);

        // Plain fallocate past the end: the size grows and the bytes read zero. (Copy-on-write cannot
        // reserve blocks for later overwrites, so st_blocks is not asserted to grow; it must not shrink.)
        long blocks = fd.Stat().st_blocks;
        Ok(Fallocate(fd.Handle, 0, MiB, MiB), "fallocate mode 0");
        st = fd.Stat();
        Assert.Equal(2 * MiB, st.st_size);
        Assert.True(st.st_blocks >= blocks, $"st_blocks {blocks} -> {st.st_blocks} after fallocate mode 0");
        Assert.True(AllZero(fd.ReadAt(MiB, (int)MiB)), "allocated range is not zero");
        // KEEP_SIZE past the end: size unchanged.
        Ok(Fallocate(fd.Handle, FALLOC_FL_KEEP_SIZE, 2 * MiB, MiB), "fallocate keep size");
        Assert.Equal(2 * MiB, fd.Stat().st_size);

        Fails(Errno.EOPNOTSUPP, Fallocate(fd.Handle, FALLOC_FL_PUNCH_HOLE, 0, 4096), "punch hole without KEEP_SIZE");
        Fails(Errno.EINVAL, Fallocate(fd.Handle, 0, 0, 0), "fallocate length 0");
        Fails(Errno.EINVAL, Fallocate(fd.Handle, 0, -1, 10), "fallocate negative offset");
        using var ro = Fd.Open(m.P("f"), O_RDONLY);
        Fails(Errno.EBADF, Fallocate(ro.Handle, 0, 0, 4096), "fallocate on a read-only descriptor");
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void SeekDataAndHole(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        using var fd = Fd.Open(m.P("f"), O_RDWR | O_CREAT);
        fd.WriteAt(0, Bytes(64 * 1024, 7));
        fd.WriteAt(MiB, Bytes(64 * 1024, 8));
        long end = MiB + 64 * KiB;
        // With fuse-iomap (the kernel tier runs this suite with --iomap on) the kernel seeks through iomap
        // whatever the cache mode: real holes, below.
        if (writebackCache && m.Mount?.Dispatcher.IomapGranted != true)
        {
            // The server leaves SEEK_DATA/SEEK_HOLE to the kernel's generic lseek (its page cache may hold
            // data the server has not seen): everything below the size is data, the hole is at EOF.
            Assert.Equal(0, SeekOk(fd.Handle, 0, SEEK_DATA));
            Assert.Equal(500 * KiB, SeekOk(fd.Handle, 500 * KiB, SEEK_DATA));
            Assert.Equal(end, SeekOk(fd.Handle, 0, SEEK_HOLE));
            Fails(Errno.ENXIO, Lseek(fd.Handle, end, SEEK_DATA), "SEEK_DATA at EOF");
            return;
        }
        Assert.Equal(0, SeekOk(fd.Handle, 0, SEEK_DATA));
        Assert.Equal(64 * KiB, SeekOk(fd.Handle, 0, SEEK_HOLE));
        Assert.Equal(64 * KiB, SeekOk(fd.Handle, 10_000, SEEK_HOLE));
        Assert.Equal(MiB, SeekOk(fd.Handle, 64 * KiB, SEEK_DATA));
        Assert.Equal(MiB, SeekOk(fd.Handle, 500 * KiB, SEEK_DATA));
        Assert.Equal(MiB + 5, SeekOk(fd.Handle, MiB + 5, SEEK_DATA));
        Assert.Equal(end, SeekOk(fd.Handle, MiB, SEEK_HOLE)); // the virtual hole at EOF
        Fails(Errno.ENXIO, Lseek(fd.Handle, end, SEEK_DATA), "SEEK_DATA at EOF");
        Fails(Errno.ENXIO, Lseek(fd.Handle, end, SEEK_HOLE), "SEEK_HOLE at EOF");
        Fails(Errno.ENXIO, Lseek(fd.Handle, end + 12345, SEEK_DATA), "SEEK_DATA past EOF");
        // A trailing hole made by truncate: no data after the last extent.
        Ok(Ftruncate(fd.Handle, 4 * MiB), "ftruncate grow");
        Fails(Errno.ENXIO, Lseek(fd.Handle, 2 * MiB, SEEK_DATA), "SEEK_DATA in the trailing hole");
        Assert.Equal(end, SeekOk(fd.Handle, MiB, SEEK_HOLE));
        Assert.Equal(3 * MiB, SeekOk(fd.Handle, 3 * MiB, SEEK_HOLE));
        Fails(Errno.EINVAL, Lseek(fd.Handle, -1, SEEK_SET), "lseek to a negative offset");
        // The position moved by SEEK_DATA is the one read uses next.
        Assert.Equal(MiB, SeekOk(fd.Handle, 100 * KiB, SEEK_DATA));
        Assert.Equal(MiB, SeekOk(fd.Handle, 0, SEEK_CUR));
    }

    // ---------------------------------------------------------------- unlinked open files

    /// <summary>With the kernel's writeback cache; without it, this is the shared case PosixCases.UnlinkedOpenFileLivesUntilTheLastClose.</summary>
    [SkippableTheory]
    [InlineData(true)]
    public void UnlinkedButOpenFileLivesUntilClose(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        var data = Bytes(200_000, 9);
        using (var fd = Fd.Open(m.P("tmp"), O_RDWR | O_CREAT))
        {
            fd.WriteAt(0, data);
            Ok(Syscall.unlink(m.P("tmp")), "unlink while open");
            Assert.Equal(Errno.ENOENT, StatErrno(m.P("tmp")));
            Assert.DoesNotContain("tmp", Ls(m.MountPoint));
            Assert.Equal(data, fd.ReadAt(0, data.Length));
            fd.WriteAt(150_000, "after unlink"u8);
            var st = fd.Stat();
            Assert.Equal(0ul, st.st_nlink);
            Assert.Equal(200_000, st.st_size);
            Assert.Equal("after unlink"u8.ToArray(), fd.ReadAt(150_000, 12));
            Ok(Ftruncate(fd.Handle, 300_000), "ftruncate unlinked");
            Assert.Equal(300_000, fd.Stat().st_size);
            // A new file with the same name is a different file.
            File.WriteAllText(m.P("tmp"), "new");
            Assert.Equal("after unlink"u8.ToArray(), fd.ReadAt(150_000, 12));
            Assert.NotEqual((long)st.st_ino, StatIno(m.P("tmp")));
        }
        Assert.Equal("new", File.ReadAllText(m.P("tmp")));
        // After the last close the orphan is gone: the pool checks clean.
        m.UnmountNow();
        using (var p = Cow.Core.Pool.Open(m.PoolDir))
        {
            var report = p.Fsck();
            Assert.True(report.Clean, report.ToString());
        }
        m.MountNow();
        Assert.Equal("new", File.ReadAllText(m.P("tmp")));
    }

    // ---------------------------------------------------------------- what the kernel answers itself; sockets, fifos, xattr buffers
}
