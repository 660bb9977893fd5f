using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The live tree's metadata in memory: inodes, each with its directory entries and extent-map chunks,
/// loaded on demand from the metadata store at the live generation and trimmed after commits.
/// <para>Owns the inode table, the count of cached chunks (an upper bound, made exact by each trim) and the
/// count of inodes deleted since the last trim. It never changes a record: what changes goes through the
/// <see cref="RecordVersioner"/>, which asks this cache for the records and registers new ones here.</para>
/// <para>Threading: not thread-safe. Every member is called with the engine's <c>_lock</c> held (the
/// engine's summary gives the lock order). Loading from the store happens under that lock too.</para>
/// </summary>
internal sealed class LiveTreeCache(MetadataStore store, PoolRecord pool)
{
    private readonly Dictionary<long, LiveInode> _inodes = new();
    private long _cachedChunks;      // entries in every cached inode's Chunks (approximate upper bound)
    private int _deletedSinceTrim;   // inodes deleted since the last trim
    private LiveTreeReader? _reader;

    /// <summary>The live tree as an <see cref="ITreeReader"/> (its calls, too, under the engine's <c>_lock</c>).</summary>
    public ITreeReader Reader => _reader ??= new LiveTreeReader(this, pool);

    /// <summary>Upper bound on cached live inodes that are clean and closed (trimmed after each commit).</summary>
    public int InodeLimit { get; set; } = 20000;

    /// <summary>Upper bound on cached clean extent-map chunks (trimmed after each commit).</summary>
    public int ChunkLimit { get; set; } = 16384;

    /// <summary>Cached inodes, deleted ones included until the next trim.</summary>
    public IEnumerable<LiveInode> Inodes => _inodes.Values;

    /// <summary>Chunks cached now (clean and dirty, holes included).</summary>
    public long ChunkCount => _inodes.Values.Sum(li => (long)li.Chunks.Count);

    /// <summary>The live inode, loading it if needed; null if it does not exist in the live tree.</summary>
    public LiveInode? Get(long ino)
    {
        if (_inodes.TryGetValue(ino, out var li)) return li.Deleted ? null : li;
        var rec = store.LoadInode(ino, pool.LiveGen);
        if (rec == null) return null;
        li = new LiveInode(rec);
        _inodes[ino] = li;
        return li;
    }

    /// <summary>The cached inode (deleted or not) without loading it.</summary>
    public bool TryGetCached(long ino, out LiveInode li) => _inodes.TryGetValue(ino, out li!);

    /// <summary>Registers an inode the caller just made (create, clone, rollback).</summary>
    public void Add(LiveInode li) => _inodes[li.Ino] = li;

    /// <summary>Counts an inode deleted from the live tree, so that the next trim drops it.</summary>
    public void NoteDeleted() => _deletedSinceTrim++;

    /// <summary>Forgets every cached inode (rollback: they are all clean and unused).</summary>
    public void Clear()
    {
        _inodes.Clear();
        _cachedChunks = 0;
        _deletedSinceTrim = 0;
    }

    /// <summary>The entries of a live directory, loaded on first use.</summary>
    public DirState DirOf(LiveInode dir)
    {
        if (dir.Dir == null)
        {
            var ds = new DirState();
            foreach (var d in store.LoadDirectory(dir.Ino, pool.LiveGen)) ds.Add(d);
            dir.Dir = ds;
        }
        return dir.Dir;
    }

    /// <summary>Live chunk <paramref name="index"/> of <paramref name="li"/>, loaded if needed; null for a hole.</summary>
    public ChunkRecord? Chunk(LiveInode li, long index)
    {
        if (li.Chunks.TryGetValue(index, out var c)) return c;
        c = li.AllChunksLoaded ? null : store.LoadChunk(li.Ino, index, pool.LiveGen);
        CacheChunk(li, index, c);
        return c;
    }

