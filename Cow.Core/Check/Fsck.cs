using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Check;

/// <summary>One violated invariant: where (inode, file offset, device, device block; -1/0 where it does
/// not apply) and what. <see cref="Paths"/>: the inode's paths in the live tree and in the snapshots that see it,
/// e.g. "/a/b.txt; snapshot monday: /a/b.txt", or "no path: orphan" (null when there is no inode).</summary>
public readonly record struct FsckProblem(string Kind, long Ino, long Offset, uint Device, long Block, string Message)
{
    public string? Paths { get; init; }

    public override string ToString() => $"{Kind}: {Message}" +
        (Ino > 0 ? $" [inode {Ino}" + (Paths != null ? $" ({Paths})" : "") + (Offset >= 0 ? $" offset {Offset}" : "") + "]" : "") +
        (Device != 0 ? $" [device {Device} block {Block}]" : "");
}

public sealed class FsckReport
{
    public List<FsckProblem> Problems { get; } = new();
    public long Inodes, Directories, Files, Chunks, ReferencedBlocks, Snapshots, VerifiedBlocks;
    public bool Clean => Problems.Count == 0;
    internal void Add(string kind, string msg, long ino = 0, long offset = -1, uint dev = 0, long block = 0)
    {
        if (Problems.Count < 10000) Problems.Add(new FsckProblem(kind, ino, offset, dev, block, msg));
    }
    public override string ToString() => Clean
        ? $"clean: {Inodes} inode versions, {Chunks} chunk versions, {ReferencedBlocks} referenced blocks, {Snapshots} snapshots"
        : string.Join("\n", Problems.Select(p => p.ToString()));
}

/// <summary>
/// Checks every invariant of format.md ("Invariants") on a committed pool: record versions, each view's
/// namespace (one version per key, entries name existing inodes of the right type, link counts, no
/// orphans), extent maps (sorted, inside their device's data area, block counts), the space maps against
/// reference counts recomputed from every chunk version's mappings (a block shared by a range clone has
/// one reference per mapping, whichever file and generation it is in), every mapping of one block
/// recording the same checksum, no referenced block reserved for a write in flight, segment headers,
/// superblocks and (optionally) every referenced block's checksum.
/// Threading: runs with the engine exclusively locked.
/// </summary>
public static class Fsck
{
    /// <param name="progress">Called from the checking thread with (data blocks verified, data blocks to verify),
    /// about every 4096 blocks and once at the end of the data pass; null: not told.</param>
    public static FsckReport Run(Engine.Engine engine, bool verifyData, Action<long, long>? progress = null)
        => engine.Exclusive(() => RunLocked(engine, verifyData, progress));

