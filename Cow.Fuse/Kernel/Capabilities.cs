using Cow.Fuse.Native;

namespace Cow.Fuse.Kernel;

/// <summary>
/// The calling thread's Linux capabilities, read with capget(2) (the set the kernel's capable() checks
/// for an ioctl made by this thread). Stateless and thread-safe.
/// </summary>
public static class Capabilities
{
    /// <summary>CAP_SYS_RAWIO (linux/capability.h): fuse-iomap needs it at FUSE_DEV_IOC_ADD_IOMAP and when
    /// it registers block devices.</summary>
    public const int CapSysRawio = 17;
    /// <summary>CAP_SYS_ADMIN: mount(2); mainline BACKING_OPEN (passthrough) asks for it.</summary>
    public const int CapSysAdmin = 21;

    /// <summary>True when <paramref name="capability"/> is in the calling thread's effective set.
    /// A failing capget (which does not happen on Linux for the calling thread) counts as "no".</summary>
    public static unsafe bool HasEffective(int capability)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capability);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capability, 63);
        var header = new LibC.CapUserHeader { Version = LibC.LINUX_CAPABILITY_VERSION_3, Pid = 0 };
        var data = stackalloc LibC.CapUserData[2];
        if (LibC.CapGet(&header, data) != 0) return false;
        return (data[capability / 32].Effective & (1u << (capability % 32))) != 0;
    }

    /// <summary>CAP_SYS_RAWIO in the effective set.</summary>
    public static bool HasSysRawio() => HasEffective(CapSysRawio);

    /// <summary>What an administrator reads when CAP_SYS_RAWIO is missing.</summary>
    public const string MissingSysRawioMessage =
        "registering block devices for fuse-iomap needs CAP_SYS_RAWIO; run cow mount as root or give it the capability, or use --iomap off";
}
