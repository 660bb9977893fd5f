using Cow.Core.Format;

namespace Cow.Core.Metadata;

/// <summary>Collection <c>spacemaps</c>: reference counts of one segment (1024 blocks) of one device.
/// <c>_id</c> = device cookie × 2^40 + segment index. Absent documents mean all counts are zero.</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Each field is documented with its name in format.md ("Metadata file"); the BSON mapping is <see cref="SpaceMapBson"/>.</remarks>
internal sealed class SpaceMapRecord
{
    /// <summary><c>dev</c>: device cookie.</summary>
    public uint Device;
    /// <summary><c>segment</c>: segment index (device block / 1024).</summary>
    public long Segment;
    /// <summary><c>refs</c>: u32 little-endian per block: how many chunk records (of any generation) reference it.</summary>
    public uint[] Refs = new uint[FormatConstants.SegmentBlocks];

    public static long Id(uint dev, long segment) => ((long)dev << 40) + segment;
}