    private static FsckReport RunLocked(Engine.Engine engine, bool verifyData, Action<long, long>? progress)
    {
        var r = new FsckReport();
        var store = engine.Store;
        var pool = engine.PoolState;
        int bs = engine.BlockSize, shift = System.Numerics.BitOperations.Log2((uint)bs);
        var snaps = engine.SnapshotList;
        var views = snaps.Select(s => s.Gen).Append(pool.LiveGen).ToArray();
        string ViewName(long g) => g == pool.LiveGen ? "live tree" : $"snapshot '{snaps.First(s => s.Gen == g).Name}'";
        r.Snapshots = snaps.Count;

        CheckSuperblocks(engine, r);
        if (snaps.Select(s => s.Gen).Distinct().Count() != snaps.Count) r.Add("snapshots", "two snapshots share a generation");
        if (snaps.Any(s => s.Gen >= pool.LiveGen)) r.Add("snapshots", "a snapshot's generation is not below the live generation");
        foreach (var s in snaps)
        {
            if (Engine.SnapshotManager.SnapshotNameProblem(s.Name) is { } np) r.Add("snapshots", $"snapshot {s.Gen}: {np}");
            if (s.Holds.Distinct(StringComparer.Ordinal).Count() != s.Holds.Count) r.Add("snapshots", $"snapshot '{s.Name}' lists a hold twice");
            foreach (var h in s.Holds)
                if (Engine.SnapshotManager.HoldTagProblem(h) is { } hp) r.Add("snapshots", $"snapshot '{s.Name}': {hp}");
            if (s.Properties.Count > Engine.Engine.MaxSnapshotProperties) r.Add("snapshots", $"snapshot '{s.Name}' has {s.Properties.Count} properties, more than {Engine.Engine.MaxSnapshotProperties}");
            foreach (var (k, v) in s.Properties)
                if (Engine.SnapshotManager.SnapshotPropertyProblem(k, v) is { } pp) r.Add("snapshots", $"snapshot '{s.Name}': {pp}");
        }
        if (snaps.Select(s => s.Name).Distinct(StringComparer.Ordinal).Count() != snaps.Count) r.Add("snapshots", "two snapshots have the same name");

        var inodes = store.AllInodes().ToList();
        var dirents = store.AllDirents().ToList();
        var chunks = store.AllChunks().ToList();
        // Invariant 9: the cleaner finds the chunks that map a segment by segs, so a chunk whose segs is wrong
        // would keep pointing at blocks the cleaner moved and freed.
        foreach (var (rid, ino, problem) in store.ChunkSegsProblems())
            r.Add("segs", $"chunk record {rid}: {problem}", ino);
        r.Inodes = inodes.Count; r.Chunks = chunks.Count;

        void CheckVersion(VersionedRecord v, string what, long ino)
        {
            if (v.Birth < 1 || v.Birth >= v.Death) r.Add("version", $"{what} record {v.Rid} has birth {v.Birth} >= death {v.Death}", ino);
            if (v.Death != FormatConstants.Forever && v.Death > pool.LiveGen) r.Add("version", $"{what} record {v.Rid} dies at {v.Death}, after the live generation {pool.LiveGen}", ino);
            if (!views.Any(v.VisibleAt)) r.Add("leak", $"{what} record {v.Rid} is seen by no snapshot and not by the live tree", ino);
        }
        foreach (var i in inodes) CheckVersion(i, "inode", i.Ino);
        foreach (var d in dirents) CheckVersion(d, $"entry '{d.Name}' of directory {d.Dir}", d.Dir);
        foreach (var c in chunks) CheckVersion(c, $"chunk {c.Index}", c.Ino);

        // Each view's namespace.
        foreach (var g in views)
        {
            string vn = ViewName(g);
            var vin = new Dictionary<long, InodeRecord>();
            foreach (var i in inodes.Where(i => i.VisibleAt(g)))
                if (!vin.TryAdd(i.Ino, i)) r.Add("namespace", $"{vn}: inode {i.Ino} has two visible versions", i.Ino);
            if (!vin.TryGetValue(Engine.Engine.RootIno, out var root) || !Engine.Engine.IsDir(root)) r.Add("namespace", $"{vn}: no root directory");
            var names = new Dictionary<long, int>();
            var subdirs = new Dictionary<long, int>();
            var seen = new HashSet<(long, string)>();
            foreach (var d in dirents.Where(d => d.VisibleAt(g)))
            {
                if (!seen.Add((d.Dir, d.Name))) r.Add("namespace", $"{vn}: directory {d.Dir} has two entries named '{d.Name}'", d.Dir);
                if (!vin.TryGetValue(d.Dir, out var dir) || !Engine.Engine.IsDir(dir)) { r.Add("namespace", $"{vn}: entry '{d.Name}' is in {d.Dir}, which is not a directory", d.Dir); continue; }
                if (!vin.TryGetValue(d.Child, out var child)) { r.Add("namespace", $"{vn}: entry '{d.Name}' of directory {d.Dir} names missing inode {d.Child}", d.Dir); continue; }
                if (child.Mode >> 12 != d.Type) r.Add("namespace", $"{vn}: entry '{d.Name}' has type {d.Type}, inode {d.Child} has mode {Convert.ToString(child.Mode, 8)}", d.Child);
                if (d.Pos < 3 || d.Pos >= dir.NextPos) r.Add("namespace", $"{vn}: entry '{d.Name}' has position {d.Pos} outside 3..{dir.NextPos - 1}", d.Dir);
                names[d.Child] = names.GetValueOrDefault(d.Child) + 1;
                if (Engine.Engine.IsDir(child))
                {
                    subdirs[d.Dir] = subdirs.GetValueOrDefault(d.Dir) + 1;
                    if (child.Parent != d.Dir) r.Add("namespace", $"{vn}: directory {d.Child} is in {d.Dir} but records parent {child.Parent}", d.Child);
                }
            }
            foreach (var i in vin.Values)
            {
                if (Engine.Engine.IsDir(i) && i.Nlink == 0 && names.GetValueOrDefault(i.Ino) == 0 && subdirs.GetValueOrDefault(i.Ino) == 0)
                {
                    // Removed while open (rmdir, or replaced by rename): as an unlinked open file.
                    r.Directories++;
                    if (g == pool.LiveGen && !engine.IsOpen(i.Ino)) r.Add("orphan", $"{vn}: directory {i.Ino} was removed and is not open", i.Ino);
                }
                else if (Engine.Engine.IsDir(i))
                {
                    r.Directories++;
                    uint expect = (uint)(2 + subdirs.GetValueOrDefault(i.Ino));
                    if (i.Nlink != expect) r.Add("nlink", $"{vn}: directory {i.Ino} has nlink {i.Nlink}, expected {expect}", i.Ino);
                    if (i.Ino != Engine.Engine.RootIno && names.GetValueOrDefault(i.Ino) != 1) r.Add("namespace", $"{vn}: directory {i.Ino} has {names.GetValueOrDefault(i.Ino)} names", i.Ino);
                }
                else
                {
                    r.Files++;
                    int n = names.GetValueOrDefault(i.Ino);
                    if (n == 0)
                    {
                        // Unlinked while open (nlink 0): the live tree deletes it at its last close (or at the
                        // next open), a snapshot taken meanwhile keeps it as it was. Anything else is an orphan.
                        if (i.Nlink != 0) r.Add("orphan", $"{vn}: inode {i.Ino} has no name but nlink {i.Nlink}", i.Ino);
                        else if (g == pool.LiveGen && !engine.IsOpen(i.Ino)) r.Add("orphan", $"{vn}: inode {i.Ino} was unlinked and is not open", i.Ino);
                    }
                    else if (i.Nlink != n) r.Add("nlink", $"{vn}: inode {i.Ino} has nlink {i.Nlink}, but {n} entries name it", i.Ino);
                }
            }
            // Extent maps of this view.
            var blocks = new Dictionary<long, long>();
            var vchunks = new HashSet<(long, long)>();
            var mappedOf = new Dictionary<long, List<(long Start, long End)>>();   // files with fallocate reservations
            foreach (var c in chunks.Where(c => c.VisibleAt(g)))
            {
                if (!vchunks.Add((c.Ino, c.Index))) r.Add("extents", $"{vn}: chunk {c.Index} has two visible versions", c.Ino, c.Index * FormatConstants.ChunkBlocks * bs);
                if (!vin.TryGetValue(c.Ino, out var fileOwner) || (fileOwner.Mode & 0xF000) != 0x8000) { r.Add("extents", $"{vn}: chunk {c.Index} belongs to inode {c.Ino}, which is not a regular file", c.Ino); continue; }
                blocks[c.Ino] = blocks.GetValueOrDefault(c.Ino) + c.Extents.Sum(e => (long)e.Count);
                if (fileOwner.Prealloc != null)
                {
                    if (!mappedOf.TryGetValue(c.Ino, out var ml)) mappedOf[c.Ino] = ml = new List<(long, long)>();
                    foreach (var e in c.Extents) ml.Add((c.Index * FormatConstants.ChunkBlocks + e.First, c.Index * FormatConstants.ChunkBlocks + e.End));
                }
                long eofBlock = (fileOwner.Size + bs - 1) >> shift;
                foreach (var e in c.Extents)
                    if (c.Index * FormatConstants.ChunkBlocks + e.End > eofBlock)
                        r.Add("extents", $"{vn}: extent maps blocks past the end of the file (size {fileOwner.Size})", c.Ino, (c.Index * FormatConstants.ChunkBlocks + e.First) << shift, e.Device, e.Address);
            }
            foreach (var i in vin.Values.Where(i => (i.Mode & 0xF000) == 0x8000))
                if (i.Blocks != blocks.GetValueOrDefault(i.Ino)) r.Add("blocks", $"{vn}: inode {i.Ino} records {i.Blocks} blocks, its extents map {blocks.GetValueOrDefault(i.Ino)}", i.Ino);
            // fallocate reservations (format.md, prealloc): sorted, disjoint, not touching; prealloc_blocks = the
            // holes inside them + the slack.
            foreach (var i in vin.Values.Where(i => i.Prealloc != null))
            {
                var pr = i.Prealloc!;
                bool shaped = (i.Mode & 0xF000) == 0x8000 && pr.Length % 2 == 0;
                for (int k = 0; shaped && k < pr.Length; k += 2)
                    shaped = pr[k] >= 0 && pr[k] < pr[k + 1] && (k == 0 || pr[k] > pr[k - 1]);
                if (!shaped) { r.Add("prealloc", $"{vn}: inode {i.Ino} has malformed fallocate ranges", i.Ino); continue; }
                long holes = 0;
                var ml = mappedOf.GetValueOrDefault(i.Ino);
                for (int k = 0; k < pr.Length; k += 2)
                {
                    long len = pr[k + 1] - pr[k];
                    foreach (var (ms, me) in ml ?? []) len -= Math.Max(0, Math.Min(me, pr[k + 1]) - Math.Max(ms, pr[k]));
                    holes += len;
                }
                long expect = holes + Engine.FallocateReservations.PreallocSlack(pr);
                if (i.PreallocBlocks != expect)
                    r.Add("prealloc", $"{vn}: inode {i.Ino} holds {i.PreallocBlocks} blocks for fallocate, its ranges need {expect} ({holes} holes and the slack)", i.Ino);
            }
        }

        // Extents: shape, bounds, reference counts, one content per block, checksums. A block may be
        // mapped at several (inode, file block) places (range clones share blocks); each mapping is one
        // reference, and all of them must describe the same data.
        // Per block: mappings, live mappings and the generations of the versions that map it.
        var refs = new Dictionary<(uint, long), BlockUse>();
        var owner = new Dictionary<(uint, long), (long Ino, long FileBlock, uint Sum)>();
        foreach (var c in chunks)
        {
            uint prevEnd = 0;
            foreach (var e in c.Extents)
            {
                long fileOff = (c.Index * FormatConstants.ChunkBlocks + e.First) << shift;
                if (e.Count == 0 || e.First < prevEnd || e.End > FormatConstants.ChunkBlocks)
                    r.Add("extents", $"chunk record {c.Rid}: extent at chunk block {e.First}+{e.Count} is empty, unsorted, overlapping or past the chunk", c.Ino, fileOff);
                prevEnd = e.End;
                if (!engine.Space.TryGetValue(e.Device, out var sp)) { r.Add("extents", $"chunk record {c.Rid} points at unknown device cookie {e.Device}", c.Ino, fileOff, e.Device, e.Address); continue; }
                if (e.Address < 1 || e.Address + e.Count > sp.Blocks) { r.Add("extents", $"chunk record {c.Rid} points outside device {e.Device} ({sp.Blocks} blocks)", c.Ino, fileOff, e.Device, e.Address); continue; }
                for (uint k = 0; k < e.Count; k++)
                {
                    long b = e.Address + k;
                    var key = (e.Device, b);
                    long fb = c.Index * FormatConstants.ChunkBlocks + e.First + k;
                    if (DeviceSpace.IsReservedByFormat(b)) r.Add("extents", "extent covers a segment's reserved first block", c.Ino, fb << shift, e.Device, b);
                    ref var use = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(refs, key, out _);
                    use.Add(c.Birth, c.Death);
                    uint sum = c.Sums[e.First + k];
                    if (owner.TryGetValue(key, out var o))
                    {
                        if (o.Sum != sum)
                            r.Add("owned-twice", $"block is mapped by inode {o.Ino} block {o.FileBlock} and by inode {c.Ino} block {fb} with different checksums (written over while referenced)", c.Ino, fb << shift, e.Device, b);
                    }
                    else owner[key] = (c.Ino, fb, sum);
                }
            }
        }
        r.ReferencedBlocks = refs.Count;
        // Space maps, a segment at a time, over the segments something maps, the persisted maps name or memory holds busy.
        var persisted = new Dictionary<(uint, long), RefRun[]>();
        var denseSegments = new HashSet<(uint, long)>();   // refs documents (versions 1 and 2): counts only
        foreach (var seg in store.LoadSpaceMaps())
        {
            persisted[(seg.Device, seg.Segment)] = seg.Runs;
            if (seg.Dense) denseSegments.Add((seg.Device, seg.Segment));
        }
        var reserved = engine.ReservedBlocks();
        var segments = new HashSet<(uint, long)>(persisted.Keys);
        foreach (var (dev, b) in refs.Keys) segments.Add((dev, b / FormatConstants.SegmentBlocks));
        foreach (var (cookie, sp) in engine.Space) foreach (long seg in sp.OccupiedSegments()) segments.Add((cookie, seg));
        foreach (var (cookie, seg) in segments.OrderBy(k => k))
        {
            if (!engine.Space.TryGetValue(cookie, out var sp)) { r.Add("space-map", $"space map of segment {seg} names unknown device cookie {cookie}", 0, -1, cookie); continue; }
            long first = seg * FormatConstants.SegmentBlocks, end = Math.Min(sp.Blocks, first + FormatConstants.SegmentBlocks);
            var diskRuns = persisted.GetValueOrDefault((cookie, seg)) ?? [];
            bool diskDense = denseSegments.Contains((cookie, seg));
            int k = 0;
            for (long b = first; b < end; b++)
            {
                int i = (int)(b - first);
                while (k < diskRuns.Length && diskRuns[k].End <= i) k++;
                RefRun? diskRun = k < diskRuns.Length && diskRuns[k].First <= i ? diskRuns[k] : null;
                uint disk = diskRun?.Refs ?? 0;
                BlockUse? want = refs.TryGetValue((cookie, b), out var w) ? w : null;
                uint expect = want?.Refs ?? 0;
                var memRun = sp.RunAt(b);
                uint mem = memRun?.Refs ?? 0;
                var who = owner.TryGetValue((cookie, b), out var o) ? o : (0, -1, 0);
                if (mem != expect || disk != expect)
                    r.Add(expect == 0 ? "leak" : "space-map", $"space map says {disk} references (in memory {mem}), the extent maps make {expect}", who.Item1, who.Item2 >= 0 ? who.Item2 << shift : -1, cookie, b);
                else if (want is { } x)
                {
                    // Live mappings and the generations that see the block (what snapshot sizes are made of).
                    if (GenerationProblem(memRun!.Value, x, views) is { } pm)
                        r.Add("space-map", $"in memory: {pm}", who.Item1, who.Item2 >= 0 ? who.Item2 << shift : -1, cookie, b);
                    else if (!diskDense && GenerationProblem(diskRun!.Value, x, views) is { } pd)
                        r.Add("space-map", pd, who.Item1, who.Item2 >= 0 ? who.Item2 << shift : -1, cookie, b);
                }
                if (expect > 0 && !sp.IsBusy(b)) r.Add("space-map", "referenced block is marked free", 0, -1, cookie, b);
                if (expect > 0 && reserved.Contains((cookie, b))) r.Add("owned-twice", "referenced block is also reserved for a write in flight", 0, -1, cookie, b);
                if (expect == 0 && sp.IsBusy(b) && !DeviceSpace.IsReservedByFormat(b) && !reserved.Contains((cookie, b)) && !sp.IsHeldBack(b))
                    r.Add("leak", "block is marked in use, but nothing references or reserves it", 0, -1, cookie, b);
            }
        }

        // The generation histogram is the sum of the space maps' classes.
        var classes = new Dictionary<EraKey, long>();
        foreach (var (_, sp) in engine.Space)
            foreach (long seg in sp.UsedSegments())
                foreach (var run in sp.CountRuns(seg))
                    classes[run.Eras] = classes.GetValueOrDefault(run.Eras) + run.Count;
        var histogram = engine.GenerationClasses;
        foreach (var key in classes.Keys.Union(histogram.Keys))
            if (classes.GetValueOrDefault(key) != histogram.GetValueOrDefault(key))
                r.Add("space-map", $"the generation histogram holds {histogram.GetValueOrDefault(key)} blocks of eras {key}, the space maps {classes.GetValueOrDefault(key)}");

        // Log segment headers of segments holding referenced data, on every log device.
        var header = new byte[bs];
        foreach (var (logCookie, logSpace) in engine.Space)
        {
            if (logSpace.Role != DeviceRole.Log) continue;
            var log = engine.Devices[logCookie];
            string name = logCookie == FormatConstants.LogCookie ? "log segment" : $"log device {logCookie} segment";
            foreach (var seg in refs.Keys.Where(k => k.Item1 == logCookie).Select(k => k.Item2 / FormatConstants.SegmentBlocks).Distinct())
            {
                if (seg == 0) continue;
                log.Read((seg * FormatConstants.SegmentBlocks) << shift, header);
                var h = SegmentHeader.TryRead(header);
                if (h == null) r.Add("segment", $"{name} {seg} holds data but has no valid segment header", 0, -1, logCookie, seg * FormatConstants.SegmentBlocks);
                else if (h.Value.PoolUuid != pool.PoolUuid || h.Value.SegmentIndex != (ulong)seg)
                    r.Add("segment", $"{name} {seg} header names pool {h.Value.PoolUuid} segment {h.Value.SegmentIndex}", 0, -1, logCookie, seg * FormatConstants.SegmentBlocks);
            }
        }

        if (verifyData)
        {
            var buf = new byte[bs];
            long total = owner.Count;
            foreach (var ((dev, b), o) in owner)
            {
                engine.Devices[dev].Read(b << shift, buf);
                if (Crc32C.Compute(buf) != o.Sum) r.Add("checksum", "data block does not match its checksum", o.Ino, o.FileBlock << shift, dev, b);
                if (++r.VerifiedBlocks % 4096 == 0) progress?.Invoke(r.VerifiedBlocks, total);
            }
            progress?.Invoke(r.VerifiedBlocks, total);
        }
        NamePaths(r, inodes, dirents, pool.LiveGen, snaps);
        return r;
    }

