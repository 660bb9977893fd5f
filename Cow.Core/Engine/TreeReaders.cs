using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>Read access to one tree (the live tree, or a snapshot's frozen one). Every call is made under
/// the engine's state lock.</summary>
internal interface ITreeReader
{
    bool ReadOnly { get; }
    long Gen { get; }
    InodeRecord? Inode(long ino);
    ChunkRecord? Chunk(long ino, long index);
    List<ChunkRecord> Chunks(long ino);
    DirState? Dir(long ino);
}

public sealed partial class Engine
{
    private LiveTreeReader? _liveTree;
    internal ITreeReader LiveTree => _liveTree ??= new LiveTreeReader(this);

    private sealed class LiveTreeReader(Engine e) : ITreeReader
    {
        public bool ReadOnly => false;
        public long Gen => e._pool.LiveGen;
        public InodeRecord? Inode(long ino) => e.Live(ino)?.Rec;
        public ChunkRecord? Chunk(long ino, long index) => e.Live(ino) is { } li ? e.LiveChunk(li, index) : null;
        public List<ChunkRecord> Chunks(long ino) => e.Live(ino) is { } li ? e.LiveChunks(li) : new();
        public DirState? Dir(long ino) => e.Live(ino) is { } li && (li.Rec.Mode & 0xF000) == 0x4000 ? e.DirOf(li) : null;
    }

    internal ITreeReader SnapshotTree(long gen) => _snapCache.View(gen);
}

/// <summary>Caches of snapshot trees, which never change: records are loaded by index and kept until
/// the cache is full (then dropped wholesale) or the snapshot is deleted. Guarded by the engine's lock.</summary>
internal sealed class SnapshotCache(MetadataStore store)
{
    private readonly Dictionary<long, SnapshotTree> _views = new();
    private int _entries;
    private const int MaxEntries = 200_000;

    public ITreeReader View(long gen)
    {
        if (_entries > MaxEntries) { _views.Clear(); _entries = 0; }
        if (!_views.TryGetValue(gen, out var v)) _views[gen] = v = new SnapshotTree(this, store, gen);
        return v;
    }

    public void Forget(long gen) => _views.Remove(gen);

    private sealed class SnapshotTree(SnapshotCache owner, MetadataStore store, long gen) : ITreeReader
    {
        private readonly Dictionary<long, InodeRecord?> _inodes = new();
        private readonly Dictionary<(long, long), ChunkRecord?> _chunks = new();
        private readonly Dictionary<long, List<ChunkRecord>> _allChunks = new();
        private readonly Dictionary<long, DirState> _dirs = new();
        public bool ReadOnly => true;
        public long Gen => gen;

        public InodeRecord? Inode(long ino)
        {
            if (!_inodes.TryGetValue(ino, out var r)) { _inodes[ino] = r = store.LoadInode(ino, gen); owner._entries++; }
            return r;
        }

        public ChunkRecord? Chunk(long ino, long index)
        {
            if (!_chunks.TryGetValue((ino, index), out var c)) { _chunks[(ino, index)] = c = store.LoadChunk(ino, index, gen); owner._entries++; }
            return c;
        }

        public List<ChunkRecord> Chunks(long ino)
        {
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
