using System.Runtime.CompilerServices;
using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// Group commit of the live tree (format.md, "Commit order"): flush every data device written since the
/// last commit, write the changes the <see cref="RecordVersioner"/> gathered and the space maps in one
/// metadata transaction, deliver the mapping invalidations, and only then let the blocks the commit freed be
/// allocated again. Commits run on fsync, snapshot operations and unmount, on a timer
/// (<see cref="Interval"/>), and in the background once enough was written (<see cref="MaybeCommit"/>).
/// <para>Owns the commit policy (thresholds, timer, background commit flag), the freeze state, the set of
/// devices written since the last commit, and the failure state: fail-stop (Engine.FailStop.cs) — any
/// unexpected exception on the commit path sets <see cref="Failure"/> once, and from then on every change
/// and commit of the pool fails with EIO.</para>
/// <para>Threading: thread-safe. Takes the engine's <c>commitLock</c> (serialising commits and snapshot
/// operations), then the <c>reuseGate</c> in write mode, then the engine's <c>stateLock</c>, in that order;
/// <see cref="CommitLocked"/> is for callers that hold <c>commitLock</c> already (snapshot operations, which
/// may hold <c>stateLock</c> too: both are reentrant). <see cref="Failure"/> and <see cref="Frozen"/> are
/// volatile, read without a lock; <see cref="Failure"/> is set under <c>stateLock</c> when the failure came
/// in the gather, so that no change slips in after the ones the gather took out of memory.</para>
/// </summary>
internal sealed class CommitPipeline : IDisposable
{
    private readonly object _commitLock, _stateLock;
    private readonly ReaderWriterLockSlim _reuseGate;
    private readonly MetadataStore _store;
    private readonly PoolRecord _pool;
    private readonly IReadOnlyDictionary<uint, IBlockDevice> _devices;
    private readonly RecordVersioner _versions;
    private readonly SpaceAllocator _space;
    private readonly LiveTreeCache _cache;
    private readonly MappingInvalidations _mappings;
    private readonly Action<string> _report;
    private readonly int[] _deviceWrites = new int[FormatConstants.MaxDeviceCookie + 1]; // per cookie: 1 when written since last flush (Interlocked)
    private volatile Exception? _failure;
    private volatile bool _frozen;
    private volatile bool _closed;
    private int _backgroundCommit;
    private TimeSpan _interval = TimeSpan.FromSeconds(5);
    private Timer? _timer;

    public CommitPipeline(object commitLock, object stateLock, ReaderWriterLockSlim reuseGate, MetadataStore store, PoolRecord pool,
        IReadOnlyDictionary<uint, IBlockDevice> devices, RecordVersioner versions, SpaceAllocator space, LiveTreeCache cache,
        MappingInvalidations mappings, Action<string> report)
    {
        _commitLock = commitLock; _stateLock = stateLock; _reuseGate = reuseGate; _store = store; _pool = pool; _devices = devices;
        _versions = versions; _space = space; _cache = cache; _mappings = mappings; _report = report;
        _timer = new Timer(_ => TimedCommit(), null, _interval, _interval);
    }

    /// <summary>Commit automatically once this many blocks were written since the last commit.</summary>
    public long EveryBlocks { get; set; } = 65536;

    /// <summary>Commit automatically once this many metadata records changed since the last commit.</summary>
    public int EveryRecords { get; set; } = 50_000;

    /// <summary>Longest time a completed change waits for its group commit (0 disables the timer).</summary>
    public TimeSpan Interval
    {
        get => _interval;
        set
        {
            _interval = value;
            var period = value > TimeSpan.Zero ? value : Timeout.InfiniteTimeSpan;
            _timer?.Change(period, period);
        }
    }

    /// <summary>The first failure on the commit path (null while the pool accepts changes).</summary>
    public Exception? Failure => _failure;

    public bool Failed => _failure != null;

    /// <summary>True between <see cref="Freeze"/> and <see cref="Thaw"/>.</summary>
    public bool Frozen => _frozen;

    public bool Closed => _closed;