    /// <summary>Gives every problem about an inode the inode's paths: in the live tree, then in each snapshot that
    /// sees it (newest first), by walking visible directory entries up to the root (<see cref="InodePaths"/>).</summary>
    private static void NamePaths(FsckReport r, List<InodeRecord> inodes, List<DirentRecord> dirents, long liveGen, IReadOnlyList<SnapshotRecord> snaps)
    {
        if (!r.Problems.Any(p => p.Ino > 0)) return;
        var byChild = new Dictionary<long, Dictionary<long, List<(long Dir, string Name)>>>();
        Dictionary<long, List<(long Dir, string Name)>> Names(long g)
        {
            if (byChild.TryGetValue(g, out var m)) return m;
            m = new Dictionary<long, List<(long, string)>>();
            foreach (var d in dirents)
                if (d.VisibleAt(g))
                {
                    if (!m.TryGetValue(d.Child, out var l)) m[d.Child] = l = new List<(long, string)>();
                    l.Add((d.Dir, d.Name));
                }
            return byChild[g] = m;
        }
        var namer = new InodePaths((g, ino) => Names(g).TryGetValue(ino, out var l) ? l : []);
        var wanted = r.Problems.Where(p => p.Ino > 0).Select(p => p.Ino).ToHashSet();
        var versions = inodes.Where(x => wanted.Contains(x.Ino)).GroupBy(x => x.Ino).ToDictionary(x => x.Key, x => x.ToList());
        var described = new Dictionary<long, string>();
        for (int i = 0; i < r.Problems.Count; i++)
        {
            var p = r.Problems[i];
            if (p.Ino <= 0) continue;
            if (!described.TryGetValue(p.Ino, out var text))
            {
                var vs = versions.GetValueOrDefault(p.Ino);
                text = InodePaths.Describe(namer.InViews(p.Ino, liveGen, snaps, g => vs != null && vs.Any(x => x.VisibleAt(g))));
                described[p.Ino] = text;
            }
            r.Problems[i] = p with { Paths = text };
        }
    }

