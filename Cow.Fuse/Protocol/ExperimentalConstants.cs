// Every experimental fuse-iomap number, in ONE place (see /work/shared/reference/fuse-iomap.md).
// fuse-iomap is NOT mainline (latest posting v7, 2026-02-23, branch fuse-iomap-bpf, Darrick J. Wong);
// its numbers moved between postings. Negotiate, never assume; the rest of the code refers here.
namespace Cow.Fuse.Protocol;

public static class ExperimentalConstants
{
    // ---- protocol version ----
    /// <summary>FUSE_KERNEL_MINOR_VERSION of iomap kernels (v7 patch bumps 45 -> 99). Source: fuse-iomap v7, include/uapi/linux/fuse.h.</summary>
    public const uint IomapMinorVersion = 99;

    // ---- INIT ----
    /// <summary>FUSE_IOMAP = 1ULL &lt;&lt; 43 (flags2 bit 11). Source: reference (fuse-iomap v7). Collides with another tree's bit.</summary>
    public const ulong InitIomap = 1UL << 43;

    // ---- opcodes (reference "opcodes" row; v7 patch enum fuse_opcode) ----
    /// <summary>FUSE_FREEZE_FS. Source: reference, fuse-iomap v7.</summary>
    public const uint OpFreezeFs = 4089;
    /// <summary>FUSE_UNFREEZE_FS. Source: reference, fuse-iomap v7.</summary>
    public const uint OpUnfreezeFs = 4090;
    /// <summary>FUSE_SHUTDOWN_FS. Source: reference, fuse-iomap v7.</summary>
    public const uint OpShutdownFs = 4091;
    /// <summary>FUSE_IOMAP_CONFIG (sent with nodeid 0). Source: reference; fuse-iomap patch "add FUSE_IOMAP_CONFIG".</summary>
    public const uint OpIomapConfig = 4092;
    /// <summary>FUSE_IOMAP_IOEND. Source: reference; fuse-iomap patches.</summary>
    public const uint OpIomapIoend = 4093;
    /// <summary>FUSE_IOMAP_BEGIN. Source: reference; fuse-iomap patches.</summary>
    public const uint OpIomapBegin = 4094;
    /// <summary>FUSE_IOMAP_END. Source: reference; fuse-iomap patches.</summary>
    public const uint OpIomapEnd = 4095;

    // ---- notify codes ----
    /// <summary>FUSE_NOTIFY_IOMAP_DEV_INVAL = 99 (was 9 in earlier postings, colliding with mainline FUSE_NOTIFY_PRUNE). Source: reference, v7.</summary>
    public const int NotifyIomapDevInval = 99;
    /// <summary>FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS = 100. Source: reference, v7.</summary>
    public const int NotifyIomapUpsertMappings = 100;
    /// <summary>FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS = 101. Source: reference, v7.</summary>
    public const int NotifyIomapInvalMappings = 101;

    // ---- ioctls on /dev/fuse (magic 229) ----
    /// <summary>FUSE_DEV_IOC_SYNC_INIT = _IO(229, 3) = 0xE503. Source: reference; Miklos Szeredi's sync-init patch (appears after 7.45 in the headers read: not in the 7.45 header).</summary>
    public const uint IoctlSyncInit = 0xE503;
    /// <summary>FUSE_DEV_IOC_ADD_IOMAP = _IO(229, 101) = 0xE565 (v7; was 99 earlier). Needs CAP_SYS_RAWIO and fuse.enable_iomap=Y. Source: reference.</summary>
    public const uint IoctlAddIomap = 0xE565;
    /// <summary>fuse_backing_map.flags value registering a block device for iomap (FUSE_BACKING_TYPE_IOMAP). Source: reference ("BACKING_OPEN(flags=1)").</summary>
    public const uint BackingTypeIomap = 1;
    /// <summary>Maximum number of iomap devices per connection. Source: reference.</summary>
    public const int MaxIomapDevices = 1024;

