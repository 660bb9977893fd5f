// FUSE kernel protocol 7.45: notifications (server -> kernel, fuse_out_header.unique = 0, error = code).
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_notify_poll_wakeup_out</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyPollWakeupOut
{
    public const int Size = 8;
    public ulong Kh;
}

/// <summary>Kernel <c>struct fuse_notify_inval_inode_out</c> (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyInvalInodeOut
{
    public const int Size = 24;
    public ulong Ino;
    /// <summary>off: start of the range; negative: attributes only.</summary>
    public long Off;
    /// <summary>len: length of the range; &lt;= 0: to end of file.</summary>
    public long Len;
}

/// <summary>Kernel <c>struct fuse_notify_inval_entry_out</c> (16 bytes); the name and a NUL follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyInvalEntryOut
{
    public const int Size = 16;
    public ulong Parent;
    public uint NameLen;
    /// <summary>flags: FUSE_EXPIRE_ONLY (1 &lt;&lt; 0).</summary>
    public uint Flags;

    public const uint ExpireOnly = 1u << 0;
}

/// <summary>Kernel <c>struct fuse_notify_delete_out</c> (24 bytes); the name and a NUL follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyDeleteOut
{
    public const int Size = 24;
    public ulong Parent;
    public ulong Child;
    public uint NameLen;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_notify_store_out</c> (24 bytes); the data follows.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyStoreOut
{
    public const int Size = 24;
    public ulong NodeId;
    public ulong Offset;
    public uint Size_;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_notify_retrieve_out</c> (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyRetrieveOut
{
    public const int Size = 32;
    public ulong NotifyUnique;
    public ulong NodeId;
    public ulong Offset;
    public uint Size_;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_notify_retrieve_in</c> (40 bytes, matches fuse_write_in): body of the
/// kernel's FUSE_NOTIFY_REPLY request; the data follows.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyRetrieveIn
{
    public const int Size = 40;
    public ulong Dummy1;
    public ulong Offset;
    public uint Size_;
    public uint Dummy2;
    public ulong Dummy3;
    public ulong Dummy4;
}

/// <summary>Kernel <c>struct fuse_notify_prune_out</c> (16 bytes, 7.45); <see cref="Count"/> u64 node ids follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseNotifyPruneOut
{
    public const int Size = 16;
    public uint Count;
    public uint Padding;
    public ulong Spare;
}
