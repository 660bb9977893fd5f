using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>Snapshot operations: create (constant time: the generation bump rides one group commit), delete (purge
/// of every record no view sees any more), holds, properties, rollback, clone of a snapshot's subtree into the
/// live tree, diff (<see cref="SnapshotDiff"/> on what the record indexes name) and the space report. The
/// snapshot list is the <see cref="SnapshotCatalog"/>'s; this type owns no state. Threading: every public method here
/// is thread-safe: it runs under <c>_commitLock</c> then <c>_lock</c> (the engine's lock order), like
/// <see cref="DeleteSnapshot"/>, so it sees and leaves a committed state; those that change the pool are
/// durable when they return 0 (one metadata commit).</summary>
internal sealed class SnapshotManager(EngineContext context) : EnginePart(context)
{
    /// <summary>Snapshot names: 1..255 bytes of UTF-8 without '/', NUL or control characters, not "." or "..".</summary>
    public static string? SnapshotNameProblem(string name)
    {
        if (string.IsNullOrEmpty(name)) return "a snapshot name cannot be empty";
        if (name == "." || name == "..") return $"'{name}' is not a valid snapshot name";
        if (name.Contains('/')) return $"snapshot name '{name}' contains '/'";
        if (name.Any(char.IsControl)) return "a snapshot name cannot contain control characters";
        if (Encoding.UTF8.GetByteCount(name) > NameMax) return "a snapshot name is at most 255 bytes";
        return null;
    }

    /// <summary>Tests only: the UTC time recorded as a new snapshot's <c>created_ns</c> (null: the system clock), so a
    /// simulated clock can date snapshots across days and months. Set before the engine is shared.</summary>
    internal Func<DateTime>? SnapshotClock { get; set; }

    internal IReadOnlyList<SnapshotRecord> ListSnapshots()
    {
        lock (StateLock) return Snapshots.All.Select(s => s.Copy()).ToList();
    }

    internal SnapshotRecord? FindSnapshot(string name)
    {
        lock (StateLock) return Snapshots.Find(name);
    }

    /// <summary>
    /// Takes a snapshot of the live tree in constant time: one group commit that also records the
    /// snapshot at the current live generation and moves the live tree to the next one. Nothing is
    /// copied; from now on records the snapshot shares are copied on their next change instead.
    /// Durable when it returns.
    /// </summary>
    internal Errno CreateSnapshot(string name, out SnapshotRecord snapshot) => CreateSnapshotCore(name, null, out snapshot);

    private Errno CreateSnapshotCore(string name, IReadOnlyDictionary<string, string>? properties, out SnapshotRecord snapshot)
    {
        snapshot = new SnapshotRecord();
        if (SnapshotNameProblem(name) != null) return Errno.EINVAL;
        Data.WaitForWritesInProgress();   // before the commit lock: a write may need it (ENOSPC commits)
        lock (CommitLock)
        {
            lock (StateLock)
            {
                if (Failed) return Errno.EIO;
                if (Commits.Frozen || PoolState.Receive != null) return Errno.EBUSY;   // a receive's staged generation is the next one
                if (Snapshots.Find(name) != null) return Errno.EEXIST;
            }
            var snap = new SnapshotRecord { Name = name, CreatedNs = SnapshotClock is { } clock ? (clock().Ticks - DateTime.UnixEpoch.Ticks) * 100 : NowNs() };
            if (properties != null) foreach (var (k, v) in properties) snap.Properties[k] = v;
            Commits.CommitLocked(batch =>
            {
                snap.Gen = PoolState.LiveGen;
                snap.CommitSeq = PoolState.CommitSeq + 1;
                PoolState.LiveGen++;
                Snapshots.Add(snap);
                batch.Add(snap);
            });
            snapshot = snap;
        }
        DeliverTreeChanges([new TreeChange(TreeChange.SnapshotList, name, 0), new TreeChange(0, null, TreeChange.SnapshotList)]);
        return 0;
    }

    /// <summary>
    /// Deletes a snapshot and every record that no remaining view (live tree or snapshot) sees any more. EBUSY when
    /// the snapshot is held (<see cref="SnapshotHolds"/> names the holds) or the pool is frozen.
    /// <para>Two steps, so that the mount keeps serving: one commit drops the snapshot and records a pending purge
    /// (<see cref="PendingPurge"/>, the pool's <c>purges</c>); then the <see cref="SnapshotPurger"/> removes its
    /// records in batches: before this returns (blocks whose last reference went are free then), or on its
    /// background thread when it runs (a mounted pool). A crash or an unmount in between leaves the purge pending;
    /// the next writable open or mount finishes it.</para>
    /// </summary>
    public Errno DeleteSnapshot(string name)
    {
        PendingPurge purge = default;
        lock (CommitLock)
        {
            lock (StateLock)
            {
                int i = Snapshots.IndexOf(name);
                if (i < 0) return Errno.ENOENT;
                if (Failed) return Errno.EIO;
                if (Commits.Frozen || Snapshots[i].Holds.Count > 0) return Errno.EBUSY;
                // The newest snapshot is a pending receive's base: the versions the receive replaces die after it.
                if (PoolState.Receive != null && i == Snapshots.Count - 1) return Errno.EBUSY;
            }
            // Under the commit lock nothing else changes the snapshot list. The catalog changes in the same
            // critical section as the gather: every version retired before it is in this commit (and found by the
            // purge); every change after it sees the new catalog, so no version is retired into the purge's range.
            Commits.CommitLocked(batch =>
            {
                int i = Snapshots.IndexOf(name);
                var snap = Snapshots[i];
                long prev = i > 0 ? Snapshots[i - 1].Gen : 0;
                long next = i + 1 < Snapshots.Count ? Snapshots[i + 1].Gen : PoolState.LiveGen;
                purge = new PendingPurge(snap.Gen, prev, next);
                Snapshots.RemoveAt(i);
                PoolState.Purges.Add(purge);
                batch.DeletedSnapshots.Add(snap.Gen);
            });
        }
        DeliverTreeChanges([new TreeChange(TreeChange.SnapshotList, name, 0), new TreeChange(0, null, TreeChange.SnapshotList)]);
        Context.Purger.Run(purge);
        return 0;
    }

    /// <summary>
    /// Space per snapshot (and for the live tree, named "", last): bytes of the distinct device blocks it references
    /// (a block two files share through a range clone counts once) and bytes only it holds (what deleting it would
    /// free). From the pool's generation histogram (<see cref="GenerationHistogram"/>): costs the number of (birth,
    /// until) classes, not the pool's size, and reads nothing.
    /// </summary>
    public List<SnapshotSpace> SpaceReport()
    {
        lock (StateLock)
        {
            var snaps = Snapshots.All.ToList();
            var views = snaps.Select(s => s.Gen).Append(PoolState.LiveGen).ToArray(); // ascending
            var (referenced, exclusive) = Space.Generations.Sizes(views);
            var result = new List<SnapshotSpace>(views.Length);
            for (int v = 0; v < views.Length; v++)
            {
                var (nm, created) = v < snaps.Count ? (snaps[v].Name, snaps[v].CreatedNs) : ("", 0L);
                result.Add(new SnapshotSpace(nm, views[v], created, referenced[v] << BlockShift, exclusive[v] << BlockShift));
            }
            return result;
        }
    }

    /// <summary>
    /// <summary>
    /// The same report by reading every extent map (the test oracle of <see cref="SpaceReport"/>): a view sees a block
    /// when it sees a chunk version that maps it. O(mapped blocks) in time and memory.
    /// </summary>
    internal List<SnapshotSpace> SpaceReportByScan()
    {
        lock (CommitLock)
        {
            if (!Commits.Frozen) Commits.CommitLocked(null);
            List<SnapshotRecord> snaps; long liveGen;
            lock (StateLock) { snaps = Snapshots.All.ToList(); liveGen = PoolState.LiveGen; }
            var views = snaps.Select(s => s.Gen).Append(liveGen).ToArray(); // ascending
            var seenBy = new Dictionary<(uint, long), HashSet<int>>();
            lock (StateLock)
            {
                foreach (var c in Store.AllChunks())
                {
                    int first = GenerationHistogram.LowerBound(views, c.Birth), last = GenerationHistogram.LowerBound(views, c.Death);
                    foreach (var e in c.Extents)
                        for (long b = e.Address; b < e.Address + e.Count; b++)
                        {
                            if (!seenBy.TryGetValue((e.Device, b), out var set)) seenBy[(e.Device, b)] = set = new HashSet<int>();
                            for (int v = first; v < last; v++) set.Add(v);
                        }
                }
            }
            var referenced = new long[views.Length];
            var exclusive = new long[views.Length];
            foreach (var set in seenBy.Values)
            {
                foreach (int v in set) referenced[v]++;
                if (set.Count == 1) exclusive[set.First()]++;
            }
            var result = new List<SnapshotSpace>();
            for (int v = 0; v < views.Length; v++)
            {
                var (nm, created) = v < snaps.Count ? (snaps[v].Name, snaps[v].CreatedNs) : ("", 0L);
                result.Add(new SnapshotSpace(nm, views[v], created, referenced[v] << BlockShift, exclusive[v] << BlockShift));
            }
            return result;
        }
    }

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
        if (Encoding.UTF8.GetByteCount(value) > Engine.MaxSnapshotPropertyValue)
            return $"the value of property '{name}' is longer than {Engine.MaxSnapshotPropertyValue} bytes";
        return null;
    }

    /// <summary>Takes a snapshot with <paramref name="properties"/> recorded in it (EINVAL when one is invalid:
    /// see <see cref="SnapshotPropertyProblem"/>; nothing is created then).</summary>
    internal Errno CreateSnapshot(string name, IReadOnlyDictionary<string, string>? properties, out SnapshotRecord snapshot)
    {
        snapshot = new SnapshotRecord();
        if (properties != null)
        {
            if (properties.Count > Engine.MaxSnapshotProperties) return Errno.EINVAL;
            foreach (var (k, v) in properties) if (SnapshotPropertyProblem(k, v) != null) return Errno.EINVAL;
        }
        var e = CreateSnapshotCore(name, properties, out var snap);
        if (e == 0) snapshot = snap.Copy();
        return e;
    }

    /// <summary>Hold tags of snapshot <paramref name="name"/> (sorted), or null when there is no such snapshot.</summary>
    public IReadOnlyList<string>? SnapshotHolds(string name)
    {
        lock (StateLock) return FindSnapshot(name)?.Holds.ToList();
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
            if (p.Count > Engine.MaxSnapshotProperties) return Errno.EINVAL;
            s.Properties = p;
            return 0;
        });
    }

    /// <summary>Applies <paramref name="change"/> to a copy of the snapshot's record and commits it; the engine's
    /// record is replaced only when the commit succeeded.</summary>
    private Errno ChangeSnapshot(string name, Func<SnapshotRecord, Errno> change)
    {
        lock (CommitLock)
            lock (StateLock)
            {
                int i = Snapshots.IndexOf(name);
                if (i < 0) return Errno.ENOENT;
                if (Failed) return Errno.EIO;
                if (Commits.Frozen) return Errno.EBUSY;
                var copy = Snapshots[i].Copy();
                var e = change(copy);
                if (e != 0) return e;
                Commits.CommitLocked(batch => batch.Add(copy));
                Snapshots.Replace(i, copy);
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
        lock (CommitLock)
            lock (StateLock)
            {
                var e0 = SnapshotForChange(name, out var snap);
                if (e0 != 0) return e0;
                foreach (var li in Cache.Inodes)
                    if (!li.Deleted && (li.OpenCount > 0 || li.Pins > 0 || li.Reservations > 0 || li.WriteGate.CurrentCount == 0))
                        return Errno.EBUSY;
                Commits.CommitLocked(null);
                long g = snap.Gen, live = PoolState.LiveGen;
                var (dropI, dropD, dropC) = Store.FindLiveBornAfter(g);
                var (backI, backD, backC) = Store.FindSeenAtDiedBy(g, live);
                Commits.FailStop($"while rolling back to snapshot '{name}'", () =>
                {
                    foreach (var r in dropI) Versions.Remove(r);
                    foreach (var r in dropD) Versions.Remove(r);
                    foreach (var c in dropC) Versions.Remove(c);
                    Commits.Fault("rollback");
                    // Every cached live inode is clean (just committed) and unused (checked above): forget them all and
                    // let the restored tree load again.
                    Cache.Clear();
                    var orphans = new HashSet<long>();
                    foreach (var r in backI)
                    {
                        if (r.Nlink == 0) { orphans.Add(r.Ino); continue; }   // unlinked (or removed) while open
                        var n = r.Clone();
                        n.Rid = Versions.NewRid(); n.Birth = live; n.Death = FormatConstants.Forever;
                        Versions.AddInode(new LiveInode(n));
                    }
                    foreach (var d in backD)
                    {
                        var n = d.Clone();
                        n.Rid = Versions.NewRid(); n.Birth = live; n.Death = FormatConstants.Forever;
                        Versions.AddDirent(n);
                    }
                    foreach (var c in backC)
                    {
                        if (orphans.Contains(c.Ino)) continue;
                        var n = c.CloneAsNewVersion();
                        n.Rid = Versions.NewRid(); n.Birth = live; n.Death = FormatConstants.Forever;
                        Versions.AddChunkCopy(n);
                        Mappings.Record(c.Ino, c.Index * FormatConstants.ChunkBlocks, FormatConstants.ChunkBlocks);
                    }
                });
                Commits.CommitLocked(null);
                // The restored inodes were cached without their directories and chunks: drop them too, so that
                // everything is read back from the committed records.
                Cache.Clear();
                Prealloc.LoadPreallocTotal();   // the live tree's fallocate reservations are now the snapshot's
                return 0;
            }
    }

    // ---------------------------------------------------------------- clone

    /// <summary>Resolves an absolute or relative '/'-separated path from the root in <paramref name="tree"/>
    /// (no symlinks followed). Under StateLock.</summary>
    internal Errno ResolveIn(ITreeReader tree, string path, out long ino)
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
        var e = CloneSnapshotLocked(name, destinationPath, sourcePath, out long parentIno, out string newName);
        if (e == 0) DeliverTreeChanges([new TreeChange(parentIno, newName, 0), new TreeChange(0, null, parentIno)]);
        return e;
    }

    private Errno CloneSnapshotLocked(string name, string destinationPath, string sourcePath, out long parentIno, out string newName)
    {
        parentIno = 0;
        newName = "";
        var parts = destinationPath.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) return Errno.EINVAL;
        newName = parts[^1];
        var ne = CheckName(newName);
        if (ne != 0) return ne;
        string parentPath = string.Join('/', parts[..^1]);
        // Under the commit lock throughout (no snapshot deletion, relocation or commit in between); the state lock,
        // which the mount's every operation takes, only to check the destination and then to insert the copy: the
        // snapshot's records are read without it (a 20,000-file tree is a second of store reads).
        lock (CommitLock)
        {
            long snapGen, top;
            lock (StateLock)
            {
                var e0 = SnapshotForChange(name, out var snap);
                if (e0 != 0) return e0;
                var e = DestinationDir(parentPath, newName, out parentIno, out _);
                if (e != 0) return e;
                e = ResolveIn(Snapshots.View(snap.Gen), sourcePath, out top);
                if (e != 0) return e;
                snapGen = snap.Gen;
            }
            var copy = ReadSubtree(new StoreTreeReader(Store, snapGen), top);
            Commits.Fault("clone-read");
            lock (StateLock)
            {
                if (Failed) return Errno.EIO;
                if (Commits.Frozen) return Errno.EBUSY;
                var e = DestinationDir(parentPath, newName, out parentIno, out var parent);   // the live tree moved on meanwhile
                if (e != 0) return e;
                string leaf = newName;
                Commits.FailStop($"while cloning snapshot '{name}' to {destinationPath}", () =>
                {
                    InsertSubtreeLocked(copy, parent!, leaf, NowNs());
                    Commits.Fault("clone");
                });
            }
            Commits.CommitLocked(null);
            return 0;
        }
    }

    /// <summary>The live directory <paramref name="parentPath"/> that is to receive the new entry
    /// <paramref name="newName"/>: ENOENT/ENOTDIR when it does not resolve, EEXIST when the name is taken. Under StateLock.</summary>
    private Errno DestinationDir(string parentPath, string newName, out long parentIno, out LiveInode? parent)
    {
        parent = null;
        var e = ResolveIn(LiveTree, parentPath, out parentIno);
        if (e != 0) return e;
        parent = Names.LiveDir(parentIno, out e);
        if (parent == null) return e;
        return DirOf(parent).ByName.ContainsKey(newName) ? Errno.EEXIST : 0;
    }

    /// <summary>Copies the subtree of <paramref name="tree"/> at inode <paramref name="top"/> to the new entry
    /// <paramref name="newName"/> of live directory <paramref name="parent"/> (which must not have it): new inode
    /// numbers, the same names, attributes, xattrs and hard links (within the copy), ctime <paramref name="now"/>,
    /// every data extent shared (one reference per mapping). Returns the new inode number of the top. Under StateLock.</summary>
    internal long CloneSubtreeLocked(ITreeReader tree, long top, LiveInode parent, string newName, long now) =>
        InsertSubtreeLocked(ReadSubtree(tree, top), parent, newName, now);

    /// <summary>A subtree of a snapshot as read for a copy: its inodes in walk order (every one once), each one's
    /// link count within the subtree, its chunks, and its entries.</summary>
    internal sealed record SubtreeCopy(long Top, List<InodeRecord> Inodes, Dictionary<long, uint> Links,
        Dictionary<long, List<ChunkRecord>> Chunks, List<DirentRecord> Entries);

    /// <summary>Walks the subtree of <paramref name="tree"/> at <paramref name="top"/>; changes nothing.</summary>
    internal static SubtreeCopy ReadSubtree(ITreeReader tree, long top)
    {
        var links = new Dictionary<long, uint>();
        var inodes = new List<InodeRecord>();
        var chunks = new Dictionary<long, List<ChunkRecord>>();
        var entries = new List<DirentRecord>();
        var queue = new Queue<long>();
        void Take(InodeRecord r)
        {
            inodes.Add(r); links[r.Ino] = 1;
            if ((r.Mode & S_IFMT) == S_IFREG) chunks[r.Ino] = tree.Chunks(r.Ino);
            if (IsDir(r)) queue.Enqueue(r.Ino);
        }
        Take(tree.Inode(top)!);
        while (queue.Count > 0)
        {
            long dir = queue.Dequeue();
            foreach (var d in tree.Dir(dir)!.ByPos.Values)
            {
                entries.Add(d);
                if (links.ContainsKey(d.Child)) { links[d.Child]++; continue; }
                Take(tree.Inode(d.Child) ?? throw new InvalidDataException($"generation {tree.Gen}: directory {dir} entry '{d.Name}' names missing inode {d.Child}"));
            }
        }
        return new SubtreeCopy(top, inodes, links, chunks, entries);
    }

    /// <summary>Adds <paramref name="copy"/> to the live tree as entry <paramref name="newName"/> of
    /// <paramref name="parent"/>: new inode numbers in walk order; see <see cref="CloneSubtreeLocked"/>. Under StateLock.</summary>
    private long InsertSubtreeLocked(SubtreeCopy copy, LiveInode parent, string newName, long now)
    {
        long parentIno = parent.Ino;
        long top = copy.Top;
        var map = new Dictionary<long, long>();
        foreach (var src in copy.Inodes) map[src.Ino] = PoolState.NextIno++;
        var links = copy.Links;
        var entries = copy.Entries;
        foreach (var src in copy.Inodes)
        {
            long old = src.Ino;
            var r = src.Clone();
            r.Rid = Versions.NewRid(); r.Birth = PoolState.LiveGen; r.Death = FormatConstants.Forever; r.Ino = map[old];
            r.Prealloc = null; r.PreallocBlocks = 0;   // a copy holds no fallocate reservation (as cp --reflink)
            if (IsDir(r)) r.Parent = old == top ? parentIno : map[r.Parent];
            else r.Nlink = links[old];
            r.CtimeNs = now;
            var li = new LiveInode(r) { AllChunksLoaded = true };
            if (IsDir(r)) li.Dir = new DirState();
            Versions.AddInode(li);
            if ((r.Mode & S_IFMT) == S_IFREG)
                foreach (var c in copy.Chunks[old])
                {
                    var n = c.CloneAsNewVersion();
                    n.Rid = Versions.NewRid(); n.Birth = PoolState.LiveGen; n.Death = FormatConstants.Forever; n.Ino = r.Ino;
                    Cache.CacheChunk(li, n.Index, n);
                    Versions.AddChunkCopy(n);
                }
        }
        foreach (var d in entries)
        {
            var n = d.Clone();
            n.Rid = Versions.NewRid(); n.Birth = PoolState.LiveGen; n.Death = FormatConstants.Forever; n.Dir = map[d.Dir]; n.Child = map[d.Child];
            Cache.DirOf(Cache.Get(n.Dir)!).Add(n);
            Versions.AddDirent(n);
        }
        var topRec = Cache.Get(map[top])!.Rec;
        Versions.AddDirent(parent, newName, topRec.Ino, (topRec.Mode & S_IFMT) >> 12);
        var p = Versions.MutableInode(parent);
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
    /// <para><paramref name="withRanges"/>: regular files' data-changed, added and removed rows also carry their sizes
    /// and changed byte ranges (<see cref="SnapshotChange"/>), from the extent maps of the inodes already looked at;
    /// without it, no chunk is read beyond what the classification needs.</para>
    /// ENOENT when a snapshot does not exist; EBUSY when the live tree is asked for while the pool is frozen with
    /// uncommitted changes.
    /// </summary>
    public Errno DiffSnapshots(string fromName, string? toName, out List<SnapshotChange> changes, bool withRanges = false)
    {
        changes = new List<SnapshotChange>();
        lock (CommitLock)
            lock (StateLock)
            {
                var from = FindSnapshot(fromName);
                if (from == null) return Errno.ENOENT;
                long ga = from.Gen, gb;
                if (toName == null)
                {
                    if (Failed) return Errno.EIO;
                    if (Commits.Frozen) { if (Commits.HasChanges()) return Errno.EBUSY; }
                    else Commits.CommitLocked(null);
                    gb = PoolState.LiveGen;
                }
                else if (FindSnapshot(toName) is { } to) gb = to.Gen;
                else return Errno.ENOENT;
                var (inos, dirents) = Store.FindChangedBetween(Math.Min(ga, gb), Math.Max(ga, gb));
                foreach (var d in dirents) { inos.Add(d.Child); }
                var dirsWithChangedEntries = dirents.Where(d => d.VisibleAt(ga) != d.VisibleAt(gb)).Select(d => d.Dir).ToHashSet();
                changes = SnapshotDiff.OfCandidates(Generation(ga), Generation(gb), inos, dirsWithChangedEntries, withRanges ? BlockSize : 0);
                return 0;
            }
    }

    /// <summary>The same diff by walking both trees whole (the test oracle for <see cref="DiffSnapshots"/>).</summary>
    internal Errno DiffSnapshotsByWalk(string fromName, string? toName, out List<SnapshotChange> changes, bool withRanges = false)
    {
        changes = new List<SnapshotChange>();
        lock (StateLock)
        {
            var from = FindSnapshot(fromName);
            if (from == null) return Errno.ENOENT;
            ITreeReader b;
            if (toName == null) b = LiveTree;
            else if (FindSnapshot(toName) is { } to) b = Snapshots.View(to.Gen);
            else return Errno.ENOENT;
            changes = SnapshotDiff.OfTrees(Snapshots.View(from.Gen), b, withRanges ? BlockSize : 0);
            return 0;
        }
    }

    /// <summary>Generation <paramref name="gen"/> as the committed records show it (a snapshot diff's input). Under StateLock.</summary>
    private SnapshotDiff.Generation Generation(long gen) => new(
        ino => Store.LoadInode(ino, gen),
        ino => Store.LoadLinks(ino, gen),
        ino =>
        {
            var l = Store.LoadChunks(ino, gen);
            l.Sort((x, y) => x.Index.CompareTo(y.Index));
            return l;
        });

    /// <summary>The snapshot named <paramref name="name"/> for an operation that changes the pool: ENOENT when
    /// there is none, EIO when the pool failed, EBUSY while frozen. Caller holds StateLock.</summary>
    internal Errno SnapshotForChange(string name, out SnapshotRecord snap)
    {
        snap = Snapshots.Find(name)!;
        if (snap == null) return Errno.ENOENT;
        if (Failed) return Errno.EIO;
        return Commits.Frozen || PoolState.Receive != null ? Errno.EBUSY : 0;   // a pending receive keeps the live tree as it is
    }
}
