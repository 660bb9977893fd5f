using Cow.Core.Format;
using Cow.Core.Metadata;
using static Cow.Core.Check.FsckViews;

namespace Cow.Core.Check;

/// <summary>
/// fsck's per-view checks (format.md 5.8, invariants 2 and 3) in one sweep over the views in generation order: the
/// set of visible versions is carried from one view to the next, changed by the versions born or dead between them,
/// and only what those changes touch is checked again. The first view and the live tree are checked whole; a view
/// between costs its changes, not the pool, so a thousand snapshots cost about as much as their differences.
/// <para>A problem is reported in the first view that shows it, again in each view whose changes touch it, and in the
/// live tree; duplicates (two visible versions of one inode, entry or chunk) in every view that has them. What is
/// checked is <see cref="FsckViews.CheckEachViewWhole"/>'s (the test oracle), except that link counts are taken over
/// every visible entry (the oracle skips entries it reported as dangling).</para>
/// Not thread-safe; runs on fsck's thread.
/// </summary>
internal sealed class FsckViewSweep
{
    private readonly Engine.Engine _engine;
    private readonly Facts _f;
    private readonly FsckReport _r;
    private readonly IReadOnlyList<SnapshotRecord> _snaps;
    private readonly long _liveGen;
    private readonly int _bs, _shift;

    // Fact indices in birth and in death order, and the sweep's position in each.
    private readonly int[] _inodeBirth, _inodeDeath, _entryBirth, _entryDeath, _chunkBirth, _chunkDeath;
    private int _inodeB, _inodeD, _entryB, _entryD, _chunkB, _chunkD;
    // Every version by directory, by child and by owner (fact indices sorted by that key).
    private readonly int[] _entriesByDir, _entriesByChild, _chunksByIno;

    // The current view: its visible versions and what is counted over them.
    // Sized for every version at once (a resize of a million-entry table would leave the old one as garbage).
    // (Entries and chunks are not kept by key: a version's own generations say whether it is visible, and a
    // duplicate can only appear where one is added, so their keys are checked there, in the directory or file.)
    private readonly VisibleSet<long> _inodes;
    /// <summary>Per inode number: the visible entries naming it, those in it naming directories, the blocks its visible chunks map.</summary>
    private readonly Dictionary<long, Counts> _counts;
    private struct Counts { public int Names, Subdirs; public long Blocks; }
    private long _dirs, _others;
    /// <summary>Inode numbers of directories (an inode number is never given again, so every version of one has its type).</summary>
    private readonly HashSet<long> _directories;

    private FsckViewSweep(Engine.Engine engine, Facts f, FsckReport r, IReadOnlyList<SnapshotRecord> snaps, long liveGen)
    {
        _engine = engine; _f = f; _r = r; _snaps = snaps; _liveGen = liveGen;
        _bs = engine.BlockSize; _shift = System.Numerics.BitOperations.Log2((uint)_bs);
        _inodeBirth = Order(f.Inodes.Count, i => f.Inodes[i].Birth); _inodeDeath = Order(f.Inodes.Count, i => f.Inodes[i].Death);
        _entryBirth = Order(f.Dirents.Count, i => f.Dirents[i].Birth); _entryDeath = Order(f.Dirents.Count, i => f.Dirents[i].Death);
        _chunkBirth = Order(f.Chunks.Count, i => f.Chunks[i].Birth); _chunkDeath = Order(f.Chunks.Count, i => f.Chunks[i].Death);
        _entriesByDir = Order(f.Dirents.Count, i => f.Dirents[i].Dir);
        _entriesByChild = Order(f.Dirents.Count, i => f.Dirents[i].Child);
        _chunksByIno = Order(f.Chunks.Count, i => f.Chunks[i].Ino);
        _directories = f.Inodes.Where(x => x.IsDir).Select(x => x.Ino).ToHashSet();
        _inodes = new(f.Inodes.Count);
        _counts = new(f.Inodes.Count);
    }

    private (long Key, int Index)[] _sortBuffer = [];

