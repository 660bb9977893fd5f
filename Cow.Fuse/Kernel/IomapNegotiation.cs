using Cow.Fuse.Native;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;

namespace Cow.Fuse.Kernel;

/// <summary>What asking the kernel for fuse-iomap on a /dev/fuse descriptor gave: granted, or why not
/// (<see cref="Reason"/> for people, <see cref="Errno"/> for code; 0 when the kernel was not asked). Immutable.</summary>
public readonly record struct IomapRequestResult(bool Granted, string? Reason, Errno Errno)
{
    public static IomapRequestResult Yes => new(true, null, 0);
}

/// <summary>
/// Step 1 of the fuse-iomap negotiation (reference "Negotiation"): ioctl(fuse fd, FUSE_DEV_IOC_ADD_IOMAP)
/// on the /dev/fuse descriptor before mount(2) (the kernel then remembers on the descriptor that this mount
/// may use iomap; on an already mounted descriptor it marks the connection). The kernel wants
/// CAP_SYS_RAWIO and the fuse module parameter enable_iomap=Y. Kernels without fuse-iomap (every mainline
/// kernel so far) answer ENOTTY; kernels built without it EOPNOTSUPP; a missing privilege EPERM.
/// Stateless and thread-safe.
/// </summary>
public static class IomapNegotiation
{
    /// <summary>Asks for iomap on <paramref name="fuseFd"/>. The capability is checked first (so that the
    /// reason names it); <paramref name="hasSysRawio"/> defaults to <see cref="Capabilities.HasSysRawio"/>.</summary>
    public static unsafe IomapRequestResult RequestIomap(int fuseFd, Func<bool>? hasSysRawio = null)
    {
        if (!(hasSysRawio ?? Capabilities.HasSysRawio)())
            return new(false, "the server lacks CAP_SYS_RAWIO, which fuse-iomap needs; run cow mount as root or give it the capability", Errno.EPERM);
        if (LibC.Ioctl(fuseFd, ExperimentalConstants.IoctlAddIomap, null) == 0) return IomapRequestResult.Yes;
        var e = LibC.LastErrno;
        return new(false, Describe(e), e);
    }

    /// <summary>The reason an administrator reads for an ADD_IOMAP errno.</summary>
    public static string Describe(Errno e) => e switch
    {
        Errno.ENOTTY or Errno.ENOSYS => $"this kernel has no fuse-iomap (FUSE_DEV_IOC_ADD_IOMAP: {LibC.Describe(e)})",
        Errno.EINVAL => $"this kernel does not accept FUSE_DEV_IOC_ADD_IOMAP ({LibC.Describe(e)}); its fuse-iomap, if any, speaks another version",
        Errno.EOPNOTSUPP => $"this kernel was built without fuse-iomap (FUSE_DEV_IOC_ADD_IOMAP: {LibC.Describe(e)})",
        Errno.EPERM => $"the kernel refused fuse-iomap ({LibC.Describe(e)}): it needs CAP_SYS_RAWIO and the fuse module parameter enable_iomap=Y",
        _ => $"FUSE_DEV_IOC_ADD_IOMAP failed: {LibC.Describe(e)}",
    };
}
