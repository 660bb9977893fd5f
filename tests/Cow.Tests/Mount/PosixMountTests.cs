using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Mono.Unix.Native;
using Xunit;
using Cow.Fuse.Server;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// POSIX behaviour of the real mount, through real system calls on a kernel FUSE mount served by this
/// process: each behaviour with its error cases, errno checked exactly where Linux defines it. Where the
/// answer comes from the kernel's VFS (not the server) it is still asserted: the server must not break it.
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

    [SkippableTheory]
    [InlineData(false)]
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

    [SkippableTheory]
    [InlineData(false)]
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

    [SkippableTheory]
    [InlineData(false)]
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

    [SkippableFact]
    public void OExclRefusesExistingNames()
    {
        using var m = new MountedPool();
        using (var fd = Fd.Open(m.P("f"), O_RDWR | O_CREAT | O_EXCL, 0x1A4)) fd.WriteAt(0, "x"u8);
        OpenFails(Errno.EEXIST, m.P("f"), O_RDWR | O_CREAT | O_EXCL, "O_EXCL on an existing file");
        Directory.CreateDirectory(m.P("d"));
        OpenFails(Errno.EEXIST, m.P("d"), O_RDWR | O_CREAT | O_EXCL, "O_EXCL on an existing directory");
        Ok(Syscall.symlink("nowhere", m.P("dangling")), "symlink");
        OpenFails(Errno.EEXIST, m.P("dangling"), O_RDWR | O_CREAT | O_EXCL, "O_EXCL on a dangling symlink");
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("nowhere")));
        Assert.Equal("x"u8.ToArray(), File.ReadAllBytes(m.P("f")));
    }

    // ---------------------------------------------------------------- sparse files, truncate, fallocate, lseek

    [SkippableTheory]
    [InlineData(false)]
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

    [SkippableTheory]
    [InlineData(false)]
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

    [SkippableTheory]
    [InlineData(false)]
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

    // ---------------------------------------------------------------- directories

    [SkippableFact]
    public void MkdirAndRmdir()
    {
        using var m = new MountedPool();
        Ok(Syscall.mkdir(m.P("d"), (FilePermissions)0x1ED), "mkdir");
        var st = StatOf(m.P("d"));
        Assert.Equal(S_IFDIR, Type(st));
        Assert.Equal(0x1EDu, Perm(st));
        Fails(Errno.EEXIST, Syscall.mkdir(m.P("d"), (FilePermissions)0x1ED), "mkdir an existing directory");
        File.WriteAllText(m.P("f"), "x");
        Fails(Errno.EEXIST, Syscall.mkdir(m.P("f"), (FilePermissions)0x1ED), "mkdir over a file");
        Fails(Errno.ENOENT, Syscall.mkdir(m.P("no/such"), (FilePermissions)0x1ED), "mkdir in a missing directory");
        Fails(Errno.ENOTDIR, Syscall.mkdir(m.P("f/sub"), (FilePermissions)0x1ED), "mkdir under a file");

        File.WriteAllText(m.P("d/inner"), "y");
        Fails(Errno.ENOTEMPTY, Syscall.rmdir(m.P("d")), "rmdir a non-empty directory");
        Fails(Errno.ENOTDIR, Syscall.rmdir(m.P("f")), "rmdir a file");
        Fails(Errno.ENOENT, Syscall.rmdir(m.P("missing")), "rmdir a missing name");
        Ok(Syscall.unlink(m.P("d/inner")), "unlink");
        Ok(Syscall.rmdir(m.P("d")), "rmdir");
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("d")));
        Assert.DoesNotContain("d", Ls(m.MountPoint));
        Fails(Errno.ENOENT, Syscall.rmdir(m.P("d")), "rmdir twice");

        // Many entries: readdir sees exactly what was made, also after a remount.
        Directory.CreateDirectory(m.P("big"));
        var names = Enumerable.Range(0, 300).Select(i => $"entry-{i:D4}-{new string('n', i % 40)}").ToHashSet();
        foreach (var n in names) File.WriteAllText(m.P("big/" + n), n);
        Assert.Equal(names, Ls(m.P("big")));
        m.Remount();
        Assert.Equal(names, Ls(m.P("big")));
    }

    [SkippableFact]
    public void UnlinkFilesNotDirectories()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        Ok(Syscall.unlink(m.P("f")), "unlink");
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("f")));
        Fails(Errno.ENOENT, Syscall.unlink(m.P("f")), "unlink twice");
        Directory.CreateDirectory(m.P("d"));
        Fails(Errno.EISDIR, Syscall.unlink(m.P("d")), "unlink a directory");
        Assert.Equal((Errno)0, StatErrno(m.P("d")));
        File.WriteAllText(m.P("g"), "g");
        Fails(Errno.ENOTDIR, Syscall.unlink(m.P("g/x")), "unlink under a file");
        Fails(Errno.ENOENT, Syscall.unlink(m.P("nodir/x")), "unlink in a missing directory");
        Assert.Equal("g", File.ReadAllText(m.P("g")));
    }

    [SkippableFact]
    public void RenameReplacesAndRefuses()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("a"), "A");
        File.WriteAllText(m.P("b"), "B");
        long inoA = StatIno(m.P("a"));
        Ok(Syscall.rename(m.P("a"), m.P("b")), "rename over a file");
        Assert.Equal("A", File.ReadAllText(m.P("b")));
        Assert.Equal(inoA, StatIno(m.P("b")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("a")));

        // To itself (same name, or another hard link of the same inode): nothing happens.
        Ok(Syscall.rename(m.P("b"), m.P("b")), "rename to itself");
        Assert.Equal("A", File.ReadAllText(m.P("b")));

        Directory.CreateDirectory(m.P("d1"));
        File.WriteAllText(m.P("d1/x"), "x");
        Directory.CreateDirectory(m.P("empty"));
        Ok(Syscall.rename(m.P("d1"), m.P("empty")), "rename a directory over an empty directory");
        Assert.Equal("x", File.ReadAllText(m.P("empty/x")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("d1")));

        Directory.CreateDirectory(m.P("e2"));
        Fails(Errno.EISDIR, Syscall.rename(m.P("b"), m.P("e2")), "rename a file over a directory");
        Fails(Errno.ENOTDIR, Syscall.rename(m.P("e2"), m.P("b")), "rename a directory over a file");
        Directory.CreateDirectory(m.P("full"));
        File.WriteAllText(m.P("full/y"), "y");
        Fails(Errno.ENOTEMPTY, Syscall.rename(m.P("e2"), m.P("full")), "rename a directory onto a non-empty directory");
        Assert.Equal("y", File.ReadAllText(m.P("full/y")));
        Fails(Errno.ENOENT, Syscall.rename(m.P("missing"), m.P("z")), "rename a missing name");
        Fails(Errno.ENOENT, Syscall.rename(m.P("b"), m.P("nodir/z")), "rename into a missing directory");

        // Into its own subdirectory.
        Directory.CreateDirectory(m.P("p/q/r"));
        Fails(Errno.EINVAL, Syscall.rename(m.P("p"), m.P("p/q/r/p")), "rename a directory into its own subdirectory");
        Fails(Errno.EINVAL, Syscall.rename(m.P("p"), m.P("p/q/p")), "rename a directory into its own child");

        // Across directories, with the parents' nlink following.
        Directory.CreateDirectory(m.P("src"));
        Directory.CreateDirectory(m.P("dst"));
        Directory.CreateDirectory(m.P("src/moving"));
        Assert.Equal(3ul, StatOf(m.P("src")).st_nlink);
        Ok(Syscall.rename(m.P("src/moving"), m.P("dst/moved")), "rename a directory across directories");
        Assert.Equal(2ul, StatOf(m.P("src")).st_nlink);
        Assert.Equal(3ul, StatOf(m.P("dst")).st_nlink);
        Assert.Equal(S_IFDIR, Type(StatOf(m.P("dst/moved"))));

        m.Remount();
        Assert.Equal(new HashSet<string> { "b", "empty", "e2", "full", "p", "src", "dst" }, Ls(m.MountPoint));
    }

    [SkippableFact]
    public void RenameNoReplaceAndExchange()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("a"), "A");
        File.WriteAllText(m.P("b"), "B");
        Fails(Errno.EEXIST, Rename2(m.P("a"), m.P("b"), RENAME_NOREPLACE), "RENAME_NOREPLACE onto an existing name");
        Assert.Equal("A", File.ReadAllText(m.P("a")));
        Assert.Equal("B", File.ReadAllText(m.P("b")));
        Ok(Rename2(m.P("a"), m.P("c"), RENAME_NOREPLACE), "RENAME_NOREPLACE onto a new name");
        Assert.Equal("A", File.ReadAllText(m.P("c")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("a")));

        long inoB = StatIno(m.P("b")), inoC = StatIno(m.P("c"));
        Ok(Rename2(m.P("b"), m.P("c"), RENAME_EXCHANGE), "RENAME_EXCHANGE two files");
        Assert.Equal("A", File.ReadAllText(m.P("b")));
        Assert.Equal("B", File.ReadAllText(m.P("c")));
        Assert.Equal(inoC, StatIno(m.P("b")));
        Assert.Equal(inoB, StatIno(m.P("c")));

        // A file and a directory in different parents swap.
        Directory.CreateDirectory(m.P("d/sub"));
        File.WriteAllText(m.P("d/sub/inside"), "i");
        ulong rootLinks = StatOf(m.MountPoint).st_nlink;
        Ok(Rename2(m.P("b"), m.P("d/sub"), RENAME_EXCHANGE), "RENAME_EXCHANGE file and directory");
        Assert.Equal("A", File.ReadAllText(m.P("d/sub")));
        Assert.Equal("i", File.ReadAllText(m.P("b/inside")));
        Assert.Equal(rootLinks + 1, StatOf(m.MountPoint).st_nlink); // the root gained a subdirectory
        Assert.Equal(2ul, StatOf(m.P("d")).st_nlink); // d lost its subdirectory
        Fails(Errno.ENOENT, Rename2(m.P("c"), m.P("nothere"), RENAME_EXCHANGE), "RENAME_EXCHANGE with a missing target");
        Fails(Errno.EINVAL, Rename2(m.P("c"), m.P("b"), RENAME_EXCHANGE | RENAME_NOREPLACE), "EXCHANGE|NOREPLACE");
        m.Remount();
        Assert.Equal("B", File.ReadAllText(m.P("c")));
        Assert.Equal("A", File.ReadAllText(m.P("d/sub")));
        Assert.Equal("i", File.ReadAllText(m.P("b/inside")));
    }

    // ---------------------------------------------------------------- links

    [SkippableFact]
    public void HardLinksAndLinkCounts()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "one");
        Assert.Equal(1ul, StatOf(m.P("f")).st_nlink);
        Directory.CreateDirectory(m.P("d"));
        Ok(Syscall.link(m.P("f"), m.P("d/g")), "link");
        var a = StatOf(m.P("f"));
        var b = StatOf(m.P("d/g"));
        Assert.Equal(a.st_ino, b.st_ino);
        Assert.Equal(2ul, a.st_nlink);
        Assert.Equal(2ul, b.st_nlink);
        using (var fd = Fd.Open(m.P("d/g"), O_WRONLY)) fd.WriteAt(0, "TWO"u8);
        Assert.Equal("TWO", File.ReadAllText(m.P("f")));

        Fails(Errno.EEXIST, Syscall.link(m.P("f"), m.P("d/g")), "link onto an existing name");
        Fails(Errno.EPERM, Syscall.link(m.P("d"), m.P("dlink")), "link a directory");
        Fails(Errno.ENOENT, Syscall.link(m.P("missing"), m.P("x")), "link a missing file");
        Fails(Errno.ENOENT, Syscall.link(m.P("f"), m.P("nodir/x")), "link into a missing directory");

        Ok(Syscall.unlink(m.P("f")), "unlink one name");
        Assert.Equal(1ul, StatOf(m.P("d/g")).st_nlink);
        Assert.Equal("TWO", File.ReadAllText(m.P("d/g")));

        // Directory link counts: 2 + subdirectories.
        Directory.CreateDirectory(m.P("top"));
        Assert.Equal(2ul, StatOf(m.P("top")).st_nlink);
        Directory.CreateDirectory(m.P("top/s1"));
        Directory.CreateDirectory(m.P("top/s2"));
        File.WriteAllText(m.P("top/file"), "");
        Assert.Equal(4ul, StatOf(m.P("top")).st_nlink);
        Ok(Syscall.rmdir(m.P("top/s1")), "rmdir");
        Assert.Equal(3ul, StatOf(m.P("top")).st_nlink);
        m.Remount();
        Assert.Equal(3ul, StatOf(m.P("top")).st_nlink);
        Assert.Equal(1ul, StatOf(m.P("d/g")).st_nlink);
    }

    [SkippableFact]
    public void Symlinks()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("target"), "T");
        Ok(Syscall.symlink("target", m.P("rel")), "symlink relative");
        Ok(Syscall.symlink(m.P("target"), m.P("abs")), "symlink absolute");
        var sb = new StringBuilder(4096);
        Ok(Syscall.readlink(m.P("rel"), sb), "readlink");
        Assert.Equal("target", sb.ToString());
        var l = LstatOf(m.P("rel"));
        Assert.Equal(S_IFLNK, Type(l));
        Assert.Equal("target".Length, l.st_size);
        var s = StatOf(m.P("rel"));
        Assert.Equal(S_IFREG, Type(s));
        Assert.Equal(StatIno(m.P("target")), (long)s.st_ino);
        Assert.NotEqual(l.st_ino, s.st_ino);
        Assert.Equal("T", File.ReadAllText(m.P("abs")));
        OpenFails(Errno.ELOOP, m.P("rel"), O_RDONLY | O_NOFOLLOW, "O_NOFOLLOW on a symlink");

        Ok(Syscall.symlink("no/such/thing", m.P("dangling")), "dangling symlink");
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("dangling")));
        Assert.Equal((Errno)0, LstatErrno(m.P("dangling")));
        sb.Clear();
        Ok(Syscall.readlink(m.P("dangling"), sb), "readlink dangling");
        Assert.Equal("no/such/thing", sb.ToString());

        var longTarget = string.Join('/', Enumerable.Repeat(new string('t', 200), 15)); // 3014 bytes
        Ok(Syscall.symlink(longTarget, m.P("long")), "symlink with a long target");
        sb.Clear();
        Ok(Syscall.readlink(m.P("long"), sb), "readlink long");
        Assert.Equal(longTarget, sb.ToString());

        Fails(Errno.EEXIST, Syscall.symlink("x", m.P("rel")), "symlink onto an existing name");
        sb.Clear();
        Fails(Errno.EINVAL, Syscall.readlink(m.P("target"), sb), "readlink a regular file");
        Ok(Syscall.symlink("loop2", m.P("loop1")), "symlink loop1");
        Ok(Syscall.symlink("loop1", m.P("loop2")), "symlink loop2");
        Assert.Equal(Errno.ELOOP, StatErrno(m.P("loop1")));

        m.Remount();
        sb.Clear();
        Ok(Syscall.readlink(m.P("rel"), sb), "readlink after remount");
        Assert.Equal("target", sb.ToString());
        Assert.Equal("T", File.ReadAllText(m.P("rel")));
    }

    [SkippableTheory]
    [InlineData(false)]
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

    // ---------------------------------------------------------------- attributes

    [SkippableFact]
    public void ChmodChownChangeCtime()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        var st0 = StatOf(m.P("f"));
        Thread.Sleep(20);
        Ok(Syscall.chmod(m.P("f"), (FilePermissions)0x1A0), "chmod 0640");
        var st1 = StatOf(m.P("f"));
        Assert.Equal(0x1A0u, Perm(st1));
        Assert.Equal(S_IFREG, Type(st1));
        Assert.True((st1.st_ctime, st1.st_ctime_nsec).CompareTo((st0.st_ctime, st0.st_ctime_nsec)) > 0, "chmod did not advance ctime");
        Assert.Equal((st0.st_mtime, st0.st_mtime_nsec), (st1.st_mtime, st1.st_mtime_nsec));
        Thread.Sleep(20);
        Ok(Syscall.chown(m.P("f"), 1234, 5678), "chown");
        var st2 = StatOf(m.P("f"));
        Assert.Equal(1234u, st2.st_uid);
        Assert.Equal(5678u, st2.st_gid);
        Assert.True((st2.st_ctime, st2.st_ctime_nsec).CompareTo((st1.st_ctime, st1.st_ctime_nsec)) > 0, "chown did not advance ctime");
        Ok(Syscall.chown(m.P("f"), unchecked((uint)-1), 42), "chown group only");
        Assert.Equal(1234u, StatOf(m.P("f")).st_uid);
        Assert.Equal(42u, StatOf(m.P("f")).st_gid);
        // Special bits and directories.
        Ok(Syscall.chmod(m.P("f"), (FilePermissions)0xDED), "chmod 06755");
        Assert.Equal(0xDEDu, Perm(StatOf(m.P("f"))));
        Directory.CreateDirectory(m.P("d"));
        Ok(Syscall.chmod(m.P("d"), (FilePermissions)0x3FF), "chmod 01777 dir");
        Assert.Equal(0x3FFu, Perm(StatOf(m.P("d"))));
        Assert.Equal(S_IFDIR, Type(StatOf(m.P("d"))));
        // A write bumps mtime and ctime.
        var before = StatOf(m.P("d"));
        Thread.Sleep(20);
        File.WriteAllText(m.P("d/new"), "n");
        var after = StatOf(m.P("d"));
        Assert.True((after.st_mtime, after.st_mtime_nsec).CompareTo((before.st_mtime, before.st_mtime_nsec)) > 0, "create did not advance the parent's mtime");

        Fails(Errno.ENOENT, Syscall.chmod(m.P("missing"), (FilePermissions)0x1A4), "chmod a missing file");
        Fails(Errno.ENOENT, Syscall.chown(m.P("missing"), 1, 1), "chown a missing file");
        m.Remount();
        var st3 = StatOf(m.P("f"));
        Assert.Equal(0xDEDu, Perm(st3));
        Assert.Equal(42u, st3.st_gid);
    }

    [SkippableFact]
    public void UtimensatKeepsNanoseconds()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        Ok(Utimensat(m.P("f"), new TimeSpec(1_000_000_000, 123_456_789), new TimeSpec(1_500_000_000, 987_654_321)), "utimensat");
        var st = StatOf(m.P("f"));
        Assert.Equal((1_000_000_000L, 123_456_789L), (st.st_atime, st.st_atime_nsec));
        Assert.Equal((1_500_000_000L, 987_654_321L), (st.st_mtime, st.st_mtime_nsec));

        // UTIME_NOW for mtime, UTIME_OMIT for atime.
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Ok(Utimensat(m.P("f"), new TimeSpec(0, UTIME_OMIT), new TimeSpec(0, UTIME_NOW)), "utimensat UTIME_NOW/OMIT");
        st = StatOf(m.P("f"));
        Assert.Equal((1_000_000_000L, 123_456_789L), (st.st_atime, st.st_atime_nsec));
        Assert.InRange(st.st_mtime, now - 5, now + 5);

        // On a symlink itself.
        Ok(Syscall.symlink("f", m.P("l")), "symlink");
        Ok(Utimensat(m.P("l"), new TimeSpec(7, 7), new TimeSpec(8, 8), AT_SYMLINK_NOFOLLOW), "utimensat on a symlink");
        var l = LstatOf(m.P("l"));
        Assert.Equal((8L, 8L), (l.st_mtime, l.st_mtime_nsec));
        Assert.InRange(StatOf(m.P("f")).st_mtime, now - 5, now + 5);

        Fails(Errno.ENOENT, Utimensat(m.P("missing"), new TimeSpec(1, 1), new TimeSpec(1, 1)), "utimensat a missing file");
        Fails(Errno.EINVAL, Utimensat(m.P("f"), new TimeSpec(1, 1_000_000_000), new TimeSpec(1, 1)), "utimensat tv_nsec out of range");

        Ok(Utimensat(m.P("f"), new TimeSpec(1_000_000_000, 123_456_789), new TimeSpec(1_500_000_000, 987_654_321)), "utimensat again");
        m.Remount();
        st = StatOf(m.P("f"));
        Assert.Equal((1_500_000_000L, 987_654_321L), (st.st_mtime, st.st_mtime_nsec));
        Assert.Equal((1_000_000_000L, 123_456_789L), (st.st_atime, st.st_atime_nsec));
    }

    [SkippableFact]
    public void MknodFifoAndSocket()
    {
        using var m = new MountedPool();
        Ok(Syscall.mknod(m.P("fifo"), FilePermissions.S_IFIFO | (FilePermissions)0x1A4, 0), "mknod fifo");
        Assert.Equal(S_IFIFO, Type(StatOf(m.P("fifo"))));
        Ok(Syscall.mknod(m.P("sock"), FilePermissions.S_IFSOCK | (FilePermissions)0x1A4, 0), "mknod socket");
        Assert.Equal(S_IFSOCK, Type(StatOf(m.P("sock"))));
        Fails(Errno.EEXIST, Syscall.mknod(m.P("fifo"), FilePermissions.S_IFIFO | (FilePermissions)0x1A4, 0), "mknod an existing name");

        // A real socket bound inside the mount.
        using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            s.Bind(new UnixDomainSocketEndPoint(m.P("bound.sock")));
            Assert.Equal(S_IFSOCK, Type(StatOf(m.P("bound.sock"))));
        }
        // A FIFO on the mount carries data (the pipe lives in the kernel, the inode on the mount).
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
    public void ExtendedAttributes()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        var f = m.P("f");
        Ok(SetXattr(f, "user.a", "v1"u8, 0), "setxattr user.a");
        Ok(SetXattr(f, "user.b", Bytes(3000, 10), 0), "setxattr user.b");
        Ok(SetXattr(f, "user.empty", ReadOnlySpan<byte>.Empty, 0), "setxattr empty value");
        Assert.Equal("v1"u8.ToArray(), GetXattrValue(f, "user.a"));
        Assert.Equal(Bytes(3000, 10), GetXattrValue(f, "user.b"));
        Assert.Empty(GetXattrValue(f, "user.empty"));
        Assert.Equal(new HashSet<string> { "user.a", "user.b", "user.empty" }, ListXattrNames(f).Where(n => n.StartsWith("user.")).ToHashSet());
        Assert.Equal(2, GetXattr(f, "user.a", null));

        Fails(Errno.EEXIST, SetXattr(f, "user.a", "v2"u8, XATTR_CREATE), "XATTR_CREATE on an existing name");
        Fails(Errno.ENODATA, SetXattr(f, "user.c", "v"u8, XATTR_REPLACE), "XATTR_REPLACE on a missing name");
        Ok(SetXattr(f, "user.a", "replaced"u8, XATTR_REPLACE), "XATTR_REPLACE");
        Assert.Equal("replaced"u8.ToArray(), GetXattrValue(f, "user.a"));
        Fails(Errno.ENODATA, GetXattr(f, "user.missing", new byte[100]), "getxattr a missing name");
        Fails(Errno.ERANGE, GetXattr(f, "user.a", new byte[3]), "getxattr into a small buffer");
        Fails(Errno.ERANGE, ListXattr(f, new byte[4]), "listxattr into a small buffer");
        Fails(Errno.ENOENT, SetXattr(m.P("missing"), "user.a", "v"u8, 0), "setxattr a missing file");

        Ok(RemoveXattr(f, "user.b"), "removexattr");
        Fails(Errno.ENODATA, GetXattr(f, "user.b", null), "getxattr after remove");
        Fails(Errno.ENODATA, RemoveXattr(f, "user.b"), "removexattr twice");
        // On a directory too.
        Directory.CreateDirectory(m.P("d"));
        Ok(SetXattr(m.P("d"), "user.dir", "dv"u8, 0), "setxattr on a directory");

        m.Remount();
        Assert.Equal("replaced"u8.ToArray(), GetXattrValue(f, "user.a"));
        Assert.Equal(new HashSet<string> { "user.a", "user.empty" }, ListXattrNames(f).Where(n => n.StartsWith("user.")).ToHashSet());
        Assert.Equal("dv"u8.ToArray(), GetXattrValue(m.P("d"), "user.dir"));
    }

    [SkippableFact]
    public void StatfsIsSane()
    {
        using var m = new MountedPool();
        Ok(Syscall.statvfs(m.MountPoint, out var v0), "statvfs");
        Assert.True(v0.f_bsize > 0, "f_bsize");
        Assert.True(v0.f_frsize > 0, "f_frsize");
        Assert.True(v0.f_blocks > 0, "f_blocks");
        Assert.True(v0.f_bfree <= v0.f_blocks, $"f_bfree {v0.f_bfree} > f_blocks {v0.f_blocks}");
        Assert.True(v0.f_bavail <= v0.f_bfree, $"f_bavail {v0.f_bavail} > f_bfree {v0.f_bfree}");
        Assert.True(v0.f_bfree > 0, "no free blocks on a new pool");
        Assert.Equal(255ul, v0.f_namemax);

        var data = Bytes((int)(8 * MiB), 11);
        using (var fd = Fd.Open(m.P("f"), O_RDWR | O_CREAT))
        {
            fd.WriteAt(0, data);
            Ok(Fsync(fd.Handle), "fsync");
        }
        Ok(Syscall.statvfs(m.MountPoint, out var v1), "statvfs after 8 MiB");
        ulong used = (v0.f_bfree - v1.f_bfree) * v1.f_frsize;
        Assert.True(used >= 6 * (ulong)MiB && used <= 64 * (ulong)MiB, $"8 MiB written, free space dropped by {used} bytes");
        Assert.Equal(v0.f_blocks, v1.f_blocks);
    }

    [SkippableFact]
    public void FsyncAndFsyncdir()
    {
        using var m = new MountedPool();
        Directory.CreateDirectory(m.P("d"));
        using (var fd = Fd.Open(m.P("d/f"), O_RDWR | O_CREAT))
        {
            fd.WriteAt(0, Bytes(50_000, 12));
            Ok(Fsync(fd.Handle), "fsync");
            fd.WriteAt(50_000, Bytes(5000, 13));
            Ok(Fdatasync(fd.Handle), "fdatasync");
        }
        using (var dir = Fd.Open(m.P("d"), O_RDONLY | O_DIRECTORY)) Ok(Fsync(dir.Handle), "fsync a directory");
        using (var root = Fd.Open(m.MountPoint, O_RDONLY | O_DIRECTORY)) Ok(Fdatasync(root.Handle), "fdatasync the root");
        using (var ro = Fd.Open(m.P("d/f"), O_RDONLY)) Ok(Fsync(ro.Handle), "fsync a read-only descriptor");
        m.Remount();
        Assert.Equal(55_000, StatOf(m.P("d/f")).st_size);
    }

    [SkippableFact]
    public void NameTooLong()
    {
        using var m = new MountedPool();
        var n255 = new string('a', 255);
        var n256 = new string('b', 256);
        File.WriteAllText(m.P(n255), "ok");
        Assert.Equal("ok", File.ReadAllText(m.P(n255)));
        OpenFails(Errno.ENAMETOOLONG, m.P(n256), O_RDWR | O_CREAT, "create a 256-byte name");
        Fails(Errno.ENAMETOOLONG, Syscall.mkdir(m.P(n256), (FilePermissions)0x1ED), "mkdir a 256-byte name");
        Fails(Errno.ENAMETOOLONG, Syscall.symlink("x", m.P(n256)), "symlink a 256-byte name");
        Fails(Errno.ENAMETOOLONG, Syscall.rename(m.P(n255), m.P(n256)), "rename to a 256-byte name");
        Assert.Equal(Errno.ENAMETOOLONG, StatErrno(m.P(n256)));
        // 255 bytes of UTF-8 (85 three-byte characters) is fine, 258 is not.
        var utf = new string('€', 85);
        File.WriteAllText(m.P(utf), "u");
        OpenFails(Errno.ENAMETOOLONG, m.P(utf + "€"), O_RDWR | O_CREAT, "create a 258-byte UTF-8 name");
        Assert.Contains(utf, Ls(m.MountPoint));
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
    public void SnapshotsAreReadOnly()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "frozen");
        Directory.CreateDirectory(m.P("d"));
        File.WriteAllText(m.P("d/g"), "g");
        Ok(SetXattr(m.P("f"), "user.x", "1"u8, 0), "setxattr");
        MakeSnapshot(m, "s1");
        var s = m.P(".snapshots/s1");
        var errs = new[] { Errno.EROFS };
        OpenFails(Errno.EROFS, s + "/f", O_WRONLY, "open for writing in a snapshot");
        OpenFails(Errno.EROFS, s + "/f", O_RDWR, "open read-write in a snapshot");
        OpenFails(Errno.EROFS, s + "/f", O_RDONLY | O_TRUNC, "O_TRUNC in a snapshot");
        OpenFails(Errno.EROFS, s + "/new", O_RDWR | O_CREAT, "create in a snapshot");
        FailsWithAny(errs, Syscall.unlink(s + "/f"), "unlink in a snapshot");
        FailsWithAny(errs, Syscall.mkdir(s + "/nd", (FilePermissions)0x1ED), "mkdir in a snapshot");
        FailsWithAny(errs, Syscall.rmdir(s + "/d"), "rmdir in a snapshot");
        FailsWithAny(errs, Syscall.rename(s + "/f", s + "/f2"), "rename in a snapshot");
        FailsWithAny(errs, Syscall.chmod(s + "/f", (FilePermissions)0x1FF), "chmod in a snapshot");
        FailsWithAny(errs, Syscall.chown(s + "/f", 1, 1), "chown in a snapshot");
        FailsWithAny(errs, Truncate(s + "/f", 0), "truncate in a snapshot");
        FailsWithAny(errs, SetXattr(s + "/f", "user.y", "2"u8, 0), "setxattr in a snapshot");
        FailsWithAny(errs, RemoveXattr(s + "/f", "user.x"), "removexattr in a snapshot");
        FailsWithAny(errs, Syscall.symlink("x", s + "/l"), "symlink in a snapshot");
        FailsWithAny(errs, Syscall.mknod(s + "/p", FilePermissions.S_IFIFO | (FilePermissions)0x1A4, 0), "mknod in a snapshot");
        FailsWithAny(errs, Utimensat(s + "/f", new TimeSpec(1, 1), new TimeSpec(1, 1)), "utimensat in a snapshot");
        FailsWithAny(errs, Syscall.link(s + "/f", s + "/f-link"), "link in a snapshot");
        FailsWithAny(errs, Syscall.chmod(s, (FilePermissions)0x1FF), "chmod the snapshot root");

        // Reading works and nothing changed.
        Assert.Equal("frozen", File.ReadAllText(s + "/f"));
        Assert.Equal("g", File.ReadAllText(s + "/d/g"));
        Assert.Equal("1"u8.ToArray(), GetXattrValue(s + "/f", "user.x"));
        Assert.Equal(new HashSet<string> { "f", "d" }, Ls(s));
        Assert.Equal(Perm(StatOf(m.P("f"))), Perm(StatOf(s + "/f")));
        Assert.Equal("frozen", File.ReadAllText(m.P("f")));
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
