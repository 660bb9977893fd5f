using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The pool's snapshots in memory: their records in generation order and the cache of their frozen trees
/// (<see cref="SnapshotCache"/>). It keeps the <see cref="RecordVersioner"/>'s newest snapshot generation in
/// step with the list, so that whatever a snapshot shares is copied on its next change.
/// <para>Owns the list (loaded at open, changed only by snapshot operations inside a commit) and the tree
/// cache. The operations themselves (create, delete, rollback, clone, restore, diff) are the engine's
/// (<see cref="SnapshotManager"/>, <see cref="SnapshotRestorer"/>): they need the commit pipeline and the
/// versioner too. What leaves Cow.Core is a copy (<see cref="SnapshotRecord.Copy"/>), never a list entry.</para>
/// <para>Threading: not thread-safe; every member is called with the engine's <c>_lock</c> held.</para>
/// </summary>
internal sealed class SnapshotCatalog
{
    private readonly List<SnapshotRecord> _snapshots;
    private readonly SnapshotCache _trees;
    private readonly RecordVersioner _versions;

    public SnapshotCatalog(MetadataStore store, RecordVersioner versions)
    {
        _snapshots = store.LoadSnapshots();
        _trees = new SnapshotCache(store);
        _versions = versions;
        _versions.NewestSnapshotGen = NewestGen;
    }

    /// <summary>Every snapshot, oldest first (the list itself: callers copy what they hand out).</summary>
    public IReadOnlyList<SnapshotRecord> All => _snapshots;

    public int Count => _snapshots.Count;

    public SnapshotRecord this[int index] => _snapshots[index];

    /// <summary>The newest snapshot's generation, 0 when there is none.</summary>
    public long NewestGen => _snapshots.Count > 0 ? _snapshots[^1].Gen : 0;

    /// <summary>Whether a snapshot's generation lies in [<paramref name="from"/>, <paramref name="to"/>).</summary>
    public bool AnyIn(long from, long to)
    {
        if (to <= from) return false;
        int lo = 0, hi = _snapshots.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >> 1;
            if (_snapshots[mid].Gen < from) lo = mid + 1; else hi = mid;
        }
        return lo < _snapshots.Count && _snapshots[lo].Gen < to;
    }

    /// <summary>Records the snapshot trees keep cached before they are dropped.</summary>
    public int RecordLimit { get => _trees.MaxEntries; set => _trees.MaxEntries = value; }

    public int IndexOf(string name) => _snapshots.FindIndex(s => string.Equals(s.Name, name, StringComparison.Ordinal));

    public SnapshotRecord? Find(string name) => _snapshots.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.Ordinal));

    /// <summary>The frozen tree of generation <paramref name="gen"/>.</summary>
    public ITreeReader View(long gen) => _trees.View(gen);

    /// <summary>Forgets the records the frozen trees cached (the cleaner moved blocks they map: they reload).</summary>
    public void DropCachedRecords() => _trees.DropCachedRecords();

    /// <summary>A new snapshot, the newest (inside the commit that records it).</summary>
    public void Add(SnapshotRecord snap)
    {
        _snapshots.Add(snap);
        _versions.NewestSnapshotGen = NewestGen;
    }

    /// <summary>Swaps in a changed copy of snapshot <paramref name="index"/> (properties, holds).</summary>
    public void Replace(int index, SnapshotRecord copy) => _snapshots[index] = copy;

    /// <summary>Drops snapshot <paramref name="index"/> (its records are being purged) and its cached tree.</summary>
    public void RemoveAt(int index)
    {
        long gen = _snapshots[index].Gen;
        _snapshots.RemoveAt(index);
        _versions.NewestSnapshotGen = NewestGen;
        _trees.Forget(gen);
    }
}
