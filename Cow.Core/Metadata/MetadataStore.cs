using Cow.Core.Format;
using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>
/// The pool's metadata file (format.md, "Metadata file"): owns the LiteDB database, its collections and
/// their indexes, and is the only type that opens LiteDB or names a collection. Callers (the engine, fsck,
/// mkfs) speak in record types (Metadata/Records); the BSON mapping of each is in Metadata/Bson, and a
/// <see cref="MetadataBatch"/> holds what one commit writes.
/// Every commit is one LiteDB transaction followed by a checkpoint on fsyncing streams, so it is
/// durable when <see cref="Commit"/> returns. Lookups go by index; only the whole-collection reads
/// (<c>Load*</c> of the pool, devices, snapshots and space maps at open, and fsck's <c>All*</c>) scan.
/// Threading: <see cref="Commit"/> must not overlap itself (the engine calls it under its commit lock).
/// Reads (the engine makes them under its state lock) may overlap a commit: LiteDB locks internally and a
/// read outside the committing thread's transaction sees committed data only.
/// </summary>
internal sealed class MetadataStore : IDisposable
{
    private const string InodesName = "inodes", DirentsName = "dirents", ChunksName = "chunks", SpaceMapsName = "spacemaps",
        SnapshotsName = "snapshots", DevicesName = "devices", PoolName = "pool";

    private LiteDatabase _db;
    private readonly Stream _data, _log;
    private ILiteCollection<BsonDocument> _pool, _devices, _snapshots, _inodes, _dirents, _chunks, _spacemaps;

    /// <summary>Number of LiteDB transactions committed since open (what the "few commits" test counts).</summary>
    public long CommitCount { get; private set; }

    private MetadataStore(Stream data, Stream log)
    {
        _data = data; _log = log;
        (_db, _pool, _devices, _snapshots, _inodes, _dirents, _chunks, _spacemaps) = Connect(data, log);
    }

    private static (LiteDatabase, ILiteCollection<BsonDocument>, ILiteCollection<BsonDocument>, ILiteCollection<BsonDocument>, ILiteCollection<BsonDocument>,
        ILiteCollection<BsonDocument>, ILiteCollection<BsonDocument>, ILiteCollection<BsonDocument>) Connect(Stream data, Stream log)
    {
        // LiteDB writes the log on a background task that hangs every later checkpoint if a write there
        // throws: the latch turns such a failure into one the next checkpoint reports (LogWriteLatchStream).
        var db = new LiteDatabase(data, new BsonMapper(), new LogWriteLatchStream(log));
        return (db, db.GetCollection(PoolName), db.GetCollection(DevicesName), db.GetCollection(SnapshotsName), db.GetCollection(InodesName),
            db.GetCollection(DirentsName), db.GetCollection(ChunksName), db.GetCollection(SpaceMapsName));
    }

    /// <summary>Bytes of LiteDB's page cache: LiteDB 5 keeps every page it read or wrote in memory and never gives any
    /// back while the database is open (LiteDB issue 2813), so a pool's metadata would stay cached whole.</summary>
    public long CacheBytes()
    {
        var info = _db.GetCollection("$database").FindAll().FirstOrDefault();
        return info != null && info.TryGetValue("cache", out var cache) && cache.IsDocument && cache.AsDocument.TryGetValue("extendPages", out var pages)
            ? pages.AsInt64 * 8192 : 0;
    }

    /// <summary>Gives LiteDB's page cache back (<see cref="CacheBytes"/>): closes the database and opens it again on the
    /// same streams (committed, so nothing is lost; the next reads load pages again). The caller makes sure nothing
    /// else uses the store meanwhile and no transaction is open (the engine: commit and state locks held).</summary>
    public void ReleaseCache()
    {
        _db.Dispose();
        (_db, _pool, _devices, _snapshots, _inodes, _dirents, _chunks, _spacemaps) = Connect(_data, _log);
        CacheReleases++;
    }

    /// <summary>How many times <see cref="ReleaseCache"/> ran since open.</summary>
    public long CacheReleases { get; private set; }

