using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>Snapshot holds, properties, rollback, clone and diff (issue 5). Threading: every public method here
/// is thread-safe: it runs under <c>_commitLock</c> then <c>_lock</c> (the engine's lock order), like
/// <see cref="DeleteSnapshot"/>, so it sees and leaves a committed state; those that change the pool are
/// durable when they return 0 (one metadata commit).</summary>
public sealed partial class Engine
{
    /// <summary>Most properties one snapshot carries.</summary>
    public const int MaxSnapshotProperties = 64;
    /// <summary>Longest property value, in UTF-8 bytes.</summary>
    public const int MaxSnapshotPropertyValue = 4096;

    /// <summary>Hold tags follow the snapshot-name rules (1..255 bytes of UTF-8, no '/', NUL or control
    /// characters, not "." or ".."). Null when valid, else what is wrong.</summary>
    public static string? HoldTagProblem(string tag)
    {
        var p = SnapshotNameProblem(tag);
        return p?.Replace("snapshot name", "hold tag");
    }

    /// <summary>Property names: 1..255 bytes of UTF-8, no control characters, no '='; values at most
    /// <see cref="MaxSnapshotPropertyValue"/> bytes without NUL. Null when valid, else what is wrong.</summary>
    public static string? SnapshotPropertyProblem(string name, string? value)
    {
        if (string.IsNullOrEmpty(name)) return "a property name cannot be empty";
        if (name.Any(char.IsControl)) return $"property name '{name}' contains a control character";
        if (name.Contains('=')) return $"property name '{name}' contains '='";
        if (Encoding.UTF8.GetByteCount(name) > NameMax) return $"property name '{name[..20]}...' is longer than 255 bytes";
        if (value == null) return null;
        if (value.Contains('\0')) return $"the value of property '{name}' contains a NUL character";
        if (Encoding.UTF8.GetByteCount(value) > MaxSnapshotPropertyValue)
            return $"the value of property '{name}' is longer than {MaxSnapshotPropertyValue} bytes";
        return null;
    }

    /// <summary>Takes a snapshot with <paramref name="properties"/> recorded in it (EINVAL when one is invalid:
    /// see <see cref="SnapshotPropertyProblem"/>; nothing is created then).</summary>
    internal Errno CreateSnapshot(string name, IReadOnlyDictionary<string, string>? properties, out SnapshotRecord snapshot)
    {
        snapshot = new SnapshotRecord();
        if (properties != null)
        {
            if (properties.Count > MaxSnapshotProperties) return Errno.EINVAL;
            foreach (var (k, v) in properties) if (SnapshotPropertyProblem(k, v) != null) return Errno.EINVAL;
        }
        var e = CreateSnapshotCore(name, properties, out var snap);
        if (e == 0) snapshot = snap.Copy();
        return e;
    }

    /// <summary>Hold tags of snapshot <paramref name="name"/> (sorted), or null when there is no such snapshot.</summary>
    public IReadOnlyList<string>? SnapshotHolds(string name)
    {
        lock (_lock) return FindSnapshot(name)?.Holds.ToList();
    }

    /// <summary><c>zfs hold</c>: adds <paramref name="tag"/> to the snapshot's holds; a held snapshot cannot be
    /// deleted (EBUSY). ENOENT: no such snapshot; EINVAL: bad tag; EEXIST: the tag already holds it.</summary>
    public Errno HoldSnapshot(string name, string tag)
    {
        if (HoldTagProblem(tag) != null) return Errno.EINVAL;
        return ChangeSnapshot(name, s =>
        {
            if (s.Holds.Contains(tag, StringComparer.Ordinal)) return Errno.EEXIST;
            s.Holds.Add(tag);
            s.Holds.Sort(StringComparer.Ordinal);
            return 0;
        });
    }

    /// <summary>Removes hold <paramref name="tag"/>. ENOENT: no such snapshot; ESRCH: the snapshot has no such hold.</summary>
    public Errno ReleaseSnapshot(string name, string tag) =>
        ChangeSnapshot(name, s => s.Holds.Remove(tag) ? 0 : Errno.ESRCH);

