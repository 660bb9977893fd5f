using Cow.Core.Format;

namespace Cow.Core.Metadata;

/// <summary>Collection <c>pool</c>, the single document with <c>_id</c> = 1.</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Each field is documented with its name in format.md ("Metadata file"); the BSON mapping is <see cref="PoolBson"/>.</remarks>
internal sealed class PoolRecord
{
    /// <summary><c>pool_uuid</c>: equals <c>pool_uuid</c> in every device superblock.</summary>
    public Guid PoolUuid;
    /// <summary><c>format_version</c>: the format of this metadata file (1).</summary>
    public int FormatVersion = (int)FormatConstants.MkfsFormatVersion;
    /// <summary><c>block_size</c>: bytes per block, as in every superblock.</summary>
    public int BlockSize;
    /// <summary><c>live_gen</c>: generation of the live tree; every snapshot's gen is smaller.</summary>
    public long LiveGen = 1;
    /// <summary><c>next_ino</c>: next inode number to hand out (root is 1).</summary>
    public long NextIno = 2;
    /// <summary><c>next_rid</c>: next record id (<c>_id</c> of inodes, dirents, chunks).</summary>
    public long NextRid = 1;
    /// <summary><c>commit_seq</c>: number of metadata commits so far.</summary>
    public long CommitSeq;
    /// <summary><c>segment_seq</c>: sequence number given to the next segment header.</summary>
    public long SegmentSeq = 1;
    /// <summary><c>log_cursor</c>: log device block where the allocator resumes.</summary>
    public long LogCursor;
    /// <summary><c>created_ns</c>: pool creation time.</summary>
    public long CreatedNs;
    /// <summary><c>label</c>: the pool's label.</summary>
    public string Label = "";
    /// <summary><c>chunk_segs</c>: every chunk document carries <c>segs</c> (written by this build; a build that
    /// predates <c>segs</c> rewrites the pool document without it, and the next open fills <c>segs</c> in again).</summary>
    public bool ChunkSegs = true;

    /// <summary>A copy (every field is a value or an immutable string).</summary>
    public PoolRecord Clone() => (PoolRecord)MemberwiseClone();
}