    /// <summary>Opens the metadata file pair at <paramref name="path"/> (and path-log) for writing.</summary>
    public static (Stream Data, Stream Log) OpenFiles(string path, bool create)
    {
        var mode = create ? FileMode.CreateNew : FileMode.Open;
        var data = new DurableFileStream(path, mode);
        var logPath = LogPath(path);
        var log = new DurableFileStream(logPath, File.Exists(logPath) && !create ? FileMode.Open : FileMode.OpenOrCreate) { FlushBeforeTruncate = data };
        return (data, log);
    }

    public static string LogPath(string path) => Path.Combine(Path.GetDirectoryName(path) ?? ".", Path.GetFileNameWithoutExtension(path) + "-log" + Path.GetExtension(path));

    public static MetadataStore Create(Stream data, Stream log, PoolRecord pool, IEnumerable<DeviceRecord> devices)
    {
        var s = new MetadataStore(data, log);
        s._inodes.EnsureIndex("ino"); s._inodes.EnsureIndex("death"); s._inodes.EnsureIndex("nlink");
        s._dirents.EnsureIndex("dir"); s._dirents.EnsureIndex("death");
        s._chunks.EnsureIndex("key"); s._chunks.EnsureIndex("death");
        s.EnsureLaterIndexes();
        var batch = new MetadataBatch { Pool = pool };
        s._db.BeginTrans();
        foreach (var d in devices) s._devices.Upsert(d.ToBson());
        s._db.Commit();
        s.Commit(batch);
        return s;
    }

    /// <summary>Opens existing metadata; throws <see cref="InvalidDataException"/> naming the problem if it is
    /// not a Cow metadata file.</summary>
    public static MetadataStore Open(Stream data, Stream log)
    {
        // On a file that is not a LiteDB database, LiteDB fails with whatever its parsing hits
        // (LiteException, but also ArgumentOutOfRangeException and the like): all of them mean "not ours".
        MetadataStore s;
        try { s = new MetadataStore(data, log); }
        catch (Exception e) when (e is not (IOException or InvalidDataException or OutOfMemoryException))
        { throw new InvalidDataException($"is not a readable Cow metadata file ({e.Message})", e); }
        try
        {
            if (s._pool.FindById(1) is null) throw new InvalidDataException("holds no Cow pool record (not a Cow metadata file)");
        }
        catch (Exception e) when (e is not (IOException or InvalidDataException or OutOfMemoryException))
        { s.Dispose(); throw new InvalidDataException($"is corrupt ({e.Message})", e); }
        catch { s.Dispose(); throw; }
        return s;
    }

    /// <summary>The <c>birth</c> indexes of inodes, dirents and chunks (rollback and diff find records by
    /// them) and the <c>child</c> index of dirents (diff finds the names of a changed inode by it). Pools made
    /// before them get them at their first writable open; LiteDB does nothing when an index exists.</summary>
    public void EnsureLaterIndexes()
    {
        bool created = _inodes.EnsureIndex("birth") | _dirents.EnsureIndex("birth") | _chunks.EnsureIndex("birth")
            | _dirents.EnsureIndex("child") | _inodes.EnsureIndex("prealloc_blocks") | _chunks.EnsureIndex("segs", "$.segs[*]");
        // As after every commit: into the data file (fsynced), log truncated.
        if (created) _db.Checkpoint();
    }

    /// <summary>
    /// Gives every chunk document its <c>segs</c> (format.md 5.6) and sets the pool's <c>chunk_segs</c>, in one
    /// transaction: for a pool whose pool document lacks <c>chunk_segs</c> (made before <c>segs</c>, or last
    /// written by a build that predates it, which may have written chunks without <c>segs</c>). The log
    /// cleaner finds the chunks that map a segment by <c>segs</c>, so none may lack it. Returns the documents rewritten.
    /// </summary>
    public long FillChunkSegs(PoolRecord pool)
    {
        long n = 0;
        if (!_db.BeginTrans()) throw new InvalidOperationException("a metadata transaction is already open on this thread");
        try
        {
            foreach (var d in _chunks.FindAll().ToList())
            {
                var segs = ChunkBson.SegsOf(ChunkBson.FromBson(d).Extents);
                if (d.TryGetValue("segs", out var old) && old == segs) continue;
                d["segs"] = segs;
                _chunks.Update(d);
                n++;
            }
            pool.ChunkSegs = true;
            _pool.Upsert(pool.ToBson());
            _db.Commit();
        }
        catch
        {
            _db.Rollback();
            pool.ChunkSegs = false;
            throw;
        }
        _db.Checkpoint();
        CommitCount++;
        return n;
    }

