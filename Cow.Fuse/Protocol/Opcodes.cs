// FUSE kernel protocol 7.45: enum fuse_opcode, enum fuse_notify_code, device ioctls.
namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>enum fuse_opcode</c> (7.45), plus the experimental fuse-iomap opcodes 4089..4095.</summary>
public enum FuseOpcode : uint
{
    Lookup = 1,
    /// <summary>FUSE_FORGET: no reply.</summary>
    Forget = 2,
    Getattr = 3,
    Setattr = 4,
    Readlink = 5,
    Symlink = 6,
    Mknod = 8,
    Mkdir = 9,
    Unlink = 10,
    Rmdir = 11,
    Rename = 12,
    Link = 13,
    Open = 14,
    Read = 15,
    Write = 16,
    Statfs = 17,
    Release = 18,
    Fsync = 20,
    Setxattr = 21,
    Getxattr = 22,
    Listxattr = 23,
    Removexattr = 24,
    Flush = 25,
    Init = 26,
    Opendir = 27,
    Readdir = 28,
    Releasedir = 29,
    Fsyncdir = 30,
    Getlk = 31,
    Setlk = 32,
    Setlkw = 33,
    Access = 34,
    Create = 35,
    Interrupt = 36,
    Bmap = 37,
    Destroy = 38,
    Ioctl = 39,
    Poll = 40,
    NotifyReply = 41,
    /// <summary>FUSE_BATCH_FORGET: no reply.</summary>
    BatchForget = 42,
    Fallocate = 43,
    Readdirplus = 44,
    Rename2 = 45,
    Lseek = 46,
    CopyFileRange = 47,
    Setupmapping = 48,
    Removemapping = 49,
    Syncfs = 50,
    Tmpfile = 51,
    Statx = 52,
    /// <summary>FUSE_COPY_FILE_RANGE_64 (7.45): reply is fuse_copy_file_range_out.</summary>
    CopyFileRange64 = 53,

    // ---- experimental fuse-iomap (not mainline); numbers live in ExperimentalConstants ----
    FreezeFs = ExperimentalConstants.OpFreezeFs,
    UnfreezeFs = ExperimentalConstants.OpUnfreezeFs,
    ShutdownFs = ExperimentalConstants.OpShutdownFs,
    IomapConfig = ExperimentalConstants.OpIomapConfig,
    IomapIoend = ExperimentalConstants.OpIomapIoend,
    IomapBegin = ExperimentalConstants.OpIomapBegin,
    IomapEnd = ExperimentalConstants.OpIomapEnd,

    /// <summary>CUSE_INIT.</summary>
    CuseInit = 4096,
    /// <summary>CUSE_INIT_BSWAP_RESERVED (CUSE_INIT &lt;&lt; 8): detects a byte-swapped peer.</summary>
    CuseInitBswapReserved = 1048576,
    /// <summary>FUSE_INIT_BSWAP_RESERVED (FUSE_INIT &lt;&lt; 24): detects a byte-swapped peer.</summary>
    FuseInitBswapReserved = 436207616,
}

/// <summary>Kernel <c>enum fuse_notify_code</c> (7.45), plus the experimental fuse-iomap codes 99..101.
/// Sent as fuse_out_header.error with unique = 0.</summary>
public enum FuseNotifyCode : int
{
    Poll = 1,
    InvalInode = 2,
    InvalEntry = 3,
    Store = 4,
    Retrieve = 5,
    Delete = 6,
    /// <summary>FUSE_NOTIFY_RESEND (7.40).</summary>
    Resend = 7,
    /// <summary>FUSE_NOTIFY_INC_EPOCH (7.44). The seed's FUSE_NOTIFY_ADD_IOMAP_DEVICE = 8 collided with this.</summary>
    IncEpoch = 8,
    /// <summary>FUSE_NOTIFY_PRUNE (7.45): payload fuse_notify_prune_out + count node ids.</summary>
    Prune = 9,

    // ---- experimental fuse-iomap ----
    IomapDevInval = ExperimentalConstants.NotifyIomapDevInval,
    IomapUpsertMappings = ExperimentalConstants.NotifyIomapUpsertMappings,
    IomapInvalMappings = ExperimentalConstants.NotifyIomapInvalMappings,
}

/// <summary>Mainline ioctls on a /dev/fuse fd (magic FUSE_DEV_IOC_MAGIC = 229), x86-64 encodings.</summary>
public static class FuseDevIoctl
{
    /// <summary>FUSE_DEV_IOC_MAGIC.</summary>
    public const uint Magic = 229;
    /// <summary>FUSE_DEV_IOC_CLONE = _IOR(229, 0, uint32_t).</summary>
    public const uint Clone = 0x8004E500;
    /// <summary>FUSE_DEV_IOC_BACKING_OPEN = _IOW(229, 1, struct fuse_backing_map) (7.40, passthrough).</summary>
    public const uint BackingOpen = 0x4010E501;
    /// <summary>FUSE_DEV_IOC_BACKING_CLOSE = _IOW(229, 2, uint32_t).</summary>
    public const uint BackingClose = 0x4004E502;
}
