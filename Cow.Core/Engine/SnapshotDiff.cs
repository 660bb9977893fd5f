using Cow.Core.FileSystem;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The difference between two versions of the tree (<see cref="Engine.DiffSnapshots"/>), computed from what it
/// is handed and nothing else: no store, no lock, no engine state. Two ways in, one result:
/// <list type="bullet">
/// <item><see cref="OfCandidates"/>: only the inodes the record indexes name as changed between the two
/// generations (the engine finds them with the <c>birth</c>/<c>death</c> indexes: cost follows the change,
/// not the tree), each looked up in both generations;</item>
/// <item><see cref="OfTrees"/>: both trees walked whole (the test oracle of the first).</item>
/// </list>
/// Per inode: present only in the old tree, removed (every name); only in the new, added; in both, names
/// compared (one name moved: renamed), then data (size, extents and checksums; a symlink's target) and
/// metadata (mode, owner, rdev, xattrs, times a read did not move alone). A removal and an addition at one
/// path with different file types merge into <see cref="ChangeKind.TypeChanged"/>; the result is sorted by
/// path, then kind.
/// <para>With a block size for ranges (<c>rangeBlockSize</c> &gt; 0), the data-changed, added and removed rows of
/// regular files also carry sizes and changed byte ranges (<see cref="SnapshotChange"/>) from the extent maps of the
/// two versions (<see cref="ChangedRanges"/>; an absent side has no chunks): only chunks of inodes already looked at
/// are read, and no file data.</para>
/// Thread-safe: static, and the lookups it is given are only read.
/// </summary>
internal static class SnapshotDiff
{
    private const uint S_IFMT = 0xF000, S_IFREG = 0x8000;
    private const long RootIno = Engine.RootIno;

    /// <summary>One generation of the tree as the committed records show it: an inode, the entries naming an
    /// inode (its links), a file's chunks in index order.</summary>
    public sealed record Generation(Func<long, InodeRecord?> Inode, Func<long, List<DirentRecord>> Links, Func<long, List<ChunkRecord>> Chunks);

    /// <summary>The changes from <paramref name="a"/> to <paramref name="b"/> among the inodes
    /// <paramref name="candidates"/> (every inode with a record born or dead between the two, and every inode an
    /// entry born or dead between them names); <paramref name="dirsWithChangedEntries"/>: the directories one of
    /// whose entries is visible in one generation only; <paramref name="rangeBlockSize"/>: the pool's block size to
    /// report sizes and ranges, 0 for none.</summary>
    public static List<SnapshotChange> OfCandidates(Generation a, Generation b, IEnumerable<long> candidates, IReadOnlySet<long> dirsWithChangedEntries,
        int rangeBlockSize = 0)
    {
        var pathsA = new Dictionary<long, string?>();
        var pathsB = new Dictionary<long, string?>();
        var result = new List<SnapshotChange>();
        var modeA = new Dictionary<long, uint>();
        var modeB = new Dictionary<long, uint>();
        foreach (long ino in candidates.Order())
        {
            var ra = a.Inode(ino);
            var rb = b.Inode(ino);
            var la = ra == null ? new List<TreeLink>() : LinksOf(ino, a, pathsA);
            var lb = rb == null ? new List<TreeLink>() : LinksOf(ino, b, pathsB);
            if (la.Count > 0) modeA[ino] = ra!.Mode;
            if (lb.Count > 0) modeB[ino] = rb!.Mode;
            Classify(result, ino, la.Count > 0 ? ra : null, lb.Count > 0 ? rb : null, la, lb,
                () => a.Chunks(ino), () => b.Chunks(ino), () => dirsWithChangedEntries.Contains(ino), rangeBlockSize);
        }
        return Finish(result, modeA, modeB);
    }

