// Every experimental fuse-iomap number, in ONE place. fuse-iomap is NOT mainline, and its numbers moved between
// postings. Cow speaks ONE snapshot of its ABI: the one of the test kernel in ../shared/kernel (Linux 7.2.13 +
// Darrick J. Wong's fuse-iomap of the xfs-linux push of 2026-05-21). Sources, cited per number below:
//   [uapi]  ../shared/kernel/uapi-numbers.txt (printed from that kernel's include/uapi/linux/fuse.h);
//   [patch] ../shared/kernel/fuse-iomap-7.2.13.patch (its include/uapi/linux/fuse.h and fs/fuse/fuse_iomap.c).
// Where the v7 posting (2026-02-23, /work/shared/reference/fuse-iomap.md) had another number, it is named.
// Other snapshots cannot be negotiated: every posting says minor 99, and FUSE_DEV_IOC_IOMAP_SUPPORT reports
// capabilities (FILEIO, ATOMIC), not an ABI revision. docs/iomap.md ("Which fuse-iomap ABI") says what Cow does.
namespace Cow.Fuse.Protocol;

public static class ExperimentalConstants
{
    /// <summary>The ABI snapshot Cow speaks, as log lines and refusals name it.</summary>
    public const string AbiName = "fuse-iomap 7.99 as in the Linux 7.2.13 port of the 2026-05-21 xfs-linux snapshot";

    // ---- protocol version ----
    /// <summary>FUSE_KERNEL_MINOR_VERSION of iomap kernels: 99 ("XXX magic minor revision"). [uapi] FUSE_KERNEL_MINOR_VERSION 99; [patch] fuse.h.</summary>
    public const uint IomapMinorVersion = 99;

    // ---- INIT ----
    /// <summary>FUSE_IOMAP = 1ULL &lt;&lt; 43 (flags2 bit 11, needs FUSE_INIT_EXT). [uapi] FUSE_IOMAP 0x80000000000. Collides with another tree's bit.</summary>
    public const ulong InitIomap = 1UL << 43;

    // ---- opcodes ([uapi] FUSE_FREEZE_FS..FUSE_IOMAP_END; [patch] enum fuse_opcode) ----
    /// <summary>FUSE_FREEZE_FS = 4089. [uapi]</summary>
    public const uint OpFreezeFs = 4089;
    /// <summary>FUSE_UNFREEZE_FS = 4090. [uapi]</summary>
    public const uint OpUnfreezeFs = 4090;
    /// <summary>FUSE_SHUTDOWN_FS = 4091. [uapi]</summary>
    public const uint OpShutdownFs = 4091;
    /// <summary>FUSE_IOMAP_CONFIG = 4092 (sent with nodeid 0). [uapi]</summary>
    public const uint OpIomapConfig = 4092;
    /// <summary>FUSE_IOMAP_IOEND = 4093. [uapi]</summary>
    public const uint OpIomapIoend = 4093;
    /// <summary>FUSE_IOMAP_BEGIN = 4094. [uapi]</summary>
    public const uint OpIomapBegin = 4094;
    /// <summary>FUSE_IOMAP_END = 4095. [uapi]</summary>
    public const uint OpIomapEnd = 4095;

    // ---- notify codes ----
    /// <summary>FUSE_NOTIFY_IOMAP_BACKING_INVAL = 99 (v7 named it IOMAP_DEV_INVAL; earlier postings 9, colliding with mainline FUSE_NOTIFY_PRUNE). [uapi]</summary>
    public const int NotifyIomapDevInval = 99;
    /// <summary>FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS = 100. [uapi]</summary>
    public const int NotifyIomapUpsertMappings = 100;
    /// <summary>FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS = 101. [uapi]</summary>
    public const int NotifyIomapInvalMappings = 101;

    // ---- ioctls on /dev/fuse (magic 229) ----
    /// <summary>FUSE_DEV_IOC_SYNC_INIT = _IO(229, 3) = 0xE503. [uapi]</summary>
    public const uint IoctlSyncInit = 0xE503;
    /// <summary>FUSE_DEV_IOC_IOMAP_SUPPORT = _IOR(229, 99, struct fuse_iomap_support) = 0x8010E563: capability flags
    /// (<see cref="IomapSupportFileIo"/>, <see cref="IomapSupportAtomic"/>), no ABI revision. [uapi]; [patch] fuse_dev_ioctl_iomap_support.</summary>
    public const uint IoctlIomapSupport = 0x8010E563;
    /// <summary>FUSE_DEV_IOC_SET_NOFS = _IOW(229, 100, u32) = 0x4004E564: 1 sets PF_MEMALLOC_NOFS|PF_LOCAL_THROTTLE on the calling thread, 0 clears. [uapi]; [patch]</summary>
    public const uint IoctlSetNofs = 0x4004E564;
    /// <summary>FUSE_DEV_IOC_ADD_IOMAP = _IO(229, 101) = 0xE565 (earlier postings 99). Needs CAP_SYS_RAWIO and fuse.enable_iomap=Y. [uapi]</summary>
    public const uint IoctlAddIomap = 0xE565;
    /// <summary>FUSE_DEV_IOC_IOMAP_BACKING_SET_BLOCKSIZE = _IOW(229, 102, struct fuse_iomap_backing_info) = 0x4008E566 (Cow does not use it:
    /// its devices keep their own block size). [uapi]</summary>
    public const uint IoctlIomapBackingSetBlocksize = 0x4008E566;
    /// <summary>FUSE_DEV_IOC_IOMAP_BACKING_STRIPE_CONFIG = _IOW(229, 103, struct fuse_iomap_backing_stripe) = 0x4010E567 (Cow does not
    /// stripe). [uapi]</summary>
    public const uint IoctlIomapBackingStripeConfig = 0x4010E567;
    /// <summary>FUSE_IOMAP_SUPPORT_FILEIO = 1 &lt;&lt; 0: file I/O through iomap. [patch] fuse.h.</summary>
    public const ulong IomapSupportFileIo = 1UL << 0;
    /// <summary>FUSE_IOMAP_SUPPORT_ATOMIC = 1 &lt;&lt; 1: untorn writes. [patch] fuse.h.</summary>
    public const ulong IomapSupportAtomic = 1UL << 1;
    /// <summary>fuse_backing_map.flags value registering a block device for iomap (FUSE_BACKING_TYPE_IOMAP = 1). [uapi]</summary>
    public const uint BackingTypeIomap = 1;
    /// <summary>Maximum number of iomap devices per connection (ids 1..1024). [patch] fuse_iomap_backing_ops id_start 1, id_end 1025.</summary>
    public const int MaxIomapDevices = 1024;

