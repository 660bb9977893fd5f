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
/// <para>Memory is bounded by the records' compact facts (<see cref="FsckViews"/>: a few dozen bytes per inode, entry and
/// chunk version; checksums are not kept) and one segment's blocks at a time (<see cref="FsckBlocks"/>), not by the
/// pool's data.</para>
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
        var snaps = engine.SnapshotList;
        var views = snaps.Select(s => s.Gen).Append(pool.LiveGen).ToArray();
        r.Snapshots = snaps.Count;

        CheckSuperblocks(engine, r);
        CheckSnapshots(snaps, pool.LiveGen, r);
        // Invariant 9: the cleaner finds the chunks that map a segment by segs, so a chunk whose segs is wrong
        // would keep pointing at blocks the cleaner moved and freed.
        foreach (var (rid, ino, problem) in store.ChunkSegsProblems(StorePages(engine)))
            r.Add("segs", $"chunk record {rid}: {problem}", ino);

        var facts = FsckViews.Load(engine, r);
        CollectGarbage();   // what reading left (documents, the facts' grown-out arrays) before the sweep adds its own
        FsckViews.CheckVersions(facts, r, views, pool.LiveGen, pool.Purges, pool.Receive?.Gen ?? 0);
        FsckViewSweep.Check(engine, facts, r, views, snaps);
        facts.Chunks.Clear(); facts.Chunks.TrimExcess();   // the block checks read chunks by segment; paths need entries and inodes only
        CollectGarbage();
        // A pending receive's staged blocks are counted as the tree they will be (format.md 10.5): the space maps hold them
        // from the live generation on, and the blocks they replaced until it; the view of the staged generation sees both
        // as the maps do (no view lies between the two).
        var blockViews = pool.Receive is { } rv ? snaps.Select(s => s.Gen).Append(rv.Gen).ToArray() : views;
        FsckBlocks.Check(engine, facts.Segments, r, blockViews, verifyData, progress);
        NamePaths(r, facts, pool.LiveGen, snaps);
        return r;
    }

    /// <summary>A full, compacting collection, the large-object heap included: between fsck's phases, so that its memory
    /// is what it holds (at a million files, the garbage of a phase is hundreds of MiB the runtime would keep).</summary>
    internal static void CollectGarbage()
    {
        System.Runtime.GCSettings.LargeObjectHeapCompactionMode = System.Runtime.GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>LiteDB's page cache kept while fsck reads: it reads each document once, in order, so a small cache does;
    /// the memory goes to the facts and the view sweep instead.</summary>
    internal static long StorePages(Engine.Engine engine) => Math.Min(engine.CacheBudget.StorePages, 32L << 20);

    private static void CheckSnapshots(IReadOnlyList<SnapshotRecord> snaps, long liveGen, FsckReport r)
    {
        if (snaps.Select(s => s.Gen).Distinct().Count() != snaps.Count) r.Add("snapshots", "two snapshots share a generation");
        if (snaps.Any(s => s.Gen >= liveGen)) r.Add("snapshots", "a snapshot's generation is not below the live generation");
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
    }

    /// <summary>Gives every problem about an inode the inode's paths: in the live tree, then in each snapshot that
    /// sees it (newest first), by walking visible directory entries up to the root (<see cref="InodePaths"/>).</summary>
    private static void NamePaths(FsckReport r, FsckViews.Facts facts, long liveGen, IReadOnlyList<SnapshotRecord> snaps)
    {
        if (!r.Problems.Any(p => p.Ino > 0)) return;
        var byChild = new Dictionary<long, Dictionary<long, List<(long Dir, string Name)>>>();
        Dictionary<long, List<(long Dir, string Name)>> Names(long g)
        {
            if (byChild.TryGetValue(g, out var m)) return m;
            m = new Dictionary<long, List<(long, string)>>();
            foreach (var d in facts.Dirents)
                if (d.VisibleAt(g))
                {
                    if (!m.TryGetValue(d.Child, out var l)) m[d.Child] = l = new List<(long, string)>();
                    l.Add((d.Dir, d.Name));
                }
            return byChild[g] = m;
        }
        var namer = new InodePaths((g, ino) => Names(g).TryGetValue(ino, out var l) ? l : []);
        var wanted = r.Problems.Where(p => p.Ino > 0).Select(p => p.Ino).ToHashSet();
        var versions = facts.Inodes.Where(x => wanted.Contains(x.Ino)).GroupBy(x => x.Ino).ToDictionary(x => x.Key, x => x.ToList());
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
}
