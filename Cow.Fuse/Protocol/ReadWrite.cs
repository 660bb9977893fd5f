// FUSE kernel protocol 7.45: READ/WRITE/FSYNC/SYNCFS/LSEEK/FALLOCATE/COPY_FILE_RANGE.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_read_in</c> (40 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseReadIn
{
    public const int Size = 40;
    public ulong Fh;
    public ulong Offset;
    public uint Size_;
    /// <summary>read_flags: FUSE_READ_LOCKOWNER (1 &lt;&lt; 1).</summary>
    public uint ReadFlags;
    public ulong LockOwner;
    public uint Flags;
    public uint Padding;

    public const uint ReadLockOwner = 1u << 1;
}

/// <summary>Kernel <c>struct fuse_write_in</c> (40 bytes); the data follows.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseWriteIn
{
    public const int Size = 40;
    public ulong Fh;
    public ulong Offset;
    public uint Size_;
    /// <summary>write_flags: FUSE_WRITE_CACHE (1), FUSE_WRITE_LOCKOWNER (2), FUSE_WRITE_KILL_SUIDGID (4).</summary>
    public uint WriteFlags;
    public ulong LockOwner;
    public uint Flags;
    public uint Padding;

    public const uint WriteCache = 1u << 0;
    public const uint WriteLockOwner = 1u << 1;
    public const uint WriteKillSuidgid = 1u << 2;
}

/// <summary>Kernel <c>struct fuse_write_out</c> (8 bytes); also the reply of COPY_FILE_RANGE.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseWriteOut
{
    public const int Size = 8;
    public uint Size_;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_fsync_in</c> (16 bytes), for FSYNC and FSYNCDIR.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseFsyncIn
{
    public const int Size = 16;
    public ulong Fh;
    /// <summary>fsync_flags: FUSE_FSYNC_FDATASYNC (1 &lt;&lt; 0).</summary>
    public uint FsyncFlags;
    public uint Padding;

    public const uint FsyncFdatasync = 1u << 0;
}

/// <summary>Kernel <c>struct fuse_syncfs_in</c> (8 bytes), for SYNCFS.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseSyncfsIn
{
    public const int Size = 8;
    public ulong Padding;
}

/// <summary>Kernel <c>struct fuse_lseek_in</c> (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseLseekIn
{
    public const int Size = 24;
    public ulong Fh;
    public ulong Offset;
    public uint Whence;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_lseek_out</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseLseekOut
{
    public const int Size = 8;
    public ulong Offset;
}

/// <summary>Kernel <c>struct fuse_fallocate_in</c> (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseFallocateIn
{
    public const int Size = 32;
    public ulong Fh;
    public ulong Offset;
    public ulong Length;
    public uint Mode;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_copy_file_range_in</c> (56 bytes), for COPY_FILE_RANGE and COPY_FILE_RANGE_64.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseCopyFileRangeIn
{
    public const int Size = 56;
    public ulong FhIn;
    public ulong OffIn;
    public ulong NodeIdOut;
    public ulong FhOut;
    public ulong OffOut;
    public ulong Len;
    public ulong Flags;
}

/// <summary>Kernel <c>struct fuse_copy_file_range_out</c> (8 bytes, 7.45): reply to COPY_FILE_RANGE_64.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseCopyFileRangeOut
{
    public const int Size = 8;
    public ulong BytesCopied;
}
