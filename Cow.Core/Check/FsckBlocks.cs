using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Check;

/// <summary>
/// fsck's block checks (format.md 5.8, invariants 4–7), one device segment at a time: the chunk versions that map the
/// segment (the <c>segs</c> index; a chunk whose <c>segs</c> is wrong is reported by the <c>segs</c> check) give each
/// block's mappings, live mappings and versions, compared with the space map in memory and as persisted; every mapping
/// of a block must record the same checksum; a log segment holding data has a valid header; and, when asked, every
/// mapped block's data matches its checksum. Memory: one segment's blocks. Stateless; runs on fsck's thread.
/// </summary>
internal static class FsckBlocks
{
    private const int SegmentBlocks = FormatConstants.SegmentBlocks;

    /// <param name="mapped">The segments the chunks' extents map (from the facts pass).</param>
    public static void Check(Engine.Engine engine, HashSet<(uint Device, long Segment)> mapped, FsckReport r, long[] views,
        bool verifyData, Action<long, long>? progress)
    {
        var store = engine.Store;
        var pool = engine.PoolState;
        int bs = engine.BlockSize, shift = System.Numerics.BitOperations.Log2((uint)bs);
        // The segments to check: those the extents map, the persisted space maps name, or memory holds busy.
        var segments = new HashSet<(uint, long)>(mapped);
        var persistedSegments = new HashSet<(uint, long)>();
        foreach (var doc in store.LoadSpaceMaps()) { segments.Add((doc.Device, doc.Segment)); persistedSegments.Add((doc.Device, doc.Segment)); }
        foreach (var (cookie, sp) in engine.Space) foreach (long seg in sp.OccupiedSegments()) segments.Add((cookie, seg));
        var reserved = engine.ReservedBlocks();
        long toVerify = 0;
        if (verifyData) foreach (var sp in engine.Space.Values) toVerify += sp.ReferencedBlocks();

        var uses = new BlockUse[SegmentBlocks];
        var owners = new (long Ino, long FileBlock, uint Sum, bool Set)[SegmentBlocks];
        var header = new byte[bs];
        var buf = new byte[bs];
        long keep = Fsck.StorePages(engine);
        int sinceTrim = 0;
        foreach (var (cookie, seg) in segments.OrderBy(k => k))
        {
            if (++sinceTrim == 256) { sinceTrim = 0; store.TrimCache(keep); }   // fsck holds the store alone
            if (!engine.Space.TryGetValue(cookie, out var sp)) { r.Add("space-map", $"space map of segment {seg} names unknown device cookie {cookie}", 0, -1, cookie); continue; }
            long first = seg * SegmentBlocks, end = Math.Min(sp.Blocks, first + SegmentBlocks);
            Array.Clear(uses); Array.Clear(owners);
            int referenced = 0;
            foreach (var c in store.ChunksMapping(cookie, seg))
                foreach (var e in c.Extents)
                {
                    if (e.Device != cookie) continue;
                    long from = Math.Max(e.Address, first), to = Math.Min(e.Address + e.Count, end);
                    for (long b = from; b < to; b++)
                    {
                        int i = (int)(b - first);
                        if (uses[i].Refs == 0) referenced++;
                        uses[i].Add(c.Birth, c.Death);
                        long fb = c.Index * FormatConstants.ChunkBlocks + e.First + (b - e.Address);
                        uint sum = c.Sums[e.First + (b - e.Address)];
                        ref var o = ref owners[i];
                        if (!o.Set) o = (c.Ino, fb, sum, true);
                        else if (o.Sum != sum)
                            r.Add("owned-twice", $"block is mapped by inode {o.Ino} block {o.FileBlock} and by inode {c.Ino} block {fb} with different checksums (written over while referenced)", c.Ino, fb << shift, cookie, b);
                    }
                }
            r.ReferencedBlocks += referenced;

            var diskRuns = Array.Empty<RefRun>();
            bool diskDense = false;
            if (persistedSegments.Contains((cookie, seg)) && store.LoadSpaceMap(cookie, seg) is { } doc) { diskRuns = doc.Runs; diskDense = doc.Dense; }
            int k = 0;
            for (long b = first; b < end; b++)
            {
                int i = (int)(b - first);
                while (k < diskRuns.Length && diskRuns[k].End <= i) k++;
                RefRun? diskRun = k < diskRuns.Length && diskRuns[k].First <= i ? diskRuns[k] : null;
                uint disk = diskRun?.Refs ?? 0;
                var want = uses[i];
                uint expect = want.Refs;
                var memRun = sp.RunAt(b);
                uint mem = memRun?.Refs ?? 0;
                var who = owners[i].Set ? (owners[i].Ino, owners[i].FileBlock) : (0, -1);
                long whoOffset = who.Item2 >= 0 ? who.Item2 << shift : -1;
                if (mem != expect || disk != expect)
                    r.Add(expect == 0 ? "leak" : "space-map", $"space map says {disk} references (in memory {mem}), the extent maps make {expect}", who.Item1, whoOffset, cookie, b);
                else if (expect > 0)
                {
                    // Live mappings and the views that see the block (what snapshot sizes are made of).
                    if (GenerationProblem(memRun!.Value, want, views) is { } pm) r.Add("space-map", $"in memory: {pm}", who.Item1, whoOffset, cookie, b);
                    else if (!diskDense && GenerationProblem(diskRun!.Value, want, views) is { } pd) r.Add("space-map", pd, who.Item1, whoOffset, cookie, b);
                }
                if (expect > 0 && !sp.IsBusy(b)) r.Add("space-map", "referenced block is marked free", 0, -1, cookie, b);
                if (expect > 0 && reserved.Contains((cookie, b))) r.Add("owned-twice", "referenced block is also reserved for a write in flight", 0, -1, cookie, b);
                if (expect == 0 && sp.IsBusy(b) && !DeviceSpace.IsReservedByFormat(b) && !reserved.Contains((cookie, b)) && !sp.IsHeldBack(b))
                    r.Add("leak", "block is marked in use, but nothing references or reserves it", 0, -1, cookie, b);
            }

            // Log segment headers of segments holding referenced data.
            if (referenced > 0 && seg != 0 && sp.Role == DeviceRole.Log)
            {
                string name = cookie == FormatConstants.LogCookie ? "log segment" : $"log device {cookie} segment";
                engine.Devices[cookie].Read(first << shift, header);
                var h = SegmentHeader.TryRead(header);
                if (h == null) r.Add("segment", $"{name} {seg} holds data but has no valid segment header", 0, -1, cookie, first);
                else if (h.Value.PoolUuid != pool.PoolUuid || h.Value.SegmentIndex != (ulong)seg)
                    r.Add("segment", $"{name} {seg} header names pool {h.Value.PoolUuid} segment {h.Value.SegmentIndex}", 0, -1, cookie, first);
            }

            if (verifyData)
                for (int i = 0; i < end - first; i++)
                {
                    if (!owners[i].Set) continue;
                    long b = first + i;
                    engine.Devices[cookie].Read(b << shift, buf);
                    if (Crc32C.Compute(buf) != owners[i].Sum) r.Add("checksum", "data block does not match its checksum", owners[i].Ino, owners[i].FileBlock << shift, cookie, b);
                    if (++r.VerifiedBlocks % 4096 == 0) progress?.Invoke(r.VerifiedBlocks, Math.Max(toVerify, r.VerifiedBlocks));
                }
        }
        if (verifyData) progress?.Invoke(r.VerifiedBlocks, Math.Max(toVerify, r.VerifiedBlocks));

        // The generation histogram is the sum of the space maps' eras.
        var classes = new Dictionary<EraKey, long>();
        foreach (var (_, sp) in engine.Space)
            foreach (long seg in sp.UsedSegments())
                foreach (var run in sp.CountRuns(seg))
                    classes[run.Eras] = classes.GetValueOrDefault(run.Eras) + run.Count;
        var histogram = engine.GenerationClasses;
        foreach (var key in classes.Keys.Union(histogram.Keys))
            if (classes.GetValueOrDefault(key) != histogram.GetValueOrDefault(key))
                r.Add("space-map", $"the generation histogram holds {histogram.GetValueOrDefault(key)} blocks of eras {key}, the space maps {classes.GetValueOrDefault(key)}");
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
            Mark(seen, views, _birth, _death);
            if (_more != null) foreach (var (b, d) in _more) Mark(seen, views, b, d);
            return seen;
        }
    }

    private static void Mark(SortedSet<int> seen, long[] views, long from, long to)
    {
        for (int v = GenerationHistogram.LowerBound(views, from); v < views.Length && views[v] < to; v++) seen.Add(v);
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
        foreach (var (from, to) in have.Eras.Ranges()) Mark(seen, views, from, to);
        var expect = want.Views(views);
        if (!seen.SetEquals(expect))
            return $"space map says views {Names(seen)} see it (eras {have.Eras}), the versions mapping it are seen by {Names(expect)}";
        return null;
        string Names(SortedSet<int> set) => set.Count == 0 ? "none" : string.Join(",", set.Select(i => views[i]));
    }
}
