using Cow.Fuse.Native;
using Cow.Fuse.Server;
using Mono.Unix.Native;

namespace Cow.Fuse.Kernel;

/// <summary>
/// A block device opened O_RDWR|O_EXCL by this process: the kernel refuses the open (EBUSY) while the
/// device is mounted, is part of an md/dm/LVM stack or is held exclusively by another program, and refuses
/// those to others while we hold it. Only such descriptors are handed to FUSE_DEV_IOC_BACKING_OPEN.
/// Threading: immutable after <see cref="Open"/>; <see cref="Dispose"/> is idempotent and may race nothing
/// but itself (an interlocked exchange closes the descriptor once).
/// </summary>
public sealed class ExclusiveBlockDevice : IDisposable
{
    private int _fd;

    /// <summary>The path it was opened with.</summary>
    public string Path { get; }
    /// <summary>Size in bytes (BLKGETSIZE64).</summary>
    public long Size { get; }
    /// <summary>The descriptor (O_RDWR|O_EXCL|O_CLOEXEC); -1 after <see cref="Dispose"/>.</summary>
    public int Fd => Volatile.Read(ref _fd);

    private ExclusiveBlockDevice(string path, int fd, long size) { Path = path; _fd = fd; Size = size; }

    /// <summary>
    /// Opens <paramref name="path"/> for reading and writing, exclusively, and checks that it is a block
    /// device of at least <paramref name="requiredBytes"/> bytes. Throws <see cref="IomapDeviceException"/>
    /// naming the device and the reason (busy, not a block device, too small, errno in words); nothing stays
    /// open when it throws.
    /// </summary>
    public static ExclusiveBlockDevice Open(string path, long requiredBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        // Refuse anything that is not a block device before opening it: opening a character device
        // (a tty, a tape) can have side effects. fstat below closes the race with a path swapped meanwhile.
        if (Syscall.stat(path, out var st) != 0)
            throw new IomapDeviceException($"block device {path}: {LibC.Describe(Stdlib.GetLastError())}");
        if ((st.st_mode & FilePermissions.S_IFMT) != FilePermissions.S_IFBLK)
            throw NotBlock(path, st.st_mode);
        int fd = LibC.Open(path, LibC.O_RDWR | LibC.O_EXCL | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            var e = LibC.LastErrno;
            if (e == Errno.EBUSY)
                throw new IomapDeviceException($"block device {path} is busy: it is mounted, in use by a device mapper/md/LVM stack or held exclusively by another program ({LibC.Describe(e)}); unmount it or stop that program first");
            throw new IomapDeviceException($"cannot open block device {path} for reading and writing, exclusively: {LibC.Describe(e)}");
        }
        try
        {
            if (Syscall.fstat(fd, out var fst) != 0)
                throw new IomapDeviceException($"block device {path}: fstat failed: {LibC.Describe(Stdlib.GetLastError())}");
            if ((fst.st_mode & FilePermissions.S_IFMT) != FilePermissions.S_IFBLK)
                throw NotBlock(path, fst.st_mode);
            long size = SizeOf(fd, path);
            if (size < requiredBytes)
                throw new IomapDeviceException($"block device {path} has {size} bytes, fewer than the {requiredBytes} bytes the pool uses on it");
            return new ExclusiveBlockDevice(path, fd, size);
        }
        catch
        {
            LibC.Close(fd);
            throw;
        }
    }

    /// <summary>BLKGETSIZE64 of an open block device.</summary>
    internal static unsafe long SizeOf(int fd, string path)
    {
        ulong size = 0;
        if (LibC.Ioctl(fd, LoopAbi.BlkGetSize64, &size) != 0)
            throw new IomapDeviceException($"block device {path}: cannot read its size (BLKGETSIZE64): {LibC.Describe(LibC.LastErrno)}");
        return (long)size;
    }

    private static IomapDeviceException NotBlock(string path, FilePermissions mode)
    {
        string kind = (mode & FilePermissions.S_IFMT) switch
        {
            FilePermissions.S_IFREG => "a regular file",
            FilePermissions.S_IFCHR => "a character device",
            FilePermissions.S_IFDIR => "a directory",
            FilePermissions.S_IFIFO => "a FIFO",
            FilePermissions.S_IFSOCK => "a socket",
            FilePermissions.S_IFLNK => "a symbolic link",
            _ => "not a device",
        };
        return new IomapDeviceException($"{path} is not a block device (it is {kind}); fuse-iomap can only register block devices");
    }

    /// <summary>Closes the descriptor (once).</summary>
    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0) LibC.Close(fd);
    }
}
