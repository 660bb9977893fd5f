using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// Removes the records of deleted snapshots (the pool's pending purges, format.md 5.1 <c>purges</c>): a snapshot
/// delete drops the snapshot in one commit and leaves a <see cref="PendingPurge"/>; the purge then removes, a batch per
/// commit, every record no remaining view sees, and releases their blocks.
/// <para>Two ways to run: inline (<see cref="Run"/> purges before it returns: offline commands and tests, whose
/// process may end right after), or in the background (<see cref="Start"/>, a mounted pool): then <see cref="Run"/>
/// only wakes this part's thread and returns, so a delete answers in milliseconds whatever the snapshot held, as
/// <c>btrfs subvolume delete</c> does; <see cref="WaitIdle"/> waits for the thread to finish (<c>cow snapshot delete
/// --wait</c>, <c>btrfs subvolume sync</c>). Either way a purge holds the commit lock for one batch at a time, so the
/// mount keeps serving.</para>
/// <para>Two purgers never conflict: each batch reads its records and removes them under the commit lock, so a batch
/// finds only what no batch before it removed, and the last one of a purge drops it from the pool. Nor does a purge
/// conflict with rollback, restore or clone: the records it removes are seen by no remaining view, and those read
/// only views.</para>
/// <para>State: the background thread, its stop token and its idle flag, guarded by <c>_threadLock</c> (taken alone or
/// before the engine's locks, never inside them). A crash or an unmount leaves the purge pending in the pool record;
/// the next writable open (inline) or mount (background) finishes it.</para>
/// </summary>
internal sealed class SnapshotPurger(EngineContext context) : EnginePart(context)
{
    private readonly object _threadLock = new();
    private Thread? _thread;
    private CancellationTokenSource? _stop;
    private readonly AutoResetEvent _wake = new(false);
    private bool _busy;   // the thread is between a wake and finding nothing pending; under _threadLock

    /// <summary>Records a purge removes per commit (tests set it small to cut power between batches; 0: the budget's
    /// commit size).</summary>
    internal int BatchRecords { get; set; }

    /// <summary>Whether the background thread runs (<see cref="Start"/>).</summary>
    public bool InBackground { get { lock (_threadLock) return _thread != null; } }

    /// <summary>Pending purges (deleted snapshots whose records are still being removed).</summary>
    public int Pending { get { lock (StateLock) return PoolState.Purges.Count; } }

    /// <summary>Starts the background thread (once): from now on <see cref="Run"/> hands purges to it. It begins with the
    /// purges already pending.</summary>
    public void Start()
    {
        lock (_threadLock)
        {
            if (_thread != null) return;
            _stop = new CancellationTokenSource();
            var token = _stop.Token;
            _busy = true;
            _thread = new Thread(() => Background(token)) { IsBackground = true, Name = "cow-purger" };
            _thread.Start();
        }
    }

    /// <summary>Stops the background thread, waiting for the batch in progress; what is left stays pending (and
    /// <see cref="Run"/> purges inline again).</summary>
    public void Stop()
    {
        Thread? t;
        lock (_threadLock)
        {
            t = _thread;
            _stop?.Cancel();
            _thread = null;
            Monitor.PulseAll(_threadLock);
        }
        _wake.Set();
        t?.Join();
    }

    /// <summary>Purges <paramref name="p"/> (just recorded in the pool): hands it to the background thread when it runs,
    /// else removes its records before returning.</summary>
    public void Run(PendingPurge p)
    {
        lock (_threadLock)
            if (_thread != null)
            {
                _busy = true;
                _wake.Set();
                return;
            }
        Purge(p, CancellationToken.None);
    }

    /// <summary>Finishes every pending purge inline (a writable open: purges a crash or an unmount interrupted).</summary>
    public void RunPending()
    {
        List<PendingPurge> pending;
        lock (StateLock) pending = PoolState.Purges.ToList();
        foreach (var p in pending) Purge(p, CancellationToken.None);
    }