    /// <summary>Caches a chunk (or a known hole, null) of <paramref name="li"/>, counting new entries.</summary>
    public void CacheChunk(LiveInode li, long index, ChunkRecord? c)
    {
        if (li.Chunks.TryAdd(index, c)) _cachedChunks++;
        else li.Chunks[index] = c;
    }

    /// <summary>Every live chunk of the file, in index order.</summary>
    public List<ChunkRecord> Chunks(LiveInode li)
    {
        if (!li.AllChunksLoaded)
        {
            foreach (var c in store.LoadChunks(li.Ino, pool.LiveGen))
                if (!li.Chunks.ContainsKey(c.Index)) CacheChunk(li, c.Index, c);
            li.AllChunksLoaded = true;
        }
        var list = new List<ChunkRecord>();
        foreach (var c in li.Chunks.Values) if (c != null) list.Add(c);
        list.Sort((a, b) => a.Index.CompareTo(b.Index));
        return list;
    }

    /// <summary>After a commit: drops deleted inodes always, clean and closed ones when over
    /// <see cref="InodeLimit"/>, and clean chunks (<paramref name="isDirty"/> false) when over
    /// <see cref="ChunkLimit"/>. An inode touched after the commit's batch was gathered
    /// (<see cref="LiveInode.Touched"/> ≥ <paramref name="committedSeq"/>), pinned, reserved or root stays.</summary>
    public void Trim(long committedSeq, Func<ChunkRecord, bool> isDirty)
    {
        // Constant time unless there is something to do: a commit must not cost O(cached inodes).
        bool over = _inodes.Count > InodeLimit;
        if (over || _deletedSinceTrim > 0)
        {
            var victims = new List<long>();
            bool deletedLeft = false;
            foreach (var (ino, li) in _inodes)
            {
                if (li.Touched >= committedSeq || li.Reservations != 0 || li.Pins != 0 || ino == 1) { deletedLeft |= li.Deleted; continue; }
                if (li.Deleted || (over && li.OpenCount == 0 && li.WriteGate.CurrentCount == 1)) victims.Add(ino);
            }
            int budget = over ? _inodes.Count - InodeLimit / 2 : 0;
            foreach (var ino in victims)
            {
                var li = _inodes[ino];
                if (!li.Deleted) { if (budget <= 0) continue; budget--; }
                _cachedChunks -= li.Chunks.Count;
                _inodes.Remove(ino);
            }
            _deletedSinceTrim = deletedLeft ? 1 : 0;
        }
        // Extent maps: drop clean chunks (dirty ones wait for their commit) until under half the limit.
        if (_cachedChunks <= ChunkLimit) return;
        long cached = 0;
        foreach (var li in _inodes.Values) cached += li.Chunks.Count;
        var drop = new List<long>();
        foreach (var li in _inodes.Values)
        {
            if (cached <= ChunkLimit / 2) break;
            drop.Clear();
            foreach (var (idx, c) in li.Chunks)
                if (c == null || !isDirty(c)) drop.Add(idx);
            if (drop.Count == 0) continue;
            foreach (var idx in drop) li.Chunks.Remove(idx);
            li.AllChunksLoaded = false;
            cached -= drop.Count;
        }
        _cachedChunks = cached;
    }

    private sealed class LiveTreeReader(LiveTreeCache cache, PoolRecord pool) : ITreeReader
    {
        public bool ReadOnly => false;
        public bool Gone => false;
        public long Gen => pool.LiveGen;
        public InodeRecord? Inode(long ino) => cache.Get(ino)?.Rec;
        public ChunkRecord? Chunk(long ino, long index) => cache.Get(ino) is { } li ? cache.Chunk(li, index) : null;
        public List<ChunkRecord> Chunks(long ino) => cache.Get(ino) is { } li ? cache.Chunks(li) : new();
        public DirState? Dir(long ino) => cache.Get(ino) is { } li && (li.Rec.Mode & 0xF000) == 0x4000 ? cache.DirOf(li) : null;
    }
}
