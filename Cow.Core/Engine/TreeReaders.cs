using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>Read access to one tree (the live tree, or a snapshot's frozen one). Every call is made under
/// the engine's state lock.</summary>
internal interface ITreeReader
{
    bool ReadOnly { get; }
    long Gen { get; }
    /// <summary>The snapshot was deleted: every further access fails with ESTALE.</summary>
    bool Gone { get; }
    InodeRecord? Inode(long ino);
    ChunkRecord? Chunk(long ino, long index);
    List<ChunkRecord> Chunks(long ino);
    DirState? Dir(long ino);
}

/// <summary>Caches of snapshot trees, which never change: records are loaded by index and kept until
/// the cache is full (then dropped wholesale) or the snapshot is deleted. Guarded by the engine's lock.</summary>
internal sealed class SnapshotCache(MetadataStore store)
{
    private readonly Dictionary<long, SnapshotTree> _views = new();
    private int _entries;
    /// <summary>Records kept before every view's are dropped (<see cref="CacheBudget.SnapshotRecords"/>).</summary>
    public int MaxEntries { get; set; } = 200_000;

    public ITreeReader View(long gen)
    {
        if (_entries > MaxEntries) { foreach (var old in _views.Values) old.Clear(); _entries = 0; }
        if (!_views.TryGetValue(gen, out var v)) _views[gen] = v = new SnapshotTree(this, store, gen) { Gone = _forgotten.Contains(gen) };
        return v;
    }

    /// <summary>Drops every cached record of every view (the cleaner moved blocks they may map); the views stay usable.</summary>
    public void DropCachedRecords()
    {
        foreach (var v in _views.Values) v.Clear();
        _entries = 0;
    }

    public void Forget(long gen)
    {
        if (_views.Remove(gen, out var v)) v.Gone = true;
        _forgotten.Add(gen);
    }

    private readonly HashSet<long> _forgotten = new();

    private sealed class SnapshotTree(SnapshotCache owner, MetadataStore store, long gen) : ITreeReader
    {
        private readonly Dictionary<long, InodeRecord?> _inodes = new();
        private readonly Dictionary<(long, long), ChunkRecord?> _chunks = new();
        private readonly Dictionary<long, List<ChunkRecord>> _allChunks = new();
        private readonly Dictionary<long, DirState> _dirs = new();
        public bool ReadOnly => true;
        public long Gen => gen;
        public bool Gone { get; set; }

        /// <summary>Drops what is cached (the cache is over its budget); the view stays usable.</summary>
        public void Clear() { _inodes.Clear(); _chunks.Clear(); _allChunks.Clear(); _dirs.Clear(); }

        public InodeRecord? Inode(long ino)
        {
            if (Gone) return null;
            if (!_inodes.TryGetValue(ino, out var r)) { _inodes[ino] = r = store.LoadInode(ino, gen); owner._entries++; }
            return r;
        }

        public ChunkRecord? Chunk(long ino, long index)
        {
            if (Gone) return null;
            if (!_chunks.TryGetValue((ino, index), out var c)) { _chunks[(ino, index)] = c = store.LoadChunk(ino, index, gen); owner._entries++; }
            return c;
        }

        public List<ChunkRecord> Chunks(long ino)
        {
            if (Gone) return new();
            if (!_allChunks.TryGetValue(ino, out var l))
            {
                _allChunks[ino] = l = store.LoadChunks(ino, gen);
                l.Sort((a, b) => a.Index.CompareTo(b.Index));
                owner._entries += l.Count + 1;
            }
            return l;
        }

        public DirState? Dir(long ino)
        {
            if (_dirs.TryGetValue(ino, out var d)) return d;
            var rec = Inode(ino);
            if (rec == null || (rec.Mode & 0xF000) != 0x4000) return null;
            d = new DirState();
            foreach (var e in store.LoadDirectory(ino, gen)) d.Add(e);
            _dirs[ino] = d;
            owner._entries += d.Count + 1;
            return d;
        }
    }
}

/// <summary>A snapshot's tree read straight from the store, nothing cached: for a bulk read (a clone's walk) that must
/// not hold the engine's state lock. A snapshot's records never change, so the caller needs only the commit lock
/// (under it no relocation rewrites a chunk and LiteDB's cache is not released); the state lock is not taken.</summary>
internal sealed class StoreTreeReader(MetadataStore store, long gen) : ITreeReader
{
    public bool ReadOnly => true;
    public long Gen => gen;
    public bool Gone => false;
    public InodeRecord? Inode(long ino) => store.LoadInode(ino, gen);
    public ChunkRecord? Chunk(long ino, long index) => store.LoadChunk(ino, index, gen);

    public List<ChunkRecord> Chunks(long ino)
    {
        var l = store.LoadChunks(ino, gen);
        l.Sort((a, b) => a.Index.CompareTo(b.Index));
        return l;
    }

    public DirState? Dir(long ino)
    {
        var rec = Inode(ino);
        if (rec == null || (rec.Mode & 0xF000) != 0x4000) return null;
        var d = new DirState();
        foreach (var e in store.LoadDirectory(ino, gen)) d.Add(e);
        return d;
    }
}
