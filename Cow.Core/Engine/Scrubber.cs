using System.Diagnostics;
using Cow.Core.Check;
using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// Scrub (<c>cow scrub</c>): reads every referenced block of a pool, open and in use, at a bounded rate, and compares
/// it with the CRC-32C its chunk records (format.md 5.6 <c>sums</c>); damaged blocks are reported by device block,
/// then by inode and offset, then by path in the live tree and in each snapshot that sees that version of the
/// data. Cow keeps no second copy of anything, so nothing is repaired (<see cref="ScrubReport.NoRepair"/>).
/// <para>A pass commits first, then walks every device segment that has referenced blocks (<see cref="DeviceSpace.LiveBlocks"/>),
/// one segment at a time: under <c>StateLock</c> it notes <see cref="SpaceAllocator.ReleaseEpoch"/> and loads every
/// committed chunk version that maps the segment (<see cref="MetadataStore.ChunksMapping"/>, the <c>segs</c> index),
/// which says, for each block, the checksum expected and who maps it; outside the lock it enters the reuse gate in
/// read mode and, if a commit released freed blocks in between (the epoch moved: a block may have been handed out
/// again and rewritten), leaves it and does that segment again; else it reads the mapped blocks in runs, compares,
/// and leaves the gate. It never holds <c>StateLock</c> during a device read. Between segments it sleeps as long as
/// keeps it to <see cref="ScrubSettings.RateBytesPerSecond"/>. Blocks mapped only by changes not committed when
/// their segment is read are not checked in this pass (<see cref="ScrubReport.NotChecked"/>); data the cleaner moves
/// to a segment already read is checked by the next pass.</para>
/// <para>State: the scrub in progress (one at a time per pool: another gets "busy") and whether the engine is
/// closing, guarded by <c>_statusLock</c>, which is taken alone. <see cref="Stop"/> (the engine's close) cancels the
/// scrub in progress and waits for it, so a caller may run a scrub outside whatever keeps the pool open.
/// Locks in the engine's order: the reuse gate, then <c>StateLock</c> for the naming at the end; never both.</para>
/// </summary>
internal sealed class Scrubber(EngineContext context) : EnginePart(context)
{
    /// <summary>Bytes one device read covers at most.</summary>
    private const int ReadBytes = 1 << 20;

    private readonly object _statusLock = new();
    private CancellationTokenSource? _running;
    private bool _closed;
    private readonly ManualResetEventSlim _idle = new(true);
    private long _redone;

    /// <summary>Tests only: called after a segment's mappings were loaded, before the reuse gate is entered.</summary>
    internal Action? AfterLoadHook { get; set; }

    /// <summary>Segments read again because blocks were released while their mappings were loaded (tests).</summary>
    internal long Redone => Interlocked.Read(ref _redone);

    /// <summary>One mapping of a block in the segment being checked: the checksum its chunk version records, the
    /// file block it is, and that version's generations.</summary>
    private readonly record struct Mapping(uint Sum, long Ino, long FileBlock, long Birth, long Death);

    /// <summary>A damaged mapping found by the pass (named at the end).</summary>
    private sealed record Found(uint Device, long Block, long Ino, long FileBlock, string Problem, List<(long Birth, long Death)> Versions);

    /// <summary>
    /// Checks every referenced block once (see the type's summary). <paramref name="progress"/> is called from this
    /// thread after each segment. Returns at once with <see cref="ScrubReport.Stop"/> "busy" when another scrub of
    /// this pool runs; "cancelled" when <paramref name="token"/> or <see cref="Cancel"/> stopped it, "closed" when the
    /// pool closed under it (what was found until then is reported either way). Throws
    /// <see cref="ObjectDisposedException"/> on a closed pool.
    /// </summary>
    public ScrubReport Scrub(ScrubSettings settings, Action<ScrubProgress>? progress, CancellationToken token)
    {
        if (settings.Problem() is { } p) throw new ArgumentException(p, nameof(settings));
        CancellationTokenSource cts;
        lock (_statusLock)
        {
            if (_closed) throw new ObjectDisposedException("pool", "the pool is closed");
            if (_running != null) return new ScrubReport(0, 0, 0, "busy", 0, []);
            cts = CancellationTokenSource.CreateLinkedTokenSource(token);
            _running = cts;
            _idle.Reset();
        }
        try { return Run(settings, progress, cts.Token); }
        finally
        {
            lock (_statusLock)
            {
                _running = null;
                cts.Dispose();
                _idle.Set();
            }
        }
    }

    /// <summary>Cancels the scrub in progress (it reports "cancelled"); false when none runs.</summary>
    public bool Cancel()
    {
        lock (_statusLock)
        {
            _running?.Cancel();
            return _running != null;
        }
    }