    private static void CheckSuperblocks(Engine.Engine engine, FsckReport r)
    {
        var buf = new byte[FormatConstants.SuperblockSize];
        foreach (var (cookie, dev) in engine.Devices)
        {
            dev.Read(0, buf);
            var sb = Superblock.TryRead(buf, out var problem);
            if (sb == null) r.Add("superblock", $"device {dev.Name} {problem}", 0, -1, cookie, 0);
            else if (sb.PoolUuid != engine.PoolUuid || sb.DeviceCookie != cookie) r.Add("superblock", $"device {dev.Name}: superblock names pool {sb.PoolUuid} cookie {sb.DeviceCookie}", 0, -1, cookie, 0);
        }
    }

    /// <summary>The chunk versions that map one block: how many, how many live, and their [birth, death) intervals.</summary>
    private struct BlockUse
    {
        public uint Refs, Live;
        private long _birth, _death;
        private List<(long, long)>? _more;

        public void Add(long birth, long death)
        {
            if (death == FormatConstants.Forever) Live++;
            if (Refs++ == 0) { _birth = birth; _death = death; }
            else (_more ??= new()).Add((birth, death));
        }

        /// <summary>The one version's [birth, death), or null when several map the block.</summary>
        public readonly (long, long)? Single => _more == null ? (_birth, _death) : null;

