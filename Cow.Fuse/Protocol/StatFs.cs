// FUSE kernel protocol 7.45: STATFS.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_kstatfs</c> (80 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct FuseKstatfs
{
    public const int Size = 80;
    public ulong Blocks;
    public ulong Bfree;
    public ulong Bavail;
    public ulong Files;
    public ulong Ffree;
    public uint Bsize;
    public uint NameLen;
    public uint Frsize;
    public uint Padding;
    /// <summary>spare[6].</summary>
    public fixed uint Spare[6];
}

/// <summary>Kernel <c>struct fuse_statfs_out</c> (80 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseStatfsOut
{
    public const int Size = 80;
    public FuseKstatfs St;
}