    /// <summary>The engine closes: cancels the scrub in progress, waits until it has returned, and refuses new ones.</summary>
    public void Stop()
    {
        lock (_statusLock)
        {
            _closed = true;
            _running?.Cancel();
        }
        _idle.Wait();
    }

    private ScrubReport Run(ScrubSettings settings, Action<ScrubProgress>? progress, CancellationToken token)
    {
        var clock = Stopwatch.StartNew();
        // What was written before the scrub began is then in the committed records it reads.
        if (!Failed && !Commits.Frozen)
        {
            try { Commits.Commit(); }
            catch (IOException) { /* reported by the commit (the pool is now read-only); the committed records stay readable */ }
        }
        List<(uint Cookie, int Segments)> devices;
        long toCheck = 0;
        lock (StateLock)
        {
            devices = Space.Devices.OrderBy(d => d.Key).Select(d => (d.Key, d.Value.SegmentCount)).ToList();
            foreach (var u in Space.Usage()) toCheck += u.UsedBlocks;
        }
        var found = new List<Found>();
        var damagedBlocks = new HashSet<(uint, long)>();
        long checkedBlocks = 0;
        string stop = "complete";
        var buffer = new byte[Math.Max(ReadBytes, BlockSize)];
        var sums = new uint[buffer.Length >> BlockShift];
        var pace = Stopwatch.StartNew();
        foreach (var (dev, segmentCount) in devices)
        {
            for (int seg = 0; seg < segmentCount && stop == "complete"; seg++)
            {
                if (token.IsCancellationRequested) { stop = StopReason(); break; }
                int n = CheckSegment(dev, seg, buffer, sums, found, damagedBlocks, token);
                if (n == 0) continue;
                checkedBlocks += n;
                progress?.Invoke(new ScrubProgress(checkedBlocks, Math.Max(toCheck, checkedBlocks), damagedBlocks.Count));
                if (settings.RateBytesPerSecond > 0)
                {
                    var due = TimeSpan.FromSeconds((double)(checkedBlocks << BlockShift) / settings.RateBytesPerSecond) - pace.Elapsed;
                    if (due > TimeSpan.Zero && token.WaitHandle.WaitOne(due)) stop = StopReason();
                }
            }
            if (stop != "complete") break;
        }
        var damage = Name(found);
        return new ScrubReport(checkedBlocks, checkedBlocks << BlockShift, clock.Elapsed.TotalSeconds, stop, damagedBlocks.Count, damage);
    }

    private string StopReason()
    {
        lock (_statusLock) return _closed ? "closed" : "cancelled";
    }

