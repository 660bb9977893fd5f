// FUSE kernel protocol 7.45: FUSE_INIT.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_init_in</c> (64 bytes). Flags bits 32..63 arrive in <see cref="Flags2"/>.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct FuseInitIn
{
    public const int Size = 64;
    public uint Major;
    public uint Minor;
    public uint MaxReadahead;
    /// <summary>flags: low 32 bits of <see cref="FuseInitFlags"/>.</summary>
    public uint Flags;
    /// <summary>flags2: high 32 bits of <see cref="FuseInitFlags"/> (only meaningful with FUSE_INIT_EXT).</summary>
    public uint Flags2;
    /// <summary>unused[11].</summary>
    public fixed uint Unused[11];

    /// <summary>flags | flags2 &lt;&lt; 32.</summary>
    public readonly FuseInitFlags AllFlags => (FuseInitFlags)(Flags | ((ulong)Flags2 << 32));
}

/// <summary>Kernel <c>struct fuse_init_out</c> (64 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct FuseInitOut
{
    public const int Size = 64;
    public uint Major;
    public uint Minor;
    public uint MaxReadahead;
    /// <summary>flags: low 32 bits of <see cref="FuseInitFlags"/>.</summary>
    public uint Flags;
    public ushort MaxBackground;
    public ushort CongestionThreshold;
    public uint MaxWrite;
    /// <summary>time_gran: timestamp granularity in ns.</summary>
    public uint TimeGran;
    public ushort MaxPages;
    public ushort MapAlignment;
    /// <summary>flags2: high 32 bits of <see cref="FuseInitFlags"/>.</summary>
    public uint Flags2;
    /// <summary>max_stack_depth (7.40, passthrough).</summary>
    public uint MaxStackDepth;
    /// <summary>request_timeout in seconds (7.43, FUSE_REQUEST_TIMEOUT).</summary>
    public ushort RequestTimeout;
    /// <summary>unused[11].</summary>
    public fixed ushort Unused[11];

    /// <summary>Splits a 64-bit flag set into flags / flags2.</summary>
    public void SetAllFlags(FuseInitFlags flags)
    {
        Flags = (uint)((ulong)flags & 0xFFFF_FFFFUL);
        Flags2 = (uint)((ulong)flags >> 32);
    }

    public readonly FuseInitFlags AllFlags => (FuseInitFlags)(Flags | ((ulong)Flags2 << 32));
}