    /// <summary>Checks every view of <paramref name="views"/> (ascending, the live generation last).</summary>
    public static void Check(Engine.Engine engine, Facts f, FsckReport r, long[] views, IReadOnlyList<SnapshotRecord> snaps)
    {
        var sweep = new FsckViewSweep(engine, f, r, snaps, views[^1]);
        sweep._sortBuffer = [];
        Fsck.CollectGarbage();
        long prev = 0;   // no version is born at 0
        foreach (long g in views)
        {
            sweep.Advance(prev, g);
            prev = g;
        }
    }

    /// <summary>The indices 0..count-1 sorted by <paramref name="key"/>, then by index (stable: of two visible versions of
    /// one key, the one listed first is the one seen, as in <see cref="FsckViews.CheckEachViewWhole"/>).</summary>
    private int[] Order(int count, Func<int, long> key)
    {
        // One sort buffer for the nine orders: each would otherwise leave as much garbage on the large-object heap.
        if (_sortBuffer.Length < count) _sortBuffer = new (long, int)[Math.Max(count, Math.Max(_f.Inodes.Count, Math.Max(_f.Dirents.Count, _f.Chunks.Count)))];
        var pairs = _sortBuffer.AsSpan(0, count);
        for (int i = 0; i < count; i++) pairs[i] = (key(i), i);
        pairs.Sort();
        var idx = new int[count];
        for (int i = 0; i < count; i++) idx[i] = pairs[i].Index;
        return idx;
    }

    /// <summary>Fact indices of <paramref name="order"/> (sorted by <paramref name="keyOf"/>) whose key is <paramref name="key"/>.</summary>
    private static IEnumerable<int> WithKey(int[] order, Func<int, long> keyOf, long key)
    {
        int lo = 0, hi = order.Length;
        while (lo < hi) { int mid = (lo + hi) >>> 1; if (keyOf(order[mid]) < key) lo = mid + 1; else hi = mid; }
        for (int i = lo; i < order.Length && keyOf(order[i]) == key; i++) yield return order[i];
    }

    private long DirOf(int entry) => _f.Dirents[entry].Dir;
    private long ChildOf(int entry) => _f.Dirents[entry].Child;
    private long OwnerOf(int chunk) => _f.Chunks[chunk].Ino;

    private string ViewName(long g) => g == _liveGen ? "live tree" : $"snapshot '{_snaps.First(s => s.Gen == g).Name}'";