    /// <summary>fsck: every chunk document whose <c>segs</c> is missing or is not the segments its <c>map</c> covers.</summary>
    public IEnumerable<(long Rid, long Ino, string Problem)> ChunkSegsProblems(long releaseCacheOver = 0)
    {
        foreach (var d in Scan(() => _chunks, releaseCacheOver))
        {
            var want = ChunkBson.SegsOf(ChunkBson.FromBson(d).Extents);
            if (!d.TryGetValue("segs", out var have)) yield return (d["_id"].AsInt64, d["ino"].AsInt64, "has no segs");
            else if (have != want) yield return (d["_id"].AsInt64, d["ino"].AsInt64, $"segs {have} differs from the segments its map covers {want}");
        }
    }

    /// <summary>Every chunk version (any generation) that maps a block of segment <paramref name="segment"/> of
    /// device <paramref name="device"/>, by the <c>segs</c> index.</summary>
    public List<ChunkRecord> ChunksMapping(uint device, long segment) =>
        _chunks.Find(BsonExpression.Create("$.segs[*] ANY = @0", Relocation.SegmentKey(device, segment))).Select(ChunkBson.FromBson).ToList();

    /// <summary>Directory entries naming <paramref name="child"/> seen by generation <paramref name="gen"/> (by the child index).</summary>
    public List<DirentRecord> LoadLinks(long child, long gen) => LoadDirents(BsonExpression.Create("$.child = @0", child), gen);

    // Queries are written with parameters (@0, @1): LiteDB caches a parsed, compiled expression by its text
    // and never evicts it. Query.EQ(field, value) puts the value into the text, so every distinct key was
    // parsed and compiled (through the JIT) again, about 1.4 ms a lookup instead of 0.02 ms, and stayed in
    // that cache for the life of the process. The texts below are constant: compiled once.
    // One index range each: LiteDB plans "a > x AND a <= y" as a scan of one bound (for death, every live record)
    // filtered by the other; BETWEEN (inclusive) is read as a single range of the index.
    private static BsonExpression BornIn(long lo, long hi) => BsonExpression.Create("$.birth BETWEEN @0 AND @1", lo + 1, hi);
    private static BsonExpression DiedIn(long lo, long hi) => BsonExpression.Create("$.death BETWEEN @0 AND @1", lo + 1, hi);

    /// <summary>Directory entries <paramref name="query"/> finds (by an index), seen by generation <paramref name="gen"/>.</summary>
    private List<DirentRecord> LoadDirents(BsonExpression query, long gen)
    {
        var list = new List<DirentRecord>();
        foreach (var d in _dirents.Find(query))
        {
            var r = DirentBson.FromBson(d);
            if (r.VisibleAt(gen)) list.Add(r);
        }
        return list;
    }

    /// <summary>What differs between generations <paramref name="lo"/> &lt; <paramref name="hi"/>: the inode numbers
    /// of inode and chunk versions, and the entry versions, born or dead in (lo, hi] (by the birth and death
    /// indexes): every record one of the two generations sees and the other does not is among them.</summary>
    public (HashSet<long> Inos, List<DirentRecord> Dirents) FindChangedBetween(long lo, long hi)
    {
        var born = BornIn(lo, hi);
        var died = DiedIn(lo, hi);
        var inos = new HashSet<long>();
        foreach (var q in new[] { born, died })
        {
            foreach (var d in _inodes.Find(q)) inos.Add(d["ino"].AsInt64);
            foreach (var d in _chunks.Find(q)) inos.Add(d["ino"].AsInt64);
        }
        var dirents = new Dictionary<long, DirentRecord>();
        foreach (var q in new[] { born, died })
            foreach (var d in _dirents.Find(q)) dirents.TryAdd(d["_id"].AsInt64, DirentBson.FromBson(d));
        return (inos, dirents.Values.ToList());
    }

