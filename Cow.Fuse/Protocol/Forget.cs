// FUSE kernel protocol 7.45: FORGET and BATCH_FORGET (no reply).
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_forget_in</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseForgetIn
{
    public const int Size = 8;
    public ulong Nlookup;
}

/// <summary>Kernel <c>struct fuse_forget_one</c> (16 bytes): one element after fuse_batch_forget_in.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseForgetOne
{
    public const int Size = 16;
    public ulong NodeId;
    public ulong Nlookup;
}

/// <summary>Kernel <c>struct fuse_batch_forget_in</c> (8 bytes); <see cref="Count"/> fuse_forget_one follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseBatchForgetIn
{
    public const int Size = 8;
    public uint Count;
    public uint Dummy;
}
