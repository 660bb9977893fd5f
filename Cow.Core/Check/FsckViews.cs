using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Check;

/// <summary>
/// fsck's record checks (format.md 5.8, invariants 1–3): every record version's generations, and each view's namespace
/// and extent maps. Works from compact facts of every version (<see cref="Facts"/>): what the checks need of an inode,
/// entry or chunk, without checksums, xattrs or extents (a chunk keeps its extents only when its file holds fallocate
/// ranges); they are read once, streamed from the store. Stateless; runs on fsck's thread.
/// </summary>
internal static class FsckViews
{
    /// <param name="Extra">What only a directory or a file with fallocate ranges has (null for any other inode: most of them).</param>
    public readonly record struct InodeFact(long Ino, long Rid, long Birth, long Death, uint Mode, uint Nlink, long Size, long Blocks, InodeExtra? Extra)
    {
        public long Parent => Extra?.Parent ?? 0;
        public long NextPos => Extra?.NextPos ?? 0;
        public long PreallocBlocks => Extra?.PreallocBlocks ?? 0;
        public long[]? Prealloc => Extra?.Prealloc;
        public bool VisibleAt(long gen) => Birth <= gen && gen < Death;
        public bool IsDir => (Mode & 0xF000) == 0x4000;
        public bool IsRegular => (Mode & 0xF000) == 0x8000;
    }

    /// <summary>A directory's <c>parent</c> and <c>next_pos</c>, a file's fallocate ranges.</summary>
    public sealed record InodeExtra(long Parent, long NextPos, long PreallocBlocks, long[]? Prealloc);

    public readonly record struct DirentFact(long Rid, long Dir, long Child, long Birth, long Death, long Pos, uint Type, string Name)
    {
        public bool VisibleAt(long gen) => Birth <= gen && gen < Death;
    }

    /// <param name="Mapped">Blocks the chunk's extents map.</param>
    /// <param name="Past">The first extent mapping past <see cref="End"/> is checked against the file's size: the file
    /// block after the chunk's last mapped block, and the device and address of the extent that maps it.</param>
    /// <param name="Ranges">The file block ranges it maps, only for a file with fallocate ranges (null otherwise).</param>
    public readonly record struct ChunkFact(long Rid, long Ino, long Index, long Birth, long Death, long Mapped, long End,
        uint LastDevice, long LastAddress, long LastFirstBlock, (long Start, long End)[]? Ranges)
    {
        public bool VisibleAt(long gen) => Birth <= gen && gen < Death;
    }

    /// <summary>Every record version's facts, and the device segments the chunks map (the block checks' work list).</summary>
    public sealed class Facts
    {
        public readonly List<InodeFact> Inodes = new();
        public readonly List<DirentFact> Dirents = new();
        public readonly List<ChunkFact> Chunks = new();
        public readonly HashSet<(uint Device, long Segment)> Segments = new();
    }

    /// <summary>Distinct entry names kept as one string each while the facts are read.</summary>
    private const int MaxSharedNames = 65536;

