using System.Diagnostics;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The log cleaner (format.md 6, "Relocation"): moves the live blocks of log segments onto the base devices,
/// out of place, so that log segments become free again. Segments are chosen by cost-benefit as in Sprite
/// LFS: benefit/cost = (1 − u) × age / (1 + u), u the segment's live share, age how many segments were opened
/// on the logs since it was (its header's <c>sequence</c>); every log device in service is cleaned. Hot and cold data stay apart by construction:
/// new writes go to the log, what survives long enough to be cleaned settles on the base device.
/// <para>A batch: under <c>StateLock</c>, choose segments and reserve room on the base device; outside every
/// lock, copy the blocks (the space allocator watches for blocks freed and handed out again meanwhile); then
/// one commit (<see cref="CommitPipeline.CommitRelocating"/>) in which every mapping of a copied block,
/// in memory and in every stored chunk version of any generation (found by <c>segs</c>), is pointed at the
/// copy with the same checksum, and the old blocks are freed. A crash before that commit leaves the copies
/// unreferenced (free); after it, the move is complete. Nothing else is persisted: after a restart the next
/// pass chooses again.</para>
/// <para>State: totals and the last pass, guarded by <c>_statusLock</c> (taken alone, never with another lock);
/// <c>_passLock</c> makes passes (background and <c>cow clean</c>) one at a time and is taken before every
/// engine lock; a device removal's moves (<see cref="DeviceManager"/>) run their batches inside it too
/// (<see cref="AsPass"/>, <see cref="RunBatch"/>). The background thread is owned here (<see cref="Start"/>,
/// <see cref="Stop"/>); it also carries on a removal that a restart interrupted.</para>
/// </summary>
internal sealed class LogCleaner(EngineContext context) : EnginePart(context)
{
    /// <summary>Live blocks one batch moves at most (a whole segment is never split over two batches).</summary>
    internal const int BatchBlocks = 4096;

    private readonly object _passLock = new(), _statusLock = new();
    private long _blocksMoved, _segmentsCleaned, _passes;
    private CleanerPass? _lastPass;
    private string _state = "idle";
    private Thread? _thread;
    private CancellationTokenSource? _stop;
    private readonly AutoResetEvent _wake = new(false);
    private CleanerSettings _settings = new();

    /// <summary>Tests only: called after a batch's copies are written and before its commit.</summary>
    internal Action? AfterCopyHook { get; set; }

    public CleanerStatus Status()
    {
        long free, data;
        lock (StateLock) (free, data) = LogSpace();
        lock (_statusLock)
            return new CleanerStatus(_thread != null, _state, _blocksMoved, _segmentsCleaned, _passes, free, data, _lastPass);
    }

    /// <summary>Starts the background cleaner (once; later calls change its settings).</summary>
    public void Start(CleanerSettings settings)
    {
        if (settings.Problem() is { } p) throw new ArgumentException(p, nameof(settings));
        lock (_statusLock)
        {
            _settings = settings;
            if (_thread != null) { _wake.Set(); return; }
            _stop = new CancellationTokenSource();
            var token = _stop.Token;
            _thread = new Thread(() => Background(token)) { IsBackground = true, Name = "cow-cleaner" };
            _thread.Start();
        }
    }

    /// <summary>Stops the background cleaner, waiting for the batch in progress (its commit or its undoing).</summary>
    public void Stop()
    {
        Thread? t;
        lock (_statusLock)
        {
            t = _thread;
            _stop?.Cancel();
            _thread = null;
        }
        _wake.Set();
        t?.Join();
    }

    /// <summary>Wakes the background cleaner to look at the log now (a write found the log full).</summary>
    public void Nudge() => _wake.Set();