    /// <summary>Checks segment <paramref name="seg"/> of device <paramref name="dev"/>; returns the blocks checked
    /// (0: nothing referenced there, or cancelled).</summary>
    private int CheckSegment(uint dev, int seg, byte[] buffer, uint[] sums, List<Found> found, HashSet<(uint, long)> damagedBlocks, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            long epoch;
            List<ChunkRecord> chunks;
            lock (StateLock)
            {
                if (Space[dev].LiveBlocks(seg) == 0) return 0;
                epoch = Space.ReleaseEpoch;
                chunks = Store.ChunksMapping(dev, seg);
            }
            AfterLoadHook?.Invoke();
            var maps = Plan(dev, seg, chunks, out int mapped);
            if (mapped == 0) return 0;
            ReuseGate.EnterReadLock();
            try
            {
                // Frees are released only with the gate held in write mode: at the same epoch, no block loaded above
                // was handed out again; at another, one may have been (and rewritten): load again.
                if (Space.ReleaseEpoch != epoch) { Interlocked.Increment(ref _redone); continue; }
                Verify(dev, (long)seg * FormatConstants.SegmentBlocks, maps, buffer, sums, found, damagedBlocks);
            }
            finally { ReuseGate.ExitReadLock(); }
            return mapped;
        }
        return 0;
    }

    /// <summary>For each block of the segment (by its index in it), the committed mappings of it; <paramref name="mapped"/>:
    /// how many blocks have one.</summary>
    private static List<Mapping>?[] Plan(uint dev, int seg, List<ChunkRecord> chunks, out int mapped)
    {
        var maps = new List<Mapping>?[FormatConstants.SegmentBlocks];
        long first = (long)seg * FormatConstants.SegmentBlocks;
        mapped = 0;
        foreach (var c in chunks)
            foreach (var e in c.Extents)
            {
                if (e.Device != dev) continue;
                long from = Math.Max(e.Address, first), to = Math.Min(e.Address + e.Count, first + FormatConstants.SegmentBlocks);
                for (long b = from; b < to; b++)
                {
                    int k = (int)(b - e.Address);
                    ref var l = ref maps[(int)(b - first)];
                    if (l == null) { l = new List<Mapping>(1); mapped++; }
                    l.Add(new Mapping(c.Sums[e.First + k], c.Ino, c.Index * ChunkBlocks + e.First + k, c.Birth, c.Death));
                }
            }
        return maps;
    }

    /// <summary>Reads the mapped blocks of a segment in runs and compares each with every checksum recorded for it.
    /// With the reuse gate held (read mode).</summary>
    private void Verify(uint dev, long first, List<Mapping>?[] maps, byte[] buffer, uint[] sums, List<Found> found, HashSet<(uint, long)> damagedBlocks)
    {
        var device = Devices[dev];
        int maxBlocks = buffer.Length >> BlockShift;
        bool deviceSums = BlockSize == IBlockDevice.ChecksumBlockBytes;
        for (int i = 0; i < maps.Length;)
        {
            if (maps[i] == null) { i++; continue; }
            int n = 1;
            while (n < maxBlocks && i + n < maps.Length && maps[i + n] != null) n++;
            var span = buffer.AsSpan(0, n << BlockShift);
            var blockSums = sums.AsSpan(0, n);
            bool readFailed = false;
            try
            {
                var how = deviceSums ? device.ReadOrLend((first + i) << BlockShift, span, blockSums, null) : Read(device, (first + i) << BlockShift, span);
                if (how == DeviceReadResult.Read)
                    for (int k = 0; k < n; k++) blockSums[k] = Crc32C.Compute(span.Slice(k << BlockShift, BlockSize));
            }
            catch (IOException)
            {
                // Which blocks? One at a time: those that still fail are reported as unreadable.
                readFailed = true;
                for (int k = 0; k < n; k++)
                {
                    var one = span.Slice(k << BlockShift, BlockSize);
                    try
                    {
                        device.Read((first + i + k) << BlockShift, one);
                        blockSums[k] = Crc32C.Compute(one);
                    }
                    catch (IOException e) { Note(dev, first + i + k, maps[i + k]!, null, "read error: " + e.Message, found, damagedBlocks); }
                }
            }
            for (int k = 0; k < n; k++)
            {
                if (readFailed && damagedBlocks.Contains((dev, first + i + k))) continue;   // unreadable: noted above
                Note(dev, first + i + k, maps[i + k]!, blockSums[k], "checksum mismatch", found, damagedBlocks);
            }
            i += n;
        }
    }

    private static DeviceReadResult Read(IBlockDevice device, long offset, Span<byte> span)
    {
        device.Read(offset, span);
        return DeviceReadResult.Read;
    }

    /// <summary>Records the mappings of block <paramref name="block"/> whose checksum is not <paramref name="actual"/>
    /// (all of them when the block could not be read: <paramref name="actual"/> null), one per file block.</summary>
    private static void Note(uint dev, long block, List<Mapping> maps, uint? actual, string problem, List<Found> found, HashSet<(uint, long)> damagedBlocks)
    {
        foreach (var g in maps.Where(m => actual != m.Sum).GroupBy(m => (m.Ino, m.FileBlock)))
        {
            damagedBlocks.Add((dev, block));
            if (found.Count < ScrubReport.MaxListed)
                found.Add(new Found(dev, block, g.Key.Ino, g.Key.FileBlock, problem, g.Select(m => (m.Birth, m.Death)).ToList()));
        }
    }

    /// <summary>The damaged mappings with their paths: in the live tree and in each snapshot that sees one of the
    /// chunk versions that maps the block there, named from the committed records as they are now.</summary>
    private List<ScrubDamage> Name(List<Found> found)
    {
        var result = new List<ScrubDamage>(found.Count);
        if (found.Count == 0) return result;
        var namer = new InodePaths((gen, ino) => Store.LoadLinks(ino, gen).Select(d => (d.Dir, d.Name)));
        foreach (var f in found.OrderBy(f => f.Device).ThenBy(f => f.Block).ThenBy(f => f.Ino).ThenBy(f => f.FileBlock))
        {
            List<InodePaths.View> views;
            lock (StateLock)
                views = namer.InViews(f.Ino, PoolState.LiveGen, Snapshots.All, g => f.Versions.Any(v => v.Birth <= g && g < v.Death));
            var paths = views.SelectMany(v => v.Paths.Select(p => new ScrubPath(v.Snapshot, p))).ToList();
            result.Add(new ScrubDamage(f.Device, f.Block, f.Ino, f.FileBlock << BlockShift, f.Problem, paths, InodePaths.Describe(views)));
        }
        return result;
    }
}
