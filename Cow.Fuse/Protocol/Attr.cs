// FUSE kernel protocol 7.45: attributes (LOOKUP/GETATTR/SETATTR/STATX/ACCESS replies and requests).
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_attr</c> (88 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseAttr
{
    public const int Size = 88;
    public ulong Ino;
    public ulong Size_;
    public ulong Blocks;
    public ulong Atime;
    public ulong Mtime;
    public ulong Ctime;
    public uint Atimensec;
    public uint Mtimensec;
    public uint Ctimensec;
    public uint Mode;
    public uint Nlink;
    public uint Uid;
    public uint Gid;
    public uint Rdev;
    public uint Blksize;
    /// <summary>flags: <see cref="FuseAttrFlags"/>.</summary>
    public uint Flags;
}

/// <summary>fuse_attr.flags.</summary>
[Flags]
public enum FuseAttrFlags : uint
{
    None = 0,
    /// <summary>FUSE_ATTR_SUBMOUNT.</summary>
    Submount = 1u << 0,
    /// <summary>FUSE_ATTR_DAX.</summary>
    Dax = 1u << 1,
    /// <summary>FUSE_ATTR_EXCLUSIVE (experimental, iomap).</summary>
    Exclusive = ExperimentalConstants.AttrExclusive,
    /// <summary>FUSE_ATTR_IOMAP = EXCLUSIVE | __FUSE_ATTR_IOMAP (experimental, iomap; 12 in the ABI Cow speaks).</summary>
    Iomap = ExperimentalConstants.AttrIomap,
}

/// <summary>Kernel <c>struct fuse_entry_out</c> (128 bytes): reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK, CREATE (first part).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseEntryOut
{
    public const int Size = 128;
    public ulong NodeId;
    public ulong Generation;
    public ulong EntryValid;
    public ulong AttrValid;
    public uint EntryValidNsec;
    public uint AttrValidNsec;
    public FuseAttr Attr;
}

/// <summary>Kernel <c>struct fuse_getattr_in</c> (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseGetattrIn
{
    public const int Size = 16;
    /// <summary>getattr_flags: FUSE_GETATTR_FH (1 &lt;&lt; 0) when <see cref="Fh"/> is valid.</summary>
    public uint GetattrFlags;
    public uint Dummy;
    public ulong Fh;

    /// <summary>FUSE_GETATTR_FH.</summary>
    public const uint GetattrFh = 1u << 0;
}

/// <summary>Kernel <c>struct fuse_attr_out</c> (104 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseAttrOut
{
    public const int Size = 104;
    public ulong AttrValid;
    public uint AttrValidNsec;
    public uint Dummy;
    public FuseAttr Attr;
}

/// <summary>Kernel <c>struct fuse_setattr_in</c> (88 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseSetattrIn
{
    public const int Size = 88;
    /// <summary>valid: <see cref="FuseSetattrValid"/> (FATTR_*).</summary>
    public uint Valid;
    public uint Padding;
    public ulong Fh;
    public ulong Size_;
    public ulong LockOwner;
    public ulong Atime;
    public ulong Mtime;
    public ulong Ctime;
    public uint Atimensec;
    public uint Mtimensec;
    public uint Ctimensec;
    public uint Mode;
    public uint Unused4;
    public uint Uid;
    public uint Gid;
    public uint Unused5;
}

/// <summary>FATTR_* bits of fuse_setattr_in.valid.</summary>
[Flags]
public enum FuseSetattrValid : uint
{
    None = 0,
    Mode = 1u << 0,
    Uid = 1u << 1,
    Gid = 1u << 2,
    Size = 1u << 3,
    Atime = 1u << 4,
    Mtime = 1u << 5,
    Fh = 1u << 6,
    AtimeNow = 1u << 7,
    MtimeNow = 1u << 8,
    LockOwner = 1u << 9,
    Ctime = 1u << 10,
    KillSuidgid = 1u << 11,
}

/// <summary>Kernel <c>struct fuse_sx_time</c> (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseSxTime
{
    public const int Size = 16;
    public long TvSec;
    public uint TvNsec;
    /// <summary>__reserved.</summary>
    public int Reserved;
}

/// <summary>Kernel <c>struct fuse_statx</c> (256 bytes), bit-compatible with struct statx.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct FuseStatx
{
    public const int Size = 256;
    public uint Mask;
    public uint Blksize;
    public ulong Attributes;
    public uint Nlink;
    public uint Uid;
    public uint Gid;
    public ushort Mode;
    /// <summary>__spare0[1].</summary>
    public ushort Spare0;
    public ulong Ino;
    public ulong Size_;
    public ulong Blocks;
    public ulong AttributesMask;
    public FuseSxTime Atime;
    public FuseSxTime Btime;
    public FuseSxTime Ctime;
    public FuseSxTime Mtime;
    public uint RdevMajor;
    public uint RdevMinor;
    public uint DevMajor;
    public uint DevMinor;
    /// <summary>__spare2[14].</summary>
    public fixed ulong Spare2[14];
}

/// <summary>Kernel <c>struct fuse_statx_in</c> (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseStatxIn
{
    public const int Size = 24;
    public uint GetattrFlags;
    public uint Reserved;
    public ulong Fh;
    public uint SxFlags;
    public uint SxMask;
}

/// <summary>Kernel <c>struct fuse_statx_out</c> (288 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct FuseStatxOut
{
    public const int Size = 288;
    public ulong AttrValid;
    public uint AttrValidNsec;
    public uint Flags;
    /// <summary>spare[2].</summary>
    public fixed ulong Spare[2];
    public FuseStatx Stat;
}

/// <summary>Kernel <c>struct fuse_access_in</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseAccessIn
{
    public const int Size = 8;
    public uint Mask;
    public uint Padding;
}