    /// <summary>The changes from tree <paramref name="a"/> to tree <paramref name="b"/>, both walked whole
    /// (<paramref name="rangeBlockSize"/> as for <see cref="OfCandidates"/>).</summary>
    public static List<SnapshotChange> OfTrees(ITreeReader a, ITreeReader b, int rangeBlockSize = 0)
    {
        var ta = WalkTree(a);
        var tb = WalkTree(b);
        var result = new List<SnapshotChange>();
        foreach (var ino in ta.Inodes.Keys.Union(tb.Inodes.Keys).Order())
        {
            var ra = ta.Inodes.GetValueOrDefault(ino);
            var rb = tb.Inodes.GetValueOrDefault(ino);
            Classify(result, ino, ra, rb, ta.Links.GetValueOrDefault(ino) ?? new(), tb.Links.GetValueOrDefault(ino) ?? new(),
                () => a.Chunks(ino), () => b.Chunks(ino), () => !SameEntries(a.Dir(ino)!, b.Dir(ino)!), rangeBlockSize);
        }
        return Finish(result, ta.Inodes.ToDictionary(kv => kv.Key, kv => kv.Value.Mode), tb.Inodes.ToDictionary(kv => kv.Key, kv => kv.Value.Mode));
    }

    private static bool IsDir(InodeRecord r) => Engine.IsDir(r);

    /// <summary>The names of <paramref name="ino"/> in <paramref name="gen"/> with their paths (the root:
    /// "/"); names inside a directory that is itself unreachable are left out.</summary>
    private static List<TreeLink> LinksOf(long ino, Generation gen, Dictionary<long, string?> dirPaths)
    {
        if (ino == RootIno) return new List<TreeLink> { new(0, "", "/") };
        var list = new List<TreeLink>();
        foreach (var d in gen.Links(ino))
            if (DirPath(d.Dir, gen, dirPaths) is { } dp) list.Add(new TreeLink(d.Dir, d.Name, dp + "/" + d.Name));
        return list;
    }

    /// <summary>Path of directory <paramref name="dir"/> in <paramref name="gen"/> ("" for the root),
    /// null when no name reaches it; memoized.</summary>
    private static string? DirPath(long dir, Generation gen, Dictionary<long, string?> memo)
    {
        if (dir == RootIno) return "";
        if (memo.TryGetValue(dir, out var p)) return p;
        memo[dir] = null; // a cycle (corruption) ends as unreachable
        var links = gen.Links(dir);
        p = links.Count == 1 && DirPath(links[0].Dir, gen, memo) is { } parent ? parent + "/" + links[0].Name : null;
        memo[dir] = p;
        return p;
    }

    /// <summary>The changes of one inode, present in the old tree (<paramref name="ra"/> non-null, named by
    /// <paramref name="la"/>), the new one, or both. Each side's chunks are loaded at most once.</summary>
    private static void Classify(List<SnapshotChange> result, long ino, InodeRecord? ra, InodeRecord? rb, List<TreeLink> la, List<TreeLink> lb,
        Func<List<ChunkRecord>> chunksA, Func<List<ChunkRecord>> chunksB, Func<bool> entriesChanged, int rangeBlockSize)
    {
        if (ra == null && rb == null) return;
        List<ChunkRecord>? ca = null, cb = null;
        List<ChunkRecord> A() => ca ??= chunksA();
        List<ChunkRecord> B() => cb ??= chunksB();
        // A name present on one side only: the path's file appears or disappears whole (the other side: no chunks).
        SnapshotChange Removed(TreeLink l) => WithRanges(new SnapshotChange(l.Path, ChangeKind.Removed, ino), ra, null, A, () => [], rangeBlockSize);
        SnapshotChange Added(TreeLink l) => WithRanges(new SnapshotChange(l.Path, ChangeKind.Added, ino), null, rb, () => [], B, rangeBlockSize);
        if (rb == null) { foreach (var l in la) result.Add(Removed(l)); return; }
        if (ra == null) { foreach (var l in lb) result.Add(Added(l)); return; }
        var onlyA = la.Where(x => !lb.Any(y => y.Dir == x.Dir && y.Name == x.Name)).ToList();
        var onlyB = lb.Where(y => !la.Any(x => y.Dir == x.Dir && y.Name == x.Name)).ToList();
        if (onlyA.Count == 1 && onlyB.Count == 1) result.Add(new SnapshotChange(onlyB[0].Path, ChangeKind.Renamed, ino, onlyA[0].Path));
        else
        {
            foreach (var l in onlyA) result.Add(Removed(l));
            foreach (var l in onlyB) result.Add(Added(l));
        }
        if (ra.Rid == rb.Rid) return;
        // A file with several names is reported under the first by path of those it has in both trees (else of its new ones).
        var kept = lb.Where(y => !onlyB.Contains(y)).ToList();
        string path = (kept.Count > 0 ? kept : lb).Select(l => l.Path).Min(StringComparer.Ordinal)!;
        bool data = (ra.Mode & S_IFMT) == S_IFREG ? ra.Size != rb.Size || !SameChunks(A(), B()) : ra.Target != rb.Target;
        bool entries = IsDir(ra) && entriesChanged();
        bool meta = ra.Mode != rb.Mode || ra.Uid != rb.Uid || ra.Gid != rb.Gid || ra.Rdev != rb.Rdev || !SameXattrs(ra.Xattrs, rb.Xattrs)
            // An atime a read moved (relatime) is not a change; one set explicitly (touch -a) moved ctime too.
            || (!data && !entries && (ra.MtimeNs != rb.MtimeNs || (ra.AtimeNs != rb.AtimeNs && ra.CtimeNs != rb.CtimeNs) || ra.BtimeNs != rb.BtimeNs));
        if (data) result.Add(WithRanges(new SnapshotChange(path, ChangeKind.ModifiedData, ino), ra, rb, A, B, rangeBlockSize));
        if (meta) result.Add(new SnapshotChange(path, ChangeKind.ModifiedMetadata, ino));
    }