    /// <summary>Tests only: called at named points of the commit path ("gather": after the dirty state was
    /// taken out; "snapshot": after a snapshot operation's step ran; "purge": in each batch of a snapshot
    /// deletion's purge (its blocks released in memory, the batch not yet committed); "rollback", "clone",
    /// "restore": in the middle of those operations' in-memory step (<see cref="FailStop"/>); "clone-read": after a
    /// clone read the snapshot's subtree, holding the commit lock and not the state lock; "write": before the
    /// metadata transaction; "frees": after the commit is durable, before its freed blocks are released), so
    /// that a test can throw there. Null in production.</summary>
    public Action<string>? FaultHook { get; set; }

    public void Fault(string point) => FaultHook?.Invoke(point);

    public void ThrowIfFailed()
    {
        if (_failure is { } f)
            throw new IOException($"the pool stopped accepting changes after an earlier failure: {f.Message}", f);
    }

    /// <summary>Data was written to device <paramref name="cookie"/>: the next commit flushes it first.</summary>
    public void NoteDeviceWrite(uint cookie) => Volatile.Write(ref _deviceWrites[cookie], 1);

    /// <summary>Makes every completed change durable (nothing while frozen: the on-disk state must not move).</summary>
    /// <summary>Bytes of LiteDB's page cache kept after commits (<see cref="CacheBudget.StorePages"/>; 0: unbounded).</summary>
    public long StoreCacheBytes { get; set; }
    /// <summary>The managed heap past which a commit asks for a full collection (<see cref="CacheBudget.HeapCeiling"/>; 0: never).</summary>
    public long HeapCeiling { get; set; }
    /// <summary>Shortest time between two such collections (each stops every thread for a moment).</summary>
    private const long MinCollectionIntervalMs = 5000;
    private long _lastCollection;

    /// <summary>Commits between two looks at LiteDB's page cache (each look reads its statistics).</summary>
    private const int CacheCheckEveryCommits = 1;
    private int _commitsSinceCacheCheck;

    public void Commit()
    {
        lock (_commitLock)
        {
            if (_frozen) return;
            CommitLocked(null);
        }
    }

    /// <summary>fsfreeze: commits, then holds every commit until <see cref="Thaw"/>. EIO when the commit fails or
    /// the pool already failed.</summary>
    public Mono.Unix.Native.Errno Freeze()
    {
        lock (_commitLock)
        {
            if (_frozen) return 0;
            if (_failure != null) return Mono.Unix.Native.Errno.EIO;
            try { CommitLocked(null); }
            catch (IOException) { return Mono.Unix.Native.Errno.EIO; }
            _frozen = true;
            return 0;
        }
    }

    public void Thaw()
    {
        lock (_commitLock) _frozen = false;
    }

    /// <summary>Whether anything changed since the last commit.</summary>
    public bool HasChanges()
    {
        lock (_stateLock) return _versions.HasChanges;
    }

    /// <summary>One group commit; the caller holds <c>commitLock</c>. <paramref name="inside"/> runs under
    /// <c>stateLock</c> after the dirty state is gathered, so that what it changes (a snapshot's generation
    /// bump) lands in the same transaction.
    /// <para>Fail-stop: any exception from here on makes the pool read-only before the lock that guards the
    /// dirty state is let go; the last durable commit stays as it was (nothing after the failure reaches the
    /// metadata store). Throws <see cref="CommitFailedException"/> (an IOException).</para></summary>
    public void CommitLocked(Action<MetadataBatch>? inside) => CommitLocked(inside, null);

    /// <summary>
    /// A commit that carries the cleaner's moves (format.md 6, "Relocation"); the caller holds <c>commitLock</c>.
    /// <paramref name="relocate"/> runs under <c>stateLock</c> before the gather: it points the mappings in
    /// memory at the copies and returns the moves, which the metadata transaction applies to every stored chunk.
    /// <c>stateLock</c> is held until that transaction is durable, so that no chunk is loaded from the store
    /// in between with the old addresses; the blocks moved from are freed like any other of the commit.
    /// </summary>
    public void CommitRelocating(Func<List<Relocation>> relocate) => CommitLocked(null, relocate);

