using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Mono.Unix.Native;
using Xunit;
using Cow.Fuse.Server;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// POSIX behaviour of the real mount that only a mount can show, through real system calls on a kernel FUSE mount
/// served by this process: the page cache and the writeback cache, other users (setpriv), setuid clearing,
/// snapshots under .snapshots, copy_file_range, sockets and FIFOs. Errnos are exact where Linux defines them; where
/// the answer comes from the kernel's VFS (not the server) it is still asserted: the server must not break it.
/// The POSIX behaviour both a mount and the inode API show is written once in <see cref="Cow.Tests.Posix.PosixCases"/>
/// and runs on both.
/// </summary>
[Trait("Tier", "mount")]
public class PosixMountTests
{
    private const long KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

    // ---------------------------------------------------------------- helpers

    private static void Ok(long result, string what) => Assert.True(result >= 0, $"{what}: {LastErrno()}");

    private static void Fails(Errno expected, long result, string what)
    {
        var e = result < 0 ? LastErrno() : (Errno)0;
        Assert.True(result < 0, $"{what}: succeeded ({result}), expected {expected}");
        Assert.True(e == expected, $"{what}: {e}, expected {expected}");
    }

    private static void FailsWithAny(Errno[] expected, long result, string what)
    {
        var e = result < 0 ? LastErrno() : (Errno)0;
        Assert.True(result < 0, $"{what}: succeeded ({result}), expected one of {string.Join(", ", expected)}");
        Assert.True(expected.Contains(e), $"{what}: {e}, expected one of {string.Join(", ", expected)}");
    }

    private static void OpenFails(Errno expected, string path, int flags, string what)
    {
        var e = Fd.OpenErrno(path, flags);
        Assert.True(e == expected, $"{what}: open gave {(e == 0 ? "success" : e.ToString())}, expected {expected}");
    }

    private static long SeekOk(int fd, long offset, int whence)
    {
        long r = Lseek(fd, offset, whence);
        Assert.True(r >= 0, $"lseek({offset}, {(whence == SEEK_DATA ? "SEEK_DATA" : whence == SEEK_HOLE ? "SEEK_HOLE" : whence.ToString())}): {LastErrno()}");
        return r;
    }

    private static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static bool AllZero(ReadOnlySpan<byte> b) => !b.ContainsAnyExcept((byte)0);

    private static long StatIno(string path) => (long)StatOf(path).st_ino;

    /// <summary>Names in a directory as readdir gives them (no "." and "..").</summary>
    private static HashSet<string> Ls(string dir) =>
        Directory.EnumerateFileSystemEntries(dir).Select(Path.GetFileName).Select(n => n!).ToHashSet();

    /// <summary>syncfs, then mkdir .snapshots/NAME: what `cow snapshot create` does. The syncfs matters with the
    /// writeback cache, where the kernel holds written pages and times the server has not seen yet.</summary>
    private static void MakeSnapshot(MountedPool m, string name)
    {
        int fd = Syscall.open(m.MountPoint, OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY | OpenFlags.O_CLOEXEC);
        Assert.True(fd >= 0, "open the mount root");
        try { Assert.True(Native.Syncfs(fd) == 0, $"syncfs: {(Errno)System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}"); } finally { Syscall.close(fd); }
        Ok(Syscall.mkdir(m.P(".snapshots/" + name), (FilePermissions)0x1ED), $"mkdir .snapshots/{name}");
    }

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