    // ---- fuse_attr.flags ----
    /// <summary>FUSE_ATTR_EXCLUSIVE = 1 &lt;&lt; 2 (per-inode exclusive mode). [uapi]</summary>
    public const uint AttrExclusive = 1u << 2;
    /// <summary>__FUSE_ATTR_IOMAP = 1 &lt;&lt; 3, the bit fuse_iomap_init_inode tests. [uapi]</summary>
    public const uint AttrIomapBit = 1u << 3;
    /// <summary>FUSE_ATTR_IOMAP = FUSE_ATTR_EXCLUSIVE | __FUSE_ATTR_IOMAP = 12 (v7: 1 &lt;&lt; 3 alone; the kernel ignores the iomap
    /// bit of an inode that is not exclusive). [uapi] FUSE_ATTR_IOMAP 12.</summary>
    public const uint AttrIomap = AttrExclusive | AttrIomapBit;

    // ---- fuse_iomap_io field values ----
    /// <summary>FUSE_IOMAP_NULL_ADDR = -1ULL: addr means "no address". [patch] fuse.h.</summary>
    public const ulong IomapNullAddr = ulong.MaxValue;
    /// <summary>FUSE_IOMAP_DEV_NULL = 0: no device. [patch] fuse.h.</summary>
    public const uint IomapNoDevice = 0;
    /// <summary>FUSE_IOMAP_INVAL_TO_EOF = ~0ULL: a fuse_range length meaning "to the end of the file". [patch] fuse.h.</summary>
    public const ulong IomapInvalToEof = ulong.MaxValue;
}

/// <summary>fuse_iomap_io.type. [uapi] FUSE_IOMAP_TYPE_*; [patch] fuse_iomap_check_type accepts exactly these.</summary>
public enum FuseIomapType : ushort
{
    Hole = 0,
    Delalloc = 1,
    Mapped = 2,
    Unwritten = 3,
    Inline = 4,
    /// <summary>Unwritten extent on a striped backing device (new in this snapshot; Cow does not stripe).</summary>
    UnwrittenStripe = 65531,
    /// <summary>Mapped extent on a striped backing device (new in this snapshot; Cow does not stripe).</summary>
    MappedStripe = 65532,
    /// <summary>"Do not add to the mapping cache" (upserts only; refused in iomap_begin replies). v7: 253.</summary>
    Nocache = 65533,
    /// <summary>"The server populated the cache, look again" (only for inodes with a mapping cache). v7: 254.</summary>
    RetryCache = 65534,
    /// <summary>Write mapping only: writes go where the read mapping says. v7: 255.</summary>
    PureOverwrite = 65535,
}

/// <summary>fuse_iomap_io.flags. [patch] fuse.h FUSE_IOMAP_F_*; FUSE_IOMAP_F_ALL (NEW..WANT_IOMAP_END) in replies.</summary>
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
    /// <summary>FUSE_IOMAP_F_ALL of fuse_iomap_check_flags: what a reply may carry.</summary>
    ReplyMask = 0xFF,
}

/// <summary>fuse_iomap_begin_in/end_in.opflags. [uapi] FUSE_IOMAP_OP_WRITEBACK 0x800, FUSE_IOMAP_OP_SWAPFILE 0x80000000;
/// [patch] fuse.h for the rest (v7 had SWAPFILE 1 &lt;&lt; 30 and WRITEBACK 1 &lt;&lt; 31).</summary>
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
    /// <summary>Page-cache writeback (the kernel's iomap_writeback_map): a write.</summary>
    Writeback = 1u << 11,
    Swapfile = 1u << 31,
    /// <summary>FUSE_IOMAP_OP_WRITE_MASK: the operations that write (fuse_is_iomap_file_write).</summary>
    WriteMask = Write | Zero | Unshare | Writeback | Swapfile,
    /// <summary>Every bit this snapshot defines; others mean the kernel speaks another ABI snapshot.</summary>
    Known = Write | Zero | Report | Fault | Direct | Nowait | OverwriteOnly | Unshare | Dax | Atomic | Dontcache | Writeback | Swapfile,
}

/// <summary>fuse_iomap_ioend_in.flags. [uapi] FUSE_IOMAP_IOEND_SWAPOFF 0x40; [patch] fuse.h for the rest.</summary>
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

/// <summary>fuse_iomap_config_out.flags: which fields are set. [uapi] FUSE_IOMAP_CONFIG_CACHE_MAXBYTES 0x40; [patch] fuse.h.</summary>
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
    /// <summary>The kernel's mapping cache size (Cow caches no mappings in the kernel).</summary>
    CacheMaxbytes = 1UL << 6,
}
