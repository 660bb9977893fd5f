// FUSE kernel protocol 7.45: GETLK/SETLK/SETLKW.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_file_lock</c> (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseFileLock
{
    public const int Size = 24;
    public ulong Start;
    public ulong End;
    public uint Type;
    /// <summary>pid: tgid.</summary>
    public uint Pid;
}

/// <summary>Kernel <c>struct fuse_lk_in</c> (48 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseLkIn
{
    public const int Size = 48;
    public ulong Fh;
    public ulong Owner;
    public FuseFileLock Lk;
    /// <summary>lk_flags: FUSE_LK_FLOCK (1 &lt;&lt; 0).</summary>
    public uint LkFlags;
    public uint Padding;

    public const uint LkFlock = 1u << 0;
}

/// <summary>Kernel <c>struct fuse_lk_out</c> (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseLkOut
{
    public const int Size = 24;
    public FuseFileLock Lk;
}