    private void CommitLocked(Action<MetadataBatch>? inside, Func<List<Relocation>>? relocate)
    {
        if (_closed) throw new ObjectDisposedException("pool", "the pool is closed");
        ThrowIfFailed();
        bool holdState = relocate != null;
        if (holdState) Monitor.Enter(_stateLock);
        try
        {
            CommitLockedThenRelease(inside, relocate, ref holdState);
        }
        finally { if (holdState) Monitor.Exit(_stateLock); }
    }

    private void CommitLockedThenRelease(Action<MetadataBatch>? inside, Func<List<Relocation>>? relocate, ref bool holdingState)
    {
        MetadataBatch batch = null!;
        List<(uint Cookie, List<(long, long)> Ranges)> frees = null!;
        long seq;
        int listenerFailuresBefore = 0;
        Exception? gatherFailure = null;
        lock (_stateLock)
        {
            seq = _pool.CommitSeq + 1;
            try
            {
                List<Relocation>? moves = null;
                if (relocate != null)
                {
                    moves = relocate();
                    Fault("relocate");
                }
                batch = _versions.Gather();
                if (moves != null) batch.Relocations.AddRange(moves);
                _space.GatherDirtySegments(batch, dense: _pool.FormatVersion < FormatConstants.RunSpaceMapsVersion);
                Fault("gather");
                if (inside != null)
                {
                    inside(batch);
                    Fault("snapshot");
                }
                _pool.CommitSeq++;
                if (_space.TryGet(FormatConstants.LogCookie, out var log) && log.Role == DeviceRole.Log) _pool.LogCursor = log.Cursor;
                batch.Pool = _pool.Clone();
                frees = _space.TakePendingFrees();
                listenerFailuresBefore = _mappings.TakeFailureMark();
            }
            catch (Exception e) { gatherFailure = e; _failure ??= e; } // before the lock is let go: no change may follow
        }
        if (gatherFailure != null) throw Fail(seq, "while gathering its changes", gatherFailure);
        try
        {
            FlushDataDevices();
            Fault("write");
            _store.Commit(batch);
            foreach (var (ino, index) in batch.RelocatedLive)
                _mappings.Record(ino, index * FormatConstants.ChunkBlocks, FormatConstants.ChunkBlocks);
        }
        catch (Exception e) { throw Fail(seq, "while writing it", e); }
        if (holdingState) { Monitor.Exit(_stateLock); holdingState = false; }
        try
        {
            // Whoever caches mappings of live files hears of every change this commit freed blocks for
            // before those blocks can be allocated again; when a listener failed to hear of some, the
            // blocks stay unallocatable for the rest of this mount (Engine.FailStop.cs).
            _mappings.DeliverAndWait();
            Fault("frees");
            bool holdBack = _mappings.FailedSince(listenerFailuresBefore);
            long heldBack = 0;
            bool released = false;
            _reuseGate.EnterWriteLock();
            try
            {
                lock (_stateLock)
                {
                    if (holdBack) heldBack = _space.HoldBack(frees);
                    else _space.ReleaseFrees(frees);
                    _cache.Trim(seq, _versions.IsDirty);
                    // LiteDB keeps every page it touched: every few commits, give them back when over the budget
                    // (with the commit and state locks held, nothing else uses the store).
                    if (StoreCacheBytes > 0 && ++_commitsSinceCacheCheck >= CacheCheckEveryCommits)
                    {
                        _commitsSinceCacheCheck = 0;
                        released = _store.TrimCache(StoreCacheBytes);
                    }
                }
            }
            finally { _reuseGate.ExitWriteLock(); }
            // LiteDB's pages are large-object-heap arrays: given back to the system only by a full, compacting
            // collection, which the runtime would otherwise put off (the mount's memory stays at its peak).
            // So is garbage in general: past the budget's ceiling, at most every few seconds.
            if (released || (HeapCeiling > 0 && GC.GetTotalMemory(false) > HeapCeiling && Environment.TickCount64 - _lastCollection > MinCollectionIntervalMs))
            {
                GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                _lastCollection = Environment.TickCount64;
            }
            if (heldBack > 0)
                _report($"commit {seq}: {heldBack} blocks it freed are held back from reuse until the pool is reopened "
                    + "(a mapping invalidation listener failed, so a cached mapping of them may still be in use)");
        }
        catch (Exception e) { throw Fail(seq, "after it was durable, while releasing the blocks it freed", e); }
    }

