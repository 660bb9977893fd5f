using System.Text;
using Cow.Fuse.Native;
using Cow.Fuse.Server;
using Mono.Unix.Native;

namespace Cow.Fuse.Kernel;

/// <summary>
/// An image file attached to a free loop device by this process, so that fuse-iomap (which maps file
/// ranges to block-device addresses) can use pool devices that are image files.
/// <para>
/// Attachment: open /dev/loop-control, LOOP_CTL_GET_FREE, open /dev/loopN, LOOP_CONFIGURE with the image
/// descriptor, block size = the pool's block size, offset 0, whole file, and LO_FLAGS_AUTOCLEAR (the kernel
/// detaches the device when its last opener closes it: a crashed server leaves no loop device behind once
/// the kernel has dropped the FUSE connection's references).
/// </para>
/// <para>
/// Page-cache coherence: LO_FLAGS_DIRECT_IO is deliberately NOT set. Without it the loop driver reads and
/// writes the image with ordinary buffered file I/O, through the image file's page cache — the same page
/// cache the engine's own pread/pwrite of the image (<c>FileBlockDevice</c>) go through. So what the kernel
/// writes via iomap → loop device is visible at once to the engine's buffered reads of the image, and the
/// other way round. With direct I/O the loop device would bypass that cache and the two views could
/// disagree. The cost: every loop I/O is a copy through the image's page cache instead of going straight to
/// the disk; data is durable after a flush (a REQ_PREFLUSH bio to the loop device fsyncs the image, and so
/// does the engine's fdatasync of it).
/// </para>
/// Threading: immutable after <see cref="Attach"/>; <see cref="Dispose"/> is idempotent (interlocked).
/// </summary>
public sealed class LoopDevice : IDisposable
{
    private int _fd;

    /// <summary>N of /dev/loopN.</summary>
    public int Number { get; }
    /// <summary>/dev/loopN.</summary>
    public string Path => LoopAbi.LoopPath(Number);
    /// <summary>The image file attached (as given, made absolute).</summary>
    public string ImagePath { get; }
    /// <summary>Logical block size the loop device was configured with.</summary>
    public int BlockSize { get; }

    private LoopDevice(int number, int fd, string image, int blockSize) { Number = number; _fd = fd; ImagePath = image; BlockSize = blockSize; }

    /// <summary>Attempts when another program takes the free device between LOOP_CTL_GET_FREE and LOOP_CONFIGURE.</summary>
    private const int Attempts = 16;

    /// <summary>
    /// Attaches <paramref name="imagePath"/> (a regular file) to a free loop device with logical block size
    /// <paramref name="blockSize"/>. Throws <see cref="IomapDeviceException"/> naming the image and the
    /// reason; nothing stays attached or open when it throws.
    /// </summary>
    public static unsafe LoopDevice Attach(string imagePath, int blockSize)
    {
        ArgumentException.ThrowIfNullOrEmpty(imagePath);
        var image = System.IO.Path.GetFullPath(imagePath);
        int imageFd = LibC.Open(image, LibC.O_RDWR | LibC.O_CLOEXEC);
        if (imageFd < 0)
            throw new IomapDeviceException($"cannot open image file {image} to attach it to a loop device: {LibC.Describe(LibC.LastErrno)}");
        int ctl = -1;
        try
        {
            if (Syscall.fstat(imageFd, out var st) != 0)
                throw new IomapDeviceException($"image file {image}: fstat failed: {LibC.Describe(Stdlib.GetLastError())}");
            if ((st.st_mode & FilePermissions.S_IFMT) != FilePermissions.S_IFREG)
                throw new IomapDeviceException($"{image} is not a regular file; only image files are attached to loop devices");
            ctl = LibC.Open(LoopAbi.LoopControl, LibC.O_RDWR | LibC.O_CLOEXEC);
            if (ctl < 0)
            {
                var e = LibC.LastErrno;
                throw new IomapDeviceException($"cannot attach image file {image} to a loop device: cannot open {LoopAbi.LoopControl}: {LibC.Describe(e)}"
                    + (e == Errno.ENOENT ? " (is the loop module loaded? try 'modprobe loop')" : ""));
            }
            var config = new LoopConfig { Fd = (uint)imageFd, BlockSize = (uint)blockSize };
            config.Info.LoFlags = LoopAbi.LoFlagsAutoclear;   // never LO_FLAGS_DIRECT_IO: see the class summary
            var name = Encoding.UTF8.GetBytes(image);
            int n = Math.Min(name.Length, LoopAbi.LoNameSize - 1);
            for (int i = 0; i < n; i++) config.Info.LoFileName[i] = name[i];

            Errno last = 0;
            for (int attempt = 0; attempt < Attempts; attempt++)
            {
                int number = LibC.Ioctl(ctl, LoopAbi.LoopCtlGetFree, null);
                if (number < 0)
                    throw new IomapDeviceException($"cannot attach image file {image}: no free loop device (LOOP_CTL_GET_FREE: {LibC.Describe(LibC.LastErrno)})");
                int loopFd = OpenLoop(number, out var openErr);
                if (loopFd < 0)
                {
                    if (openErr == Errno.EBUSY) { last = openErr; continue; }
                    throw new IomapDeviceException($"cannot attach image file {image}: cannot open {LoopAbi.LoopPath(number)}: {LibC.Describe(openErr)}");
                }
                if (LibC.Ioctl(loopFd, LoopAbi.LoopConfigure, &config) == 0)
                    return new LoopDevice(number, loopFd, image, blockSize);
                last = LibC.LastErrno;
                LibC.Close(loopFd);
                if (last == Errno.EBUSY) continue;   // another program bound it first: take the next free one
                throw new IomapDeviceException($"cannot attach image file {image} to {LoopAbi.LoopPath(number)} (LOOP_CONFIGURE, block size {blockSize}): {LibC.Describe(last)}");
            }
            throw new IomapDeviceException($"cannot attach image file {image} to a loop device: every free device was taken by another program first ({Attempts} attempts, last: {LibC.Describe(last)})");
        }
        finally
        {
            // The loop device holds its own reference to the image file once configured.
            if (ctl >= 0) LibC.Close(ctl);
            LibC.Close(imageFd);
        }
    }

    /// <summary>Opens /dev/loopN; a device just created by LOOP_CTL_GET_FREE may need a moment to appear.</summary>
    private static int OpenLoop(int number, out Errno error)
    {
        var path = LoopAbi.LoopPath(number);
        for (int i = 0; ; i++)
        {
            int fd = LibC.Open(path, LibC.O_RDWR | LibC.O_CLOEXEC);
            if (fd >= 0) { error = 0; return fd; }
            error = LibC.LastErrno;
            if (error != Errno.ENOENT || i >= 100) return -1;
            Thread.Sleep(10);
        }
    }

    /// <summary>The backing file the kernel reports for /dev/loopN (sysfs), or null when it is not attached.</summary>
    public static string? BackingFile(int number)
    {
        try { return File.ReadAllText($"/sys/block/loop{number}/loop/backing_file").TrimEnd('\n'); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>
    /// Detaches: LOOP_CLR_FD, then closes our descriptor. When the device is still open elsewhere (the
    /// FUSE connection's backing reference, udev probing it), LOOP_CLR_FD only marks it autoclear and the
    /// kernel detaches it on the last close — which LO_FLAGS_AUTOCLEAR would have done anyway.
    /// </summary>
    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd < 0) return;
        unsafe { LibC.Ioctl(fd, LoopAbi.LoopClrFd, null); }   // ENXIO when already detached: nothing to do
        LibC.Close(fd);
    }
}
