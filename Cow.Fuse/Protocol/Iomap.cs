// EXPERIMENTAL fuse-iomap wire structs (not mainline; fuse-iomap v7, 2026-02-23). Layouts and sizes from
// /work/shared/reference/fuse-iomap.md, which describes the newest posting; where it differs from earlier
// postings found in public patch mails (config_in/config_out without cache_maxbytes), the reference wins.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel (experimental) <c>struct fuse_iomap_io</c> (32 bytes): one mapping.
/// addr = ~0 (<see cref="ExperimentalConstants.IomapNullAddr"/>) means no address; dev = 0 means no device.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseIomapIo
{
    public const int Size = 32;
    /// <summary>offset: file offset, bytes.</summary>
    public ulong Offset;
    /// <summary>length, bytes.</summary>
    public ulong Length;
    /// <summary>addr: device address, bytes.</summary>
    public ulong Addr;
    /// <summary>type: <see cref="FuseIomapType"/>.</summary>
    public ushort Type;
    /// <summary>flags: <see cref="FuseIomapFlags"/>.</summary>
    public ushort Flags;
    /// <summary>dev: device cookie from BACKING_OPEN.</summary>
    public uint Dev;
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_begin_in</c> (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseIomapBeginIn
{
    public const int Size = 32;
    /// <summary>opflags: <see cref="FuseIomapOpFlags"/>.</summary>
    public uint OpFlags;
    public uint Reserved;
    public ulong AttrIno;
    public ulong Pos;
    public ulong Count;
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_begin_out</c> (64 bytes): read = srcmap, write = iomap.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseIomapBeginOut
{
    public const int Size = 64;
    /// <summary>read: where the current bytes live (kernel srcmap).</summary>
    public FuseIomapIo Read;
    /// <summary>write: where new bytes must go (kernel iomap).</summary>
    public FuseIomapIo Write;
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_end_in</c> (72 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseIomapEndIn
{
    public const int Size = 72;
    public uint OpFlags;
    public uint Reserved;
    public ulong AttrIno;
    public ulong Pos;
    public ulong Count;
    public long Written;
    public FuseIomapIo Map;
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_ioend_in</c> (48 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseIomapIoendIn
{
    public const int Size = 48;
    /// <summary>flags: <see cref="FuseIomapIoendFlags"/>.</summary>
    public uint Flags;
    /// <summary>error: 0 or negative errno.</summary>
    public int Error;
    public ulong AttrIno;
    public ulong Pos;
    /// <summary>new_addr: ~0 for direct I/O (server must remember its allocation).</summary>
    public ulong NewAddr;
    public ulong Written;
    /// <summary>dev: 0 for direct I/O.</summary>
    public uint Dev;
    public uint Pad;
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_ioend_out</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseIomapIoendOut
{
    public const int Size = 8;
    /// <summary>newsize: new on-disk size.</summary>
    public ulong NewSize;
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_config_in</c> (64 bytes). Earlier postings: flags, maxbytes, padding[6].</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct FuseIomapConfigIn
{
    public const int Size = 64;
    /// <summary>flags: supported <see cref="FuseIomapConfigFlags"/>.</summary>
    public ulong Flags;
    public long MaxBytes;
    public uint CacheMaxBytes;
    public uint Zero;
    /// <summary>padding[5].</summary>
    public fixed ulong Padding[5];
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_config_out</c> (104 bytes: 100 bytes of fields padded
/// to 8-byte alignment by the C compiler; <see cref="TailPad"/> makes that padding explicit).
/// Earlier postings had no cache_maxbytes (96 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct FuseIomapConfigOut
{
    public const int Size = 104;
    /// <summary>flags: <see cref="FuseIomapConfigFlags"/> saying which fields are set.</summary>
    public ulong Flags;
    /// <summary>s_id[32]: informational name.</summary>
    public fixed byte SId[32];
    /// <summary>s_uuid[16].</summary>
    public fixed byte SUuid[16];
    public byte SUuidLen;
    /// <summary>s_pad[3]: must be zero.</summary>
    public fixed byte SPad[3];
    public uint SBlocksize;
    public uint SMaxLinks;
    /// <summary>s_time_gran: ns.</summary>
    public uint STimeGran;
    public long STimeMin;
    public long STimeMax;
    public long SMaxBytes;
    public uint CacheMaxBytes;
    /// <summary>Implicit C tail padding (not a named kernel field); must be zero.</summary>
    public uint TailPad;
}

/// <summary>Kernel <c>struct fuse_backing_map</c> (16 bytes, mainline 7.40): argument of FUSE_DEV_IOC_BACKING_OPEN.
/// For iomap devices, flags = <see cref="ExperimentalConstants.BackingTypeIomap"/>.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseBackingMap
{
    public const int Size = 16;
    public int Fd;
    public uint Flags;
    public ulong Padding;
}

/// <summary>Kernel (experimental) <c>struct fuse_range</c> (16 bytes): a byte range of a file or device.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseRange
{
    public const int Size = 16;
    public ulong Offset;
    /// <summary>length; 0 = "ignore this range", <see cref="ExperimentalConstants.IomapInvalToEof"/> = to end of file.</summary>
    public ulong Length;
}

/// <summary>Kernel (experimental) <c>struct fuse_iomap_inval_mappings_out</c> (48 bytes): payload of
/// FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS (<see cref="ExperimentalConstants.NotifyIomapInvalMappings"/>), which drops
/// cached read and write mappings of one inode. Layout from the fuse-iomap v7 posting (Darrick J. Wong,
/// 2026-02-23: "libfuse: enable iomap cache management for lowlevel fuse", include/fuse_kernel.h, and the
/// kernel's fs/fuse/fuse_iomap.c): u64 nodeid; u64 attr_ino (must equal the fuse_attr.ino the kernel knows,
/// else -EINVAL); struct fuse_range read, write. The kernel answers -ESTALE for a node id it does not hold,
/// and -EFSCORRUPTED for a range whose offset is not block-aligned or past s_maxbytes, or whose length is
/// neither block-aligned nor ~0.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseIomapInvalMappingsOut
{
    public const int Size = 48;
    public ulong NodeId;
    public ulong AttrIno;
    /// <summary>Range of read mappings to drop.</summary>
    public FuseRange Read;
    /// <summary>Range of write mappings to drop.</summary>
    public FuseRange Write;
}

/// <summary>Kernel (experimental) <c>struct fuse_freezefs_in</c> (8 bytes): payload of FUSE_FREEZE_FS (sent on the
/// root node). Source: fuse-iomap v7, "fuse: implement freeze and shutdown requests".</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseFreezeFsIn
{
    public const int Size = 8;
    /// <summary>unlinked: inodes unlinked but still open (sb->s_remove_count), informational.</summary>
    public ulong Unlinked;
}

/// <summary>Kernel (experimental) <c>struct fuse_shutdownfs_in</c> (8 bytes): payload of FUSE_SHUTDOWN_FS (sent on
/// the root node; the kernel ignores the reply). Source: fuse-iomap v7.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseShutdownFsIn
{
    public const int Size = 8;
    public ulong Flags;
}