    /// <summary>Sets (non-null value) or removes (null value) properties of a snapshot, all or none: EINVAL when
    /// one is invalid or the snapshot would carry more than <see cref="MaxSnapshotProperties"/>; ENOENT: no such snapshot.</summary>
    public Errno SetSnapshotProperties(string name, IReadOnlyDictionary<string, string?> changes)
    {
        foreach (var (k, v) in changes) if (SnapshotPropertyProblem(k, v) != null) return Errno.EINVAL;
        return ChangeSnapshot(name, s =>
        {
            var p = new SortedDictionary<string, string>(s.Properties, StringComparer.Ordinal);
            foreach (var (k, v) in changes)
                if (v == null) p.Remove(k); else p[k] = v;
            if (p.Count > MaxSnapshotProperties) return Errno.EINVAL;
            s.Properties = p;
            return 0;
        });
    }

    /// <summary>Applies <paramref name="change"/> to a copy of the snapshot's record and commits it; the engine's
    /// record is replaced only when the commit succeeded.</summary>
    private Errno ChangeSnapshot(string name, Func<SnapshotRecord, Errno> change)
    {
        lock (_commitLock)
            lock (_lock)
            {
                int i = _snapshots.IndexOf(name);
                if (i < 0) return Errno.ENOENT;
                if (Failed) return Errno.EIO;
                if (_commits.Frozen) return Errno.EBUSY;
                var copy = _snapshots[i].Copy();
                var e = change(copy);
                if (e != 0) return e;
                _commits.CommitLocked(batch => batch.Add(copy));
                _snapshots.Replace(i, copy);
                return 0;
            }
    }

    // ---------------------------------------------------------------- rollback

    /// <summary>
    /// Makes the live tree exactly snapshot <paramref name="name"/>'s tree (names, inode numbers, attributes,
    /// xattrs, data), keeping every snapshot. Cost: the records the live tree and the snapshot do not share
    /// (found by the <c>birth</c> and <c>death</c> indexes), whatever the number of snapshots.
    /// <para>Live records younger than the snapshot go (retired when a newer snapshot shares them, deleted
    /// otherwise, their blocks released); records the snapshot sees but the live tree no longer does come back
    /// as new live versions (same inode numbers, new record ids), chunks taking one reference per mapping.
    /// Files unlinked while open when the snapshot was taken are not brought back (no handle holds them).</para>
    /// <para>Refused with EBUSY while any live file is open or an operation is in flight on one (rolling back
    /// under an open handle would change its file beneath it), and while frozen. ENOENT: no such snapshot.
    /// Durable when it returns 0.</para>
    /// </summary>
    public Errno RollbackToSnapshot(string name)
    {
        lock (_commitLock)
            lock (_lock)
            {
                var e0 = SnapshotForChange(name, out var snap);
                if (e0 != 0) return e0;
                foreach (var li in _cache.Inodes)
                    if (!li.Deleted && (li.OpenCount > 0 || li.Pins > 0 || li.Reservations > 0 || li.WriteGate.CurrentCount == 0))
                        return Errno.EBUSY;
                _commits.CommitLocked(null);
                long g = snap.Gen, live = _pool.LiveGen;
                var (dropI, dropD, dropC) = Store.FindLiveBornAfter(g);
                var (backI, backD, backC) = Store.FindSeenAtDiedBy(g, live);
                foreach (var r in dropI) _versions.Remove(r);
                foreach (var r in dropD) _versions.Remove(r);
                foreach (var c in dropC) _versions.Remove(c);
                // Every cached live inode is clean (just committed) and unused (checked above): forget them all and
                // let the restored tree load again.
                _cache.Clear();
                var orphans = new HashSet<long>();
                foreach (var r in backI)
                {
                    if (r.Nlink == 0) { orphans.Add(r.Ino); continue; }   // unlinked (or removed) while open
                    var n = r.Clone();
                    n.Rid = _versions.NewRid(); n.Birth = live; n.Death = FormatConstants.Forever;
                    _versions.AddInode(new LiveInode(n));
                }
                foreach (var d in backD)
                {
                    var n = d.Clone();
                    n.Rid = _versions.NewRid(); n.Birth = live; n.Death = FormatConstants.Forever;
                    _versions.AddDirent(n);
                }
                foreach (var c in backC)
                {
                    if (orphans.Contains(c.Ino)) continue;
                    var n = c.CloneAsNewVersion();
                    n.Rid = _versions.NewRid(); n.Birth = live; n.Death = FormatConstants.Forever;
                    _versions.AddChunkCopy(n);
                    _mappings.Record(c.Ino, c.Index * FormatConstants.ChunkBlocks, FormatConstants.ChunkBlocks);
                }
                _commits.CommitLocked(null);
                // The restored inodes were cached without their directories and chunks: drop them too, so that
                // everything is read back from the committed records.
                _cache.Clear();
                LoadPreallocTotal();   // the live tree's fallocate reservations are now the snapshot's
                return 0;
            }
    }