    // ---- fuse_attr.flags ----
    /// <summary>FUSE_ATTR_EXCLUSIVE = 1 &lt;&lt; 2 (per-inode exclusive mode). Source: reference.</summary>
    public const uint AttrExclusive = 1u << 2;
    /// <summary>FUSE_ATTR_IOMAP = 1 &lt;&lt; 3 (per-inode iomap opt-in). Source: reference.</summary>
    public const uint AttrIomap = 1u << 3;

    // ---- fuse_iomap_io field values ----
    /// <summary>FUSE_IOMAP_NULL_ADDR: addr = ~0 means "no address". Source: reference.</summary>
    public const ulong IomapNullAddr = ulong.MaxValue;
    /// <summary>dev = 0 means "no device". Source: reference.</summary>
    public const uint IomapNoDevice = 0;
    /// <summary>FUSE_IOMAP_INVAL_TO_EOF = ~0ULL: a fuse_range length meaning "to the end of the file".
    /// Source: fuse-iomap v7 libfuse, include/fuse_common.h and include/fuse_iomap_bpf.h.</summary>
    public const ulong IomapInvalToEof = ulong.MaxValue;
}

/// <summary>fuse_iomap_io.type (experimental). Source: reference "mapping type" row.</summary>
public enum FuseIomapType : ushort
{
    Hole = 0,
    Delalloc = 1,
    Mapped = 2,
    Unwritten = 3,
    Inline = 4,
    Nocache = 253,
    RetryCache = 254,
    /// <summary>Write mapping only.</summary>
    PureOverwrite = 255,
}

/// <summary>fuse_iomap_io.flags (experimental). Source: reference "mapping flags" row.</summary>
[Flags]
public enum FuseIomapFlags : ushort
{
    None = 0,
    New = 1 << 0,
    Dirty = 1 << 1,
    Shared = 1 << 2,
    Merged = 1 << 3,
    Boundary = 1 << 4,
    AnonWrite = 1 << 5,
    AtomicBio = 1 << 6,
    WantIomapEnd = 1 << 7,
    /// <summary>To iomap_end only.</summary>
    SizeChanged = 1 << 8,
    /// <summary>To iomap_end only.</summary>
    Stale = 1 << 9,
}

/// <summary>fuse_iomap_begin_in/end_in.opflags (experimental). Source: reference "op flags" row.</summary>
[Flags]
public enum FuseIomapOpFlags : uint
{
    None = 0,
    Write = 1u << 0,
    Zero = 1u << 1,
    Report = 1u << 2,
    Fault = 1u << 3,
    Direct = 1u << 4,
    Nowait = 1u << 5,
    OverwriteOnly = 1u << 6,
    Unshare = 1u << 7,
    Dax = 1u << 8,
    Atomic = 1u << 9,
    Dontcache = 1u << 10,
    Swapfile = 1u << 30,
    Writeback = 1u << 31,
}

/// <summary>fuse_iomap_ioend_in.flags (experimental). Source: reference "ioend flags" row.</summary>
[Flags]
public enum FuseIomapIoendFlags : uint
{
    None = 0,
    /// <summary>Out-of-place write.</summary>
    Shared = 1u << 0,
    Unwritten = 1u << 1,
    Boundary = 1u << 2,
    Direct = 1u << 3,
    Append = 1u << 4,
    Writeback = 1u << 5,
    Swapoff = 1u << 6,
}

/// <summary>fuse_iomap_config_out.flags: which fields are set (experimental). Source: fuse-iomap patch "add FUSE_IOMAP_CONFIG".</summary>
[Flags]
public enum FuseIomapConfigFlags : ulong
{
    None = 0,
    Sid = 1UL << 0,
    Uuid = 1UL << 1,
    Blocksize = 1UL << 2,
    MaxLinks = 1UL << 3,
    Time = 1UL << 4,
    Maxbytes = 1UL << 5,
    /// <summary>FUSE_IOMAP_CONFIG_CACHE_MAXBYTES (v7: the kernel's mapping cache size; Cow caches no mappings in the kernel).</summary>
    CacheMaxbytes = 1UL << 6,
}
