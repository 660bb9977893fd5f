using Cow.Core.Format;

namespace Cow.Core.Engine;

// Shapes of the kernel's fuse-iomap protocol (../shared/reference/fuse-iomap.md), without any FUSE
// dependency: Cow.Fuse copies these to and from its wire structs.

/// <summary>Mapping type (FUSE_IOMAP_TYPE_*).</summary>
public enum MappingType : ushort
{
    Hole = 0, Delalloc = 1, Mapped = 2, Unwritten = 3, Inline = 4,
    /// <summary>Write mapping only: "no separate write target, use the read mapping".</summary>
    PureOverwrite = 255,
}

/// <summary>Mapping flags (FUSE_IOMAP_F_*).</summary>
[Flags]
public enum MappingFlags : ushort
{
    None = 0, New = 1 << 0, Dirty = 1 << 1, Shared = 1 << 2, Merged = 1 << 3, Boundary = 1 << 4,
    AnonWrite = 1 << 5, AtomicBio = 1 << 6, WantIomapEnd = 1 << 7, SizeChanged = 1 << 8, Stale = 1 << 9,
}

/// <summary>Operation flags of iomap_begin / iomap_end (FUSE_IOMAP_OP_*).</summary>
[Flags]
public enum IomapOp : uint
{
    None = 0, Write = 1 << 0, Zero = 1 << 1, Report = 1 << 2, Fault = 1 << 3, Direct = 1 << 4, NoWait = 1 << 5,
    OverwriteOnly = 1 << 6, Unshare = 1 << 7, Dax = 1 << 8, Atomic = 1 << 9, DontCache = 1 << 10,
    SwapFile = 1u << 30, Writeback = 1u << 31,
}

/// <summary>ioend flags (FUSE_IOMAP_IOEND_*).</summary>
[Flags]
public enum IoEndFlags : uint
{
    None = 0, Shared = 1 << 0, Unwritten = 1 << 1, Boundary = 1 << 2, Direct = 1 << 3, Append = 1 << 4,
    Writeback = 1 << 5, SwapOff = 1 << 6,
}

/// <summary>One mapping (fuse_iomap_io): file range [Offset, Offset+Length) lives at byte
/// <see cref="Address"/> of device <see cref="Device"/>. Offsets, lengths and addresses are bytes.</summary>
public readonly record struct IomapMapping(long Offset, long Length, ulong Address, MappingType Type, MappingFlags Flags, uint Device)
{
    public static IomapMapping Hole(long offset, long length) => new(offset, length, FormatConstants.NoAddress, MappingType.Hole, MappingFlags.None, 0);

    /// <summary>Flags a mapping may carry in an iomap_begin reply (NEW … WANT_IOMAP_END); SIZE_CHANGED and
    /// STALE only travel to iomap_end.</summary>
    public const MappingFlags ReplyFlags = (MappingFlags)0xFF;

    /// <summary>The kernel's validation rules for a reply (violations are -EFSCORRUPTED in the kernel);
    /// returns null when the mapping is valid for <paramref name="blockSize"/>, else what is wrong.
    /// <paramref name="deviceSize"/> gives the bytes of a device cookie, null when it is not registered.</summary>
    public string? Validate(int blockSize, Func<uint, long?> deviceSize)
    {
        if (Length <= 0) return "length is zero or negative";
        if (Offset < 0) return $"offset {Offset} is negative";
        if (Offset % blockSize != 0 || Length % blockSize != 0) return $"offset {Offset} or length {Length} is not aligned to {blockSize}";
        if (Offset > long.MaxValue - Length) return $"range {Offset}+{Length} overflows";
        if ((Flags & ~ReplyFlags) != 0) return $"flags 0x{(ushort)Flags:x} include bits only iomap_end may carry";
        switch (Type)
        {
            case MappingType.Mapped or MappingType.Unwritten:
                if (Device == 0 || deviceSize(Device) is not long size) return $"device cookie {Device} is not registered";
                if (Address == FormatConstants.NoAddress) return "a mapped extent has no address";
                if (Address % (ulong)blockSize != 0) return $"address {Address} is not block aligned";
                if (Address > ulong.MaxValue - (ulong)Length || Address + (ulong)Length > (ulong)size) return $"address range {Address}+{Length} runs past the end of device {Device} ({size} bytes)";
                return null;
            case MappingType.Hole or MappingType.Delalloc or MappingType.Inline:
                return Device == 0 && Address == FormatConstants.NoAddress ? null : $"a {Type} mapping carries device {Device} / address {Address}";
            case MappingType.PureOverwrite:
                // "use the read mapping": it names no space and carries no state.
                return Device == 0 && Address == FormatConstants.NoAddress && Flags == MappingFlags.None
                    ? null : $"a pure-overwrite mapping carries device {Device} / address {Address} / flags 0x{(ushort)Flags:x}";
            default:
                return $"unknown mapping type {(ushort)Type}";
        }
    }
}

/// <summary>The reply to iomap_begin: where the bytes are now (<see cref="Read"/>, the kernel's srcmap)
/// and where new bytes must go (<see cref="Write"/>, the kernel's iomap). Both cover the same range.</summary>
public readonly record struct IomapPair(IomapMapping Read, IomapMapping Write)
{
    /// <summary>The kernel's rules for a whole iomap_begin reply at <paramref name="pos"/>: each mapping
    /// valid (<see cref="IomapMapping.Validate"/>), the read mapping not a pure overwrite, both covering one
    /// range that contains <paramref name="pos"/>. Null when valid, else what is wrong.</summary>
    public string? Validate(long pos, int blockSize, Func<uint, long?> deviceSize)
    {
        if (Read.Type == MappingType.PureOverwrite) return "the read mapping is a pure overwrite (write mappings only)";
        if (Read.Validate(blockSize, deviceSize) is { } r) return $"read mapping: {r}";
        if (Write.Validate(blockSize, deviceSize) is { } w) return $"write mapping: {w}";
        if (Read.Offset != Write.Offset || Read.Length != Write.Length)
            return $"read mapping {Read.Offset}+{Read.Length} and write mapping {Write.Offset}+{Write.Length} cover different ranges";
        if (pos < Read.Offset || pos - Read.Offset >= Read.Length) return $"the mappings {Read.Offset}+{Read.Length} do not cover position {pos}";
        return null;
    }
}
