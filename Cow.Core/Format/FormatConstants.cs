namespace Cow.Core.Format;

/// <summary>Fixed numbers of the on-disk contract (format.md). Changing any of them is a format change.</summary>
public static class FormatConstants
{
    /// <summary>format.md "Versions": the only format this build reads and writes.</summary>
    public const uint FormatVersion = 1;

    /// <summary>Superblock <c>magic</c>: the ASCII bytes "COWPOOL1" read as a little-endian u64.</summary>
    public const ulong SuperblockMagic = 0x314C4F4F50574F43UL;

    /// <summary>Segment header <c>magic</c>: the ASCII bytes "COWSEG01" read as a little-endian u64.</summary>
    public const ulong SegmentMagic = 0x3130474553574F43UL;

    /// <summary>Bytes of block 0 covered by the superblock structure (the rest of block 0 is zero).</summary>
    public const int SuperblockSize = 256;

    /// <summary>Bytes of a segment header structure at the start of a segment's first block.</summary>
    public const int SegmentHeaderSize = 64;

    /// <summary>Blocks per segment on every device: the space-map unit, and on the log device the unit
    /// the allocator opens (block 0 of each segment is its header).</summary>
    public const int SegmentBlocks = 1024;

    /// <summary>File blocks covered by one chunk record of an extent map.</summary>
    public const int ChunkBlocks = 1024;

    /// <summary>Smallest and largest block size mkfs accepts.</summary>
    public const int MinBlockSize = 4096, MaxBlockSize = 65536;

    /// <summary>Address meaning "no address" in a mapping (the kernel's FUSE_IOMAP_NULL_ADDR).</summary>
    public const ulong NoAddress = ulong.MaxValue;

    /// <summary>Device cookies fixed by the design: 1 = base device, 2 = log device; 3.. = extra devices.</summary>
    public const uint BaseCookie = 1, LogCookie = 2;

    /// <summary>Generation stored in <c>death</c> of a record that is still live.</summary>
    public const long Forever = long.MaxValue;
}

/// <summary>Superblock <c>role</c>: what a device is for in its pool.</summary>
public enum DeviceRole : uint
{
    /// <summary>Holds data that was there first (imported at mkfs); never a write target.</summary>
    Base = 1,
    /// <summary>Receives every new write, appended out of place.</summary>
    Log = 2,
    /// <summary>An extra device of a multi-device pool (reserved for a later version; refused by v1).</summary>
    Extra = 3,
}
