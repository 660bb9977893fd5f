using System.Runtime.InteropServices;
using System.Text;
using Cow.Core.FileSystem;
using Cow.Tests.Mount;
using Mono.Unix.Native;

namespace Cow.Tests.Posix;

/// <summary>
/// One mount shared by the cases of a test class (xunit runs a class's tests one at a time): mounted on first
/// use, inside a test, so that a machine without root or /dev/fuse reports the cases skipped. Each case gets a
/// fresh directory of it. Owns the mount. Not thread-safe (the cases of one class never run at once).
/// </summary>
public sealed class PosixMountFixture : IDisposable
{
    private MountedPool? _mount;
    private int _cases;

    public MountedPool Mount => _mount ??= new MountedPool();

    /// <summary>A new, empty directory for one case.</summary>
    public MountPosixTarget NewTarget()
    {
        var dir = Mount.P($"case-{++_cases}");
        Directory.CreateDirectory(dir);
        return new MountPosixTarget(Mount, dir);
    }

    public void Dispose() => _mount?.Dispose();
}

/// <summary>
/// <see cref="IPosixTarget"/> over a real FUSE mount: every call is the system call, errno as the kernel gives it,
/// as root (the test process). Paths are relative to <see cref="Root"/>, the case's own directory. Owns nothing
/// (the fixture owns the mount). Not thread-safe.
/// </summary>
public sealed unsafe partial class MountPosixTarget(MountedPool mount, string root) : IPosixTarget
{
    public string Name => "mount";
    public uint Uid => 0;
    public uint Gid => 0;
    public uint Umask { get; } = PosixTargets.ProcessUmask();
    public string Root => root;

    /// <summary>The kernel granted fuse-iomap on this mount (the kernel tier runs the cases with --iomap on).</summary>
    public bool IomapGranted => mount.Mount?.Dispatcher.IomapGranted == true;

    private string P(string path) => path is "" or "." ? root : Path.Combine(root, path);

    public string AbsolutePath(string path) => P(path);

    private static Errno R(long result) => result < 0 ? Native.LastErrno() : 0;

    // ---------------------------------------------------------------- statx (stat with the birth time)

