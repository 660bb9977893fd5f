using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The copy-on-write rule for metadata records (format.md, "Generations") and the changes it has made since
/// the last commit. Every record carries [birth, death). A record born at or before the newest snapshot's
/// generation (<see cref="NewestSnapshotGen"/>) is shared with a snapshot and is never changed: changing it
/// retires it (death = live generation) and writes a new version under a new record id. Younger records are
/// private to the live tree and change in place; removing one deletes it (and, for a chunk, drops its
/// references on the blocks it maps). Taking a snapshot therefore only records the live generation and bumps
/// it: constant time.
/// <para>Owns the write-behind set: the dirty inodes, directory entries and chunks, the retirements and
/// deletions, and the blocks written since the last commit. A commit takes all of it at once
/// (<see cref="Gather"/>). The records themselves live in the <see cref="LiveTreeCache"/>; the pool record
/// (record ids, the live generation, the commit sequence) is the engine's and is read and advanced here.</para>
/// <para>Threading: not thread-safe; every member is called with the engine's <c>_lock</c> held.</para>
/// </summary>
internal sealed class RecordVersioner(PoolRecord pool, LiveTreeCache cache, SpaceAllocator space, MappingInvalidations mappings)
{
    private readonly HashSet<LiveInode> _dirtyInodes = new();
    private readonly HashSet<DirentRecord> _dirtyDirents = new();
    private readonly HashSet<ChunkRecord> _dirtyChunks = new();
    private readonly MetadataBatch _removals = new();

    /// <summary>The newest snapshot's generation (0: none): records born at or before it are shared.</summary>
    public long NewestSnapshotGen { get; set; }

    /// <summary>Data blocks written into files since the last commit (the block threshold of group commit).</summary>
    public long DirtyBlocks { get; private set; }

    public void AddDirtyBlocks(long blocks) => DirtyBlocks += blocks;

    /// <summary>Changed records waiting for the next commit, for its record threshold, a changed chunk counted as
    /// <see cref="CacheBudget.ChunkRecordWeight"/> records (its document is mostly its 4 KiB checksum array). A chunk
    /// of small files' data is a record of its own each, which the block threshold would only meet after 64 Ki files.</summary>
    public int DirtyRecords => _dirtyInodes.Count + _dirtyDirents.Count + _removals.Count + CacheBudget.ChunkRecordWeight * _dirtyChunks.Count;

    public bool HasChanges => _dirtyInodes.Count + _dirtyDirents.Count + _dirtyChunks.Count + _removals.Count > 0;

    public bool IsDirty(ChunkRecord c) => _dirtyChunks.Contains(c);

    /// <summary>The chunks changed since the last commit (the cleaner points them at moved blocks).</summary>
    public IEnumerable<ChunkRecord> DirtyChunks => _dirtyChunks;

    public long NewRid() => pool.NextRid++;

    public bool SharedWithSnapshot(VersionedRecord r) => r.Birth <= NewestSnapshotGen;

    /// <summary>Marks <paramref name="li"/> changed in the current commit group (it cannot be evicted before that commits).</summary>
    public void Touch(LiveInode li) => li.Touched = pool.CommitSeq;

    /// <summary>Takes out every change since the last commit (the dirty state is empty afterwards).</summary>
    public MetadataBatch Gather()
    {
        var b = new MetadataBatch();
        b.Retired.AddRange(_removals.Retired);
        b.DeletedInodes.AddRange(_removals.DeletedInodes);
        b.DeletedDirents.AddRange(_removals.DeletedDirents);
        b.DeletedChunks.AddRange(_removals.DeletedChunks);
        _removals.Retired.Clear(); _removals.DeletedInodes.Clear();
        _removals.DeletedDirents.Clear(); _removals.DeletedChunks.Clear();
        foreach (var li in _dirtyInodes) b.Add(li.Rec);
        foreach (var d in _dirtyDirents) b.Add(d);
        foreach (var c in _dirtyChunks) b.Add(c);
        _dirtyInodes.Clear(); _dirtyDirents.Clear(); _dirtyChunks.Clear();
        DirtyBlocks = 0;
        return b;
    }

    // ---------------------------------------------------------------- inodes

    /// <summary>The inode record of <paramref name="li"/>, made safe to change (copy-on-write if a
    /// snapshot shares it) and marked dirty.</summary>
    public InodeRecord MutableInode(LiveInode li)
    {
        if (SharedWithSnapshot(li.Rec))
        {
            Retire(li.Rec);
            var c = li.Rec.Clone();
            c.Rid = NewRid(); c.Birth = pool.LiveGen; c.Death = FormatConstants.Forever;
            li.Rec = c;
        }
        _dirtyInodes.Add(li);
        Touch(li);
        return li.Rec;
    }

    /// <summary>Registers a new live inode (its record born now) in the cache and the write-behind set.</summary>
    public void AddInode(LiveInode li)
    {
        cache.Add(li);
        _dirtyInodes.Add(li);
        Touch(li);
    }

    /// <summary>Removes the inode from the live tree.</summary>
    public void RemoveInode(LiveInode li)
    {
        Remove(li.Rec);
        _dirtyInodes.Remove(li);
        li.Deleted = true;
        cache.NoteDeleted();
        Touch(li);
    }

