using System.Runtime.InteropServices;
using System.Text;
using Mono.Unix.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// Thin libc calls for the mount tests, each returning the raw result with errno captured, so a test can
/// assert the exact errno. Things Mono.Posix does not wrap (renameat2, copy_file_range, fallocate with a
/// mode, lseek with SEEK_DATA/SEEK_HOLE) and the ones whose errno matters are P/Invoked here directly.
/// </summary>
internal static unsafe partial class Native
{
    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_EXCL = 0x80, O_TRUNC = 0x200,
        O_APPEND = 0x400, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000;
    public const int SEEK_SET = 0, SEEK_CUR = 1, SEEK_END = 2, SEEK_DATA = 3, SEEK_HOLE = 4;
    public const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;
    public const uint RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2;
    public const int XATTR_CREATE = 1, XATTR_REPLACE = 2;
    public const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100;
    public const long UTIME_NOW = (1L << 30) - 1, UTIME_OMIT = (1L << 30) - 2;
    public const uint S_IFMT = 0xF000, S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFLNK = 0xA000, S_IFIFO = 0x1000, S_IFSOCK = 0xC000;

    [StructLayout(LayoutKind.Sequential)]
    public struct TimeSpec { public long Sec, Nsec; public TimeSpec(long s, long ns) { Sec = s; Nsec = ns; } }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open_(string path, int flags, uint mode);
    [LibraryImport("libc", EntryPoint = "syncfs", SetLastError = true)]
    internal static partial int Syncfs(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int close_(int fd);
    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static partial nint pread_(int fd, byte* buf, nint count, long offset);
    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    private static partial nint pwrite_(int fd, byte* buf, nint count, long offset);
    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint write_(int fd, byte* buf, nint count);
    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long lseek_(int fd, long offset, int whence);
    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int fallocate_(int fd, int mode, long offset, long len);
    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int ftruncate_(int fd, long length);
    [LibraryImport("libc", EntryPoint = "truncate", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int truncate_(string path, long length);
    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int fsync_(int fd);
    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int fdatasync_(int fd);
    [LibraryImport("libc", EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int renameat2_(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);
    [LibraryImport("libc", EntryPoint = "copy_file_range", SetLastError = true)]
    private static partial nint copy_file_range_(int fdIn, long* offIn, int fdOut, long* offOut, nint len, uint flags);
    [LibraryImport("libc", EntryPoint = "utimensat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int utimensat_(int dirfd, string path, TimeSpec* times, int flags);
    [LibraryImport("libc", EntryPoint = "setxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int setxattr_(string path, string name, byte* value, nint size, int flags);
    [LibraryImport("libc", EntryPoint = "getxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint getxattr_(string path, string name, byte* value, nint size);
    [LibraryImport("libc", EntryPoint = "listxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint listxattr_(string path, byte* list, nint size);
    [LibraryImport("libc", EntryPoint = "removexattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int removexattr_(string path, string name);

    /// <summary>errno of the last failed call here (or of a Mono.Posix Syscall, which also sets it).</summary>
    public static Errno LastErrno() => NativeConvert.ToErrno(Marshal.GetLastPInvokeError());

    /// <summary>0 when <paramref name="result"/> is not negative, else errno.</summary>
    public static Errno E(long result) => result < 0 ? LastErrno() : 0;

    /// <summary>Throws (with errno and <paramref name="what"/>) when <paramref name="result"/> is negative.</summary>
    public static long Check(long result, string what)
    {
        if (result < 0) throw new IOException($"{what}: {LastErrno()}");
        return result;
    }

    /// <summary>open(2), always with O_CLOEXEC: tests run in parallel and start processes (cow, fusermount3,
    /// setpriv); a descriptor inherited by such a child would keep a mount busy after the test closed it.</summary>
    public static int Open(string path, int flags, uint mode = 0x1A4) => open_(path, flags | O_CLOEXEC, mode);
    private const int O_CLOEXEC = 0x80000;
    public static int Close(int fd) => close_(fd);
    public static long Lseek(int fd, long offset, int whence) => lseek_(fd, offset, whence);
    public static int Fallocate(int fd, int mode, long offset, long len) => fallocate_(fd, mode, offset, len);
    public static int Ftruncate(int fd, long length) => ftruncate_(fd, length);
    public static int Truncate(string path, long length) => truncate_(path, length);
    public static int Fsync(int fd) => fsync_(fd);
    public static int Fdatasync(int fd) => fdatasync_(fd);
    public static int Rename2(string from, string to, uint flags) => renameat2_(AT_FDCWD, from, AT_FDCWD, to, flags);

    public static long Pread(int fd, Span<byte> buf, long offset) { fixed (byte* p = buf) return pread_(fd, p, buf.Length, offset); }
    public static long Pwrite(int fd, ReadOnlySpan<byte> buf, long offset) { fixed (byte* p = buf) return pwrite_(fd, p, buf.Length, offset); }
    public static long Write(int fd, ReadOnlySpan<byte> buf) { fixed (byte* p = buf) return write_(fd, p, buf.Length); }

    /// <summary>copy_file_range with explicit offsets (null = use and advance the file position).</summary>
    public static long CopyFileRange(int fdIn, long? offIn, int fdOut, long? offOut, long len)
    {
        long a = offIn ?? 0, b = offOut ?? 0;
        return copy_file_range_(fdIn, offIn.HasValue ? &a : null, fdOut, offOut.HasValue ? &b : null, (nint)len, 0);
    }

    public static int Utimensat(string path, TimeSpec atime, TimeSpec mtime, int flags = 0)
    {
        var t = stackalloc TimeSpec[2];
        t[0] = atime; t[1] = mtime;
        return utimensat_(AT_FDCWD, path, t, flags);
    }

    public static int SetXattr(string path, string name, ReadOnlySpan<byte> value, int flags)
    {
        fixed (byte* p = value) return setxattr_(path, name, p, value.Length, flags);
    }

    /// <summary>getxattr into <paramref name="buf"/>; a null buffer asks for the size.</summary>
    public static long GetXattr(string path, string name, byte[]? buf)
    {
        fixed (byte* p = buf) return getxattr_(path, name, p, buf?.Length ?? 0);
    }

    public static long ListXattr(string path, byte[]? buf)
    {
        fixed (byte* p = buf) return listxattr_(path, p, buf?.Length ?? 0);
    }

    public static int RemoveXattr(string path, string name) => removexattr_(path, name);

    /// <summary>All xattr names of <paramref name="path"/> (throws on error).</summary>
    public static List<string> ListXattrNames(string path)
    {
        long size = Check(ListXattr(path, null), "listxattr size");
        var buf = new byte[size];
        long n = Check(ListXattr(path, buf), "listxattr");
        return Encoding.UTF8.GetString(buf, 0, (int)n).Split('\0', StringSplitOptions.RemoveEmptyEntries).ToList();
    }

    /// <summary>The value of xattr <paramref name="name"/> (throws on error).</summary>
    public static byte[] GetXattrValue(string path, string name)
    {
        long size = Check(GetXattr(path, name, null), $"getxattr size {name}");
        var buf = new byte[size];
        long n = Check(GetXattr(path, name, buf), $"getxattr {name}");
        return buf[..(int)n];
    }

    public static Stat StatOf(string path)
    {
        if (Syscall.stat(path, out var st) != 0) throw new IOException($"stat {path}: {LastErrno()}");
        return st;
    }

    public static Stat LstatOf(string path)
    {
        if (Syscall.lstat(path, out var st) != 0) throw new IOException($"lstat {path}: {LastErrno()}");
        return st;
    }

    public static Stat FstatOf(int fd)
    {
        if (Syscall.fstat(fd, out var st) != 0) throw new IOException($"fstat {fd}: {LastErrno()}");
        return st;
    }

    /// <summary>errno of stat(path), 0 when it exists.</summary>
    public static Errno StatErrno(string path) => Syscall.stat(path, out _) == 0 ? 0 : LastErrno();
    public static Errno LstatErrno(string path) => Syscall.lstat(path, out _) == 0 ? 0 : LastErrno();

    public static uint Type(in Stat st) => (uint)st.st_mode & S_IFMT;
    public static uint Perm(in Stat st) => (uint)st.st_mode & 0xFFF;
}

/// <summary>An open file descriptor that closes itself.</summary>
internal sealed class Fd : IDisposable
{
    public int Handle { get; private set; }
    public string Path { get; }

    private Fd(int fd, string path) { Handle = fd; Path = path; }

    /// <summary>Opens or throws with the errno.</summary>
    public static Fd Open(string path, int flags, uint mode = 0x1A4)
    {
        int fd = Native.Open(path, flags, mode);
        if (fd < 0) throw new IOException($"open {path} (flags 0x{flags:x}): {Native.LastErrno()}");
        return new Fd(fd, path);
    }

    /// <summary>errno of open(path, flags) (0 on success; the descriptor is closed again).</summary>
    public static Errno OpenErrno(string path, int flags, uint mode = 0x1A4)
    {
        int fd = Native.Open(path, flags, mode);
        if (fd < 0) return Native.LastErrno();
        Native.Close(fd);
        return 0;
    }

    public void WriteAt(long offset, ReadOnlySpan<byte> data)
    {
        while (data.Length > 0)
        {
            long n = Native.Check(Native.Pwrite(Handle, data, offset), $"pwrite {Path} at {offset}");
            if (n == 0) throw new IOException($"pwrite {Path} wrote nothing");
            data = data[(int)n..];
            offset += n;
        }
    }

    public void Append(ReadOnlySpan<byte> data)
    {
        long n = Native.Check(Native.Write(Handle, data), $"write {Path}");
        if (n != data.Length) throw new IOException($"short write {n} of {data.Length} on {Path}");
    }

    /// <summary>Reads up to <paramref name="count"/> bytes at <paramref name="offset"/> (short only at EOF).</summary>
    public byte[] ReadAt(long offset, int count)
    {
        var buf = new byte[count];
        int got = 0;
        while (got < count)
        {
            long n = Native.Check(Native.Pread(Handle, buf.AsSpan(got), offset + got), $"pread {Path} at {offset + got}");
            if (n == 0) break;
            got += (int)n;
        }
        return got == count ? buf : buf[..got];
    }

    public Mono.Unix.Native.Stat Stat() => Native.FstatOf(Handle);

    public void Dispose()
    {
        if (Handle >= 0) { Native.Close(Handle); Handle = -1; }
    }
}