    /// <summary>Moves from view <paramref name="prev"/> to view <paramref name="g"/> and checks what changed.</summary>
    private void Advance(long prev, long g)
    {
        bool whole = prev == 0 || g == _liveGen;
        // What changed, for a view between the first and the live tree (the others are checked whole).
        var changedInodes = new HashSet<long>();   // a version of the inode came or went
        var countedInodes = new HashSet<long>();   // its names, subdirectories or mapped blocks changed
        var entriesToCheck = new List<int>();
        var chunksToCheck = new List<int>();
        var dirsGaining = new HashSet<long>();     // an entry was added: its names are checked for duplicates
        var filesGaining = new HashSet<long>();    // a chunk was added: its chunk indexes are

        // Versions visible at prev and not at g go first, then those visible at g and not at prev.
        for (; _inodeD < _inodeDeath.Length && _f.Inodes[_inodeDeath[_inodeD]].Death <= g; _inodeD++)
        {
            int i = _inodeDeath[_inodeD];
            var x = _f.Inodes[i];
            if (x.Birth > prev) continue;
            if (_inodes.Remove(x.Ino, i) && !_inodes.TryGet(x.Ino, out _)) Count(x, -1);
            if (!whole) changedInodes.Add(x.Ino);
        }
        for (; _entryD < _entryDeath.Length && _f.Dirents[_entryDeath[_entryD]].Death <= g; _entryD++)
        {
            int i = _entryDeath[_entryD];
            var d = _f.Dirents[i];
            if (d.Birth > prev) continue;
            Name(d, -1);
            if (!whole) { countedInodes.Add(d.Child); countedInodes.Add(d.Dir); }
        }
        for (; _chunkD < _chunkDeath.Length && _f.Chunks[_chunkDeath[_chunkD]].Death <= g; _chunkD++)
        {
            int i = _chunkDeath[_chunkD];
            var c = _f.Chunks[i];
            if (c.Birth > prev) continue;
            Count(c.Ino).Blocks -= c.Mapped;
            if (!whole) countedInodes.Add(c.Ino);
        }
        for (; _inodeB < _inodeBirth.Length && _f.Inodes[_inodeBirth[_inodeB]].Birth <= g; _inodeB++)
        {
            int i = _inodeBirth[_inodeB];
            var x = _f.Inodes[i];
            if (x.Death <= g) continue;
            bool had = _inodes.TryGet(x.Ino, out _);
            _inodes.Add(x.Ino, i);
            if (!had) Count(x, +1);
            if (!whole) changedInodes.Add(x.Ino);
        }
        for (; _entryB < _entryBirth.Length && _f.Dirents[_entryBirth[_entryB]].Birth <= g; _entryB++)
        {
            int i = _entryBirth[_entryB];
            var d = _f.Dirents[i];
            if (d.Death <= g) continue;
            Name(d, +1);
            if (!whole) { countedInodes.Add(d.Child); countedInodes.Add(d.Dir); }
            if (!whole) { entriesToCheck.Add(i); dirsGaining.Add(d.Dir); }
        }
        for (; _chunkB < _chunkBirth.Length && _f.Chunks[_chunkBirth[_chunkB]].Birth <= g; _chunkB++)
        {
            int i = _chunkBirth[_chunkB];
            var c = _f.Chunks[i];
            if (c.Death <= g) continue;
            Count(c.Ino).Blocks += c.Mapped;
            if (!whole) countedInodes.Add(c.Ino);
            if (!whole) { chunksToCheck.Add(i); filesGaining.Add(c.Ino); }
        }

        string vn = ViewName(g);
        _r.Directories += _dirs;
        _r.Files += _others;
        foreach (var ino in _inodes.Duplicated) _r.Add("namespace", $"{vn}: inode {ino} has two visible versions", ino);
        if (!_inodes.TryGet(Engine.Engine.RootIno, out int rootIdx) || !_f.Inodes[rootIdx].IsDir) _r.Add("namespace", $"{vn}: no root directory");

        if (whole)
        {
            // Every visible entry (each directory's names), chunk (each file's indexes) and inode.
            UniqueKeys(_entriesByDir, g, vn, entries: true);
            UniqueKeys(_chunksByIno, g, vn, entries: false);
            for (int i = 0; i < _f.Dirents.Count; i++) if (_f.Dirents[i].VisibleAt(g)) CheckEntry(_f.Dirents[i], vn);
            for (int i = 0; i < _f.Chunks.Count; i++) if (_f.Chunks[i].VisibleAt(g)) CheckChunk(_f.Chunks[i], vn);
            foreach (int i in _inodes.Seen) CheckInode(_f.Inodes[i], g, vn);
            return;
        }
        // A changed inode: the entries in it and naming it, and its chunks (its type or size may differ).
        foreach (long ino in changedInodes)
        {
            foreach (int i in WithKey(_entriesByDir, DirOf, ino)) if (_f.Dirents[i].VisibleAt(g)) entriesToCheck.Add(i);
            foreach (int i in WithKey(_entriesByChild, ChildOf, ino)) if (_f.Dirents[i].VisibleAt(g)) entriesToCheck.Add(i);
            foreach (int i in WithKey(_chunksByIno, OwnerOf, ino)) if (_f.Chunks[i].VisibleAt(g)) chunksToCheck.Add(i);
        }
        foreach (long dir in dirsGaining) UniqueKeys(WithKey(_entriesByDir, DirOf, dir), g, vn, entries: true);
        foreach (long ino in filesGaining) UniqueKeys(WithKey(_chunksByIno, OwnerOf, ino), g, vn, entries: false);
        foreach (int i in entriesToCheck.Distinct()) CheckEntry(_f.Dirents[i], vn);
        foreach (int i in chunksToCheck.Distinct()) CheckChunk(_f.Chunks[i], vn);
        countedInodes.UnionWith(changedInodes);
        foreach (long ino in countedInodes)
            if (_inodes.TryGet(ino, out int i)) CheckInode(_f.Inodes[i], g, vn);
    }

