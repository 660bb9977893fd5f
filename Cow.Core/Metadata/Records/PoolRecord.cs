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
    /// <summary><c>purges</c>: snapshots deleted whose records are not all removed yet, oldest deletion first. Each
    /// names the versions no view sees any more (format.md 4, "Deleting snapshot"); a writable open finishes them.</summary>
    public List<PendingPurge> Purges = new();
    /// <summary><c>receive</c>: a stream being received (format.md 10.5), null when none. While set, the versions born at
    /// its <c>gen</c> (= live_gen + 1) are staged: no view sees them until the receive finishes.</summary>
    public PendingReceive? Receive;

    /// <summary>A copy (the fields are values or immutable strings; the purge list is copied).</summary>
    public PoolRecord Clone()
    {
        var c = (PoolRecord)MemberwiseClone();
        c.Purges = new List<PendingPurge>(Purges);
        c.Receive = Receive?.Copy();
        return c;
    }
}

/// <summary>An entry of <c>purges</c> (format.md 5.1): deleting snapshot <c>gen</c> left the versions with
/// <c>birth &gt; prev</c> and <c>gen &lt; death ≤ next</c> seen by no view; they are removed in batches.</summary>
/// <param name="Gen"><c>gen</c>: the deleted snapshot's generation.</param>
/// <param name="Prev"><c>prev</c>: the greatest view generation below it at the deletion (0: none).</param>
/// <param name="Next"><c>next</c>: the smallest view generation above it at the deletion (the live generation if none).</param>
internal readonly record struct PendingPurge(long Gen, long Prev, long Next)
{
    /// <summary>Whether version [<paramref name="birth"/>, <paramref name="death"/>) is one this purge removes.</summary>
    public bool Covers(long birth, long death) => birth > Prev && death > Gen && death <= Next;
}

/// <summary>The pool field <c>receive</c> (format.md 10.5): a receive that has staged part of a stream.</summary>
internal sealed class PendingReceive
{
    /// <summary><c>gen</c>: the generation of the staged versions, live_gen + 1 when the receive began; the received
    /// snapshot gets it.</summary>
    public long Gen;
    /// <summary><c>snap_pool</c>, <c>snap_gen</c>: the identity of the snapshot being received.</summary>
    public Guid SnapPool;
    public long SnapGen;
    /// <summary><c>base_pool</c>, <c>base_gen</c>: the identity of its base (empty, 0: a full stream).</summary>
    public Guid BasePool;
    public long BaseGen;
    /// <summary><c>name</c>: the name the snapshot gets here.</summary>
    public string Name = "";
    /// <summary><c>created_ns</c>: the snapshot's creation time on the sender.</summary>
    public long CreatedNs;
    /// <summary><c>offset</c>: record offset (bytes after the header) up to which the stream is applied and durable.</summary>
    public long Offset;
    /// <summary><c>records</c>: records applied (after the header).</summary>
    public long Records;
    /// <summary><c>chain</c>: the stream's chain digest after those records (16 bytes).</summary>
    public byte[] Chain = new byte[16];
    /// <summary><c>verified</c>: every record is applied and the end record verified them; only the finishing commit
    /// is left (absent: false).</summary>
    public bool Verified;

    public PendingReceive Copy()
    {
        var c = (PendingReceive)MemberwiseClone();
        c.Chain = (byte[])Chain.Clone();
        return c;
    }
}
