using Cow.Core.Format;

namespace Cow.Core.Metadata;

/// <summary>Fields shared by every versioned record (inodes, dirents, chunks).</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Field names as in format.md ("Metadata file").</remarks>
internal abstract class VersionedRecord
{
    /// <summary><c>_id</c>: record id, from <c>pool.next_rid</c>; never reused.</summary>
    public long Rid;
    /// <summary><c>birth</c>: first generation that sees this version.</summary>
    public long Birth;
    /// <summary><c>death</c>: first generation that no longer sees it (<see cref="FormatConstants.Forever"/> while live).</summary>
    public long Death = FormatConstants.Forever;

    public bool VisibleAt(long gen) => Birth <= gen && gen < Death;
}