    /// <summary>Live records (death = forever) born after generation <paramref name="gen"/> (by the birth index).</summary>
    public (List<InodeRecord> Inodes, List<DirentRecord> Dirents, List<ChunkRecord> Chunks) FindLiveBornAfter(long gen)
    {
        var q = BsonExpression.Create("$.birth > @0", gen);
        return (_inodes.Find(q).Where(d => d["death"].AsInt64 == FormatConstants.Forever).Select(InodeBson.FromBson).ToList(),
            _dirents.Find(q).Where(d => d["death"].AsInt64 == FormatConstants.Forever).Select(DirentBson.FromBson).ToList(),
            _chunks.Find(q).Where(d => d["death"].AsInt64 == FormatConstants.Forever).Select(ChunkBson.FromBson).ToList());
    }

    /// <summary>Versions born at generation <paramref name="gen"/> (by the birth index): a receive's staged versions.</summary>
    public (List<InodeRecord> Inodes, List<DirentRecord> Dirents, List<ChunkRecord> Chunks) FindBornAt(long gen)
    {
        var q = BornIn(gen - 1, gen);
        return (_inodes.Find(q).Select(InodeBson.FromBson).ToList(), _dirents.Find(q).Select(DirentBson.FromBson).ToList(),
            _chunks.Find(q).Select(ChunkBson.FromBson).ToList());
    }

    /// <summary>Whether any inode version is born at generation <paramref name="gen"/> (by the birth index).</summary>
    public bool AnyInodeBornAt(long gen) => _inodes.Find(BornIn(gen - 1, gen)).Any();

    /// <summary>Directory entries born at generation <paramref name="gen"/> (a receive's staged entries).</summary>
    public List<DirentRecord> FindDirentsBornAt(long gen) => _dirents.Find(BornIn(gen - 1, gen)).Select(DirentBson.FromBson).ToList();

    /// <summary>Versions that died at generation <paramref name="gen"/> (by the death index): those a receive replaced.</summary>
    public (List<InodeRecord> Inodes, List<DirentRecord> Dirents, List<ChunkRecord> Chunks) FindDiedAt(long gen)
    {
        var q = DiedIn(gen - 1, gen);
        return (_inodes.Find(q).Select(InodeBson.FromBson).ToList(), _dirents.Find(q).Select(DirentBson.FromBson).ToList(),
            _chunks.Find(q).Select(ChunkBson.FromBson).ToList());
    }

    /// <summary>Records generation <paramref name="gen"/> sees that died at or before <paramref name="deathUpTo"/>
    /// (by the death index): birth &lt;= gen &lt; death &lt;= deathUpTo.</summary>
    public (List<InodeRecord> Inodes, List<DirentRecord> Dirents, List<ChunkRecord> Chunks) FindSeenAtDiedBy(long gen, long deathUpTo)
    {
        var q = DiedIn(gen, deathUpTo);
        return (_inodes.Find(q).Where(d => d["birth"].AsInt64 <= gen).Select(InodeBson.FromBson).ToList(),
            _dirents.Find(q).Where(d => d["birth"].AsInt64 <= gen).Select(DirentBson.FromBson).ToList(),
            _chunks.Find(q).Where(d => d["birth"].AsInt64 <= gen).Select(ChunkBson.FromBson).ToList());
    }

    public PoolRecord LoadPool() => PoolBson.FromBson(_pool.FindById(1));
    public List<DeviceRecord> LoadDevices() => _devices.FindAll().Select(DeviceBson.FromBson).OrderBy(d => d.Cookie).ToList();
    internal List<SnapshotRecord> LoadSnapshots() => _snapshots.FindAll().Select(SnapshotBson.FromBson).OrderBy(s => s.Gen).ToList();
    /// <summary>Every space-map document, read as they are enumerated (a pool's space maps are not held at once).</summary>
    public IEnumerable<SpaceMapRecord> LoadSpaceMaps() => _spacemaps.FindAll().Select(SpaceMapBson.FromBson);

    /// <summary>The space-map document of one segment, or null when it has none (every count 0).</summary>
    public SpaceMapRecord? LoadSpaceMap(uint device, long segment) =>
        _spacemaps.FindById(SpaceMapRecord.Id(device, segment)) is { } d ? SpaceMapBson.FromBson(d) : null;

    public InodeRecord? LoadInode(long ino, long gen)
    {
        foreach (var d in _inodes.Find(BsonExpression.Create("$.ino = @0", ino)))
        {
            var r = InodeBson.FromBson(d);
            if (r.VisibleAt(gen)) return r;
        }
        return null;
    }