    /// <summary>Waits until no purge is pending: for the background thread when it runs (false when
    /// <paramref name="timeout"/> passed first, or the pool failed or closed with purges left), else purges inline.</summary>
    public bool WaitIdle(TimeSpan timeout)
    {
        bool forever = timeout == Timeout.InfiniteTimeSpan;
        var until = forever ? DateTime.MaxValue : DateTime.UtcNow + timeout;
        lock (_threadLock)
        {
            while (_thread != null && (_busy || Pending > 0))
            {
                if (Failed || Commits.Closed) return false;
                var left = forever ? TimeSpan.FromSeconds(1) : until - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) return false;
                Monitor.Wait(_threadLock, left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
            }
            if (_thread != null) return true;
        }
        RunPending();
        return Pending == 0;
    }

    private void Background(CancellationToken token)
    {
        while (!token.IsCancellationRequested && !Commits.Closed)
        {
            List<PendingPurge> pending;
            lock (StateLock) pending = Failed ? [] : PoolState.Purges.ToList();
            foreach (var p in pending)
            {
                if (token.IsCancellationRequested) break;
                try { Purge(p, token); }
                catch (Exception e)
                {
                    // Fail-stop: Purge's own failures have made the pool read-only and been reported; anything else
                    // (a metadata read failing) does so here. The purge stays pending.
                    if (!Failed) Commits.Fail(PoolState.CommitSeq + 1, $"while purging the records of deleted snapshot generation {p.Gen}", e);
                    break;
                }
            }
            lock (_threadLock)
            {
                // Idle only when nothing was handed over since the list above was taken.
                if (!_wake.WaitOne(0)) _busy = false;
                else _wake.Set();
                Monitor.PulseAll(_threadLock);
            }
            if (Failed) break;
            _wake.WaitOne(TimeSpan.FromSeconds(1));
        }
        lock (_threadLock) { _busy = false; Monitor.PulseAll(_threadLock); }
    }

    /// <summary>
    /// Removes the versions pending purge <paramref name="p"/> covers, a batch per commit, and drops the purge from
    /// the pool in the last. Cost follows what only the deleted snapshot held (the death index's range), and memory
    /// one batch (each commit gives LiteDB's pages back). The state lock is held only to release a batch's blocks in
    /// memory; the commit lock is held per batch (the records are read under it, so no relocation moves them in
    /// between). A freeze (fsfreeze) between two batches holds the next one until the thaw: no commit runs while
    /// frozen. Stops without error when the engine closes or <paramref name="token"/> is cancelled (the purge stays
    /// pending). Fail-stop: a failure halfway through a batch makes the pool read-only.
    /// </summary>
    private void Purge(PendingPurge p, CancellationToken token)
    {
        int per = BatchRecords > 0 ? BatchRecords : Math.Max(1, Commits.EveryRecords);
        while (!token.IsCancellationRequested)
        {
            while (Commits.Frozen && !Commits.Closed && !token.IsCancellationRequested) Thread.Sleep(FrozenPollMs);
            lock (CommitLock)
            {
                if (Commits.Closed) return;
                if (Commits.Frozen) continue;   // frozen again before the lock was taken
                lock (StateLock) if (!PoolState.Purges.Contains(p)) return;   // finished by another purger
                var (inodes, dirents, chunks) = Store.FindPurgeable(p, per);
                bool last = inodes.Count + dirents.Count + chunks.Count < per;
                lock (StateLock)
                {
                    if (Failed) throw new IOException("the pool stopped accepting changes during a snapshot purge", Commits.Failure);
                    try
                    {
                        Versions.Purge(inodes, dirents, chunks);
                        Commits.Fault("purge");
                    }
                    catch (Exception e) { throw Commits.Fail(PoolState.CommitSeq + 1, $"while purging the records of deleted snapshot generation {p.Gen}", e); }
                }
                Commits.CommitLocked(last ? _ => PoolState.Purges.Remove(p) : null);
                if (last) return;
            }
        }
    }

    /// <summary>How often a purge held by a freeze looks for the thaw.</summary>
    private const int FrozenPollMs = 50;
}
