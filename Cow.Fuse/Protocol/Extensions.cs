// FUSE kernel protocol 7.45: request extensions (fuse_in_header.total_extlen, 7.38) and security contexts.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_ext_header</c> (8 bytes). Types 0..31 (FUSE_MAX_NR_SECCTX) are a fuse_secctx_header.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseExtHeader
{
    public const int Size = 8;
    public uint Size_;
    /// <summary>type: enum fuse_ext_type (FUSE_EXT_GROUPS = 32).</summary>
    public uint Type;

    /// <summary>FUSE_MAX_NR_SECCTX.</summary>
    public const uint MaxNrSecctx = 31;
    /// <summary>FUSE_EXT_GROUPS.</summary>
    public const uint ExtGroups = 32;
}

/// <summary>Kernel <c>struct fuse_secctx_header</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseSecctxHeader
{
    public const int Size = 8;
    public uint Size_;
    public uint NrSecctx;
}

/// <summary>Kernel <c>struct fuse_secctx</c> (8 bytes); the context name and label follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseSecctx
{
    public const int Size = 8;
    public uint Size_;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_supp_groups</c> without its flexible <c>groups[]</c> (4 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseSuppGroups
{
    public const int Size = 4;
    public uint NrGroups;
}
