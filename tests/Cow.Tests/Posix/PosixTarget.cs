using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Tests.Posix;

/// <summary>What stat(2) (statx, for the birth time) reports of a path. Times are ns since the Unix epoch;
/// <see cref="BtimeNs"/> is null when the target does not report a birth time.</summary>
public readonly record struct PosixStat(long Ino, uint Mode, uint Nlink, uint Uid, uint Gid, ulong Rdev, long Size,
    long Blocks512, int BlockSize, long AtimeNs, long MtimeNs, long CtimeNs, long? BtimeNs)
{
    public uint Type => Mode & 0xF000;
    public uint Perm => Mode & 0xFFF;
}

/// <summary>What statfs(2) reports, in blocks of <see cref="BlockSize"/> (f_frsize).</summary>
/// <see cref="IoBlockSize"/> is f_bsize, the preferred I/O size.
public readonly record struct PosixStatFs(long BlockSize, long IoBlockSize, long Blocks, long FreeBlocks, long AvailableBlocks, long Files, long FreeFiles, long NameMax);

/// <summary>One readdir entry: the name, d_ino and d_type (mode &gt;&gt; 12).</summary>
public readonly record struct PosixDirEntry(string Name, long Ino, uint Type);

/// <summary>Which times a utimensat sets: a time in ns, <see cref="Now"/> (UTIME_NOW) or <see cref="Omit"/> (UTIME_OMIT).</summary>
public readonly record struct PosixTime(long Ns, bool IsNow, bool IsOmit)
{
    public static PosixTime At(long ns) => new(ns, false, false);
    public static readonly PosixTime Now = new(0, true, false), Omit = new(0, false, true);
}

/// <summary>
/// A file system as POSIX system calls see it, path by path, each call answering an errno (0 = success): the
/// contract the shared cases (<see cref="PosixCases"/>) are written against, so the same case runs on the inode
/// API (<see cref="EnginePosixTarget"/>) and on a real FUSE mount (<see cref="MountPosixTarget"/>). Paths are
/// relative to the target's root, an empty directory made for one case; symlinks are followed as the kernel
/// follows them. The caller is <see cref="Uid"/>:<see cref="Gid"/>. Not thread-safe.
/// </summary>
public interface IPosixTarget : IDisposable
{
    /// <summary>"engine" or "mount", for messages.</summary>
    string Name { get; }
    uint Uid { get; }
    uint Gid { get; }
    /// <summary>The umask new files, directories and nodes get (the process's: a mount cannot bypass it).</summary>
    uint Umask { get; }

    /// <summary>The absolute form of <paramref name="path"/> as a symlink target (symlinks resolve against it).</summary>
    string AbsolutePath(string path);

    Errno Stat(string path, out PosixStat st);
    Errno Lstat(string path, out PosixStat st);
    Errno Mkdir(string path, uint mode);
    Errno Mknod(string path, uint mode, ulong rdev);
    Errno Symlink(string target, string path);
    Errno Readlink(string path, out string target);
    Errno Link(string from, string to);
    Errno Unlink(string path);
    Errno Rmdir(string path);
    Errno Rename(string from, string to, RenameFlags flags = RenameFlags.None);
    Errno Chmod(string path, uint mode);
    /// <summary>chown(2); uint.MaxValue (-1) leaves that id alone.</summary>
    Errno Chown(string path, uint uid, uint gid);
    Errno Utimens(string path, PosixTime atime, PosixTime mtime, bool noFollow = false);
    Errno Truncate(string path, long size);
    /// <summary>Every entry, "." and ".." included, in the order readdir gives them.</summary>
    Errno ReadDir(string path, out List<PosixDirEntry> entries);
    /// <summary>open(2) (O_CLOEXEC implied); <paramref name="file"/> is null unless it succeeded.</summary>
    Errno Open(string path, int flags, uint mode, out IPosixFile? file);
    Errno SetXattr(string path, string name, byte[] value, int flags = 0, bool noFollow = false);
    Errno GetXattr(string path, string name, out byte[] value, bool noFollow = false);
    Errno ListXattr(string path, out List<string> names);
    Errno RemoveXattr(string path, string name);
    PosixStatFs StatFs();
    /// <summary>Free blocks (of the target's block size) that new writes can use, as statfs reports them.</summary>
    long FreeBlocks();
    /// <summary>Every change so far becomes durable (and what it freed, free): an fsync of the root directory.</summary>
    void Sync();

