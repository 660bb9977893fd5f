using Cow.Core.Engine;

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
    /// <summary><c>runs</c> (version 3) or <c>refs</c> (versions 1 and 2, one u32 per block), read into runs: the
    /// segment's blocks with a count above 0, in block order.</summary>
    public RefRun[] Runs = [];
    /// <summary>Written as <c>refs</c> (a pool of format version 1 or 2) instead of <c>runs</c>.</summary>
    public bool Dense;

    public static long Id(uint dev, long segment) => ((long)dev << 40) + segment;
}
