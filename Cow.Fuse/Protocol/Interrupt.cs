// FUSE kernel protocol 7.45: INTERRUPT.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_interrupt_in</c> (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseInterruptIn
{
    public const int Size = 8;
    /// <summary>unique: id of the request to interrupt.</summary>
    public ulong Unique;
}
