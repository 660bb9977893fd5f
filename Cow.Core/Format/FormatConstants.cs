namespace Cow.Core.Format;

/// <summary>Fixed numbers of the on-disk contract (format.md). Changing any of them is a format change.</summary>
public static class FormatConstants
{
    /// <summary>format.md "Versions": the newest format this build reads and writes, and the one mkfs gives a pool
    /// (its <c>pool</c> document). Version 2 is a pool whose device table changed after mkfs; version 3 writes space
    /// maps as count runs (<c>runs</c>, 5.7).</summary>
    public const uint FormatVersion = 3;

    /// <summary>The oldest format this build reads.</summary>
    public const uint OldestFormatVersion = 1;

    /// <summary>Superblock <c>format_version</c> of the devices mkfs makes for a pool folder: 1, the superblock layout
    /// every later version reads (version 3 changed only the metadata).</summary>
    public const uint MkfsFormatVersion = 1;

    /// <summary>Superblock <c>format_version</c> of an added device and of the devices of a pool on its devices (the
    /// <c>meta_*</c> fields).</summary>
    public const uint DevicesFormatVersion = 2;

    /// <summary>The pool format version from which space maps are written as <c>runs</c> (5.7); older pools keep
    /// writing <c>refs</c> until a device change upgrades them.</summary>
    public const uint RunSpaceMapsVersion = 3;

    /// <summary>The largest device cookie, so that a pool never has more devices than one fuse-iomap connection
    /// registers (1024: the fuse-iomap patch's backing ids 1..1024, <c>fuse_iomap_backing_ops</c> id_end 1025).</summary>
    public const uint MaxDeviceCookie = 1024;

    /// <summary>The first cookie <c>cow device add</c> gives out (1 and 2 are mkfs's base and log devices).</summary>
    public const uint FirstAddedCookie = 3;

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

    /// <summary>Device cookies mkfs gives: 1 = base device, 2 = log device; devices added later get 3.. (either role).</summary>
    public const uint BaseCookie = 1, LogCookie = 2;

    /// <summary>Generation stored in <c>death</c> of a record that is still live.</summary>
    public const long Forever = long.MaxValue;
}

/// <summary>Superblock <c>role</c>: what a device is for in its pool.</summary>
public enum DeviceRole : uint
{
    /// <summary>Capacity: data imported at mkfs, data the cleaner moved off the logs, new writes when no log has room.</summary>
    Base = 1,
    /// <summary>Receives every new write while it has room, appended out of place; cleaned onto base devices.</summary>
    Log = 2,
    /// <summary>Reserved (never written; a device table or superblock naming it is refused).</summary>
    Extra = 3,
}

/// <summary>Device table <c>state</c> (format.md 5.2).</summary>
public enum DeviceState
{
    /// <summary>In service: takes data as its role says.</summary>
    InService = 0,
    /// <summary>Being removed: takes no new block; its data is being moved to the other devices.</summary>
    Removing = 1,
}