    /// <summary><paramref name="c"/> with the sizes and changed byte ranges of a regular file from version
    /// <paramref name="ra"/> (null: absent) to <paramref name="rb"/>, when <paramref name="blockSize"/> asks for them;
    /// <paramref name="c"/> unchanged otherwise. Runs of blocks become bytes clamped to the larger size (a run past it,
    /// e.g. blocks preallocated past the end, is dropped); adjacent runs of one kind are already merged.</summary>
    private static SnapshotChange WithRanges(SnapshotChange c, InodeRecord? ra, InodeRecord? rb,
        Func<List<ChunkRecord>> chunksA, Func<List<ChunkRecord>> chunksB, int blockSize)
    {
        var r = ra ?? rb!;
        if (blockSize <= 0 || (r.Mode & S_IFMT) != S_IFREG) return c;
        long end = Math.Max(ra?.Size ?? 0, rb?.Size ?? 0);
        var ranges = new List<ByteRange>();
        foreach (var run in ChangedRanges.Between(chunksA(), chunksB()))
        {
            long from = run.FileBlock * blockSize, to = Math.Min(run.End * blockSize, end);
            if (from < to) ranges.Add(new ByteRange(from, to - from, run.Mapped));
        }
        return c with { SizeBefore = ra?.Size, SizeAfter = rb?.Size, Ranges = ranges };
    }

    /// <summary>Merges a removal and an addition at one path with different file types into
    /// <see cref="ChangeKind.TypeChanged"/>, then sorts by path and kind.</summary>
    private static List<SnapshotChange> Finish(List<SnapshotChange> result, Dictionary<long, uint> modeA, Dictionary<long, uint> modeB)
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

    private sealed record TreeLink(long Dir, string Name, string Path);

    private sealed class TreeWalk
    {
        public readonly Dictionary<long, InodeRecord> Inodes = new();
        public readonly Dictionary<long, List<TreeLink>> Links = new();
    }

    /// <summary>Every inode reachable from the root of <paramref name="tree"/> with its names.</summary>
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

    internal static bool SameChunks(List<ChunkRecord> a, List<ChunkRecord> b)
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

    internal static bool SameXattrs(Dictionary<string, byte[]>? a, Dictionary<string, byte[]>? b)
    {
        int na = a?.Count ?? 0, nb = b?.Count ?? 0;
        if (na != nb) return false;
        if (na == 0) return true;
        foreach (var (k, v) in a!) if (!b!.TryGetValue(k, out var w) || !v.AsSpan().SequenceEqual(w)) return false;
        return true;
    }
}