    /// <summary>Reads every version's facts (a pass over each collection) and checks each extent's shape and bounds
    /// (invariant 3) as the chunks stream by.</summary>
    public static Facts Load(Engine.Engine engine, FsckReport r)
    {
        var f = new Facts();
        var withPrealloc = new HashSet<long>();
        long keep = Fsck.StorePages(engine);   // fsck holds the store alone: LiteDB's pages are given back as it reads
        foreach (var i in engine.Store.AllInodes(keep))
        {
            bool extra = (i.Mode & 0xF000) == 0x4000 || i.Prealloc != null || i.PreallocBlocks != 0 || i.Parent != 0 || i.NextPos != 0;
            f.Inodes.Add(new InodeFact(i.Ino, i.Rid, i.Birth, i.Death, i.Mode, i.Nlink, i.Size, i.Blocks,
                extra ? new InodeExtra(i.Parent, i.NextPos, i.PreallocBlocks, i.Prealloc) : null));
            if (i.Prealloc != null) withPrealloc.Add(i.Ino);
        }
        // Names repeat across directories and versions (f0..f99, index.html): one string each, up to a bound.
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var d in engine.Store.AllDirents(keep))
        {
            string name = d.Name;
            if (names.TryGetValue(name, out var same)) name = same;
            else if (names.Count < MaxSharedNames) names[name] = name;
            f.Dirents.Add(new DirentFact(d.Rid, d.Dir, d.Child, d.Birth, d.Death, d.Pos, d.Type, name));
        }
        int shift = System.Numerics.BitOperations.Log2((uint)engine.BlockSize);
        foreach (var c in engine.Store.AllChunks(keep))
        {
            uint prevEnd = 0;
            long mapped = 0, end = 0, lastFirst = 0, lastAddr = 0;
            uint lastDev = 0;
            foreach (var e in c.Extents)
            {
                long fileOff = (c.Index * FormatConstants.ChunkBlocks + e.First) << shift;
                if (e.Count == 0 || e.First < prevEnd || e.End > FormatConstants.ChunkBlocks)
                    r.Add("extents", $"chunk record {c.Rid}: extent at chunk block {e.First}+{e.Count} is empty, unsorted, overlapping or past the chunk", c.Ino, fileOff);
                prevEnd = e.End;
                mapped += e.Count;
                long fileEnd = c.Index * FormatConstants.ChunkBlocks + e.End;
                if (fileEnd > end) { end = fileEnd; lastFirst = c.Index * FormatConstants.ChunkBlocks + e.First; lastDev = e.Device; lastAddr = e.Address; }
                if (!engine.Space.TryGetValue(e.Device, out var sp)) { r.Add("extents", $"chunk record {c.Rid} points at unknown device cookie {e.Device}", c.Ino, fileOff, e.Device, e.Address); continue; }
                if (e.Address < 1 || e.Address + e.Count > sp.Blocks) { r.Add("extents", $"chunk record {c.Rid} points outside device {e.Device} ({sp.Blocks} blocks)", c.Ino, fileOff, e.Device, e.Address); continue; }
                for (long s = e.Address / FormatConstants.SegmentBlocks; s <= (e.Address + e.Count - 1) / FormatConstants.SegmentBlocks; s++)
                {
                    f.Segments.Add((e.Device, s));
                    if (e.Address <= s * FormatConstants.SegmentBlocks && s * FormatConstants.SegmentBlocks < e.Address + e.Count)
                        r.Add("extents", "extent covers a segment's reserved first block", c.Ino, (c.Index * FormatConstants.ChunkBlocks + e.First + s * FormatConstants.SegmentBlocks - e.Address) << shift, e.Device, s * FormatConstants.SegmentBlocks);
                }
            }
            var ranges = withPrealloc.Contains(c.Ino)
                ? c.Extents.Select(e => (c.Index * FormatConstants.ChunkBlocks + e.First, c.Index * FormatConstants.ChunkBlocks + (long)e.End)).ToArray()
                : null;
            f.Chunks.Add(new ChunkFact(c.Rid, c.Ino, c.Index, c.Birth, c.Death, mapped, end, lastDev, lastAddr, lastFirst, ranges));
        }
        r.Inodes = f.Inodes.Count; r.Chunks = f.Chunks.Count;
        return f;
    }

    /// <summary>Invariant 1: every version has 1 ≤ birth &lt; death, dies no later than the live generation, and is seen
    /// by some view; while a receive is pending (<paramref name="receiveGen"/> above 0), versions born at its generation are
    /// staged and those it replaced die there (format.md 10.5).</summary>
    public static void CheckVersions(Facts f, FsckReport r, long[] views, long liveGen, IReadOnlyList<PendingPurge> purges, long receiveGen = 0)
    {
        void Check(long rid, long birth, long death, string what, long ino)
        {
            if (birth < 1 || birth >= death) r.Add("version", $"{what} record {rid} has birth {birth} >= death {death}", ino);
            if (receiveGen > 0 && birth == receiveGen) return;
            if (death != FormatConstants.Forever && death > liveGen && death != receiveGen) r.Add("version", $"{what} record {rid} dies at {death}, after the live generation {liveGen}", ino);
            int v = Engine.GenerationHistogram.LowerBound(views, birth);
            // Versions of a deleted snapshot whose purge is under way (or was cut short: the next open finishes it).
            if ((v == views.Length || views[v] >= death) && !purges.Any(p => p.Covers(birth, death)))
                r.Add("leak", $"{what} record {rid} is seen by no snapshot and not by the live tree", ino);
        }
        foreach (var i in f.Inodes) Check(i.Rid, i.Birth, i.Death, "inode", i.Ino);
        foreach (var d in f.Dirents) Check(d.Rid, d.Birth, d.Death, $"entry '{d.Name}' of directory {d.Dir}", d.Dir);
        foreach (var c in f.Chunks) Check(c.Rid, c.Birth, c.Death, $"chunk {c.Index}", c.Ino);
    }

    /// <summary>Invariant 2 and the per-view part of 3, each view whole: one visible version per key, entries naming
    /// existing inodes of their type in directories, link counts, orphans, and each file's extent maps (one version per
    /// chunk, a regular file's, nothing past its end, its <c>blocks</c>, its fallocate ranges). Time O(views × versions):
    /// the test oracle of <see cref="FsckViewSweep"/>, which fsck runs.</summary>
    public static void CheckEachViewWhole(Engine.Engine engine, Facts f, FsckReport r, long[] views, IReadOnlyList<SnapshotRecord> snaps)
    {
        int bs = engine.BlockSize, shift = System.Numerics.BitOperations.Log2((uint)bs);
        long liveGen = views[^1];
        string ViewName(long g) => g == liveGen ? "live tree" : $"snapshot '{snaps.First(s => s.Gen == g).Name}'";
        foreach (var g in views)
        {
            string vn = ViewName(g);
            var vin = new Dictionary<long, InodeFact>();
            foreach (var i in f.Inodes)
                if (i.VisibleAt(g) && !vin.TryAdd(i.Ino, i)) r.Add("namespace", $"{vn}: inode {i.Ino} has two visible versions", i.Ino);
            if (!vin.TryGetValue(Engine.Engine.RootIno, out var root) || !root.IsDir) r.Add("namespace", $"{vn}: no root directory");
            var names = new Dictionary<long, int>();
            var subdirs = new Dictionary<long, int>();
            var seen = new HashSet<(long, string)>();
            foreach (var d in f.Dirents)
            {
                if (!d.VisibleAt(g)) continue;
                if (!seen.Add((d.Dir, d.Name))) r.Add("namespace", $"{vn}: directory {d.Dir} has two entries named '{d.Name}'", d.Dir);
                if (!vin.TryGetValue(d.Dir, out var dir) || !dir.IsDir) { r.Add("namespace", $"{vn}: entry '{d.Name}' is in {d.Dir}, which is not a directory", d.Dir); continue; }
                if (!vin.TryGetValue(d.Child, out var child)) { r.Add("namespace", $"{vn}: entry '{d.Name}' of directory {d.Dir} names missing inode {d.Child}", d.Dir); continue; }
                if (child.Mode >> 12 != d.Type) r.Add("namespace", $"{vn}: entry '{d.Name}' has type {d.Type}, inode {d.Child} has mode {Convert.ToString(child.Mode, 8)}", d.Child);
                if (d.Pos < 3 || d.Pos >= dir.NextPos) r.Add("namespace", $"{vn}: entry '{d.Name}' has position {d.Pos} outside 3..{dir.NextPos - 1}", d.Dir);
                names[d.Child] = names.GetValueOrDefault(d.Child) + 1;
                if (child.IsDir)
                {
                    subdirs[d.Dir] = subdirs.GetValueOrDefault(d.Dir) + 1;
                    if (child.Parent != d.Dir) r.Add("namespace", $"{vn}: directory {d.Child} is in {d.Dir} but records parent {child.Parent}", d.Child);
                }
            }
            seen.Clear();
            foreach (var i in vin.Values)
            {
                if (i.IsDir && i.Nlink == 0 && names.GetValueOrDefault(i.Ino) == 0 && subdirs.GetValueOrDefault(i.Ino) == 0)
                {
                    // Removed while open (rmdir, or replaced by rename): as an unlinked open file.
                    r.Directories++;
                    if (g == liveGen && !engine.IsOpen(i.Ino)) r.Add("orphan", $"{vn}: directory {i.Ino} was removed and is not open", i.Ino);
                }
                else if (i.IsDir)
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
                        else if (g == liveGen && !engine.IsOpen(i.Ino)) r.Add("orphan", $"{vn}: inode {i.Ino} was unlinked and is not open", i.Ino);
                    }
                    else if (i.Nlink != n) r.Add("nlink", $"{vn}: inode {i.Ino} has nlink {i.Nlink}, but {n} entries name it", i.Ino);
                }
            }
            names.Clear(); subdirs.Clear();
            CheckExtentMaps(f, r, g, vn, vin, bs, shift);
        }
    }

    /// <summary>The extent maps of view <paramref name="g"/>: one version per chunk, chunks of regular files only, nothing
    /// past a file's end, each file's <c>blocks</c> and fallocate ranges (format.md 5.4 <c>prealloc</c>).</summary>
    private static void CheckExtentMaps(Facts f, FsckReport r, long g, string vn, Dictionary<long, InodeFact> vin, int bs, int shift)
    {
        var blocks = new Dictionary<long, long>();
        var vchunks = new HashSet<(long, long)>();
        var mappedOf = new Dictionary<long, List<(long Start, long End)>>();   // files with fallocate reservations
        foreach (var c in f.Chunks)
        {
            if (!c.VisibleAt(g)) continue;
            if (!vchunks.Add((c.Ino, c.Index))) r.Add("extents", $"{vn}: chunk {c.Index} has two visible versions", c.Ino, c.Index * FormatConstants.ChunkBlocks * bs);
            if (!vin.TryGetValue(c.Ino, out var fileOwner) || !fileOwner.IsRegular) { r.Add("extents", $"{vn}: chunk {c.Index} belongs to inode {c.Ino}, which is not a regular file", c.Ino); continue; }
            blocks[c.Ino] = blocks.GetValueOrDefault(c.Ino) + c.Mapped;
            if (fileOwner.Prealloc != null && c.Ranges != null)
            {
                if (!mappedOf.TryGetValue(c.Ino, out var ml)) mappedOf[c.Ino] = ml = new List<(long, long)>();
                ml.AddRange(c.Ranges);
            }
            long eofBlock = (fileOwner.Size + bs - 1) >> shift;
            if (c.End > eofBlock)
                r.Add("extents", $"{vn}: extent maps blocks past the end of the file (size {fileOwner.Size})", c.Ino, c.LastFirstBlock << shift, c.LastDevice, c.LastAddress);
        }
        vchunks.Clear();
        foreach (var i in vin.Values)
            if (i.IsRegular && i.Blocks != blocks.GetValueOrDefault(i.Ino)) r.Add("blocks", $"{vn}: inode {i.Ino} records {i.Blocks} blocks, its extents map {blocks.GetValueOrDefault(i.Ino)}", i.Ino);
        // fallocate reservations (format.md, prealloc): sorted, disjoint, not touching; prealloc_blocks = the holes
        // inside them + the slack.
        foreach (var i in vin.Values)
        {
            if (i.Prealloc == null) continue;
            var pr = i.Prealloc;
            bool shaped = i.IsRegular && pr.Length % 2 == 0;
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
}