        /// <summary>The indexes of the views (ascending generations) that see one of the versions.</summary>
        public readonly SortedSet<int> Views(long[] views)
        {
            var seen = new SortedSet<int>();
            void Mark(long b, long d) { for (int v = GenerationHistogram.LowerBound(views, b); v < views.Length && views[v] < d; v++) seen.Add(v); }
            Mark(_birth, _death);
            if (_more != null) foreach (var (b, d) in _more) Mark(b, d);
            return seen;
        }
    }

    /// <summary>What is wrong with a space map's live count and eras for a block whose versions are <paramref name="want"/>,
    /// or null. The eras must make the same views see the block as its versions do (format.md 5.7); their bounds may
    /// differ where no view lies between (versions purged, or born and gone between two views).</summary>
    private static string? GenerationProblem(RefRun have, BlockUse want, long[] views)
    {
        if (have.Live != want.Live) return $"space map says {have.Live} live mappings, the extent maps make {want.Live}";
        if (have.Gaps == null && want.Single is var (wb, wd))
        {
            // The common case, without sets: one era, one version.
            int hf = GenerationHistogram.LowerBound(views, have.Birth), hl = GenerationHistogram.LowerBound(views, have.Until);
            int wf = GenerationHistogram.LowerBound(views, wb), wl = GenerationHistogram.LowerBound(views, wd);
            if ((hf >= hl && wf >= wl) || (hf == wf && hl == wl)) return null;
        }
        var seen = new SortedSet<int>();
        void Mark(long b, long d) { for (int v = GenerationHistogram.LowerBound(views, b); v < views.Length && views[v] < d; v++) seen.Add(v); }
        foreach (var (from, to) in have.Eras.Ranges()) Mark(from, to);
        var expect = want.Views(views);
        if (!seen.SetEquals(expect))
            return $"space map says views {Names(seen)} see it (eras {have.Eras}), the versions mapping it are seen by {Names(expect)}";
        return null;
        string Names(SortedSet<int> set) => set.Count == 0 ? "none" : string.Join(",", set.Select(i => views[i]));
    }
}