    /// <summary>Runs <paramref name="step"/>, a change of the live tree made in memory by an operation that holds
    /// <c>commitLock</c> and commits it after (a rollback, clone or restore from a snapshot). An exception there
    /// would leave part of the change in memory for a later commit to make durable, so it is fail-stop like the
    /// commit path: the pool turns read-only and the exception is rethrown as the commit's
    /// (<see cref="CommitFailedException"/>), naming <paramref name="what"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]   // its frame in the logged stack says where the failure was caught
    public void FailStop(string what, Action step)
    {
        try { step(); }
        catch (Exception e) when (e is not CommitFailedException) { throw Fail(_pool.CommitSeq + 1, what, e); }
    }

    /// <summary>Makes the pool read-only after a failure on the commit path of commit <paramref name="seq"/>,
    /// reports it with its stack, and returns the exception to throw.</summary>
    public CommitFailedException Fail(long seq, string where, Exception e)
    {
        lock (_stateLock) _failure ??= e;
        _report($"commit {seq} failed {where}; the pool is now read-only until reopened (every change gets EIO, "
            + $"the last durable commit is kept): {e}");
        return new CommitFailedException($"metadata commit failed: {e.Message}", e);
    }

    private void FlushDataDevices()
    {
        foreach (var (cookie, dev) in _devices)
            if (Interlocked.Exchange(ref _deviceWrites[cookie], 0) != 0) dev.Flush();
    }

    /// <summary>Commits if enough data was written since the last commit; called after writes, outside every lock.</summary>
    public void MaybeCommit()
    {
        _mappings.Deliver();
        long blocks; int records;
        lock (_stateLock)
        {
            blocks = _versions.DirtyBlocks;
            records = _versions.DirtyRecords;
        }
        if (blocks < EveryBlocks && records < EveryRecords) return;
        // Backpressure: far past the threshold, the writer itself waits for a commit.
        if (blocks >= 4 * EveryBlocks || records >= 4 * EveryRecords) { Commit(); return; }
        // Otherwise commit in the background, so that writers keep going while the devices flush.
        if (Interlocked.CompareExchange(ref _backgroundCommit, 1, 0) != 0) return;
        ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            try { if (!_closed && _failure == null) Commit(); }
            catch (ObjectDisposedException) { }
            catch (CommitFailedException) { /* reported with its stack where it failed */ }
            catch (Exception e) { _report($"background commit failed: {e}"); }
            finally { Volatile.Write(ref _backgroundCommit, 0); }
        }, null);
    }

    private void TimedCommit()
    {
        if (_failure != null || _closed || _frozen || !HasChanges()) return;
        // A timer callback runs on the thread pool; it must not wait there for the commit lock, whose holder may be
        // waiting for LiteDB's writer task, itself a thread-pool task (many waiting callbacks starve it). A commit
        // in progress makes the changes durable anyway; the next tick takes the rest.
        if (!Monitor.TryEnter(_commitLock)) return;
        try
        {
            if (!_frozen) CommitLocked(null);
        }
        catch (ObjectDisposedException) { }
        catch (CommitFailedException) { /* reported with its stack where it failed */ }
        catch (Exception e) { _report($"background commit failed: {e}"); }
        finally { Monitor.Exit(_commitLock); }
    }

    /// <summary>The last commit before the pool closes (none after a failure); afterwards every commit throws
    /// <see cref="ObjectDisposedException"/>. <paramref name="close"/> runs after it, under <c>commitLock</c>,
    /// also when the commit fails: a background or timed commit that started before must not run its metadata
    /// transaction while the store is being closed. False when already closed.</summary>
    public bool Close(Action close)
    {
        _timer?.Dispose();
        _timer = null;
        lock (_commitLock)
        {
            if (_closed) return false;
            try { if (_failure == null) CommitLocked(null); }
            finally
            {
                _closed = true;
                close();
            }
            return true;
        }
    }

    public void Dispose()
    {
        _timer?.Dispose();
        _timer = null;
    }
}