    /// <summary>Among the versions <paramref name="group"/> lists (sorted by directory, or by file), those visible at
    /// <paramref name="g"/>: one entry per name in a directory, one chunk per index in a file.</summary>
    private void UniqueKeys(IEnumerable<int> group, long g, string vn, bool entries)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        var indexes = new HashSet<long>();
        long owner = long.MinValue;
        foreach (int i in group)
        {
            if (entries)
            {
                var d = _f.Dirents[i];
                if (!d.VisibleAt(g)) continue;
                if (d.Dir != owner) { owner = d.Dir; names.Clear(); }
                if (!names.Add(d.Name)) _r.Add("namespace", $"{vn}: directory {d.Dir} has two entries named '{d.Name}'", d.Dir);
            }
            else
            {
                var c = _f.Chunks[i];
                if (!c.VisibleAt(g)) continue;
                if (c.Ino != owner) { owner = c.Ino; indexes.Clear(); }
                if (!indexes.Add(c.Index)) _r.Add("extents", $"{vn}: chunk {c.Index} has two visible versions", c.Ino, c.Index * FormatConstants.ChunkBlocks * _bs);
            }
        }
    }

    private void Count(InodeFact x, int delta)
    {
        if (x.IsDir) _dirs += delta; else _others += delta;
    }

    private ref Counts Count(long ino) => ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_counts, ino, out _);

    private void Name(DirentFact d, int delta)
    {
        Count(d.Child).Names += delta;
        if (_directories.Contains(d.Child)) Count(d.Dir).Subdirs += delta;
    }

    private void CheckEntry(DirentFact d, string vn)
    {
        if (!_inodes.TryGet(d.Dir, out int di) || !_f.Inodes[di].IsDir) { _r.Add("namespace", $"{vn}: entry '{d.Name}' is in {d.Dir}, which is not a directory", d.Dir); return; }
        var dir = _f.Inodes[di];
        if (!_inodes.TryGet(d.Child, out int ci)) { _r.Add("namespace", $"{vn}: entry '{d.Name}' of directory {d.Dir} names missing inode {d.Child}", d.Dir); return; }
        var child = _f.Inodes[ci];
        if (child.Mode >> 12 != d.Type) _r.Add("namespace", $"{vn}: entry '{d.Name}' has type {d.Type}, inode {d.Child} has mode {Convert.ToString(child.Mode, 8)}", d.Child);
        if (d.Pos < 3 || d.Pos >= dir.NextPos) _r.Add("namespace", $"{vn}: entry '{d.Name}' has position {d.Pos} outside 3..{dir.NextPos - 1}", d.Dir);
        if (child.IsDir && child.Parent != d.Dir) _r.Add("namespace", $"{vn}: directory {d.Child} is in {d.Dir} but records parent {child.Parent}", d.Child);
    }

    private void CheckChunk(ChunkFact c, string vn)
    {
        if (!_inodes.TryGet(c.Ino, out int oi) || !_f.Inodes[oi].IsRegular) { _r.Add("extents", $"{vn}: chunk {c.Index} belongs to inode {c.Ino}, which is not a regular file", c.Ino); return; }
        var owner = _f.Inodes[oi];
        long eofBlock = (owner.Size + _bs - 1) >> _shift;
        if (c.End > eofBlock)
            _r.Add("extents", $"{vn}: extent maps blocks past the end of the file (size {owner.Size})", c.Ino, c.LastFirstBlock << _shift, c.LastDevice, c.LastAddress);
    }

    private void CheckInode(InodeFact i, long g, string vn)
    {
        var counts = _counts.GetValueOrDefault(i.Ino);
        int names = counts.Names, subdirs = counts.Subdirs;
        if (i.IsDir && i.Nlink == 0 && names == 0 && subdirs == 0)
        {
            // Removed while open (rmdir, or replaced by rename): as an unlinked open file.
            if (g == _liveGen && !_engine.IsOpen(i.Ino)) _r.Add("orphan", $"{vn}: directory {i.Ino} was removed and is not open", i.Ino);
        }
        else if (i.IsDir)
        {
            uint expect = (uint)(2 + subdirs);
            if (i.Nlink != expect) _r.Add("nlink", $"{vn}: directory {i.Ino} has nlink {i.Nlink}, expected {expect}", i.Ino);
            if (i.Ino != Engine.Engine.RootIno && names != 1) _r.Add("namespace", $"{vn}: directory {i.Ino} has {names} names", i.Ino);
        }
        else if (names == 0)
        {
            // Unlinked while open (nlink 0): the live tree deletes it at its last close (or at the next open), a
            // snapshot taken meanwhile keeps it as it was. Anything else is an orphan.
            if (i.Nlink != 0) _r.Add("orphan", $"{vn}: inode {i.Ino} has no name but nlink {i.Nlink}", i.Ino);
            else if (g == _liveGen && !_engine.IsOpen(i.Ino)) _r.Add("orphan", $"{vn}: inode {i.Ino} was unlinked and is not open", i.Ino);
        }
        else if (i.Nlink != names) _r.Add("nlink", $"{vn}: inode {i.Ino} has nlink {i.Nlink}, but {names} entries name it", i.Ino);
        if (!i.IsRegular) return;
        long blocks = counts.Blocks;
        if (i.Blocks != blocks) _r.Add("blocks", $"{vn}: inode {i.Ino} records {i.Blocks} blocks, its extents map {blocks}", i.Ino);
        if (i.Prealloc != null) CheckPrealloc(i, g, vn);
    }

    /// <summary>fallocate reservations (format.md 5.4, <c>prealloc</c>): sorted, disjoint, not touching;
    /// <c>prealloc_blocks</c> = the holes inside them + the slack.</summary>
    private void CheckPrealloc(InodeFact i, long g, string vn)
    {
        var pr = i.Prealloc!;
        bool shaped = pr.Length % 2 == 0;
        for (int k = 0; shaped && k < pr.Length; k += 2)
            shaped = pr[k] >= 0 && pr[k] < pr[k + 1] && (k == 0 || pr[k] > pr[k - 1]);
        if (!shaped) { _r.Add("prealloc", $"{vn}: inode {i.Ino} has malformed fallocate ranges", i.Ino); return; }
        var mapped = new List<(long Start, long End)>();
        foreach (int c in WithKey(_chunksByIno, OwnerOf, i.Ino))
            if (_f.Chunks[c].VisibleAt(g) && _f.Chunks[c].Ranges is { } ranges) mapped.AddRange(ranges);
        long holes = 0;
        for (int k = 0; k < pr.Length; k += 2)
        {
            long len = pr[k + 1] - pr[k];
            foreach (var (ms, me) in mapped) len -= Math.Max(0, Math.Min(me, pr[k + 1]) - Math.Max(ms, pr[k]));
            holes += len;
        }
        long expect = holes + Engine.FallocateReservations.PreallocSlack(pr);
        if (i.PreallocBlocks != expect)
            _r.Add("prealloc", $"{vn}: inode {i.Ino} holds {i.PreallocBlocks} blocks for fallocate, its ranges need {expect} ({holes} holes and the slack)", i.Ino);
    }

    /// <summary>The visible versions of one kind by key; a second visible version of a key is kept aside (a
    /// duplicate, reported in every view that has it).</summary>
    private sealed class VisibleSet<TKey>(int capacity) where TKey : notnull
    {
        private readonly Dictionary<TKey, int> _first = new(capacity);
        private readonly Dictionary<TKey, List<int>> _extra = new();

        public bool TryGet(TKey key, out int index) => _first.TryGetValue(key, out index);
        /// <summary>One visible version per key.</summary>
        public IEnumerable<int> Seen => _first.Values;
        public IEnumerable<TKey> Duplicated => _extra.Keys;

        public void Add(TKey key, int index)
        {
            if (_first.TryAdd(key, index)) return;
            if (!_extra.TryGetValue(key, out var l)) _extra[key] = l = new List<int>();
            l.Add(index);
        }

        /// <summary>Removes version <paramref name="index"/> of <paramref name="key"/>; true when it was the one seen.</summary>
        public bool Remove(TKey key, int index)
        {
            if (_first.TryGetValue(key, out int f) && f == index)
            {
                _first.Remove(key);
                if (_extra.TryGetValue(key, out var l))
                {
                    _first[key] = l[^1];
                    l.RemoveAt(l.Count - 1);
                    if (l.Count == 0) _extra.Remove(key);
                }
                return true;
            }
            if (_extra.TryGetValue(key, out var e) && e.Remove(index) && e.Count == 0) _extra.Remove(key);
            return false;
        }
    }
}
