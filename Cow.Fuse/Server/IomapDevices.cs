namespace Cow.Fuse.Server;

/// <summary>Whether a mount asks the kernel for fuse-iomap (<c>cow mount --iomap auto|on|off</c>).</summary>
public enum IomapMode
{
    /// <summary>Ask for iomap when the kernel may offer it; fall back to userspace I/O otherwise (default).</summary>
    Auto,
    /// <summary>Require iomap: the mount fails with a clear message when the kernel does not grant it.</summary>
    On,
    /// <summary>Never ask: READ and WRITE are served in userspace through the same engine contract.</summary>
    Off,
}

/// <summary>One pool device as the engine names it: its engine cookie (<c>device_cookie</c> in format.md),
/// where it lives (an image file or a block device), and its size in bytes.</summary>
public sealed record PoolDeviceInfo(uint EngineCookie, string Path, long SizeBytes);

/// <summary>One pool device as the kernel names it after registration: the engine cookie, the kernel's
/// device cookie (the id BACKING_OPEN returned, used in every <c>fuse_iomap_io.dev</c>), the block device
/// the kernel does I/O on (the device itself, or the loop device an image file was attached to), and the
/// size in bytes a mapping must stay inside.</summary>
public sealed record RegisteredIomapDevice(uint EngineCookie, uint KernelCookie, string BlockDevicePath, long SizeBytes);

/// <summary>
/// Registers a pool's devices with one FUSE connection for iomap, and undoes that at unmount.
/// The real implementation attaches image files to loop devices, opens the block devices exclusively and
/// calls FUSE_DEV_IOC_BACKING_OPEN(flags = FUSE_BACKING_TYPE_IOMAP) on the connection's /dev/fuse
/// descriptor; tests that stand in for the kernel use their own.
/// Thread-safety: <see cref="Register"/> is called once per connection (by the dispatcher, when the kernel
/// first asks for IOMAP_CONFIG after granting iomap); <see cref="Dispose"/> once, after the session ended.
/// </summary>
public interface IIomapDeviceRegistrar : IDisposable
{
    /// <summary>Registers every device of <paramref name="devices"/> with the connection of
    /// <paramref name="fuseFd"/> and returns one entry per device. Throws <see cref="IomapDeviceException"/>
    /// with a message an administrator can act on (missing privilege, not a block device, device busy,
    /// kernel refused) — nothing stays registered or attached when it throws.</summary>
    IReadOnlyList<RegisteredIomapDevice> Register(int fuseFd, IReadOnlyList<PoolDeviceInfo> devices);

    /// <summary>Registers one more device with the same connection after <see cref="Register"/> succeeded (a device
    /// added to the mounted pool: <c>cow device add</c>), before any mapping names it. Throws
    /// <see cref="IomapDeviceException"/> as <see cref="Register"/> does; nothing stays registered then.</summary>
    RegisteredIomapDevice Add(int fuseFd, PoolDeviceInfo device) =>
        throw new IomapDeviceException($"pool device {device.Path}: this connection's device registrar cannot register devices after the mount");

    /// <summary>A device left the pool (no mapping names it any more): releases what was held for it where the kernel
    /// lets go of it now (BACKING_CLOSE); false when it keeps it until the connection ends.</summary>
    bool Release(int fuseFd, uint engineCookie) => false;
}

/// <summary>A device could not be registered for iomap; the message says which and why.</summary>
public sealed class IomapDeviceException(string message, Exception? inner = null) : Exception(message, inner);
