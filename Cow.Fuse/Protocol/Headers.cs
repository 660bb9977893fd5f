// FUSE kernel protocol 7.45 (Linux 6.18 include/uapi/linux/fuse.h): request/reply headers.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_in_header</c>: starts every request read from /dev/fuse (40 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseInHeader
{
    public const int Size = 40;
    /// <summary>len: total length of the request, this header included.</summary>
    public uint Len;
    /// <summary>opcode: a <see cref="FuseOpcode"/>.</summary>
    public uint Opcode;
    /// <summary>unique: request id; bit 63 is <see cref="FuseConstants.UniqueResend"/>.</summary>
    public ulong Unique;
    /// <summary>nodeid.</summary>
    public ulong NodeId;
    public uint Uid;
    public uint Gid;
    public uint Pid;
    /// <summary>total_extlen: length of the request extensions, in 8-byte units (7.38).</summary>
    public ushort TotalExtLen;
    public ushort Padding;
}

/// <summary>Kernel <c>struct fuse_out_header</c>: starts every reply and notification (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseOutHeader
{
    public const int Size = 16;
    /// <summary>len: total length of the reply, this header included.</summary>
    public uint Len;
    /// <summary>error: 0 or a negative errno; for notifications, the notify code (positive).</summary>
    public int Error;
    /// <summary>unique: the request's id; 0 for notifications.</summary>
    public ulong Unique;
}

/// <summary>Plain numeric constants of the mainline header (7.45).</summary>
public static class FuseConstants
{
    /// <summary>FUSE_KERNEL_VERSION.</summary>
    public const uint KernelVersion = 7;
    /// <summary>FUSE_KERNEL_MINOR_VERSION of mainline Linux 6.18 (experimental iomap kernels use <see cref="ExperimentalConstants.IomapMinorVersion"/>).</summary>
    public const uint KernelMinorVersion = 45;
    /// <summary>FUSE_ROOT_ID.</summary>
    public const ulong RootId = 1;
    /// <summary>FUSE_MIN_READ_BUFFER: the read buffer must be at least 8 KiB.</summary>
    public const int MinReadBuffer = 8192;
    /// <summary>FUSE_UNIQUE_RESEND: set in fuse_in_header.unique on a resent request.</summary>
    public const ulong UniqueResend = 1UL << 63;
    /// <summary>FUSE_INVALID_UIDGID: uid/gid that could not be mapped (idmapped mounts).</summary>
    public const uint InvalidUidGid = uint.MaxValue;
    /// <summary>FUSE_COMPAT_ENTRY_OUT_SIZE.</summary>
    public const int CompatEntryOutSize = 120;
    /// <summary>FUSE_COMPAT_ATTR_OUT_SIZE.</summary>
    public const int CompatAttrOutSize = 96;
    /// <summary>FUSE_COMPAT_MKNOD_IN_SIZE.</summary>
    public const int CompatMknodInSize = 8;
    /// <summary>FUSE_COMPAT_WRITE_IN_SIZE.</summary>
    public const int CompatWriteInSize = 24;
    /// <summary>FUSE_COMPAT_STATFS_SIZE.</summary>
    public const int CompatStatfsSize = 48;
    /// <summary>FUSE_COMPAT_SETXATTR_IN_SIZE.</summary>
    public const int CompatSetxattrInSize = 8;
    /// <summary>FUSE_COMPAT_INIT_OUT_SIZE.</summary>
    public const int CompatInitOutSize = 8;
    /// <summary>FUSE_COMPAT_22_INIT_OUT_SIZE.</summary>
    public const int Compat22InitOutSize = 24;
    /// <summary>FUSE_IOCTL_MAX_IOV.</summary>
    public const int IoctlMaxIov = 256;
}
