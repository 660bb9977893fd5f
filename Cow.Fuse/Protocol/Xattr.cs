// FUSE kernel protocol 7.45: SETXATTR/GETXATTR/LISTXATTR.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_setxattr_in</c> (16 bytes; only the first 8 = FUSE_COMPAT_SETXATTR_IN_SIZE
/// unless FUSE_SETXATTR_EXT was negotiated); name and value follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseSetxattrIn
{
    public const int Size = 16;
    public uint Size_;
    /// <summary>flags: XATTR_CREATE / XATTR_REPLACE.</summary>
    public uint Flags;
    /// <summary>setxattr_flags: FUSE_SETXATTR_ACL_KILL_SGID (1 &lt;&lt; 0).</summary>
    public uint SetxattrFlags;
    public uint Padding;

    public const uint AclKillSgid = 1u << 0;
}

/// <summary>Kernel <c>struct fuse_getxattr_in</c> (8 bytes), for GETXATTR and LISTXATTR; the name follows for GETXATTR.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseGetxattrIn
{
    public const int Size = 8;
    public uint Size_;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_getxattr_out</c> (8 bytes): the reply when the request's size was 0.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseGetxattrOut
{
    public const int Size = 8;
    public uint Size_;
    public uint Padding;
}