    /// <summary>Takes a snapshot named <paramref name="name"/> of the pool (what `cow snapshot create` does); the
    /// answer is the path, to put before a case's path, under which the case's root appears in the snapshot.</summary>
    string Snapshot(string name);
    /// <summary>Deletes the snapshot <paramref name="name"/> made by <see cref="Snapshot"/>.</summary>
    void DeleteSnapshot(string name);

    /// <summary>Makes everything durable, closes the file system and opens it again (an unmount and mount):
    /// what the case sees afterwards came from the devices. Every file must be closed.</summary>
    void Reopen();
    /// <summary>Ends a case: the pool must check clean (where the target can check it while open).</summary>
    void AssertClean();
}

/// <summary>An open file of an <see cref="IPosixTarget"/>; Dispose closes it. Calls answer errnos.</summary>
public interface IPosixFile : IDisposable
{
    Errno Pread(Span<byte> buffer, long offset, out int count);
    Errno Pwrite(ReadOnlySpan<byte> data, long offset, out int count);
    /// <summary>write(2) at the file position (which, with O_APPEND, is the end).</summary>
    Errno Write(ReadOnlySpan<byte> data, out int count);
    Errno Fstat(out PosixStat st);
    Errno Ftruncate(long size);
    Errno Fallocate(FallocateMode mode, long offset, long length);
    /// <summary>lseek with SEEK_DATA or SEEK_HOLE.</summary>
    Errno Seek(long offset, SeekWhence whence, out long result);
    Errno Fsync();
    Errno Fdatasync();
    Errno Fchmod(uint mode);
    /// <summary>linkat of the open file (through /proc/self/fd with AT_SYMLINK_FOLLOW): gives it the name <paramref name="path"/>.</summary>
    Errno LinkTo(string path);

    // a directory's descriptor as the dirfd of the *at calls
    /// <summary>openat(this, name, O_WRONLY | O_CREAT | O_EXCL) and close.</summary>
    Errno CreateAt(string name, uint mode);
    Errno MkdirAt(string name, uint mode);
    Errno MknodAt(string name, uint mode, ulong rdev);
    Errno SymlinkAt(string target, string name);
    /// <summary>linkat(AT_FDCWD, from, this, name, 0).</summary>
    Errno LinkInto(string from, string name);
    /// <summary>renameat2(AT_FDCWD, from, this, name, flags).</summary>
    Errno RenameInto(string from, string name, RenameFlags flags = RenameFlags.None);
}

/// <summary>Helpers both targets share.</summary>
public static class PosixTargets
{
    /// <summary>This process's umask, read without changing it (umask(2) would, for every thread).</summary>
    public static uint ProcessUmask()
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("Umask:", StringComparison.Ordinal));
        return Convert.ToUInt32(line["Umask:".Length..].Trim(), 8);
    }
}

/// <summary>open(2) flags and mode bits the cases use (Linux x86-64 values).</summary>
public static class PosixFlags
{
    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_EXCL = 0x80, O_TRUNC = 0x200,
        O_APPEND = 0x400, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000;
    public const int XATTR_CREATE = 1, XATTR_REPLACE = 2;
    public const uint S_IFMT = 0xF000, S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFLNK = 0xA000, S_IFIFO = 0x1000,
        S_IFSOCK = 0xC000, S_IFCHR = 0x2000, S_IFBLK = 0x6000;
}