    private const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100;
    private const uint STATX_BASIC_STATS = 0x7FF, STATX_BTIME = 0x800;

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx_(int dirfd, string path, int flags, uint mask, byte* buf);
    [LibraryImport("libc", EntryPoint = "mknod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mknod_(string path, uint mode, ulong dev);
    [LibraryImport("libc", EntryPoint = "mkdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mkdir_(string path, uint mode);
    [LibraryImport("libc", EntryPoint = "chmod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int chmod_(string path, uint mode);
    [LibraryImport("libc", EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int openat_(int dirfd, string path, int flags, uint mode);
    [LibraryImport("libc", EntryPoint = "mkdirat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mkdirat_(int dirfd, string path, uint mode);
    [LibraryImport("libc", EntryPoint = "mknodat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mknodat_(int dirfd, string path, uint mode, ulong dev);
    [LibraryImport("libc", EntryPoint = "symlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int symlinkat_(string target, int dirfd, string path);
    [LibraryImport("libc", EntryPoint = "linkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int linkat_(int olddirfd, string oldpath, int newdirfd, string newpath, int flags);
    [LibraryImport("libc", EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int renameat2_(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);
    [LibraryImport("libc", EntryPoint = "readlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint readlink_(string path, byte* buf, nint size);
    [LibraryImport("libc", EntryPoint = "lsetxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lsetxattr_(string path, string name, byte* value, nint size, int flags);
    [LibraryImport("libc", EntryPoint = "lgetxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint lgetxattr_(string path, string name, byte* value, nint size);

    /// <summary>struct statx (include/uapi/linux/stat.h) decoded; dev_t as glibc's makedev encodes it.</summary>
    internal static PosixStat FromStatx(ReadOnlySpan<byte> b)
    {
        uint mask = MemoryMarshal.Read<uint>(b);
        ulong major = MemoryMarshal.Read<uint>(b[128..]), minor = MemoryMarshal.Read<uint>(b[132..]);
        ulong rdev = ((major & 0xFFFFF000) << 32) | ((major & 0xFFF) << 8) | ((minor & 0xFFFFFF00) << 12) | (minor & 0xFF);
        return new PosixStat(
            Ino: (long)MemoryMarshal.Read<ulong>(b[32..]), Mode: MemoryMarshal.Read<ushort>(b[28..]), Nlink: MemoryMarshal.Read<uint>(b[16..]),
            Uid: MemoryMarshal.Read<uint>(b[20..]), Gid: MemoryMarshal.Read<uint>(b[24..]), Rdev: rdev, Size: MemoryMarshal.Read<long>(b[40..]),
            Blocks512: MemoryMarshal.Read<long>(b[48..]), BlockSize: (int)MemoryMarshal.Read<uint>(b[4..]),
            AtimeNs: Time(b, 64), MtimeNs: Time(b, 112), CtimeNs: Time(b, 96), BtimeNs: (mask & STATX_BTIME) != 0 ? Time(b, 80) : null);
    }

    /// <summary>A struct statx_timestamp at <paramref name="at"/>, in ns.</summary>
    private static long Time(ReadOnlySpan<byte> b, int at) =>
        MemoryMarshal.Read<long>(b[at..]) * 1_000_000_000L + MemoryMarshal.Read<uint>(b[(at + 8)..]);

    private static Errno Statx(string path, int flags, out PosixStat st)
    {
        var buf = stackalloc byte[256];
        st = default;
        if (statx_(AT_FDCWD, path, flags, STATX_BASIC_STATS | STATX_BTIME, buf) != 0) return Native.LastErrno();
        st = FromStatx(new ReadOnlySpan<byte>(buf, 256));
        return 0;
    }

    internal static Errno Fstatx(int fd, out PosixStat st)
    {
        var buf = stackalloc byte[256];
        st = default;
        if (statx_(fd, "", 0x1000 /* AT_EMPTY_PATH */, STATX_BASIC_STATS | STATX_BTIME, buf) != 0) return Native.LastErrno();
        st = FromStatx(new ReadOnlySpan<byte>(buf, 256));
        return 0;
    }

    // ---------------------------------------------------------------- IPosixTarget

    public Errno Stat(string path, out PosixStat st) => Statx(P(path), 0, out st);
    public Errno Lstat(string path, out PosixStat st) => Statx(P(path), AT_SYMLINK_NOFOLLOW, out st);
    // mode bits go to the kernel as they are (Mono.Posix would translate them, dropping an unknown file type)
    public Errno Mkdir(string path, uint mode) => R(mkdir_(P(path), mode));
    public Errno Mknod(string path, uint mode, ulong rdev) => R(mknod_(P(path), mode, rdev));
    public Errno Symlink(string target, string path) => R(Syscall.symlink(target, P(path)));

    public Errno Readlink(string path, out string target)
    {
        var buf = new byte[8192];
        nint n;
        fixed (byte* p = buf) n = readlink_(P(path), p, buf.Length);
        target = n < 0 ? "" : Encoding.UTF8.GetString(buf, 0, (int)n);
        return R(n);
    }

    public Errno Link(string from, string to) => R(Syscall.link(P(from), P(to)));
    public Errno Unlink(string path) => R(Syscall.unlink(P(path)));
    public Errno Rmdir(string path) => R(Syscall.rmdir(P(path)));
    public Errno Rename(string from, string to, RenameFlags flags = RenameFlags.None) => R(Native.Rename2(P(from), P(to), (uint)flags));
    public Errno Chmod(string path, uint mode) => R(chmod_(P(path), mode));
    public Errno Chown(string path, uint uid, uint gid) => R(Syscall.chown(P(path), uid, gid));

    public Errno Utimens(string path, PosixTime atime, PosixTime mtime, bool noFollow = false)
    {
        static Native.TimeSpec Ts(PosixTime t) => t.IsNow ? new(0, Native.UTIME_NOW) : t.IsOmit ? new(0, Native.UTIME_OMIT)
            : new(Math.DivRem(t.Ns, 1_000_000_000L, out long ns) - (ns < 0 ? 1 : 0), ns < 0 ? ns + 1_000_000_000L : ns);
        return R(Native.Utimensat(P(path), Ts(atime), Ts(mtime), noFollow ? AT_SYMLINK_NOFOLLOW : 0));
    }

    public Errno Truncate(string path, long size) => R(Native.Truncate(P(path), size));

    public Errno ReadDir(string path, out List<PosixDirEntry> entries)
    {
        entries = new List<PosixDirEntry>();
        var dir = Syscall.opendir(P(path));
        if (dir == IntPtr.Zero) return Native.LastErrno();
        try
        {
            while (true)
            {
                var d = Syscall.readdir(dir);
                if (d == null) return 0;
                entries.Add(new PosixDirEntry(d.d_name, (long)d.d_ino, d.d_type));
            }
        }
        finally { Syscall.closedir(dir); }
    }

    public Errno Open(string path, int flags, uint mode, out IPosixFile? file)
    {
        int fd = Native.Open(P(path), flags, mode);
        file = fd < 0 ? null : new MountFile(fd, this);
        return fd < 0 ? Native.LastErrno() : 0;
    }

    public Errno SetXattr(string path, string name, byte[] value, int flags = 0, bool noFollow = false)
    {
        if (!noFollow) return R(Native.SetXattr(P(path), name, value, flags));
        fixed (byte* p = value) return R(lsetxattr_(P(path), name, p, value.Length, flags));
    }

    public Errno GetXattr(string path, string name, out byte[] value, bool noFollow = false)
    {
        value = Array.Empty<byte>();
        var buf = new byte[70_000];
        nint n;
        fixed (byte* p = buf) n = noFollow ? lgetxattr_(P(path), name, p, buf.Length) : (nint)Native.GetXattr(P(path), name, buf);
        if (n < 0) return Native.LastErrno();
        value = buf[..(int)n];
        return 0;
    }

    public Errno ListXattr(string path, out List<string> names)
    {
        names = new List<string>();
        var buf = new byte[70_000];
        long n = Native.ListXattr(P(path), buf);
        if (n < 0) return Native.LastErrno();
        names = Encoding.UTF8.GetString(buf, 0, (int)n).Split('\0', StringSplitOptions.RemoveEmptyEntries).ToList();
        return 0;
    }

    public Errno RemoveXattr(string path, string name) => R(Native.RemoveXattr(P(path), name));

    public PosixStatFs StatFs()
    {
        if (Syscall.statvfs(root, out var v) != 0) throw new IOException($"statvfs: {Native.LastErrno()}");
        return new PosixStatFs((long)v.f_frsize, (long)v.f_bsize, (long)v.f_blocks, (long)v.f_bfree, (long)v.f_bavail, (long)v.f_files, (long)v.f_ffree, (long)v.f_namemax);
    }

    public long FreeBlocks() => StatFs().FreeBlocks;

    /// <summary>fsync of the case's directory (FSYNCDIR: one group commit). Not syncfs(2): the kernel sends
    /// FUSE_SYNCFS only to virtiofs servers, so on a /dev/fuse mount syncfs writes back the kernel's dirty pages
    /// but never reaches the server.</summary>
    public void Sync()
    {
        int fd = Native.Open(root, Native.O_RDONLY | Native.O_DIRECTORY);
        if (fd < 0) throw new IOException($"open {root}: {Native.LastErrno()}");
        try { if (Native.Fsync(fd) != 0) throw new IOException($"fsync {root}: {Native.LastErrno()}"); }
        finally { Native.Close(fd); }
    }

    /// <summary>syncfs of the mount (it writes back the kernel's dirty pages), then mkdir .snapshots/NAME-CASE: a
    /// snapshot name per case, since the cases of a class share one pool.</summary>
    public string Snapshot(string name)
    {
        string dir = Path.GetFileName(root), snapshot = $"{name}-{dir}";
        int fd = Native.Open(mount.MountPoint, Native.O_RDONLY | Native.O_DIRECTORY);
        if (fd < 0) throw new IOException($"open {mount.MountPoint}: {Native.LastErrno()}");
        try { if (Native.Syncfs(fd) != 0) throw new IOException($"syncfs: {Native.LastErrno()}"); }
        finally { Native.Close(fd); }
        if (mkdir_(mount.P(".snapshots/" + snapshot), 0x1ED) != 0) throw new IOException($"mkdir .snapshots/{snapshot}: {Native.LastErrno()}");
        return $"../.snapshots/{snapshot}/{dir}";
    }

    /// <summary>rmdir .snapshots/NAME-CASE.</summary>
    public void DeleteSnapshot(string name)
    {
        var path = mount.P($".snapshots/{name}-{Path.GetFileName(root)}");
        if (Syscall.rmdir(path) != 0) throw new IOException($"rmdir {path}: {Native.LastErrno()}");
    }

    public void Reopen() => mount.Remount();

    /// <summary>Unmounts, checks the pool, mounts again.</summary>
    public void AssertClean()
    {
        mount.UnmountNow();
        try
        {
            using var p = Cow.Core.Pool.Open(mount.PoolDir);
            var report = p.Fsck();
            Xunit.Assert.True(report.Clean, report.ToString());
        }
        finally { mount.MountNow(); }   // the next case of the class needs the mount, whatever this one found
    }

    public void Dispose() { }

    /// <summary>An open descriptor; Dispose closes it.</summary>
    private sealed class MountFile(int fd, MountPosixTarget target) : IPosixFile
    {
        private int _fd = fd;

        public Errno Pread(Span<byte> buffer, long offset, out int count)
        {
            long n = Native.Pread(_fd, buffer, offset);
            count = (int)Math.Max(n, 0);
            return R(n);
        }

        public Errno Pwrite(ReadOnlySpan<byte> data, long offset, out int count)
        {
            long n = Native.Pwrite(_fd, data, offset);
            count = (int)Math.Max(n, 0);
            return R(n);
        }

        public Errno Write(ReadOnlySpan<byte> data, out int count)
        {
            long n = Native.Write(_fd, data);
            count = (int)Math.Max(n, 0);
            return R(n);
        }

        public Errno Fstat(out PosixStat st) => Fstatx(_fd, out st);
        public Errno Ftruncate(long size) => R(Native.Ftruncate(_fd, size));
        public Errno Fallocate(FallocateMode mode, long offset, long length) => R(Native.Fallocate(_fd, (int)mode, offset, length));

        public Errno Seek(long offset, SeekWhence whence, out long result)
        {
            result = Native.Lseek(_fd, offset, (int)whence);
            return R(result);
        }

        public Errno Fsync() => R(Native.Fsync(_fd));
        public Errno Fdatasync() => R(Native.Fdatasync(_fd));
        public Errno Fchmod(uint mode) => R(Syscall.fchmod(_fd, (FilePermissions)mode));
        public Errno LinkTo(string path) => R(Native.LinkFd(_fd, target.P(path)));

        public Errno CreateAt(string name, uint mode)
        {
            int fd = openat_(_fd, name, Native.O_WRONLY | Native.O_CREAT | Native.O_EXCL | 0x80000 /* O_CLOEXEC */, mode);
            if (fd < 0) return Native.LastErrno();
            Native.Close(fd);
            return 0;
        }

        public Errno MkdirAt(string name, uint mode) => R(mkdirat_(_fd, name, mode));
        public Errno MknodAt(string name, uint mode, ulong rdev) => R(mknodat_(_fd, name, mode, rdev));
        public Errno SymlinkAt(string link, string name) => R(symlinkat_(link, _fd, name));
        public Errno LinkInto(string from, string name) => R(linkat_(AT_FDCWD, target.P(from), _fd, name, 0));
        public Errno RenameInto(string from, string name, RenameFlags flags = RenameFlags.None) =>
            R(renameat2_(AT_FDCWD, target.P(from), _fd, name, (uint)flags));

        public void Dispose()
        {
            if (_fd >= 0) Native.Close(_fd);
            _fd = -1;
        }
    }
}