    private void Background(CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            CleanerSettings s;
            lock (_statusLock) s = _settings;
            if (!Failed && !Commits.Frozen && Context.DeviceManager.HasRemovals)
            {
                // A removal that a crash or a restart interrupted goes on here, at the cleaner's share.
                var r = Context.DeviceManager.ResumeRemovals(s.Share, token);
                if (r == "removed" || r == "cancelled") continue;
            }
            if (!Failed && !Commits.Frozen && LogFreePercent() < s.StartBelowFreePercent)
            {
                var pass = Clean(s.StopAtFreePercent, s.Share, s.UrgentBelowFreePercent, token);
                // A pass that could not help (nothing to move, base full, an error) waits for the next poll.
                if (pass.Stop == "reached" || pass.Stop == "cancelled") continue;
            }
            _wake.WaitOne(s.Poll);
        }
    }

    /// <summary>Free and data blocks of the logs in service (0, 0 when the pool has none). Under StateLock.</summary>
    private (long Free, long Data) LogSpace()
    {
        long free = 0, data = 0;
        foreach (var l in Space.Logs) { free += l.FreeBlocks; data += l.DataBlocks; }
        return (free, data);
    }

    private double LogFreePercent()
    {
        lock (StateLock)
        {
            var (free, data) = LogSpace();
            return data == 0 ? 100 : 100.0 * free / data;
        }
    }

    /// <summary>
    /// One pass: moves batches until <paramref name="untilFreePercent"/> of the log is free, or nothing more
    /// can be gained. <paramref name="share"/> bounds the time spent moving (see <see cref="CleanerSettings.Share"/>).
    /// </summary>
    public CleanerPass Clean(double untilFreePercent, double share, double urgentBelowPercent, CancellationToken token)
    {
        lock (_passLock)
        {
            var clock = Stopwatch.StartNew();
            long moved = 0, cleaned = 0, batches = 0;
            string stop;
            SetState("cleaning");
            try
            {
                while (true)
                {
                    if (token.IsCancellationRequested) { stop = "cancelled"; break; }
                    if (Failed) { stop = "failed: the pool is read-only after an earlier failure"; break; }
                    if (Commits.Frozen) { stop = "frozen"; break; }
                    double free = LogFreePercent();
                    if (free >= untilFreePercent) { stop = "reached"; break; }
                    var batchClock = Stopwatch.StartNew();
                    var (result, blocks, segments) = RunBatch(ChooseAndReserve);
                    if (result != null) { stop = result; break; }
                    moved += blocks; cleaned += segments; batches++;
                    lock (_statusLock) { _blocksMoved += blocks; _segmentsCleaned += segments; }
                    if (share < 1 && free >= urgentBelowPercent)
                    {
                        var pause = batchClock.Elapsed * ((1 - share) / share);
                        if (token.WaitHandle.WaitOne(pause)) { stop = "cancelled"; break; }
                    }
                }
            }
            catch (Exception e) when (e is IOException)
            {
                stop = "failed: " + e.Message;
                Report($"log cleaner: a batch failed and was undone (nothing of it was committed): {e}");
            }
            long logFree, logData;
            lock (StateLock) (logFree, logData) = LogSpace();
            var pass = new CleanerPass(moved, cleaned, batches, clock.Elapsed.TotalSeconds, stop, logFree, logData);
            lock (_statusLock)
            {
                _passes++;
                _lastPass = pass;
                _state = stop.StartsWith("failed", StringComparison.Ordinal) ? stop : stop == "base full" ? "base full" : "idle";
            }
            return pass;
        }
    }

    private void SetState(string state)
    {
        lock (_statusLock) _state = state;
    }

    /// <summary>Runs <paramref name="work"/> as a pass: no cleaning pass or other relocation runs meanwhile.</summary>
    internal T AsPass<T>(Func<T> work)
    {
        lock (_passLock) return work();
    }

    /// <summary>The cleaner's planner: the best log segments by cost-benefit, with room reserved for their live
    /// blocks on the base devices. Under StateLock.</summary>
    private (string? Stop, List<Relocation> Plan, List<(uint Cookie, long Segment)> Segments) ChooseAndReserve()
    {
        var segments = ChooseSegments();
        if (segments.Count == 0) return ("nothing to move", [], segments);
        var plan = ReserveTargets(segments, (want, from) => (Space.AllocateForRelocation(want, out uint d, out long a), d, a));
        return (plan.Count == 0 ? "base full" : null, plan, segments);
    }

    /// <summary>
    /// One batch: plan (<paramref name="planner"/>, under StateLock: why there is nothing to do, or the moves with
    /// their room reserved and the segments they empty), copy, commit. Returns (why the pass stops, or null; blocks
    /// moved; segments emptied). An I/O error while copying undoes the batch (the reserved room is given back) and
    /// throws. Called with the pass lock held (<see cref="Clean"/>, <see cref="AsPass"/>).
    /// </summary>
    internal (string? Stop, long Blocks, long Segments) RunBatch(Func<(string? Stop, List<Relocation> Plan, List<(uint Cookie, long Segment)> Segments)> planner)
    {
        if (!Monitor.IsEntered(_passLock)) throw new InvalidOperationException("a relocation batch runs inside a pass");
        ReadSegmentAges();
        List<Relocation> plan;
        List<(uint Cookie, long Segment)> segments;
        lock (StateLock)
        {
            if (Failed) return ("failed: the pool is read-only after an earlier failure", 0, 0);
            string? why;
            (why, plan, segments) = planner();
            if (why != null) return (why, 0, 0);
            Space.WatchReleases();
        }
        bool committed = false;
        try
        {
            Copy(plan);
            AfterCopyHook?.Invoke();
            List<Relocation> moved = new();
            lock (CommitLock)
            {
                if (Commits.Frozen) return ("frozen", 0, 0);
                Commits.CommitRelocating(() => moved = Apply(plan));
                committed = true;
            }
            long blocks = moved.Sum(m => m.Blocks), emptied;
            lock (StateLock) emptied = segments.Count(s => Space[s.Cookie].LiveBlocks(s.Segment) == 0);
            return (null, blocks, emptied);
        }
        finally
        {
            if (!committed)
                lock (StateLock)
                {
                    Space.StopWatchingReleases();
                    // Not committed (an error, a freeze): the copies are unreferenced, their room is free again.
                    // After a failed commit the pool is read-only and the room stays reserved: harmless.
                    if (!Failed) foreach (var m in plan) Space[m.ToDevice].Unreserve(m.ToAddress, m.Blocks);
                }
        }
    }

    /// <summary>Segments of the logs in service to clean, best first by cost-benefit, until their live blocks fill a
    /// batch. Under StateLock.</summary>
    private List<(uint Cookie, long Segment)> ChooseSegments()
    {
        long now = PoolState.SegmentSeq;
        var scored = new List<(double Score, double Age, (uint, long) Segment, int Live)>();
        foreach (var log in Space.Logs)
        {
            long openSeg = log.OpenSegment >= 0 ? log.OpenSegment : log.Cursor / FormatConstants.SegmentBlocks;
            foreach (long s in log.UsedSegments())
            {
                if (s == openSeg) continue;   // the allocator is filling it
                int live = log.LiveBlocks(s), cap = log.Capacity(s);
                double u = (double)live / cap;
                long born = log.SegmentSequence(s);
                double age = Math.Max(1, now - born);
                scored.Add(((1 - u) * age / (1 + u), age, (log.Cookie, s), live));
            }
        }
        // Unlike Sprite LFS, the cleaner moves data to another device, so even a full segment frees log space
        // when moved: full segments (score 0) come last, oldest first.
        scored.Sort((a, b) => b.Score != a.Score ? b.Score.CompareTo(a.Score) : b.Age.CompareTo(a.Age));
        var chosen = new List<(uint, long)>();
        long total = 0;
        foreach (var (_, _, s, live) in scored)
        {
            if (chosen.Count > 0 && total + live > BatchBlocks) break;
            chosen.Add(s);
            total += live;
        }
        return chosen;
    }

    /// <summary>Reserves room (<paramref name="allocate"/>: (blocks, device, address) for at most so many blocks moved
    /// from a device) for every live run of <paramref name="segments"/>, as much as there is; the moves planned,
    /// sorted by source. Under StateLock.</summary>
    internal List<Relocation> ReserveTargets(List<(uint Cookie, long Segment)> segments, Func<long, uint, (long Blocks, uint Device, long Address)> allocate)
    {
        var plan = new List<Relocation>();
        foreach (var (cookie, s) in segments)
            foreach (var (start, count) in Space[cookie].LiveRuns(s))
            {
                long done = 0;
                while (done < count)
                {
                    var (n, dev, at) = allocate(count - done, cookie);
                    if (n == 0) return Sorted(plan);
                    plan.Add(new Relocation(cookie, start + done, n, dev, at));
                    done += n;
                }
            }
        return Sorted(plan);
    }

    private static List<Relocation> Sorted(List<Relocation> l)
    {
        l.Sort((a, b) => a.FromDevice != b.FromDevice ? a.FromDevice.CompareTo(b.FromDevice) : a.FromAddress.CompareTo(b.FromAddress));
        return l;
    }

    /// <summary>Copies every planned run, outside every lock.</summary>
    private void Copy(List<Relocation> plan)
    {
        const int maxBlocks = 256;
        var buffer = new byte[maxBlocks << BlockShift];
        var written = new HashSet<uint>();
        foreach (var m in plan)
            for (long done = 0; done < m.Blocks; done += maxBlocks)
            {
                int n = (int)Math.Min(maxBlocks, m.Blocks - done);
                var span = buffer.AsSpan(0, n << BlockShift);
                Devices[m.FromDevice].Read((m.FromAddress + done) << BlockShift, span);
                Devices[m.ToDevice].Write((m.ToAddress + done) << BlockShift, span);
                if (written.Add(m.ToDevice)) NoteDeviceWrite(m.ToDevice);
            }
    }

    /// <summary>
    /// Inside the commit, under StateLock: every block of the plan that is still mapped, and was not freed and
    /// handed out again while it was being copied, moves: its copy takes over all its mappings
    /// (<see cref="SpaceAllocator.Transfer"/>), the live chunks in memory and in the write-behind set are
    /// pointed at the copies (and their cached mappings invalidated), the snapshot trees' cached records are
    /// dropped. Returns the moves actually made, sorted, for the metadata transaction to apply to the store.
    /// </summary>
    private List<Relocation> Apply(List<Relocation> plan)
    {
        var reused = Space.StopWatchingReleases();
        var moves = new List<Relocation>();
        foreach (var m in plan)
            foreach (var piece in WithoutReused(m, reused))
                if (piece.Reused) Space[m.ToDevice].Unreserve(piece.Move.ToAddress, piece.Move.Blocks);
                else moves.AddRange(Space.Transfer(piece.Move));
        Sorted(moves);
        if (moves.Count == 0) return moves;
        var seen = new HashSet<ChunkRecord>(ReferenceEqualityComparer.Instance);
        foreach (var li in Cache.Inodes)
            foreach (var (index, c) in li.Chunks)
                if (c != null && seen.Add(c) && Relocation.Apply(c.Extents, moves) is { } moved)
                {
                    c.Extents = moved;
                    if (!li.Deleted) Mappings.Record(li.Ino, index * ChunkBlocks, ChunkBlocks);
                }
        foreach (var c in Versions.DirtyChunks)
            if (seen.Add(c) && Relocation.Apply(c.Extents, moves) is { } moved) c.Extents = moved;
        Snapshots.DropCachedRecords();
        return moves;
    }

    /// <summary><paramref name="m"/> cut into the pieces whose source blocks were (Reused) or were not released
    /// for reuse while the batch was copied.</summary>
    private static IEnumerable<(Relocation Move, bool Reused)> WithoutReused(Relocation m, List<(uint Cookie, long Start, long Count)> reused)
    {
        if (reused.Count == 0) { yield return (m, false); yield break; }
        long at = 0;
        while (at < m.Blocks)
        {
            bool r = IsReused(m.FromDevice, m.FromAddress + at, reused);
            long end = at + 1;
            while (end < m.Blocks && IsReused(m.FromDevice, m.FromAddress + end, reused) == r) end++;
            yield return (new Relocation(m.FromDevice, m.FromAddress + at, end - at, m.ToDevice, m.ToAddress + at), r);
            at = end;
        }
    }

    private static bool IsReused(uint dev, long block, List<(uint Cookie, long Start, long Count)> reused)
    {
        foreach (var (c, s, n) in reused) if (c == dev && block >= s && block < s + n) return true;
        return false;
    }

    /// <summary>Reads the header <c>sequence</c> of every segment holding data of every log not read yet (once per open
    /// and log; new headers are recorded as they are written). Outside every lock.</summary>
    private void ReadSegmentAges()
    {
        List<(DeviceSpace Log, List<long> Segments)> unread;
        lock (StateLock) unread = Space.Logs.Where(l => !l.SequencesRead).Select(l => (l, l.UsedSegments())).ToList();
        foreach (var (log, segments) in unread)
        {
            var seqs = new List<(long, long)>(segments.Count);
            var block = new byte[BlockSize];
            if (!Devices.TryGetValue(log.Cookie, out var dev)) continue;
            foreach (long s in segments)
            {
                if (s == 0) continue;
                try { dev.Read((s * FormatConstants.SegmentBlocks) << BlockShift, block); }
                catch (IOException) { continue; }
                if (SegmentHeader.TryRead(block) is { } h && h.PoolUuid == PoolState.PoolUuid && h.SegmentIndex == (ulong)s)
                    seqs.Add((s, (long)h.Sequence));
            }
            lock (StateLock)
            {
                // A header written meanwhile is newer than what was read: the larger is kept.
                foreach (var (s, seq) in seqs) if (log.LiveBlocks(s) > 0) log.NoteSegmentSequence(s, seq);
                log.SequencesRead = true;
            }
        }
    }
}