    public List<DirentRecord> LoadDirectory(long dir, long gen) => LoadDirents(BsonExpression.Create("$.dir = @0", dir), gen);

    public ChunkRecord? LoadChunk(long ino, long index, long gen)
    {
        foreach (var d in _chunks.Find(BsonExpression.Create("$.key = @0", ChunkRecord.Key(ino, index))))
        {
            var r = ChunkBson.FromBson(d);
            if (r.VisibleAt(gen)) return r;
        }
        return null;
    }

    public List<ChunkRecord> LoadChunks(long ino, long gen)
    {
        var list = new List<ChunkRecord>();
        foreach (var d in _chunks.Find(BsonExpression.Create("$.key BETWEEN @0 AND @1", ChunkRecord.Key(ino, 0), ChunkRecord.Key(ino, long.MaxValue))))
        {
            var r = ChunkBson.FromBson(d);
            if (r.VisibleAt(gen)) list.Add(r);
        }
        return list;
    }

    /// <summary>Live inodes no directory names (unlinked while open when the pool was last closed), by the nlink index.</summary>
    public List<InodeRecord> Orphans(long gen) =>
        _inodes.Find(BsonExpression.Create("$.nlink = @0", 0L)).Select(InodeBson.FromBson).Where(r => r.VisibleAt(gen)).ToList();

    /// <summary>Inodes seen by generation <paramref name="gen"/> that hold fallocated space (<c>prealloc_blocks</c> &gt; 0),
    /// by the prealloc_blocks index (without it, for a read-only open of a pool made before it, by a scan).</summary>
    public List<InodeRecord> WithPrealloc(long gen) =>
        _inodes.Find(BsonExpression.Create("$.prealloc_blocks > @0", 0L)).Select(InodeBson.FromBson).Where(r => r.VisibleAt(gen)).ToList();

    public IEnumerable<InodeRecord> AllInodes(long releaseCacheOver = 0) => Scan(() => _inodes, releaseCacheOver).Select(InodeBson.FromBson);
    public IEnumerable<DirentRecord> AllDirents(long releaseCacheOver = 0) => Scan(() => _dirents, releaseCacheOver).Select(DirentBson.FromBson);
    public IEnumerable<ChunkRecord> AllChunks(long releaseCacheOver = 0) => Scan(() => _chunks, releaseCacheOver).Select(ChunkBson.FromBson);

    /// <summary>Documents read per batch of a <see cref="Scan"/>.</summary>
    private const int ScanBatch = 4096;

    /// <summary>Every document of a collection in <c>_id</c> order, read a batch at a time; with
    /// <paramref name="releaseCacheOver"/> above 0, LiteDB's page cache is given back between batches once it holds more
    /// bytes than that (<see cref="ReleaseCache"/>: the caller must hold the store alone, as fsck does).</summary>
    private IEnumerable<BsonDocument> Scan(Func<ILiteCollection<BsonDocument>> collection, long releaseCacheOver)
    {
        BsonValue last = BsonValue.MinValue;
        while (true)
        {
            var batch = collection().Find(Query.GT("_id", last), 0, ScanBatch).ToList();
            foreach (var d in batch) yield return d;
            if (batch.Count < ScanBatch) yield break;
            last = batch[^1]["_id"];
            TrimCache(releaseCacheOver);
        }
    }

    /// <summary>Gives LiteDB's page cache back when it holds more than <paramref name="bytes"/> (0: never); true when it
    /// did. Only with the store held alone (the engine's commit and state locks).</summary>
    public bool TrimCache(long bytes)
    {
        if (bytes <= 0 || CacheBytes() <= bytes) return false;
        ReleaseCache();
        return true;
    }

    /// <summary>Up to <paramref name="limit"/> of the records a pending purge removes (<see cref="PendingPurge.Covers"/>),
    /// inodes first, then entries, then chunks, by the death index: each call reads the records that died in the range
    /// from its start, so it costs what was removed before plus what it returns (the versions a purge leaves there,
    /// seen by the view before it, are read again by every call). Reading stops at the limit: LiteDB keeps every page
    /// a query reads until the next commit gives them back.</summary>
    public (List<long> Inodes, List<long> Dirents, List<ChunkRecord> Chunks) FindPurgeable(PendingPurge p, int limit)
    {
        var q = DiedIn(p.Gen, p.Next);
        IEnumerable<BsonDocument> Found(ILiteCollection<BsonDocument> c) => c.Find(q).Where(d => d["birth"].AsInt64 > p.Prev);
        var inodes = Found(_inodes).Take(limit).Select(d => d["_id"].AsInt64).ToList();
        var dirents = Found(_dirents).Take(limit - inodes.Count).Select(d => d["_id"].AsInt64).ToList();
        var chunks = Found(_chunks).Take(limit - inodes.Count - dirents.Count).Select(ChunkBson.FromBson).ToList();
        return (inodes, dirents, chunks);
    }