    // ---------------------------------------------------------------- clone

    /// <summary>Resolves an absolute or relative '/'-separated path from the root in <paramref name="tree"/>
    /// (no symlinks followed). Under _lock.</summary>
    private Errno ResolveIn(ITreeReader tree, string path, out long ino)
    {
        ino = RootIno;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".") continue;
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (!IsDir(r)) return Errno.ENOTDIR;
            if (part == "..") { ino = r.Parent; continue; }
            if (!tree.Dir(ino)!.ByName.TryGetValue(part, out var d)) return Errno.ENOENT;
            ino = d.Child;
        }
        return tree.Inode(ino) == null ? Errno.ENOENT : 0;
    }

    /// <summary>
    /// Copies snapshot <paramref name="name"/>'s tree (or its sub-path <paramref name="sourcePath"/>) to the new
    /// live path <paramref name="destinationPath"/>: new inode numbers, the same names, attributes, xattrs and
    /// hard links (within the copy), and every data extent shared with the snapshot (one reference per
    /// mapping, as <see cref="CloneRange"/>; no data is read or written). Later writes to the copy go out of
    /// place as always. ENOENT: no such snapshot, source path, or destination parent; EEXIST: the destination
    /// exists; ENOTDIR: a path component is not a directory; EINVAL: bad destination name (or "/").
    /// </summary>
    public Errno CloneSnapshot(string name, string destinationPath, string sourcePath = "/")
    {
        var parts = destinationPath.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) return Errno.EINVAL;
        string newName = parts[^1];
        var ne = CheckName(newName);
        if (ne != 0) return ne;
        lock (_commitLock)
            lock (_lock)
            {
                var e0 = SnapshotForChange(name, out var snap);
                if (e0 != 0) return e0;
                var e = ResolveIn(LiveTree, string.Join('/', parts[..^1]), out long parentIno);
                if (e != 0) return e;
                var parent = LiveDir(parentIno, out e);
                if (parent == null) return e;
                if (DirOf(parent).ByName.ContainsKey(newName)) return Errno.EEXIST;
                var tree = _snapshots.View(snap.Gen);
                e = ResolveIn(tree, sourcePath, out long top);
                if (e != 0) return e;
                CloneSubtreeLocked(tree, top, parent, newName, NowNs());
                _commits.CommitLocked(null);
                return 0;
            }
    }

    /// <summary>Copies the subtree of <paramref name="tree"/> at inode <paramref name="top"/> to the new entry
    /// <paramref name="newName"/> of live directory <paramref name="parent"/> (which must not have it): new inode
    /// numbers, the same names, attributes, xattrs and hard links (within the copy), ctime <paramref name="now"/>,
    /// every data extent shared (one reference per mapping). Returns the new inode number of the top. Under _lock.</summary>
    private long CloneSubtreeLocked(ITreeReader tree, long top, LiveInode parent, string newName, long now)
    {
        long parentIno = parent.Ino;
        // Walk the source subtree: every inode once (hard links counted), new inode numbers in walk order.
        var map = new Dictionary<long, long>();
        var links = new Dictionary<long, uint>();
        var order = new List<long>();
        var entries = new List<DirentRecord>();
        var queue = new Queue<long>();
        map[top] = _pool.NextIno++; order.Add(top); links[top] = 1;
        if (IsDir(tree.Inode(top)!)) queue.Enqueue(top);
        while (queue.Count > 0)
        {
            long dir = queue.Dequeue();
            foreach (var d in tree.Dir(dir)!.ByPos.Values)
            {
                entries.Add(d);
                if (map.ContainsKey(d.Child)) { links[d.Child]++; continue; }
                var c = tree.Inode(d.Child) ?? throw new InvalidDataException($"generation {tree.Gen}: directory {dir} entry '{d.Name}' names missing inode {d.Child}");
                map[d.Child] = _pool.NextIno++; order.Add(d.Child); links[d.Child] = 1;
                if (IsDir(c)) queue.Enqueue(d.Child);
            }
        }
        foreach (long old in order)
        {
            var r = tree.Inode(old)!.Clone();
            r.Rid = _versions.NewRid(); r.Birth = _pool.LiveGen; r.Death = FormatConstants.Forever; r.Ino = map[old];
            r.Prealloc = null; r.PreallocBlocks = 0;   // a copy holds no fallocate reservation (as cp --reflink)
            if (IsDir(r)) r.Parent = old == top ? parentIno : map[r.Parent];
            else r.Nlink = links[old];
            r.CtimeNs = now;
            var li = new LiveInode(r) { AllChunksLoaded = true };
            if (IsDir(r)) li.Dir = new DirState();
            _versions.AddInode(li);
            if ((r.Mode & S_IFMT) == S_IFREG)
                foreach (var c in tree.Chunks(old))
                {
                    var n = c.CloneAsNewVersion();
                    n.Rid = _versions.NewRid(); n.Birth = _pool.LiveGen; n.Death = FormatConstants.Forever; n.Ino = r.Ino;
                    _cache.CacheChunk(li, n.Index, n);
                    _versions.AddChunkCopy(n);
                }
        }
        foreach (var d in entries)
        {
            var n = d.Clone();
            n.Rid = _versions.NewRid(); n.Birth = _pool.LiveGen; n.Death = FormatConstants.Forever; n.Dir = map[d.Dir]; n.Child = map[d.Child];
            _cache.DirOf(_cache.Get(n.Dir)!).Add(n);
            _versions.AddDirent(n);
        }
        var topRec = _cache.Get(map[top])!.Rec;
        _versions.AddDirent(parent, newName, topRec.Ino, (topRec.Mode & S_IFMT) >> 12);
        var p = _versions.MutableInode(parent);
        p.MtimeNs = p.CtimeNs = now;
        if (IsDir(topRec)) p.Nlink++;
        return topRec.Ino;
    }

    // ---------------------------------------------------------------- diff

    /// <summary>
    /// What changed from snapshot <paramref name="fromName"/> to snapshot <paramref name="toName"/> (null: the
    /// live tree, committed first), sorted by path (ordinal), then kind. Cost: the records that differ, not the
    /// tree: the versions born or dead between the two generations (birth and death indexes) name the inodes
    /// and entries to look at; unchanged subtrees are never visited; a changed inode's names come from the
    /// <c>child</c> index and its directories' <c>parent</c> chain. Records both trees share are the same record
    /// (same <c>_id</c>) and are not compared further; file data is never read (extent maps are compared by
    /// record, then by extents and checksums).
    /// <para>An inode under the same number in both trees whose only names changed is <see cref="ChangeKind.Renamed"/>
    /// (its descendants are not, unless they moved themselves); a path naming inodes of different types is
    /// <see cref="ChangeKind.TypeChanged"/>; a directory whose entries changed is not reported for its times alone
    /// (its entries are); inodes without a name (unlinked while open) are not listed.</para>
    /// ENOENT when a snapshot does not exist; EBUSY when the live tree is asked for while the pool is frozen with
    /// uncommitted changes.
    /// </summary>
    public Errno DiffSnapshots(string fromName, string? toName, out List<SnapshotChange> changes)
    {
        changes = new List<SnapshotChange>();
        lock (_commitLock)
            lock (_lock)
            {
                var from = FindSnapshot(fromName);
                if (from == null) return Errno.ENOENT;
                long ga = from.Gen, gb;
                if (toName == null)
                {
                    if (Failed) return Errno.EIO;
                    if (_commits.Frozen) { if (_commits.HasChanges()) return Errno.EBUSY; }
                    else _commits.CommitLocked(null);
                    gb = _pool.LiveGen;
                }
                else if (FindSnapshot(toName) is { } to) gb = to.Gen;
                else return Errno.ENOENT;
                var (inos, dirents) = Store.FindChangedBetween(Math.Min(ga, gb), Math.Max(ga, gb));
                foreach (var d in dirents) { inos.Add(d.Child); }
                var dirsWithChangedEntries = dirents.Where(d => d.VisibleAt(ga) != d.VisibleAt(gb)).Select(d => d.Dir).ToHashSet();
                var pathsA = new Dictionary<long, string?>();
                var pathsB = new Dictionary<long, string?>();
                var result = new List<SnapshotChange>();
                var modeA = new Dictionary<long, uint>();
                var modeB = new Dictionary<long, uint>();
                foreach (long ino in inos.Order())
                {
                    var ra = Store.LoadInode(ino, ga);
                    var rb = Store.LoadInode(ino, gb);
                    var la = ra == null ? new List<TreeLink>() : LinksOf(ino, ga, pathsA);
                    var lb = rb == null ? new List<TreeLink>() : LinksOf(ino, gb, pathsB);
                    if (la.Count > 0) modeA[ino] = ra!.Mode;
                    if (lb.Count > 0) modeB[ino] = rb!.Mode;
                    Classify(result, ino, la.Count > 0 ? ra : null, lb.Count > 0 ? rb : null, la, lb,
                        () => SortedChunks(ino, ga), () => SortedChunks(ino, gb), () => dirsWithChangedEntries.Contains(ino));
                }
                changes = FinishDiff(result, modeA, modeB);
                return 0;
            }
    }

    private List<ChunkRecord> SortedChunks(long ino, long gen)
    {
        var l = Store.LoadChunks(ino, gen);
        l.Sort((x, y) => x.Index.CompareTo(y.Index));
        return l;
    }

    /// <summary>The names of <paramref name="ino"/> in generation <paramref name="gen"/> with their paths (the root:
    /// "/"); names inside a directory that is itself unreachable are left out.</summary>
    private List<TreeLink> LinksOf(long ino, long gen, Dictionary<long, string?> dirPaths)
    {
        if (ino == RootIno) return new List<TreeLink> { new(0, "", "/") };
        var list = new List<TreeLink>();
        foreach (var d in Store.LoadLinks(ino, gen))
            if (DirPath(d.Dir, gen, dirPaths) is { } dp) list.Add(new TreeLink(d.Dir, d.Name, dp + "/" + d.Name));
        return list;
    }

    /// <summary>Path of directory <paramref name="dir"/> in generation <paramref name="gen"/> ("" for the root),
    /// null when no name reaches it; memoized.</summary>
    private string? DirPath(long dir, long gen, Dictionary<long, string?> memo)
    {
        if (dir == RootIno) return "";
        if (memo.TryGetValue(dir, out var p)) return p;
        memo[dir] = null; // a cycle (corruption) ends as unreachable
        var links = Store.LoadLinks(dir, gen);
        p = links.Count == 1 && DirPath(links[0].Dir, gen, memo) is { } parent ? parent + "/" + links[0].Name : null;
        memo[dir] = p;
        return p;
    }

    /// <summary>The changes of one inode, present in the old tree (<paramref name="ra"/> non-null, named by
    /// <paramref name="la"/>), the new one, or both.</summary>
    private static void Classify(List<SnapshotChange> result, long ino, InodeRecord? ra, InodeRecord? rb, List<TreeLink> la, List<TreeLink> lb,
        Func<List<ChunkRecord>> chunksA, Func<List<ChunkRecord>> chunksB, Func<bool> entriesChanged)
    {
        if (ra == null && rb == null) return;
        if (rb == null) { foreach (var l in la) result.Add(new SnapshotChange(l.Path, ChangeKind.Removed, ino)); return; }
        if (ra == null) { foreach (var l in lb) result.Add(new SnapshotChange(l.Path, ChangeKind.Added, ino)); return; }
        var onlyA = la.Where(x => !lb.Any(y => y.Dir == x.Dir && y.Name == x.Name)).ToList();
        var onlyB = lb.Where(y => !la.Any(x => y.Dir == x.Dir && y.Name == x.Name)).ToList();
        if (onlyA.Count == 1 && onlyB.Count == 1) result.Add(new SnapshotChange(onlyB[0].Path, ChangeKind.Renamed, ino, onlyA[0].Path));
        else
        {
            foreach (var l in onlyA) result.Add(new SnapshotChange(l.Path, ChangeKind.Removed, ino));
            foreach (var l in onlyB) result.Add(new SnapshotChange(l.Path, ChangeKind.Added, ino));
        }
        if (ra.Rid == rb.Rid) return;
        // A file with several names is reported under the first by path of those it has in both trees (else of its new ones).
        var kept = lb.Where(y => !onlyB.Contains(y)).ToList();
        string path = (kept.Count > 0 ? kept : lb).Select(l => l.Path).Min(StringComparer.Ordinal)!;
        bool data = (ra.Mode & S_IFMT) == S_IFREG ? ra.Size != rb.Size || !SameChunks(chunksA(), chunksB()) : ra.Target != rb.Target;
        bool entries = IsDir(ra) && entriesChanged();
        bool meta = ra.Mode != rb.Mode || ra.Uid != rb.Uid || ra.Gid != rb.Gid || ra.Rdev != rb.Rdev || !SameXattrs(ra.Xattrs, rb.Xattrs)
            // An atime a read moved (relatime) is not a change; one set explicitly (touch -a) moved ctime too.
            || (!data && !entries && (ra.MtimeNs != rb.MtimeNs || (ra.AtimeNs != rb.AtimeNs && ra.CtimeNs != rb.CtimeNs) || ra.BtimeNs != rb.BtimeNs));
        if (data) result.Add(new SnapshotChange(path, ChangeKind.ModifiedData, ino));
        if (meta) result.Add(new SnapshotChange(path, ChangeKind.ModifiedMetadata, ino));
    }

    /// <summary>Merges a removal and an addition at one path with different file types into
    /// <see cref="ChangeKind.TypeChanged"/>, then sorts by path and kind.</summary>
    private static List<SnapshotChange> FinishDiff(List<SnapshotChange> result, Dictionary<long, uint> modeA, Dictionary<long, uint> modeB)
    {
        var removed = result.Where(c => c.Kind == ChangeKind.Removed).GroupBy(c => c.Path).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var merged = new List<SnapshotChange>();
        var drop = new HashSet<SnapshotChange>();
        foreach (var c in result.Where(c => c.Kind == ChangeKind.Added))
            if (removed.TryGetValue(c.Path, out var r) && (modeA[r.Ino] & S_IFMT) != (modeB[c.Ino] & S_IFMT))
            {
                drop.Add(c); drop.Add(r);
                merged.Add(new SnapshotChange(c.Path, ChangeKind.TypeChanged, c.Ino));
            }
        result.RemoveAll(drop.Contains);
        result.AddRange(merged);
        result.Sort((x, y) =>
        {
            int k = string.CompareOrdinal(x.Path, y.Path);
            return k != 0 ? k : x.Kind.CompareTo(y.Kind);
        });
        return result;
    }

    /// <summary>The same diff by walking both trees whole (the test oracle for <see cref="DiffSnapshots"/>).</summary>
    internal Errno DiffSnapshotsByWalk(string fromName, string? toName, out List<SnapshotChange> changes)
    {
        changes = new List<SnapshotChange>();
        lock (_lock)
        {
            var from = FindSnapshot(fromName);
            if (from == null) return Errno.ENOENT;
            ITreeReader b;
            if (toName == null) b = LiveTree;
            else if (FindSnapshot(toName) is { } to) b = _snapshots.View(to.Gen);
            else return Errno.ENOENT;
            var a = _snapshots.View(from.Gen);
            var ta = WalkTree(a);
            var tb = WalkTree(b);
            var result = new List<SnapshotChange>();
            foreach (var ino in ta.Inodes.Keys.Union(tb.Inodes.Keys).Order())
            {
                var ra = ta.Inodes.GetValueOrDefault(ino);
                var rb = tb.Inodes.GetValueOrDefault(ino);
                Classify(result, ino, ra, rb, ta.Links.GetValueOrDefault(ino) ?? new(), tb.Links.GetValueOrDefault(ino) ?? new(),
                    () => a.Chunks(ino), () => b.Chunks(ino), () => !SameEntries(a.Dir(ino)!, b.Dir(ino)!));
            }
            changes = FinishDiff(result, ta.Inodes.ToDictionary(kv => kv.Key, kv => kv.Value.Mode), tb.Inodes.ToDictionary(kv => kv.Key, kv => kv.Value.Mode));
            return 0;
        }
    }

    private sealed record TreeLink(long Dir, string Name, string Path);

    private sealed class TreeWalk
    {
        public readonly Dictionary<long, InodeRecord> Inodes = new();
        public readonly Dictionary<long, List<TreeLink>> Links = new();
    }

    /// <summary>Every inode reachable from the root of <paramref name="tree"/> with its names. Under _lock.</summary>
    private static TreeWalk WalkTree(ITreeReader tree)
    {
        var w = new TreeWalk();
        var root = tree.Inode(RootIno) ?? throw new InvalidDataException($"generation {tree.Gen} has no root directory");
        w.Inodes[RootIno] = root;
        w.Links[RootIno] = new List<TreeLink> { new(0, "", "/") };
        var queue = new Queue<(long Ino, string Path)>();
        queue.Enqueue((RootIno, ""));
        while (queue.Count > 0)
        {
            var (dir, path) = queue.Dequeue();
            foreach (var d in tree.Dir(dir)!.ByPos.Values)
            {
                string p = path + "/" + d.Name;
                if (w.Links.TryGetValue(d.Child, out var l)) { l.Add(new TreeLink(dir, d.Name, p)); continue; }
                var c = tree.Inode(d.Child) ?? throw new InvalidDataException($"generation {tree.Gen}: directory {dir} entry '{d.Name}' names missing inode {d.Child}");
                w.Inodes[d.Child] = c;
                w.Links[d.Child] = new List<TreeLink> { new(dir, d.Name, p) };
                if (IsDir(c)) queue.Enqueue((d.Child, p));
            }
        }
        return w;
    }

    private static bool SameChunks(List<ChunkRecord> a, List<ChunkRecord> b)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
        {
            var x = a[i]; var y = b[i];
            if (x.Rid == y.Rid) continue;
            if (x.Index != y.Index || !x.Extents.SequenceEqual(y.Extents)) return false;
            foreach (var e in x.Extents)
                for (uint k = e.First; k < e.End; k++) if (x.Sums[k] != y.Sums[k]) return false;
        }
        return true;
    }

    /// <summary>Same entry records (by record id): an entry removed and made again counts as a change.</summary>
    private static bool SameEntries(DirState a, DirState b)
    {
        if (a.Count != b.Count) return false;
        foreach (var (name, d) in a.ByName)
            if (!b.ByName.TryGetValue(name, out var e) || e.Rid != d.Rid) return false;
        return true;
    }

    private static bool SameXattrs(Dictionary<string, byte[]>? a, Dictionary<string, byte[]>? b)
    {
        int na = a?.Count ?? 0, nb = b?.Count ?? 0;
        if (na != nb) return false;
        if (na == 0) return true;
        foreach (var (k, v) in a!) if (!b!.TryGetValue(k, out var w) || !v.AsSpan().SequenceEqual(w)) return false;
        return true;
    }

    /// <summary>The snapshot named <paramref name="name"/> for an operation that changes the pool: ENOENT when
    /// there is none, EIO when the pool failed, EBUSY while frozen. Caller holds _lock.</summary>
    private Errno SnapshotForChange(string name, out SnapshotRecord snap)
    {
        snap = _snapshots.Find(name)!;
        if (snap == null) return Errno.ENOENT;
        if (Failed) return Errno.EIO;
        return _commits.Frozen ? Errno.EBUSY : 0;
    }
}