    /// <summary>st_blocks of an open file. With the writeback cache the kernel keeps the attributes it has
    /// until they time out (the server cannot tell it that writeback allocated blocks), so wait that out.</summary>
    private static long Blocks(Fd fd, bool writebackCache)
    {
        if (writebackCache) Thread.Sleep(TimeSpan.FromSeconds(Cow.Fuse.Server.RequestDispatcher.AttrTimeoutSeconds) + TimeSpan.FromMilliseconds(200));
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
        long before = Blocks(fd, writebackCache);
        Assert.True(before * 512 >= MiB, $"st_blocks {before} for 1 MiB of data");

        Ok(Fallocate(fd.Handle, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 * KiB, 512 * KiB), "punch hole");
        var st = fd.Stat();
        Assert.Equal(MiB, st.st_size);
        st.st_blocks = Blocks(fd, writebackCache);
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
        if (writebackCache)
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

    [SkippableFact]
    public void UtimensatRefusesAnOutOfRangeNanosecond()
    {
        // The kernel checks tv_nsec before a file system sees the times (the inode API takes ns, which cannot be
        // out of range); the rest of utimensat is the shared case PosixCases.UtimensExplicitNowAndOmit.
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        Fails(Errno.EINVAL, Utimensat(m.P("f"), new TimeSpec(1, 1_000_000_000), new TimeSpec(1, 1)), "utimensat tv_nsec out of range");
    }

    [SkippableFact]
    public void SocketsAndFifosOnTheMountWork()
    {
        // The pipe and the socket live in the kernel, the inodes on the mount (mknod itself is the shared case
        // PosixCases.MknodMakesFifosSocketsAndDevices).
        using var m = new MountedPool();
        Ok(Syscall.mknod(m.P("fifo"), FilePermissions.S_IFIFO | (FilePermissions)0x1A4, 0), "mknod fifo");
        Ok(Syscall.mknod(m.P("sock"), FilePermissions.S_IFSOCK | (FilePermissions)0x1A4, 0), "mknod socket");
        // A real socket bound inside the mount.
        using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            s.Bind(new UnixDomainSocketEndPoint(m.P("bound.sock")));
            Assert.Equal(S_IFSOCK, Type(StatOf(m.P("bound.sock"))));
        }
        // A FIFO on the mount carries data.
        string? got = null;
        var reader = new Thread(() => got = File.ReadAllText(m.P("fifo"))) { IsBackground = true };
        reader.Start();
        File.WriteAllText(m.P("fifo"), "through the fifo");
        Assert.True(reader.Join(10_000), "fifo reader did not finish");
        Assert.Equal("through the fifo", got);

        m.Remount();
        Assert.Equal(S_IFIFO, Type(StatOf(m.P("fifo"))));
        Assert.Equal(S_IFSOCK, Type(StatOf(m.P("sock"))));
    }

    [SkippableFact]
    public void XattrBufferSizesFollowTheSyscallContract()
    {
        // A size query (no buffer) and ERANGE for a short buffer are getxattr(2)'s and listxattr(2)'s contract,
        // met by the kernel and the server together; xattr semantics are the shared case PosixCases.ExtendedAttributes.
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        var f = m.P("f");
        Ok(SetXattr(f, "user.a", "v1"u8, 0), "setxattr user.a");
        Ok(SetXattr(f, "user.b", Bytes(3000, 10), 0), "setxattr user.b");
        Assert.Equal(2, GetXattr(f, "user.a", null));
        Assert.Equal(3000, GetXattr(f, "user.b", null));
        Assert.Equal(Bytes(3000, 10), GetXattrValue(f, "user.b"));
        Fails(Errno.ERANGE, GetXattr(f, "user.a", new byte[1]), "getxattr into a small buffer");
        Fails(Errno.ERANGE, ListXattr(f, new byte[4]), "listxattr into a small buffer");
        Fails(Errno.ENODATA, GetXattr(f, "user.missing", null), "size of a missing name");
        Assert.Equal(new HashSet<string> { "user.a", "user.b" }, ListXattrNames(f).Where(n => n.StartsWith("user.")).ToHashSet());
    }

    // ---------------------------------------------------------------- permissions (default_permissions)

