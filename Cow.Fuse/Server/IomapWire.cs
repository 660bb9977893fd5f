using Cow.Core.Engine;
using Cow.Fuse.Protocol;

namespace Cow.Fuse.Server;

/// <summary>
/// Translation between the engine's iomap shapes (<see cref="IomapOp"/>, <see cref="MappingType"/>,
/// <see cref="MappingFlags"/>: engine-level values) and the numbers of the fuse-iomap ABI Cow speaks
/// (<see cref="ExperimentalConstants"/>): the one place where an ABI move has to be followed. Every value is
/// mapped by name, never by cast, so that the engine's numbers and the wire's can differ.
/// Stateless and thread-safe.
/// </summary>
public static class IomapWire
{
    private static readonly (FuseIomapOpFlags Wire, IomapOp Engine)[] Ops =
    [
        (FuseIomapOpFlags.Write, IomapOp.Write), (FuseIomapOpFlags.Zero, IomapOp.Zero), (FuseIomapOpFlags.Report, IomapOp.Report),
        (FuseIomapOpFlags.Fault, IomapOp.Fault), (FuseIomapOpFlags.Direct, IomapOp.Direct), (FuseIomapOpFlags.Nowait, IomapOp.NoWait),
        (FuseIomapOpFlags.OverwriteOnly, IomapOp.OverwriteOnly), (FuseIomapOpFlags.Unshare, IomapOp.Unshare), (FuseIomapOpFlags.Dax, IomapOp.Dax),
        (FuseIomapOpFlags.Atomic, IomapOp.Atomic), (FuseIomapOpFlags.Dontcache, IomapOp.DontCache),
        (FuseIomapOpFlags.Writeback, IomapOp.Writeback), (FuseIomapOpFlags.Swapfile, IomapOp.SwapFile),
    ];

    /// <summary>The engine's operation flags for wire <paramref name="opflags"/>; false (and the bits) when the
    /// wire value carries bits this ABI does not define — the kernel speaks another snapshot of the ABI.</summary>
    public static bool TryOp(uint opflags, out IomapOp op, out uint unknownBits)
    {
        op = IomapOp.None;
        unknownBits = opflags & ~(uint)FuseIomapOpFlags.Known;
        foreach (var (w, e) in Ops) if ((opflags & (uint)w) != 0) op |= e;
        return unknownBits == 0;
    }

    /// <summary>The wire operation flags of engine <paramref name="op"/> (the test peer's direction).</summary>
    public static uint ToWire(IomapOp op)
    {
        uint w = 0;
        foreach (var (wire, e) in Ops) if ((op & e) != 0) w |= (uint)wire;
        return w;
    }

    /// <summary>The wire type of an engine mapping type.</summary>
    public static ushort ToWire(MappingType t) => t switch
    {
        MappingType.Hole => (ushort)FuseIomapType.Hole,
        MappingType.Delalloc => (ushort)FuseIomapType.Delalloc,
        MappingType.Mapped => (ushort)FuseIomapType.Mapped,
        MappingType.Unwritten => (ushort)FuseIomapType.Unwritten,
        MappingType.Inline => (ushort)FuseIomapType.Inline,
        MappingType.PureOverwrite => (ushort)FuseIomapType.PureOverwrite,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "no wire type for this engine mapping type"),
    };

    /// <summary>The engine type of a wire mapping type the engine knows (the kernel sends HOLE..INLINE in
    /// IOMAP_END: fuse_iomap_type_to_server); false for any other value.</summary>
    public static bool TryType(ushort wire, out MappingType t)
    {
        switch ((FuseIomapType)wire)
        {
            case FuseIomapType.Hole: t = MappingType.Hole; return true;
            case FuseIomapType.Delalloc: t = MappingType.Delalloc; return true;
            case FuseIomapType.Mapped: t = MappingType.Mapped; return true;
            case FuseIomapType.Unwritten: t = MappingType.Unwritten; return true;
            case FuseIomapType.Inline: t = MappingType.Inline; return true;
            case FuseIomapType.PureOverwrite: t = MappingType.PureOverwrite; return true;
            default: t = default; return false;
        }
    }

    private static readonly (FuseIomapFlags Wire, MappingFlags Engine)[] Flags =
    [
        (FuseIomapFlags.New, MappingFlags.New), (FuseIomapFlags.Dirty, MappingFlags.Dirty), (FuseIomapFlags.Shared, MappingFlags.Shared),
        (FuseIomapFlags.Merged, MappingFlags.Merged), (FuseIomapFlags.Boundary, MappingFlags.Boundary), (FuseIomapFlags.AnonWrite, MappingFlags.AnonWrite),
        (FuseIomapFlags.AtomicBio, MappingFlags.AtomicBio), (FuseIomapFlags.WantIomapEnd, MappingFlags.WantIomapEnd),
        (FuseIomapFlags.SizeChanged, MappingFlags.SizeChanged), (FuseIomapFlags.Stale, MappingFlags.Stale),
    ];

    /// <summary>Wire mapping flags of engine flags.</summary>
    public static ushort ToWire(MappingFlags f)
    {
        ushort w = 0;
        foreach (var (wire, e) in Flags) if ((f & e) != 0) w |= (ushort)wire;
        return w;
    }

    /// <summary>Engine mapping flags of wire flags; bits this ABI does not define are dropped.</summary>
    public static MappingFlags FlagsFromWire(ushort w)
    {
        var f = MappingFlags.None;
        foreach (var (wire, e) in Flags) if ((w & (ushort)wire) != 0) f |= e;
        return f;
    }
}
