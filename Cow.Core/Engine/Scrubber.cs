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
/// <para>A pass commits first, then walks every device segment that has referenced blocks (<see cref="DeviceSpace.LiveBlocks"/>).
/// Per segment, under <c>StateLock</c>, it notes <see cref="SpaceAllocator.ReleaseEpoch"/> and loads every committed
/// chunk version that maps the segment (<see cref="MetadataStore.ChunksMapping"/>, the <c>segs</c> index), which says,
/// for each block, the checksum expected and who maps it. Then, outside the lock, a run of mapped blocks at a time (at
/// most 1 MiB): it enters the reuse gate in read mode and, if a commit released freed blocks since the load (the epoch
/// moved: a block may have been handed out again and rewritten), leaves it and loads the segment's mappings again,
/// going on from that run; else it reads the run, compares, and leaves the gate. So the gate is held for one read of
/// at most 1 MiB, and <c>StateLock</c> never during a device read. After each run it sleeps as long as keeps the pass
/// to <see cref="ScrubSettings.RateBytesPerSecond"/>. Blocks mapped only by changes not committed when their segment
/// is loaded are not checked in this pass (<see cref="ScrubReport.NotChecked"/>); data the cleaner moves to a segment
/// already read is checked by the next pass.</para>
/// <para>State: the scrub in progress (one at a time per pool: another gets "busy") and whether the engine is
/// closing, guarded by <c>_statusLock</c>, which is taken alone. <see cref="Stop"/> (the engine's close) cancels the
/// scrub in progress and waits for it, so a caller may run a scrub outside whatever keeps the pool open.
/// It takes the reuse gate (read mode) and <c>StateLock</c> one at a time, never one inside the other.</para>
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

    /// <summary>How often a segment's mappings were loaded again because blocks were released meanwhile (tests).</summary>
    internal long Redone => Interlocked.Read(ref _redone);

    /// <summary>One mapping of a block in the segment being checked: the checksum its chunk version records, the
    /// file block it is, and that version's generations.</summary>
    private readonly record struct Mapping(uint Sum, long Ino, long FileBlock, long Birth, long Death);

    /// <summary>A damaged mapping found by the pass (named at the end).</summary>
    private sealed record Found(uint Device, long Block, long Ino, long FileBlock, string Problem, List<(long Birth, long Death)> Versions);

    /// <summary>
    /// Checks every referenced block once (see the type's summary). <paramref name="progress"/> is called from this
    /// thread after each run read (at most 1 MiB). Returns at once with <see cref="ScrubReport.Stop"/> "busy" when another scrub of
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

    /// <summary>What one pass has found and read so far, and what it reads with (one pass at a time: <c>_running</c>).</summary>
    private sealed class Pass(ScrubSettings settings, Action<ScrubProgress>? progress, long toCheck, CancellationToken token, int bufferBytes, int blockShift)
    {
        public readonly ScrubSettings Settings = settings;
        public readonly Action<ScrubProgress>? Progress = progress;
        public readonly long ToCheck = toCheck;
        public readonly CancellationToken Token = token;
        public readonly List<Found> Found = new();
        public readonly HashSet<(uint, long)> DamagedBlocks = new();
        public readonly byte[] Buffer = new byte[bufferBytes];
        public readonly uint[] Sums = new uint[bufferBytes >> blockShift];
        public readonly Stopwatch Pace = new();
        public long Checked;
        public string Stop = "complete";
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
        List<(uint Cookie, List<long> Segments)> devices;
        long toCheck = 0;
        lock (StateLock)
        {
            devices = Space.Devices.OrderBy(d => d.Key).Select(d => (d.Key, d.Value.UsedSegments())).ToList();
            foreach (var u in Space.Usage()) toCheck += u.UsedBlocks;
        }
        var pass = new Pass(settings, progress, toCheck, token, Math.Max(ReadBytes, BlockSize), BlockShift);
        pass.Pace.Start();
        foreach (var (dev, segments) in devices)
        {
            foreach (long seg in segments)
            {
                if (pass.Stop != "complete") break;
                CheckSegment(pass, dev, seg);
            }
            if (pass.Stop != "complete") break;
        }
        var damage = Name(pass.Found);
        return new ScrubReport(pass.Checked, pass.Checked << BlockShift, clock.Elapsed.TotalSeconds, pass.Stop, pass.DamagedBlocks.Count, damage);
    }

    private string StopReason()
    {
        lock (_statusLock) return _closed ? "closed" : "cancelled";
    }

    /// <summary>Checks segment <paramref name="seg"/> of device <paramref name="dev"/>, a run of mapped blocks at a time
    /// (each under the reuse gate, then paced), loading its mappings again when blocks were released meanwhile.</summary>
    private void CheckSegment(Pass pass, uint dev, long seg)
    {
        long first = (long)seg * FormatConstants.SegmentBlocks;
        List<Mapping>?[]? maps = null;
        long epoch = 0;
        int next = 0;   // blocks of the segment before it are done
        while (true)
        {
            if (pass.Token.IsCancellationRequested) { pass.Stop = StopReason(); return; }
            if (maps == null)
            {
                List<ChunkRecord> chunks;
                lock (StateLock)
                {
                    if (!Space.TryGet(dev, out var devSpace) || devSpace.LiveBlocks(seg) == 0) return;
                    epoch = Space.ReleaseEpoch;
                    chunks = Store.ChunksMapping(dev, seg);
                }
                AfterLoadHook?.Invoke();
                maps = Plan(dev, seg, chunks);
            }
            while (next < maps.Length && maps[next] == null) next++;
            if (next == maps.Length) return;
            int n = 1;
            while (n < pass.Sums.Length && next + n < maps.Length && maps[next + n] != null) n++;
            ReuseGate.EnterReadLock();
            try
            {
                // Frees are released only with the gate held in write mode: at the epoch of the load, no block loaded
                // was handed out again; at another, one may have been (and rewritten): load the mappings again.
                if (Space.ReleaseEpoch != epoch) { Interlocked.Increment(ref _redone); maps = null; continue; }
                Verify(pass, dev, first + next, maps.AsSpan(next, n));
            }
            finally { ReuseGate.ExitReadLock(); }
            next += n;
            pass.Checked += n;
            pass.Progress?.Invoke(new ScrubProgress(pass.Checked, Math.Max(pass.ToCheck, pass.Checked), pass.DamagedBlocks.Count));
            if (pass.Settings.RateBytesPerSecond > 0)
            {
                var due = TimeSpan.FromSeconds((double)(pass.Checked << BlockShift) / pass.Settings.RateBytesPerSecond) - pass.Pace.Elapsed;
                if (due > TimeSpan.Zero && pass.Token.WaitHandle.WaitOne(due)) { pass.Stop = StopReason(); return; }
            }
        }
    }

    /// <summary>For each block of the segment (by its index in it), the committed mappings of it (null: none).</summary>
    private static List<Mapping>?[] Plan(uint dev, long seg, List<ChunkRecord> chunks)
    {
        var maps = new List<Mapping>?[FormatConstants.SegmentBlocks];
        long first = (long)seg * FormatConstants.SegmentBlocks;
        foreach (var c in chunks)
            foreach (var e in c.Extents)
            {
                if (e.Device != dev) continue;
                long from = Math.Max(e.Address, first), to = Math.Min(e.Address + e.Count, first + FormatConstants.SegmentBlocks);
                for (long b = from; b < to; b++)
                {
                    int k = (int)(b - e.Address);
                    ref var l = ref maps[(int)(b - first)];
                    l ??= new List<Mapping>(1);
                    l.Add(new Mapping(c.Sums[e.First + k], c.Ino, c.Index * ChunkBlocks + e.First + k, c.Birth, c.Death));
                }
            }
        return maps;
    }

    /// <summary>Reads one run of mapped blocks (<paramref name="maps"/>, from device block <paramref name="start"/>) and
    /// compares each with every checksum recorded for it. With the reuse gate held (read mode).</summary>
    private void Verify(Pass pass, uint dev, long start, ReadOnlySpan<List<Mapping>?> maps)
    {
        if (!Devices.TryGetValue(dev, out var device)) return;   // removed meanwhile (cow device remove): its blocks moved elsewhere, unverified by this pass
        int n = maps.Length;
        var span = pass.Buffer.AsSpan(0, n << BlockShift);
        var blockSums = pass.Sums.AsSpan(0, n);
        bool readFailed = false;
        try
        {
            var how = BlockSize == IBlockDevice.ChecksumBlockBytes
                ? device.ReadOrLend(start << BlockShift, span, blockSums, null)
                : Read(device, start << BlockShift, span);
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
                    device.Read((start + k) << BlockShift, one);
                    blockSums[k] = Crc32C.Compute(one);
                }
                catch (IOException e) { Note(pass, dev, start + k, maps[k]!, null, "read error: " + e.Message); }
            }
        }
        for (int k = 0; k < n; k++)
        {
            if (readFailed && pass.DamagedBlocks.Contains((dev, start + k))) continue;   // unreadable: noted above
            Note(pass, dev, start + k, maps[k]!, blockSums[k], "checksum mismatch");
        }
    }

    private static DeviceReadResult Read(IBlockDevice device, long offset, Span<byte> span)
    {
        device.Read(offset, span);
        return DeviceReadResult.Read;
    }

    /// <summary>Records the mappings of block <paramref name="block"/> whose checksum is not <paramref name="actual"/>
    /// (all of them when the block could not be read: <paramref name="actual"/> null), one per file block.</summary>
    private static void Note(Pass pass, uint dev, long block, List<Mapping> maps, uint? actual, string problem)
    {
        foreach (var g in maps.Where(m => actual != m.Sum).GroupBy(m => (m.Ino, m.FileBlock)))
        {
            pass.DamagedBlocks.Add((dev, block));
            if (pass.Found.Count < ScrubReport.MaxListed)
                pass.Found.Add(new Found(dev, block, g.Key.Ino, g.Key.FileBlock, problem, g.Select(m => (m.Birth, m.Death)).ToList()));
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
