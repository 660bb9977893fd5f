namespace Cow.Core.Engine;

/// <summary>
/// The byte budget of an engine's metadata caches and how it is shared among them: the engine's memory is bounded
/// by configuration, not by the number of files. A quarter goes to LiteDB's page cache, which LiteDB 5 never shrinks by
/// itself: after commits (and between fsck's batches) the store is reopened when it holds more; the quarter left over is
/// room for the pages a commit's transaction touches, which LiteDB keeps until then. Group commits are sized to that
/// (<see cref="CommitRecords"/>), and past <see cref="HeapCeiling"/> a commit asks for a full collection. A quarter goes
/// to the live tree's clean extent-map chunks, an eighth to its clean inodes (with their directories' entries), an eighth
/// to the records of snapshot trees. The per-record sizes are estimates of the .NET objects' sizes: they turn byte shares into the
/// counts the caches trim to. Immutable.
/// </summary>
public readonly record struct CacheBudget(long Bytes)
{
    /// <summary>A live chunk: the 4 KiB <c>sums</c> array, its extents and the record object.</summary>
    public const int ChunkBytes = 4400;
    /// <summary>A live inode as cached: a regular file's is about 450 bytes (dotnet-gcdump of a mount holding 20,000: the
    /// record 168, the LiveInode 72, its write gate 88, its empty chunk map 80, the cache's entry 44), with room for a
    /// small directory's entries.</summary>
    public const int InodeBytes = 512;
    /// <summary>A snapshot tree's cached record (inode, entry or chunk, chunks counted at their size).</summary>
    public const int SnapshotRecordBytes = 2048;
    /// <summary>The smallest budget accepted: below it the caches thrash.</summary>
    public const long MinBytes = 32L << 20;

    /// <summary>The default: a sixteenth of the memory this process may use, from 64 MiB to <see cref="DefaultMaxBytes"/>.</summary>
    public static CacheBudget Default() =>
        new(Math.Clamp(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 16, 64L << 20, DefaultMaxBytes));

    /// <summary>The largest default budget. Beside the caches a mount holds about 130 MiB that no budget bounds: the
    /// runtime's code and data (about 50 MiB), the write-behind buffers of a device being written (64 MiB,
    /// <c>DirectWriteBehind</c>) and the FUSE request and reply buffers (16 MiB with 4 threads), plus the space maps and
    /// garbage not yet collected. A mount writing a TiB (bench/scale-space.sh, RSS sampled every 5 s) peaked at 258 MiB
    /// with a 192 MiB budget and at 257 MiB with 128 MiB; this one keeps it under 256 MiB. A pool of millions of files
    /// may be given more (<c>--cache-size</c>).</summary>
    public const long DefaultMaxBytes = 96L << 20;

    /// <summary>Bytes of LiteDB's page cache kept after a commit.</summary>
    public long StorePages => Bytes / 4;
    /// <summary>Clean live chunks kept after a commit.</summary>
    public int Chunks => (int)Math.Max(64, Bytes / 4 / ChunkBytes);
    /// <summary>Clean, closed live inodes kept after a commit.</summary>
    public int Inodes => (int)Math.Max(64, Bytes / 8 / InodeBytes);
    /// <summary>The managed heap (live objects and garbage not yet collected) past which a commit asks for a full,
    /// compacting collection: the budget plus room for the runtime and the requests in flight. Without it the runtime
    /// lets garbage of a busy mount pile up to several times the live data before a full collection.</summary>
    public long HeapCeiling => Bytes + (64L << 20);

    /// <summary>What a changed inode or directory entry holds until its commit: the record, and the LiteDB pages its
    /// transaction dirties (its document and an entry in each of its indexes, on pages shared with the records changed
    /// beside it). An estimate, checked by bench/scale-mount.sh's fill of a million 4 KiB files: it peaked at 285 MiB
    /// with this sizing, and at 844 MiB with 12,288 records a commit and chunks not counted.</summary>
    public const int CommitRecordBytes = 1536;

    /// <summary>How many records a changed chunk counts as in the commit threshold: its document is its 4 KiB checksum
    /// array and its extents, some four inode documents.</summary>
    public const int ChunkRecordWeight = 4;

    /// <summary>Changed records (chunks weighted, <see cref="ChunkRecordWeight"/>) after which a group commit starts: a
    /// commit's batch and the pages its transaction touches are held at once, a sixteenth of the budget in records.
    /// Each commit also costs a LiteDB checkpoint and device flushes: at 1,430 records with chunks not counted,
    /// creating 10,000 empty files through a mount took 14 commits, and the first round of bench/metadata.sh ran at half
    /// the rate of the later ones, its writers meeting the backpressure of <c>CommitPipeline.MaybeCommit</c>. A file
    /// of 4 KiB (inode, entry and chunk: 6) commits every 683 files at 96 MiB, an empty one every 2,048.</summary>
    public int CommitRecords => (int)Math.Clamp(Bytes / 16 / CommitRecordBytes, 1024, 50_000);

    /// <summary>Records of snapshot trees kept before they are dropped.</summary>
    public int SnapshotRecords => (int)Math.Max(256, Bytes / 8 / SnapshotRecordBytes);
}