    internal static (int Code, string Out, string Err) AsNobody(params string[] args)
    {
        var psi = new ProcessStartInfo("setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--reuid=65534", "--regid=65534", "--clear-groups" }.Concat(args)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(30_000)) { p.Kill(true); throw new TimeoutException("setpriv child hung"); }
        return (p.ExitCode, output, err.Result);
    }

    [SkippableFact]
    public void PermissionsAreEnforcedForOtherUsers()
    {
        using var m = new MountedPool();
        // The path down to the mount must be traversable by nobody.
        Ok(Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (FilePermissions)0x1ED), "chmod the temp folder");
        var mode = Perm(StatOf(m.MountPoint));
        Assert.True((mode & 0x1) != 0, $"mount root mode {Convert.ToString(mode, 8)} is not searchable by others");

        File.WriteAllText(m.P("secret"), "top secret");
        Ok(Syscall.chmod(m.P("secret"), (FilePermissions)0x180), "chmod 0600");
        var denied = AsNobody("cat", m.P("secret"));
        Assert.NotEqual(0, denied.Code);
        Assert.Contains("Permission denied", denied.Err);
        Assert.DoesNotContain("top secret", denied.Out);

        Ok(Syscall.chmod(m.P("secret"), (FilePermissions)0x1A4), "chmod 0644");
        var allowed = AsNobody("cat", m.P("secret"));
        Assert.True(allowed.Code == 0, $"cat as nobody on a 0644 file: exit {allowed.Code}, {allowed.Err}");
        Assert.Equal("top secret", allowed.Out);

        // Readable is not writable, and the root directory (0755, root's) does not take new names from nobody.
        var write = AsNobody("sh", "-c", $"echo more >> '{m.P("secret")}'");
        Assert.NotEqual(0, write.Code);
        Assert.Contains("Permission denied", write.Err);
        var create = AsNobody("touch", m.P("nobodys"));
        Assert.NotEqual(0, create.Code);
        Assert.Contains("Permission denied", create.Err);
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("nobodys")));
        Assert.Equal("top secret", File.ReadAllText(m.P("secret")));

        // A directory nobody owns: nobody may create there, and the new file is nobody's.
        Directory.CreateDirectory(m.P("pub"));
        Ok(Syscall.chown(m.P("pub"), 65534, 65534), "chown pub");
        var mine = AsNobody("sh", "-c", $"echo hi > '{m.P("pub/mine")}'");
        Assert.True(mine.Code == 0, $"nobody creating in its own directory: exit {mine.Code}, {mine.Err}");
        var st = StatOf(m.P("pub/mine"));
        Assert.Equal(65534u, st.st_uid);
        Assert.Equal(65534u, st.st_gid);
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void SetuidSetgidAndCapabilitiesAreClearedAsLinuxClearsThem(bool writebackCache)
    {
        // Cow asks for FUSE_HANDLE_KILLPRIV_V2, so clearing the bits on a write, a truncate and a chown is the
        // server's job (the kernel only says when: the caller lacks CAP_FSETID).
        using var m = new MountedPool(writebackCache: writebackCache);
        Ok(Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (FilePermissions)0x1ED), "chmod the temp folder");
        uint ModeOf(string name) => Perm(StatOf(m.P(name))) & 0xFFF;
        void Make(string name, uint mode)
        {
            File.WriteAllText(m.P(name), "#!/bin/sh\n");
            Ok(Syscall.chmod(m.P(name), (FilePermissions)mode), $"chmod {name} {Convert.ToString(mode, 8)}");
            Assert.Equal(mode, ModeOf(name));
        }
        void AsNobodyOk(string what, string script)
        {
            var r = AsNobody("sh", "-c", script);
            Assert.True(r.Code == 0, $"{what} as nobody: exit {r.Code}, {r.Err}");
        }

        Make("written", 0xDFF);                             // 06777
        AsNobodyOk("append", $"echo more >> '{m.P("written")}'");
        Assert.Equal(0x1FFu, ModeOf("written"));            // 0777: setuid gone, setgid (group-executable) gone
        Make("locking", 0x5B6);                             // 02666: setgid without group execute marks locking
        AsNobodyOk("append", $"echo more >> '{m.P("locking")}'");
        Assert.Equal(0x5B6u, ModeOf("locking"));
        Make("truncated", 0xDFF);
        AsNobodyOk("truncate with O_TRUNC", $": > '{m.P("truncated")}'");
        Assert.Equal(0x1FFu, ModeOf("truncated"));
        Assert.Equal(0, StatOf(m.P("truncated")).st_size);
        Make("shrunk", 0xDFF);
        AsNobodyOk("truncate(1)", $"truncate -s 1 '{m.P("shrunk")}'");
        Assert.Equal(0x1FFu, ModeOf("shrunk"));

        // Root has CAP_FSETID: its writes keep the bits; a chown clears them whoever makes it.
        Make("roots", 0xDED);                               // 06755
        File.AppendAllText(m.P("roots"), "more");
        Assert.Equal(0xDEDu, ModeOf("roots"));
        Ok(Syscall.chown(m.P("roots"), 65534, 65534), "chown");
        Assert.Equal(0x1EDu, ModeOf("roots"));
        Directory.CreateDirectory(m.P("dir"));
        Ok(Syscall.chmod(m.P("dir"), (FilePermissions)0xDED), "chmod dir 06755");
        Ok(Syscall.chown(m.P("dir"), 65534, 65534), "chown dir");
        Assert.Equal(0xDEDu, ModeOf("dir"));                // a directory keeps them

        // security.capability goes with the next write, even root's (the kernel removes it).
        Make("capable", 0x1ED);
        byte[] caps = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];   // VFS_CAP_REVISION_2, CAP_NET_BIND_SERVICE
        Ok(Syscall.setxattr(m.P("capable"), "security.capability", caps), "setxattr security.capability");
        Assert.True(Syscall.getxattr(m.P("capable"), "security.capability", out byte[] back) >= 0 && back.Length == 20, "the capability was not stored");
        File.AppendAllText(m.P("capable"), "more");
        Assert.True(Syscall.getxattr(m.P("capable"), "security.capability", out _) < 0, "security.capability survived a write");
        Assert.Equal(Errno.ENODATA, Stdlib.GetLastError());
    }

    // ---------------------------------------------------------------- snapshots: EXDEV, EROFS

    [SkippableFact]
    public void CrossingIntoASnapshotOrAnotherFileSystem()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "live");
        Directory.CreateDirectory(m.P("d"));
        MakeSnapshot(m, "s1");
        // Rename across two trees of the same mount: the server answers; the snapshot is read-only.
        FailsWithAny(new[] { Errno.EROFS, Errno.EXDEV }, Syscall.rename(m.P("f"), m.P(".snapshots/s1/f2")), "rename into a snapshot");
        FailsWithAny(new[] { Errno.EROFS, Errno.EXDEV }, Syscall.rename(m.P(".snapshots/s1/f"), m.P("f3")), "rename out of a snapshot");
        FailsWithAny(new[] { Errno.EROFS, Errno.EXDEV }, Syscall.link(m.P("f"), m.P(".snapshots/s1/hl")), "link into a snapshot");
        Assert.Equal("live", File.ReadAllText(m.P("f")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1/f2")));

        // copy_file_range to another file system: copies, or EXDEV (Linux ≥ 5.19 refuses cross-type copies).
        var data = Bytes(300_000, 14);
        File.WriteAllBytes(m.P("big"), data);
        var outside = Path.Combine(Path.GetDirectoryName(m.PoolDir)!, "outside.bin");
        using (var src = Fd.Open(m.P("big"), O_RDONLY))
        using (var dst = Fd.Open(outside, O_WRONLY | O_CREAT | O_TRUNC))
        {
            long r = CopyFileRange(src.Handle, 0, dst.Handle, 0, data.Length);
            if (r < 0) Assert.Equal(Errno.EXDEV, LastErrno());
            else
            {
                long done = r;
                while (done < data.Length && r > 0)
                {
                    r = Native.Check(CopyFileRange(src.Handle, done, dst.Handle, done, data.Length - done), "copy_file_range");
                    done += r;
                }
                Assert.Equal(data.Length, done);
                Assert.Equal(data, File.ReadAllBytes(outside));
            }
        }
        // And the other way round.
        using (var src = Fd.Open(outside, O_RDWR))
        using (var dst = Fd.Open(m.P("in"), O_WRONLY | O_CREAT | O_TRUNC))
        {
            src.WriteAt(0, data);
            long r = CopyFileRange(src.Handle, 0, dst.Handle, 0, 4096);
            if (r < 0) Assert.Equal(Errno.EXDEV, LastErrno());
            else Assert.Equal(data[..(int)r], File.ReadAllBytes(m.P("in"))[..(int)r]);
        }
    }

    [SkippableFact]
    public void TheSnapshotRootIsReadOnly()
    {
        // Every change inside a snapshot is the shared case PosixCases.EveryChangeInASnapshotIsErofsWhileReadsWork;
        // the snapshot's own directory under .snapshots is read-only too.
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "frozen");
        MakeSnapshot(m, "s1");
        var s = m.P(".snapshots/s1");
        FailsWithAny(new[] { Errno.EROFS }, Syscall.chmod(s, (FilePermissions)0x1FF), "chmod the snapshot root");
        FailsWithAny(new[] { Errno.EROFS }, Utimensat(s, new TimeSpec(1, 1), new TimeSpec(1, 1)), "utimensat the snapshot root");
        Assert.Equal("frozen", File.ReadAllText(s + "/f"));
        Assert.Equal(new HashSet<string> { "f" }, Ls(s));
    }

    // ---------------------------------------------------------------- copy_file_range

    [SkippableFact]
    public void CopyFileRangeSharesExtents()
    {
        using var m = new MountedPool();
        const int Size = 256 << 20;
        var chunk = new byte[MiB];
        {
            using (var fd = Fd.Open(m.P("src"), O_RDWR | O_CREAT))
            {
                for (int i = 0; i < Size / MiB; i++)
                {
                    new Random(1000 + i).NextBytes(chunk);
                    fd.WriteAt(i * MiB, chunk);
                }
                Ok(Fsync(fd.Handle), "fsync src");
            }
            Ok(Syscall.statvfs(m.MountPoint, out var before), "statvfs");
            var sw = Stopwatch.StartNew();
            using (var src = Fd.Open(m.P("src"), O_RDONLY))
            using (var dst = Fd.Open(m.P("dst"), O_WRONLY | O_CREAT | O_TRUNC))
            {
                long done = 0;
                while (done < Size)
                {
                    long r = CopyFileRange(src.Handle, done, dst.Handle, done, Size - done);
                    Ok(r, $"copy_file_range at {done}");
                    Assert.True(r > 0, $"copy_file_range copied nothing at {done}");
                    done += r;
                }
                Ok(Fsync(dst.Handle), "fsync dst");
            }
            sw.Stop();
            Ok(Syscall.statvfs(m.MountPoint, out var after), "statvfs");
            long grew = ((long)before.f_bfree - (long)after.f_bfree) * (long)after.f_frsize;
            Assert.True(grew < 16 * MiB, $"copying 256 MiB used {grew >> 20} MiB of free space: extents were not shared");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"copy_file_range of 256 MiB took {sw.Elapsed}");
            Assert.Equal(Size, StatOf(m.P("dst")).st_size);

            // Contents match, chunk by chunk.
            using (var dst = Fd.Open(m.P("dst"), O_RDONLY))
                for (int i = 0; i < Size / MiB; i++)
                {
                    new Random(1000 + i).NextBytes(chunk);
                    var got = dst.ReadAt(i * MiB, (int)MiB);
                    Assert.True(got.AsSpan().SequenceEqual(chunk), $"copy differs in MiB {i}");
                }
            // Writing the copy does not change the source (the shared extents are copied on write).
            using (var dst = Fd.Open(m.P("dst"), O_WRONLY)) dst.WriteAt(5 * MiB + 100, "changed"u8);
            new Random(1000 + 5).NextBytes(chunk);
            using (var src = Fd.Open(m.P("src"), O_RDONLY)) Assert.True(src.ReadAt(5 * MiB, (int)MiB).AsSpan().SequenceEqual(chunk), "source changed by a write to the copy");
        }

        // Unaligned, partial copy into the middle of an existing file, and past the source's end.
        var a = Bytes(100_000, 15);
        var b = Bytes(50_000, 16);
        File.WriteAllBytes(m.P("a"), a);
        File.WriteAllBytes(m.P("b"), b);
        using (var src = Fd.Open(m.P("a"), O_RDONLY))
        using (var dst = Fd.Open(m.P("b"), O_WRONLY))
        {
            Assert.Equal(30_000, CopyFileRange(src.Handle, 1234, dst.Handle, 777, 30_000));
            Assert.Equal(0, CopyFileRange(src.Handle, 200_000, dst.Handle, 0, 100));
            Assert.Equal(1000, CopyFileRange(src.Handle, 99_000, dst.Handle, 49_500, 5000)); // short at the source's EOF
        }
        var expect = b.ToList();
        expect.AddRange(new byte[500]);
        a.AsSpan(1234, 30_000).CopyTo(CollectionsMarshalSpan(expect, 777, 30_000));
        a.AsSpan(99_000, 1000).CopyTo(CollectionsMarshalSpan(expect, 49_500, 1000));
        Assert.Equal(expect.ToArray(), File.ReadAllBytes(m.P("b")));

        // Errors: overlapping ranges of one file, a write-only source, a directory.
        using (var f = Fd.Open(m.P("a"), O_RDWR))
        {
            Fails(Errno.EINVAL, CopyFileRange(f.Handle, 0, f.Handle, 1000, 5000), "overlapping copy within a file");
            using var wo = Fd.Open(m.P("b"), O_WRONLY);
            Fails(Errno.EBADF, CopyFileRange(wo.Handle, 0, f.Handle, 0, 10), "copy from a write-only descriptor");
            using var dir = Fd.Open(m.MountPoint, O_RDONLY | O_DIRECTORY);
            Fails(Errno.EISDIR, CopyFileRange(dir.Handle, 0, f.Handle, 0, 10), "copy from a directory");
        }

        // Plain cp (coreutils ≥ 9 uses copy_file_range).
        var cp = Process.Start(new ProcessStartInfo("cp", new[] { m.P("a"), m.P("a-copy") }) { RedirectStandardError = true })!;
        var cpErr = cp.StandardError.ReadToEnd();
        Assert.True(cp.WaitForExit(60_000) && cp.ExitCode == 0, $"cp failed: {cpErr}");
        Assert.Equal(a, File.ReadAllBytes(m.P("a-copy")));
    }

    private static Span<byte> CollectionsMarshalSpan(List<byte> list, int offset, int count) =>
        System.Runtime.InteropServices.CollectionsMarshal.AsSpan(list).Slice(offset, count);

    // ---------------------------------------------------------------- snapshots

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void SnapshotsKeepOldContent(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        File.WriteAllText(m.P("f"), "old content");
        File.WriteAllText(m.P("unchanged"), "same");
        Directory.CreateDirectory(m.P("d"));
        File.WriteAllText(m.P("d/deep"), "deep old");
        MakeSnapshot(m, "s1");
        Assert.Equal(S_IFDIR, Type(StatOf(m.P(".snapshots/s1"))));
        Assert.Contains("s1", Ls(m.P(".snapshots")));
        Fails(Errno.EEXIST, Syscall.mkdir(m.P(".snapshots/s1"), (FilePermissions)0x1ED), "mkdir an existing snapshot");

        File.WriteAllText(m.P("f"), "new content, longer than before");
        File.WriteAllText(m.P("d/deep"), "deep new");
        File.WriteAllText(m.P("added"), "added");
        Ok(Syscall.unlink(m.P("unchanged")), "unlink");
        File.WriteAllText(m.P("unchanged"), "same"); // recreated: a different inode now
        Assert.Equal("old content", File.ReadAllText(m.P(".snapshots/s1/f")));
        Assert.Equal("deep old", File.ReadAllText(m.P(".snapshots/s1/d/deep")));
        Assert.Equal("new content, longer than before", File.ReadAllText(m.P("f")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1/added")));
        Assert.Equal(new HashSet<string> { "f", "unchanged", "d" }, Ls(m.P(".snapshots/s1")));

        // An unchanged file has the same ctime in the live tree and the snapshot, and the same inode number in
        // every snapshot; not the live one's, which would make cp, cmp and diff take them for one file.
        File.WriteAllText(m.P("keep"), "keep");
        MakeSnapshot(m, "s2");
        var live = StatOf(m.P("keep"));
        var snap = StatOf(m.P(".snapshots/s2/keep"));
        Assert.Equal(live.st_ino | NodeTable.SnapshotTreeInoBit, snap.st_ino);
        Assert.Equal((live.st_ctime, live.st_ctime_nsec), (snap.st_ctime, snap.st_ctime_nsec));
        Assert.Equal((live.st_mtime, live.st_mtime_nsec), (snap.st_mtime, snap.st_mtime_nsec));
        Assert.Equal(live.st_size, snap.st_size);
        Assert.Equal(new HashSet<string> { "s1", "s2" }, Ls(m.P(".snapshots")));

        // A file open for writing when the snapshot is taken: the snapshot has what was written before.
        using (var fd = Fd.Open(m.P("open"), O_RDWR | O_CREAT))
        {
            fd.WriteAt(0, "before "u8);
            MakeSnapshot(m, "s3");
            fd.WriteAt(7, "after"u8);
            Assert.Equal("before "u8.ToArray(), File.ReadAllBytes(m.P(".snapshots/s3/open")));
            Assert.Equal("before after"u8.ToArray(), fd.ReadAt(0, 100));
        }
        Assert.Equal("before "u8.ToArray(), File.ReadAllBytes(m.P(".snapshots/s3/open")));
        Assert.Equal(snap.st_ino, StatOf(m.P(".snapshots/s3/keep")).st_ino);   // the same in every snapshot
        Ok(Syscall.rmdir(m.P(".snapshots/s3")), "rmdir .snapshots/s3");

        // Snapshots survive a remount.
        m.Remount();
        Assert.Equal("old content", File.ReadAllText(m.P(".snapshots/s1/f")));
        Assert.Equal("keep", File.ReadAllText(m.P(".snapshots/s2/keep")));

        Ok(Syscall.rmdir(m.P(".snapshots/s1")), "rmdir .snapshots/s1");
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1/f")));
        Assert.Equal(new HashSet<string> { "s2" }, Ls(m.P(".snapshots")));
        Fails(Errno.ENOENT, Syscall.rmdir(m.P(".snapshots/s1")), "rmdir a deleted snapshot");
        Assert.Equal("new content, longer than before", File.ReadAllText(m.P("f")));

        // Mounting the snapshot itself: the old content, read-only.
        File.WriteAllText(m.P("keep"), "changed after s2");
        m.UnmountNow();
        m.MountNow(snapshot: "s2");
        Assert.Equal("keep", File.ReadAllText(m.P("keep")));
        Assert.Equal("new content, longer than before", File.ReadAllText(m.P("f")));
        OpenFails(Errno.EROFS, m.P("keep"), O_WRONLY, "write in a mounted snapshot");
        OpenFails(Errno.EROFS, m.P("new"), O_WRONLY | O_CREAT, "create in a mounted snapshot");
        FailsWithAny(new[] { Errno.EROFS }, Syscall.mkdir(m.P("nd"), (FilePermissions)0x1ED), "mkdir in a mounted snapshot");
        m.UnmountNow();
        m.MountNow();
        Assert.Equal("changed after s2", File.ReadAllText(m.P("keep")));

        m.UnmountNow();
        using var p = Cow.Core.Pool.Open(m.PoolDir);
        var report = p.Fsck();
        Assert.True(report.Clean, report.ToString());
    }
}
