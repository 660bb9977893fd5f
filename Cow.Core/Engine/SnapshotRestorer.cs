using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>
/// <c>cow snapshot restore</c> (snapper's undochange): puts a snapshot's version of paths back into the live
/// tree, sharing every data block with the snapshot.
/// <para>Inode numbers: a path that is a regular file, symlink or special file in both trees keeps its live
/// inode and gets the snapshot's contents (extents shared, one reference per mapping), mode, owner, atime,
/// mtime and xattrs in place, with ctime now — what <c>cp</c> over an existing file does; a directory in both
/// trees keeps its live inode and gets the snapshot's attributes, its entries restored one by one. A path
/// the live tree lacks (or has with another file type) is made as <see cref="CloneSnapshot"/> makes a copy:
/// new live inode numbers, never the snapshot's, since the snapshot's number may still name another live
/// file (the file was moved) and one number names one file. So backup tools that key on inode and ctime
/// (restic, borg) read restored files again, and see untouched files as unchanged.</para>
/// <para>Threading: thread-safe; <c>_commitLock</c> then <c>_lock</c> as every snapshot operation, and the
/// WriteGates of the files replaced in place, taken (inode order) before those locks as the lock order
/// requires: the plan is made under the locks, the gates are taken outside them, and the plan is made again
/// under the locks and applied only if it needs no gate not held. Durable when it returns 0.</para>
/// </summary>
internal sealed class SnapshotRestorer(EngineContext context) : EnginePart(context)
{
    /// <summary>
    /// Restores <paramref name="paths"/> (absolute, '/'-separated, no "." or ".." components; "/" is the whole
    /// tree) from snapshot <paramref name="name"/>, for each path: present in the snapshot → the live path
    /// becomes the snapshot's version (a directory's whole tree: entries the snapshot lacks are removed,
    /// differing ones replaced, equal ones left alone); absent from the snapshot but present live → removed.
    /// Equality ignores atime and ctime. <paramref name="changes"/> lists every path changed (sorted, ordinal),
    /// and a path given that needed no change as <see cref="RestoreAction.Unchanged"/>. With
    /// <paramref name="dryRun"/> nothing changes and the list says what would.
    /// Errors (nothing is changed): ENOENT no such snapshot (<paramref name="badPath"/> null), or
    /// <paramref name="badPath"/> exists in neither tree or its live parent directory does not exist;
    /// ENOTDIR a live parent component is not a directory; EINVAL a malformed path or one inside
    /// <c>/.snapshots</c>; EBUSY frozen; EIO failed pool.
    /// </summary>
    public Errno RestoreFromSnapshot(string name, IReadOnlyList<string> paths, bool dryRun, out List<RestoreChange> changes, out string? badPath)
    {
        changes = new List<RestoreChange>();
        badPath = null;
        var parsed = new List<string[]>();
        foreach (var p in paths)
        {
            var parts = p.Split('/', StringSplitOptions.RemoveEmptyEntries);
            if (!p.StartsWith('/') || parts.Any(x => x is "." or ".." || CheckName(x) != 0) || parts is [".snapshots", ..])
            {
                badPath = p;
                return Errno.EINVAL;
            }
            parsed.Add(parts);
        }
        // A path under another given path (or given twice) is restored with it: dropping it keeps the apply pass
        // identical to the plan (restoring /a first could remove the /a/b a later pass would look for).
        var all = Enumerable.Range(0, parsed.Count).ToList();
        var order = all.Where(i => !all.Any(j => j != i && IsUnder(parsed[i], parsed[j]) && (parsed[i].Length > parsed[j].Length || j < i))).ToList();
        paths = order.Select(i => paths[i]).ToList();
        parsed = order.Select(i => parsed[i]).ToList();
        // Files replaced in place need their WriteGates, which are taken before CommitLock and StateLock (the lock
        // order): plan under the locks, take the gates the plan needs outside them, and plan again, until a plan
        // needs no gate that is not held; then apply it under the same locks.
        var held = new List<LiveInode>();   // pinned
        var gated = new List<LiveInode>();  // whose gates are held: all of held after the first round, in inode order
        List<TreeChange>? notify = null;
        try
        {
            while (true)
            {
                lock (CommitLock)
                    lock (StateLock)
                    {
                        var e = SnapshotOps.SnapshotForChange(name, out var snap);
                        if (e != 0) return e;
                        var tree = Snapshots.View(snap.Gen);
                        var plan = new RestoreWalk(tree, apply: false);
                        for (int i = 0; i < parsed.Count; i++)
                        {
                            e = RestorePath(plan, parsed[i]);
                            if (e != 0) { badPath = paths[i]; return e; }
                        }
                        var missing = plan.InPlace.Where(li => !held.Contains(li)).ToList();
                        if (dryRun || missing.Count == 0)
                        {
                            if (!dryRun)
                            {
                                var run = new RestoreWalk(tree, apply: true);
                                Commits.FailStop($"while restoring from snapshot '{name}'", () =>
                                {
                                    foreach (var parts in parsed)
                                        if (RestorePath(run, parts) is var ae and not 0) throw new InvalidOperationException($"restore: a planned path failed with {ae}");
                                    Commits.Fault("restore");
                                });
                                Commits.CommitLocked(null);
                                notify = run.Notify;
                            }
                            changes = Sorted(plan.Changes);
                            break;
                        }
                        foreach (var li in missing) { li.Pins++; held.Add(li); }
                    }
                ReleaseGates(gated);
                held.Sort((x, y) => x.Ino.CompareTo(y.Ino));
                foreach (var li in held) { li.WriteGate.Wait(); gated.Add(li); }
            }
        }
        finally
        {
            ReleaseGates(gated);
            if (held.Count > 0) lock (StateLock) foreach (var li in held) li.Pins--;
        }
        Mappings.Deliver();
        if (notify is { Count: > 0 }) DeliverTreeChanges(notify);
        return 0;
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="ancestor"/> or under it.</summary>
    private static bool IsUnder(string[] path, string[] ancestor) =>
        path.Length >= ancestor.Length && path.AsSpan(0, ancestor.Length).SequenceEqual(ancestor);

    private static void ReleaseGates(List<LiveInode> gated)
    {
        foreach (var li in gated) li.WriteGate.Release();
        gated.Clear();
    }

    /// <summary>Sorted by path (ordinal), each (path, action) once (overlapping paths list a change twice).</summary>
    private static List<RestoreChange> Sorted(List<RestoreChange> l)
    {
        var seen = new HashSet<(string, RestoreAction)>();
        return l.Where(c => seen.Add((c.Path, c.Action))).OrderBy(c => c.Path, StringComparer.Ordinal).ToList();
    }

    /// <summary>One pass over the paths: planning (<see cref="Apply"/> false: changes nothing, lists the changes
    /// and the live files that would be replaced in place) or applying. Used under StateLock.</summary>
    private sealed class RestoreWalk(ITreeReader tree, bool apply)
    {
        public readonly ITreeReader Tree = tree;
        public readonly bool Apply = apply;
        public readonly List<RestoreChange> Changes = new();
        public readonly List<LiveInode> InPlace = new();
        public readonly List<TreeChange> Notify = new();
        public long Now;
    }

    /// <summary>Restores one path. Under CommitLock and StateLock; when applying, the gates of the files replaced in place are held.</summary>
    private Errno RestorePath(RestoreWalk w, string[] parts)
    {
        w.Now = NowNs();
        int before = w.Changes.Count;
        string path = "/" + string.Join('/', parts);
        if (parts.Length == 0)
        {
            var root = Live(RootIno) ?? throw new InvalidDataException("the live tree has no root directory");
            var snapRoot = w.Tree.Inode(RootIno) ?? throw new InvalidDataException($"generation {w.Tree.Gen} has no root directory");
            RestoreDir(w, root, snapRoot, "");
            if (w.Changes.Count == before) w.Changes.Add(new RestoreChange("/", RestoreAction.Unchanged, RootIno));
            return 0;
        }
        var e = SnapshotOps.ResolveIn(LiveTree, string.Join('/', parts[..^1]), out long parentIno);
        if (e != 0) return e;
        var parent = Names.LiveDir(parentIno, out e);
        if (parent == null) return e;
        string leaf = parts[^1];
        DirOf(parent).ByName.TryGetValue(leaf, out var d);
        InodeRecord? s = SnapshotOps.ResolveIn(w.Tree, string.Join('/', parts), out long sIno) == 0 ? w.Tree.Inode(sIno) : null;
        if (s == null && d == null) return Errno.ENOENT;
        RestoreEntry(w, parent, leaf, d, s, path);
        if (w.Changes.Count == before) w.Changes.Add(new RestoreChange(path, RestoreAction.Unchanged, d!.Child));
        return 0;
    }

    /// <summary>Makes entry <paramref name="leaf"/> of live directory <paramref name="parent"/> (now <paramref name="d"/>,
    /// null when absent) what the snapshot has (<paramref name="s"/>, null when absent).</summary>
    private void RestoreEntry(RestoreWalk w, LiveInode parent, string leaf, DirentRecord? d, InodeRecord? s, string path)
    {
        if (d == null)
        {
            ListSnapshotTree(w, s!, path, RestoreAction.Created);
            if (w.Apply)
            {
                SnapshotOps.CloneSubtreeLocked(w.Tree, s!.Ino, parent, leaf, w.Now);
                w.Notify.Add(new TreeChange(parent.Ino, leaf, 0));
            }
            return;
        }
        var live = Live(d.Child) ?? throw new InvalidDataException($"directory {parent.Ino} entry '{leaf}' names missing inode {d.Child}");
        if (s == null)
        {
            ListLiveTree(w, live, path, RestoreAction.Removed);
            if (w.Apply)
            {
                RemoveLiveEntry(parent, d, w.Now);
                w.Notify.Add(new TreeChange(parent.Ino, leaf, 0));
            }
            return;
        }
        uint lt = live.Rec.Mode & S_IFMT, st = s.Mode & S_IFMT;
        if (lt != st)
        {
            // Another file type: the live item goes, the snapshot's comes back under a new inode number.
            w.Changes.Add(new RestoreChange(path, RestoreAction.Replaced, live.Ino));
            if (IsDir(live.Rec)) foreach (var c in DirOf(live).ByName.Values) ListLiveTree(w, Live(c.Child)!, path + "/" + c.Name, RestoreAction.Removed);
            if (st == S_IFDIR) foreach (var c in w.Tree.Dir(s.Ino)!.ByName.Values) ListSnapshotTree(w, w.Tree.Inode(c.Child)!, path + "/" + c.Name, RestoreAction.Created);
            if (w.Apply)
            {
                RemoveLiveEntry(parent, d, w.Now);
                SnapshotOps.CloneSubtreeLocked(w.Tree, s.Ino, parent, leaf, w.Now);
                w.Notify.Add(new TreeChange(parent.Ino, leaf, 0));
            }
            return;
        }
        if (st == S_IFDIR) { RestoreDir(w, live, s, path); return; }
        if (live.Rec.Rid == s.Rid || SameFile(live, s, w.Tree)) return;
        w.Changes.Add(new RestoreChange(path, RestoreAction.Replaced, live.Ino));
        if (st == S_IFREG && !w.InPlace.Contains(live)) w.InPlace.Add(live);
        if (!w.Apply) return;
        var r = Versions.MutableInode(live);
        if (st == S_IFREG)
        {
            // The caller holds this file's WriteGate: no write is between its data and its remap.
            // Its contents are replaced as by truncate to 0 and a copy: a fallocate reservation goes back.
            Prealloc.ReleasePrealloc(live, 0, (MaxFileSize >> BlockShift) + 1);
            var chunks = LiveChunks(live);
            if (chunks.Count > 0) Iomap.PunchRange(live, 0, (chunks[^1].Index + 1) * (long)ChunkBlocks);
            long nb = (s.Size + BlockSize - 1) >> BlockShift;
            if (nb > 0) Cloner.ShareBlocks(new RangeCloner.CloneSource(w.Tree, s.Ino, null), 0, live, 0, nb);
            r = Versions.MutableInode(live);
        }
        else { r.Target = s.Target; r.Rdev = s.Rdev; }
        CopyAttributes(r, s, w.Now);
        r.Size = s.Size;
        w.Notify.Add(new TreeChange(0, null, live.Ino));
    }

    /// <summary>Restores a directory present in both trees: its entries, then its attributes (its mtime moved
    /// with any entry changed, and is set back with them).</summary>
    private void RestoreDir(RestoreWalk w, LiveInode live, InodeRecord s, string path)
    {
        bool attrs = !SameAttributes(live.Rec, s);
        if (attrs) w.Changes.Add(new RestoreChange(path == "" ? "/" : path, RestoreAction.Attributes, live.Ino));
        var snapDir = w.Tree.Dir(s.Ino)!;
        var liveDir = DirOf(live);
        var names = liveDir.ByName.Keys.Union(snapDir.ByName.Keys).Order(StringComparer.Ordinal).ToList();
        int before = w.Changes.Count;
        foreach (var n in names)
        {
            liveDir.ByName.TryGetValue(n, out var d);
            var si = snapDir.ByName.TryGetValue(n, out var sd) ? w.Tree.Inode(sd.Child) ?? throw new InvalidDataException($"generation {w.Tree.Gen}: directory {s.Ino} entry '{n}' names missing inode {sd.Child}") : null;
            RestoreEntry(w, live, n, d, si, path + "/" + n);
        }
        if (!w.Apply || !(attrs || w.Changes.Count > before)) return;
        CopyAttributes(Versions.MutableInode(live), s, w.Now);
        w.Notify.Add(new TreeChange(0, null, live.Ino));
    }

    private static void CopyAttributes(InodeRecord r, InodeRecord s, long now)
    {
        r.Mode = (r.Mode & S_IFMT) | (s.Mode & ~S_IFMT);
        r.Uid = s.Uid; r.Gid = s.Gid;
        r.AtimeNs = s.AtimeNs; r.MtimeNs = s.MtimeNs; r.CtimeNs = now;
        r.Xattrs = s.Xattrs is { Count: > 0 } x ? new Dictionary<string, byte[]>(x) : null;
    }

    /// <summary>Mode, owner, mtime and xattrs equal (atime, ctime and btime are not compared).</summary>
    private static bool SameAttributes(InodeRecord a, InodeRecord b) =>
        a.Mode == b.Mode && a.Uid == b.Uid && a.Gid == b.Gid && a.MtimeNs == b.MtimeNs && SnapshotDiff.SameXattrs(a.Xattrs, b.Xattrs);

    private bool SameFile(LiveInode live, InodeRecord s, ITreeReader tree)
    {
        var a = live.Rec;
        if (!SameAttributes(a, s) || a.Size != s.Size || a.Target != s.Target || a.Rdev != s.Rdev) return false;
        if ((a.Mode & S_IFMT) != S_IFREG) return true;
        var la = LiveChunks(live).Where(c => c.Extents.Count > 0).ToList();
        var lb = tree.Chunks(s.Ino).Where(c => c.Extents.Count > 0).ToList();
        return SnapshotDiff.SameChunks(la, lb);
    }

    /// <summary>Lists a snapshot item and everything under it.</summary>
    private static void ListSnapshotTree(RestoreWalk w, InodeRecord s, string path, RestoreAction action)
    {
        w.Changes.Add(new RestoreChange(path, action, 0));
        if (!IsDir(s)) return;
        foreach (var c in w.Tree.Dir(s.Ino)!.ByName.Values)
            ListSnapshotTree(w, w.Tree.Inode(c.Child) ?? throw new InvalidDataException($"generation {w.Tree.Gen}: directory {s.Ino} entry '{c.Name}' names missing inode {c.Child}"), path + "/" + c.Name, action);
    }

    /// <summary>Lists a live item and everything under it.</summary>
    private void ListLiveTree(RestoreWalk w, LiveInode li, string path, RestoreAction action)
    {
        w.Changes.Add(new RestoreChange(path, action, li.Ino));
        if (!IsDir(li.Rec)) return;
        foreach (var c in DirOf(li).ByName.Values)
            ListLiveTree(w, Live(c.Child) ?? throw new InvalidDataException($"directory {li.Ino} entry '{c.Name}' names missing inode {c.Child}"), path + "/" + c.Name, action);
    }

    /// <summary>Removes entry <paramref name="d"/> of <paramref name="dir"/> and, for a directory, everything under
    /// it, as unlink and rmdir would (open files live on until closed). Under StateLock.</summary>
    private void RemoveLiveEntry(LiveInode dir, DirentRecord d, long now)
    {
        var child = Live(d.Child) ?? throw new InvalidDataException($"directory {dir.Ino} entry '{d.Name}' names missing inode {d.Child}");
        bool isDir = IsDir(child.Rec);
        if (isDir) foreach (var e in DirOf(child).ByName.Values.ToList()) RemoveLiveEntry(child, e, now);
        Versions.RemoveDirent(dir, d);
        var p = Versions.MutableInode(dir); p.MtimeNs = p.CtimeNs = now;
        if (isDir) p.Nlink--;
        Names.DropLink(child, now);
    }
}

/// <summary>What <see cref="Engine.RestoreFromSnapshot"/> did (or would do) at a path.</summary>
public enum RestoreAction
{
    /// <summary>The path did not exist live: made from the snapshot (new inode number).</summary>
    Created,
    /// <summary>The path existed in both with other contents or attributes: a file of the same type is
    /// replaced in place (same live inode), another type is removed and made again.</summary>
    Replaced,
    /// <summary>The path does not exist in the snapshot: removed from the live tree.</summary>
    Removed,
    /// <summary>A directory in both: its mode, owner, mtime or xattrs were set back.</summary>
    Attributes,
    /// <summary>A path given that needed no change.</summary>
    Unchanged,
}

/// <summary>One path of a restore. <see cref="Ino"/>: the live inode (0 for a path made from the snapshot,
/// whose number is given when it is made). Immutable.</summary>
public readonly record struct RestoreChange(string Path, RestoreAction Action, long Ino);
