using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The kinds of versioned record (format.md 5.4-5.6), each kept in its own collection.</summary>
internal enum RecordKind { Inode, Dirent, Chunk }

/// <summary>
/// Everything one metadata commit writes, applied by <see cref="MetadataStore.Commit"/> in one LiteDB
/// transaction. A record <c>Add</c>ed is serialised at once: the batch keeps what the record held then, so
/// its owner may go on changing it. Not thread-safe: owned by whoever builds it (the engine: under its lock).
/// </summary>
internal sealed class MetadataBatch
{
    /// <summary>The pool record to write (null: unchanged).</summary>
    public PoolRecord? Pool;
    internal readonly List<BsonDocument> Inodes = new(), Dirents = new(), Chunks = new(), SpaceMaps = new(), Snapshots = new();
    /// <summary>Record ids (<c>_id</c>) to delete: versions no generation sees any more.</summary>
    public readonly List<long> DeletedInodes = new(), DeletedDirents = new(), DeletedChunks = new(), DeletedSpaceMaps = new();
    /// <summary>Snapshots to delete, by generation (their <c>_id</c>).</summary>
    public readonly List<long> DeletedSnapshots = new();
    /// <summary>Blocks the log cleaner moved, sorted by device and address, not overlapping: applied after every
    /// other change, to every chunk document that maps them (format.md 6, "Relocation").</summary>
    public readonly List<Relocation> Relocations = new();
    /// <summary>Filled by the commit: the live chunks (ino, index) whose stored map <see cref="Relocations"/> changed.</summary>
    public readonly List<(long Ino, long Index)> RelocatedLive = new();
    /// <summary>Device table rows to write (added devices, state changes) and to delete (removed devices), by cookie.</summary>
    internal readonly List<BsonDocument> Devices = new();
    public readonly List<uint> DeletedDevices = new();
    public void Add(DeviceRecord r) => Devices.Add(r.ToBson());
    /// <summary>Versions that stop being live: (kind, rid, death).</summary>
    public readonly List<(RecordKind Kind, long Rid, long Death)> Retired = new();

    public void Add(InodeRecord r) => Inodes.Add(r.ToBson());
    public void Add(DirentRecord r) => Dirents.Add(r.ToBson());
    public void Add(ChunkRecord r) => Chunks.Add(r.ToBson());
    public void Add(SpaceMapRecord r) => SpaceMaps.Add(r.ToBson());
    internal void Add(SnapshotRecord r) => Snapshots.Add(r.ToBson());

    /// <summary>Records that <paramref name="r"/> (a version some snapshot shares) stops being live at
    /// generation <paramref name="death"/>: its stored <c>death</c> is set, nothing else changes.</summary>
    public void Retire(VersionedRecord r, long death) => Retired.Add((r switch
    {
        InodeRecord => RecordKind.Inode,
        DirentRecord => RecordKind.Dirent,
        ChunkRecord => RecordKind.Chunk,
        _ => throw new ArgumentException($"not a versioned record kind: {r.GetType().Name}", nameof(r)),
    }, r.Rid, death));

    public int Count => Inodes.Count + Dirents.Count + Chunks.Count + SpaceMaps.Count + Snapshots.Count + DeletedInodes.Count
        + DeletedDirents.Count + DeletedChunks.Count + DeletedSpaceMaps.Count + DeletedSnapshots.Count + Retired.Count + Devices.Count + DeletedDevices.Count;
}