    // ---------------------------------------------------------------- directory entries

    /// <summary>Adds entry <paramref name="name"/> → <paramref name="child"/> to <paramref name="dir"/> at its next readdir position.</summary>
    public DirentRecord AddDirent(LiveInode dir, string name, long child, uint type)
    {
        var parent = MutableInode(dir);
        var d = new DirentRecord
        {
            Rid = NewRid(), Birth = pool.LiveGen, Dir = dir.Ino, Name = name, Pos = parent.NextPos++, Child = child, Type = type,
        };
        cache.DirOf(dir).Add(d);
        _dirtyDirents.Add(d);
        return d;
    }

    /// <summary>Registers a directory entry the caller made (born now) and put in its directory's state.</summary>
    public void AddDirent(DirentRecord d) => _dirtyDirents.Add(d);

    public void RemoveDirent(LiveInode dir, DirentRecord d)
    {
        cache.DirOf(dir).Remove(d);
        Touch(dir);
        Remove(d);
        _dirtyDirents.Remove(d);
    }

    // ---------------------------------------------------------------- chunks

    /// <summary>The live chunk <paramref name="index"/> of <paramref name="li"/>, made private (a shared one is
    /// retired and copied, taking a reference on every block it maps) and dirty; created if absent.</summary>
    public ChunkRecord MutableChunk(LiveInode li, long index)
    {
        var c = cache.Chunk(li, index);
        if (c == null)
        {
            c = new ChunkRecord { Rid = NewRid(), Birth = pool.LiveGen, Ino = li.Ino, Index = index };
            cache.CacheChunk(li, index, c);
        }
        else if (SharedWithSnapshot(c))
        {
            Retire(c);
            var n = c.CloneAsNewVersion();
            n.Rid = NewRid(); n.Birth = pool.LiveGen; n.Death = FormatConstants.Forever;
            foreach (var e in n.Extents) space.AddRef(e.Device, e.Address, e.Count);
            li.Chunks[index] = n;
            c = n;
        }
        _dirtyChunks.Add(c);
        Touch(li);
        return c;
    }

    /// <summary>Registers a chunk the caller made (born now, a copy of one that maps the same blocks): it takes a
    /// reference on every block it maps.</summary>
    public void AddChunkCopy(ChunkRecord n)
    {
        foreach (var e in n.Extents) space.AddRef(e.Device, e.Address, e.Count);
        _dirtyChunks.Add(n);
    }

    /// <summary>Removes a live chunk from the live tree (a shared one is retired and keeps its references).</summary>
    public void DropChunk(LiveInode li, ChunkRecord c)
    {
        Remove(c);
        _dirtyChunks.Remove(c);
        li.Chunks[c.Index] = null;
        Touch(li);
    }

    /// <summary>Forgets a private chunk that maps nothing any more (its references are already dropped).</summary>
    public void DropEmptyChunk(LiveInode li, ChunkRecord c)
    {
        _removals.DeletedChunks.Add(c.Rid);
        _dirtyChunks.Remove(c);
        li.Chunks[c.Index] = null;
    }

    // ---------------------------------------------------------------- removal of any version

    /// <summary>Ends a live version: retired when a snapshot shares it, deleted otherwise (a chunk then drops
    /// its references). A chunk's mapping change is recorded for the invalidation listeners.</summary>
    public void Remove(VersionedRecord r)
    {
        if (r is ChunkRecord c) mappings.Record(c.Ino, c.Index * FormatConstants.ChunkBlocks, FormatConstants.ChunkBlocks);
        if (SharedWithSnapshot(r)) { Retire(r); return; }
        switch (r)
        {
            case InodeRecord: _removals.DeletedInodes.Add(r.Rid); break;
            case DirentRecord: _removals.DeletedDirents.Add(r.Rid); break;
            case ChunkRecord ch:
                foreach (var e in ch.Extents) space.Release(e.Device, e.Address, e.Count);
                _removals.DeletedChunks.Add(r.Rid);
                break;
        }
    }

    /// <summary>Deletes versions no generation sees any more (a snapshot deletion's purge: retired versions); the
    /// chunks drop their references.</summary>
    public void Purge(IEnumerable<long> inodes, IEnumerable<long> dirents, IEnumerable<ChunkRecord> chunks)
    {
        _removals.DeletedInodes.AddRange(inodes);
        _removals.DeletedDirents.AddRange(dirents);
        foreach (var c in chunks)
        {
            foreach (var e in c.Extents) space.ReleaseRetired(e.Device, e.Address, e.Count);
            _removals.DeletedChunks.Add(c.Rid);
        }
    }

    /// <summary>Ends a shared version's life in the live tree (its death is the live generation); a chunk's blocks
    /// lose a live mapping and keep the mapping (a snapshot still maps them).</summary>
    private void Retire(VersionedRecord r)
    {
        _removals.Retire(r, pool.LiveGen);
        if (r is ChunkRecord c) foreach (var e in c.Extents) space.Retire(e.Device, e.Address, e.Count);
    }
}