    /// <summary>Applies <paramref name="batch"/> in one transaction and makes it durable.</summary>
    public void Commit(MetadataBatch batch)
    {
        if (!_db.BeginTrans()) throw new InvalidOperationException("a metadata transaction is already open on this thread");
        try
        {
            foreach (var (kind, rid, death) in batch.Retired)
            {
                var (c, coll) = kind switch
                {
                    RecordKind.Inode => (_inodes, InodesName),
                    RecordKind.Dirent => (_dirents, DirentsName),
                    _ => (_chunks, ChunksName),
                };
                var d = c.FindById(rid) ?? throw new InvalidDataException($"metadata: {coll} record {rid} to retire is missing");
                d["death"] = death;
                c.Update(d);
            }
            foreach (var id in batch.DeletedInodes) _inodes.Delete(id);
            foreach (var id in batch.DeletedDirents) _dirents.Delete(id);
            foreach (var id in batch.DeletedChunks) _chunks.Delete(id);
            foreach (var id in batch.DeletedSpaceMaps) _spacemaps.Delete(id);
            foreach (var n in batch.DeletedSnapshots) _snapshots.Delete(n);
            if (batch.Inodes.Count > 0) _inodes.Upsert(batch.Inodes);
            if (batch.Dirents.Count > 0) _dirents.Upsert(batch.Dirents);
            if (batch.Chunks.Count > 0) _chunks.Upsert(batch.Chunks);
            if (batch.SpaceMaps.Count > 0) _spacemaps.Upsert(batch.SpaceMaps);
            if (batch.Snapshots.Count > 0) _snapshots.Upsert(batch.Snapshots);
            if (batch.Relocations.Count > 0) Relocate(batch);
            foreach (var c in batch.DeletedDevices) _devices.Delete((int)c);
            if (batch.Devices.Count > 0) _devices.Upsert(batch.Devices);
            if (batch.Pool != null) _pool.Upsert(batch.Pool.ToBson());
            _db.Commit();
        }
        catch
        {
            _db.Rollback();
            throw;
        }
        // The commit's log pages were fsynced by LiteDB's flush (DurableFileStream); the checkpoint copies
        // them into the data file, which is fsynced before the log is truncated.
        _db.Checkpoint();
        CommitCount++;
    }

    /// <summary>Inside a commit, after its other changes: points every chunk document (any generation) that maps
    /// a block <see cref="MetadataBatch.Relocations"/> moved at the new place (found by <c>segs</c>), and lists the
    /// live ones in <see cref="MetadataBatch.RelocatedLive"/>.</summary>
    private void Relocate(MetadataBatch batch)
    {
        var moves = batch.Relocations;
        var keys = new SortedSet<long>();
        foreach (var m in moves)
            for (long s = m.FromAddress / FormatConstants.SegmentBlocks; s <= (m.FromEnd - 1) / FormatConstants.SegmentBlocks; s++)
                keys.Add(Relocation.SegmentKey(m.FromDevice, s));
        var seen = new HashSet<long>();
        foreach (var key in keys)
            foreach (var d in _chunks.Find(BsonExpression.Create("$.segs[*] ANY = @0", key)).ToList())
            {
                if (!seen.Add(d["_id"].AsInt64)) continue;
                var c = ChunkBson.FromBson(d);
                var moved = Relocation.Apply(c.Extents, moves);
                if (moved == null) continue;
                c.Extents = moved;
                _chunks.Update(c.ToBson());
                if (c.Death == FormatConstants.Forever) batch.RelocatedLive.Add((c.Ino, c.Index));
            }
    }

    public void Dispose()
    {
        _db.Dispose();
        _data.Dispose();
        _log.Dispose();
    }
}
