using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The copy-on-write engine of one open pool: the live tree's metadata (inodes, directories, extent
/// chunks) cached in memory and written behind in group commits, the space maps, the iomap contract
/// (<c>IomapBegin</c>/<c>IomapEnd</c>/<c>IoEnd</c>) and snapshots.
/// <para>Versioning (format.md, "Generations"): every record carries [birth, death). A record born at or
/// before the newest snapshot's generation is shared with a snapshot and is never changed: changing it
/// retires it (death = live generation) and writes a new version. Younger records are private to the
/// live tree and change in place. Taking a snapshot therefore only records the live generation and
/// bumps it: constant time.</para>
/// <para>Threading: thread-safe. <c>_lock</c> guards every mutable field (caches, dirty sets, space
/// maps, reservations, pool record). <c>_commitLock</c> serialises commits and snapshot operations.
/// Lock order: <c>_commitLock</c> → a file's <c>WriteGate</c> is never taken inside it; <c>WriteGate</c>
/// → <c>_lock</c>; an operation holds one file's <c>WriteGate</c>, except <see cref="CloneRange"/>, which
/// holds two, and <see cref="RestoreFromSnapshot"/>, which holds those of the files it replaces in place, all
/// taken lower inode number first with no engine lock held (then <c>_commitLock</c> → <c>_lock</c>); <c>_commitLock</c> → <c>_lock</c>; <c>_reuseGate</c> is taken with no other lock
/// held except in <see cref="Commit"/> (after <c>_commitLock</c>, before <c>_lock</c>). Device data I/O
/// runs outside <c>_lock</c>: writes go to reserved blocks nobody else can see, and reads hold
/// <c>_reuseGate</c> (read mode) so that blocks freed meanwhile are not reused under them. Two
/// exceptions run under <c>_lock</c>: the segment header written when the allocator enters a new log
/// segment (one block per 4 MiB of log), and the read-back that checksums a kernel ioend.
/// An inode is pinned (<c>LiveInode.Pins</c>) from its lookup to the end of a data operation, and a
/// pinned inode is never evicted from the cache.</para>
/// <para>Extent-map changes of live files are recorded under <c>_lock</c> and handed to the
/// <see cref="IMappingInvalidationListener"/>s outside it (Engine.Invalidation.cs); a commit delivers what is
/// recorded and spins until every delivery in flight has finished before it lets the blocks it freed be
/// allocated again. <see cref="Freeze"/> holds every commit until <see cref="Thaw"/>. A failure anywhere on
/// the commit path makes the pool read-only until reopened (fail-stop, Engine.FailStop.cs).</para>
/// </summary>
public sealed partial class Engine : IDisposable
{
    private readonly object _lock = new();
    private readonly object _commitLock = new();
    private readonly ReaderWriterLockSlim _reuseGate = new(LockRecursionPolicy.SupportsRecursion);
    internal readonly MetadataStore Store;
    private readonly Dictionary<uint, IBlockDevice> _devices;
    private readonly Dictionary<uint, DeviceSpace> _space = new();
    private readonly int[] _deviceWrites = new int[8]; // per cookie: 1 when written since last flush (Interlocked)
    private PoolRecord _pool;
    private readonly List<SnapshotRecord> _snapshots;
    private long _lastSnapGen;
    private volatile Exception? _failure; // set once (fail-stop, Engine.FailStop.cs); read without _lock by checks

    // Live tree caches and write-behind state, all guarded by _lock.
    private readonly Dictionary<long, LiveInode> _live = new();
    private readonly HashSet<LiveInode> _dirtyInodes = new();
    private readonly HashSet<DirentRecord> _dirtyDirents = new();
    private readonly HashSet<ChunkRecord> _dirtyChunks = new();
    private readonly MetadataBatch _pendingRemovals = new();
    private long _dirtyBlocksSinceCommit;
    private long _cachedChunks;      // entries in every cached inode's Chunks (approximate upper bound)
    private int _deletedSinceTrim;   // inodes deleted since the last cache trim
    private readonly SnapshotCache _snapCache;

    public int BlockSize { get; }
    internal int BlockShift { get; }
    public Guid PoolUuid => _pool.PoolUuid;

    /// <summary>Metadata commits made since open (a burst of writes must make far fewer than one each).</summary>
    public long CommitCount => Store.CommitCount;

    /// <summary>Commit automatically once this many blocks were written since the last commit.</summary>
    public long CommitEveryBlocks { get; set; } = 65536;

    /// <summary>Commit automatically once this many metadata records changed since the last commit.</summary>
    public int CommitEveryRecords { get; set; } = 50_000;

    /// <summary>Longest time a completed change waits for its group commit (0 disables the timer).</summary>
    public TimeSpan CommitInterval
    {
        get => _commitInterval;
        set { _commitInterval = value; _commitTimer?.Change(value > TimeSpan.Zero ? value : Timeout.InfiniteTimeSpan, value > TimeSpan.Zero ? value : Timeout.InfiniteTimeSpan); }
    }
    private TimeSpan _commitInterval = TimeSpan.FromSeconds(5);
    private Timer? _commitTimer;

    /// <summary>Upper bound on cached clean extent-map chunks (about 4–30 KiB each); trimmed after each commit.</summary>
    public int ChunkCacheLimit { get; set; } = 16384;

    /// <summary>Extent-map chunks cached for the live tree now (clean and dirty).</summary>
    public long CachedChunks { get { lock (_lock) return _live.Values.Sum(li => (long)li.Chunks.Count); } }

    /// <summary>Upper bound on cached live inodes that are clean and closed (trimmed after each commit).</summary>
    public int InodeCacheLimit { get; set; } = 20000;

    /// <summary>Receives one line for each problem the engine reports (checksum mismatches; failed commits and
    /// failed mapping-invalidation listeners with the exception's full text and stack).</summary>
    public event Action<string>? Problem;

    internal Engine(MetadataStore store, PoolRecord pool, IReadOnlyDictionary<uint, IBlockDevice> devices,
        IReadOnlyDictionary<uint, long> deviceBlocks)
    {
        Store = store;
        _pool = pool;
        BlockSize = pool.BlockSize;
        BlockShift = System.Numerics.BitOperations.Log2((uint)BlockSize);
        _devices = new Dictionary<uint, IBlockDevice>(devices);
        foreach (var (cookie, blocks) in deviceBlocks) _space[cookie] = new DeviceSpace(cookie, blocks);
        foreach (var seg in store.LoadSpaceMaps())
            if (_space.TryGetValue(seg.Device, out var sp)) sp.Load(new SpaceMapRecordView(seg.Segment, seg.Refs));
            else throw new InvalidDataException($"metadata: space map for unknown device cookie {seg.Device}");
        var logSpace = _space[FormatConstants.LogCookie];
        logSpace.Cursor = pool.LogCursor;
        long cursorSeg = pool.LogCursor / FormatConstants.SegmentBlocks;
        if (cursorSeg > 0 && (cursorSeg * FormatConstants.SegmentBlocks) < logSpace.Blocks)
        {
            // The segment the allocator resumes in keeps its header (rewriting a header of a segment that
            // holds committed data would rely on that write landing whole).
            var hdr = new byte[BlockSize];
            devices[FormatConstants.LogCookie].Read((cursorSeg * FormatConstants.SegmentBlocks) << BlockShift, hdr);
            if (SegmentHeader.TryRead(hdr) is { } h && h.PoolUuid == pool.PoolUuid && h.SegmentIndex == (ulong)cursorSeg)
                logSpace.OpenSegment = cursorSeg;
        }
        _snapshots = store.LoadSnapshots();
        _lastSnapGen = _snapshots.Count > 0 ? _snapshots[^1].Gen : 0;
        _snapCache = new SnapshotCache(store);
        _commitTimer = new Timer(_ => TimedCommit(), null, _commitInterval, _commitInterval);
        LoadPreallocTotal();
    }

    private bool HasPendingFrees()
    {
        lock (_lock) return _space.Values.Any(sp => sp.HasPendingFrees);
    }

    private bool HasDirtyState()
    {
        lock (_lock)
            return _dirtyInodes.Count + _dirtyDirents.Count + _dirtyChunks.Count + _pendingRemovals.Count > 0;
    }

    private void TimedCommit()
    {
        if (_failure != null || _disposed || _frozen || !HasDirtyState()) return;
        try { Commit(); }
        catch (ObjectDisposedException) { }
        catch (CommitFailedException) { /* reported with its stack where it failed */ }
        catch (Exception e) { Report($"background commit failed: {e}"); }
    }

    internal long LiveGen => _pool.LiveGen;
    internal IBlockDevice Device(uint cookie) => _devices[cookie];
    internal long? DeviceBytes(uint cookie) => _devices.TryGetValue(cookie, out var d) ? _space[cookie].Blocks << BlockShift : null;

    private void Report(string message) => Problem?.Invoke(message);

    private int _ioFailuresReported;

    /// <summary>An I/O failure surfaced to a caller as EIO; the first few are reported with their message.</summary>
    internal void ReportIoFailure(IOException e)
    {
        if (Interlocked.Increment(ref _ioFailuresReported) <= 10) Report($"I/O failure returned as EIO: {e.Message}");
    }

    private void ThrowIfFailed()
    {
        if (_failure != null)
            throw new IOException($"the pool stopped accepting changes after an earlier failure: {_failure.Message}", _failure);
    }

    // ---------------------------------------------------------------- versioning helpers (under _lock)

    private long NewRid() => _pool.NextRid++;
    private bool SharedWithSnapshot(VersionedRecord r) => r.Birth <= _lastSnapGen;

    private void Retire(VersionedRecord r) => _pendingRemovals.Retire(r, _pool.LiveGen);

    /// <summary>The inode record of <paramref name="li"/>, made safe to change (copy-on-write if a
    /// snapshot shares it) and marked dirty.</summary>
    private InodeRecord MutableInode(LiveInode li)
    {
        if (SharedWithSnapshot(li.Rec))
        {
            Retire(li.Rec);
            var c = li.Rec.Clone();
            c.Rid = NewRid(); c.Birth = _pool.LiveGen; c.Death = FormatConstants.Forever;
            li.Rec = c;
        }
        _dirtyInodes.Add(li);
        Touch(li);
        return li.Rec;
    }

    private void RemoveInodeRecord(LiveInode li)
    {
        if (SharedWithSnapshot(li.Rec)) Retire(li.Rec);
        else _pendingRemovals.DeletedInodes.Add(li.Rec.Rid);
        _dirtyInodes.Remove(li);
        li.Deleted = true;
        _deletedSinceTrim++;
        Touch(li);
    }

    private DirentRecord AddDirent(LiveInode dir, string name, long child, uint type)
    {
        var parent = MutableInode(dir);
        var d = new DirentRecord
        {
            Rid = NewRid(), Birth = _pool.LiveGen, Dir = dir.Ino, Name = name, Pos = parent.NextPos++, Child = child, Type = type,
        };
        DirOf(dir).Add(d);
        _dirtyDirents.Add(d);
        return d;
    }

    private void RemoveDirent(LiveInode dir, DirentRecord d)
    {
        DirOf(dir).Remove(d);
        Touch(dir);
        if (SharedWithSnapshot(d)) Retire(d);
        else _pendingRemovals.DeletedDirents.Add(d.Rid);
        _dirtyDirents.Remove(d);
    }

    /// <summary>The live chunk <paramref name="index"/> of <paramref name="li"/>, made private (a shared one is
    /// retired and copied, taking a reference on every block it maps) and dirty; created if absent.</summary>
    private ChunkRecord MutableChunk(LiveInode li, long index)
    {
        var c = LiveChunk(li, index);
        if (c == null)
        {
            c = new ChunkRecord { Rid = NewRid(), Birth = _pool.LiveGen, Ino = li.Ino, Index = index };
            CacheChunk(li, index, c);
        }
        else if (SharedWithSnapshot(c))
        {
            Retire(c);
            var n = c.CloneAsNewVersion();
            n.Rid = NewRid(); n.Birth = _pool.LiveGen; n.Death = FormatConstants.Forever;
            foreach (var e in n.Extents) _space[e.Device].AddRef(e.Address, e.Count);
            li.Chunks[index] = n;
            c = n;
        }
        _dirtyChunks.Add(c);
        Touch(li);
        return c;
    }

    /// <summary>Removes a live chunk from the live tree (a shared one is retired and keeps its references).</summary>
    private void DropChunk(LiveInode li, ChunkRecord c)
    {
        RecordMappingChange(li.Ino, c.Index * FormatConstants.ChunkBlocks, FormatConstants.ChunkBlocks);
        if (SharedWithSnapshot(c)) Retire(c);
        else
        {
            foreach (var e in c.Extents) _space[e.Device].Release(e.Address, e.Count);
            _pendingRemovals.DeletedChunks.Add(c.Rid);
        }
        _dirtyChunks.Remove(c);
        li.Chunks[c.Index] = null;
        Touch(li);
    }

    // ---------------------------------------------------------------- live caches (under _lock)

    /// <summary>The live inode, loading it if needed; null if it does not exist in the live tree.</summary>
    internal LiveInode? Live(long ino)
    {
        if (_live.TryGetValue(ino, out var li)) return li.Deleted ? null : li;
        var rec = Store.LoadInode(ino, _pool.LiveGen);
        if (rec == null) return null;
        li = new LiveInode(rec);
        _live[ino] = li;
        return li;
    }

    internal DirState DirOf(LiveInode dir)
    {
        if (dir.Dir == null)
        {
            var ds = new DirState();
            foreach (var d in Store.LoadDirectory(dir.Ino, _pool.LiveGen)) ds.Add(d);
            dir.Dir = ds;
        }
        return dir.Dir;
    }

    internal ChunkRecord? LiveChunk(LiveInode li, long index)
    {
        if (li.Chunks.TryGetValue(index, out var c)) return c;
        c = li.AllChunksLoaded ? null : Store.LoadChunk(li.Ino, index, _pool.LiveGen);
        CacheChunk(li, index, c);
        return c;
    }

    /// <summary>Caches a chunk (or a known hole, null) of <paramref name="li"/>, counting new entries.</summary>
    private void CacheChunk(LiveInode li, long index, ChunkRecord? c)
    {
        if (li.Chunks.TryAdd(index, c)) _cachedChunks++;
        else li.Chunks[index] = c;
    }

    /// <summary>Every live chunk of the file, in index order.</summary>
    internal List<ChunkRecord> LiveChunks(LiveInode li)
    {
        if (!li.AllChunksLoaded)
        {
            foreach (var c in Store.LoadChunks(li.Ino, _pool.LiveGen))
                if (!li.Chunks.ContainsKey(c.Index)) CacheChunk(li, c.Index, c);
            li.AllChunksLoaded = true;
        }
        var list = new List<ChunkRecord>();
        foreach (var c in li.Chunks.Values) if (c != null) list.Add(c);
        list.Sort((a, b) => a.Index.CompareTo(b.Index));
        return list;
    }

    // ---------------------------------------------------------------- commit

    /// <summary>
    /// Makes every completed change durable (format.md, "Commit order"): flush every data device written
    /// since the last commit, then one metadata transaction (checkpointed, fsynced), then let the blocks
    /// it freed be reused. Called on fsync, snapshot, unmount, and every <see cref="CommitEveryBlocks"/>.
    /// </summary>
    public void Commit()
    {
        lock (_commitLock)
        {
            // Frozen: everything was durable at the freeze, and the on-disk state must not move until the thaw.
            if (_frozen) return;
            CommitLocked(null);
        }
    }

    private volatile bool _frozen;

    /// <summary>True between <see cref="Freeze"/> and <see cref="Thaw"/>.</summary>
    public bool Frozen => _frozen;

    /// <summary>
    /// fsfreeze: makes every completed change durable, then keeps the devices and the metadata file as they
    /// are until <see cref="Thaw"/> — no commit runs (timed, background, fsync: <see cref="Commit"/> returns
    /// at once), snapshots cannot be taken or deleted (EBUSY). Changes made meanwhile stay in memory and are
    /// committed after the thaw; whoever freezes also stops the writers (the kernel does, before it sends
    /// FUSE_FREEZE_FS). EIO when the commit fails or the pool already failed.
    /// </summary>
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

    /// <summary>Ends a <see cref="Freeze"/>: commits resume (what changed meanwhile goes with the next one).</summary>
    public void Thaw()
    {
        lock (_commitLock) _frozen = false;
    }

    /// <summary>One group commit; <paramref name="inside"/> runs under <c>_lock</c> after the dirty state is
    /// gathered, so that what it changes (a snapshot's generation bump) lands in the same transaction.
    /// <para>Fail-stop (Engine.FailStop.cs): any exception from here on makes the pool read-only before the
    /// lock that guards the dirty state is let go, so no change is accepted after the one whose changes the
    /// failed gather took out of memory; the last durable commit stays as it was (nothing after the failure
    /// reaches the metadata store). Throws <see cref="CommitFailedException"/> (an IOException).</para></summary>
    private void CommitLocked(Action<MetadataBatch>? inside)
    {
        if (_disposed) throw new ObjectDisposedException("pool", "the pool is closed");
        ThrowIfFailed();
        MetadataBatch batch;
        var frees = new List<(uint Cookie, List<(long, long)> Ranges)>();
        long seq;
        int listenerFailuresBefore = 0;
        Exception? gatherFailure = null;
        lock (_lock)
        {
            seq = _pool.CommitSeq + 1;
            batch = null!;
            try
            {
                batch = GatherBatch();
                CommitFault("gather");
                if (inside != null)
                {
                    inside(batch);
                    CommitFault("snapshot");
                }
                _pool.CommitSeq++;
                _pool.LogCursor = _space[FormatConstants.LogCookie].Cursor;
                batch.Pool = ClonePool();
                foreach (var (cookie, sp) in _space) frees.Add((cookie, sp.TakePendingFrees()));
                _dirtyBlocksSinceCommit = 0;
                listenerFailuresBefore = TakeListenerFailureMark();
            }
            catch (Exception e) { gatherFailure = e; _failure ??= e; } // before _lock is let go: no change may follow
        }
        if (gatherFailure != null) throw FailCommit(seq, "while gathering its changes", gatherFailure);
        try
        {
            FlushDataDevices();
            CommitFault("write");
            Store.Commit(batch);
        }
        catch (Exception e) { throw FailCommit(seq, "while writing it", e); }
        try
        {
            // Whoever caches mappings of live files hears of every change this commit freed blocks for
            // before those blocks can be allocated again; when a listener failed to hear of some, the
            // blocks stay unallocatable for the rest of this mount (Engine.FailStop.cs).
            DeliverMappingInvalidationsAndWait();
            CommitFault("frees");
            bool holdBack = ListenerFailedSince(listenerFailuresBefore);
            long heldBack = 0;
            _reuseGate.EnterWriteLock();
            try
            {
                lock (_lock)
                {
                    if (holdBack) heldBack = HoldBackFrees(frees);
                    else foreach (var (cookie, ranges) in frees) _space[cookie].ReleasePendingFrees(ranges);
                    TrimCaches(seq);
                }
            }
            finally { _reuseGate.ExitWriteLock(); }
            ReportHeldBack(seq, heldBack);
        }
        catch (Exception e) { throw FailCommit(seq, "after it was durable, while releasing the blocks it freed", e); }
    }

    private PoolRecord ClonePool() => _pool.Clone();

    private MetadataBatch GatherBatch()
    {
        var b = new MetadataBatch();
        b.Retired.AddRange(_pendingRemovals.Retired);
        b.DeletedInodes.AddRange(_pendingRemovals.DeletedInodes);
        b.DeletedDirents.AddRange(_pendingRemovals.DeletedDirents);
        b.DeletedChunks.AddRange(_pendingRemovals.DeletedChunks);
        _pendingRemovals.Retired.Clear(); _pendingRemovals.DeletedInodes.Clear();
        _pendingRemovals.DeletedDirents.Clear(); _pendingRemovals.DeletedChunks.Clear();
        foreach (var li in _dirtyInodes) b.Add(li.Rec);
        foreach (var d in _dirtyDirents) b.Add(d);
        foreach (var c in _dirtyChunks) b.Add(c);
        _dirtyInodes.Clear(); _dirtyDirents.Clear(); _dirtyChunks.Clear();
        foreach (var (cookie, sp) in _space)
            foreach (var (seg, refs, allZero) in sp.TakeDirtySegments())
            {
                if (allZero) b.DeletedSpaceMaps.Add(SpaceMapRecord.Id(cookie, seg));
                else b.Add(new SpaceMapRecord { Device = cookie, Segment = seg, Refs = refs });
            }
        return b;
    }

    private void FlushDataDevices()
    {
        foreach (var (cookie, dev) in _devices)
            if (Interlocked.Exchange(ref _deviceWrites[cookie], 0) != 0) dev.Flush();
    }

    internal void NoteDeviceWrite(uint cookie) => Volatile.Write(ref _deviceWrites[cookie], 1);

    /// <summary>Drops cached inodes that the commit just made clean: deleted ones always, others when the
    /// cache is over its limit. An inode touched after the batch was gathered stays.</summary>
    private void TrimCaches(long committedSeq)
    {
        // Constant time unless there is something to do: a commit must not cost O(cached inodes).
        bool over = _live.Count > InodeCacheLimit;
        if (over || _deletedSinceTrim > 0)
        {
            var victims = new List<long>();
            bool deletedLeft = false;
            foreach (var (ino, li) in _live)
            {
                if (li.Touched >= committedSeq || li.Reservations != 0 || li.Pins != 0 || ino == 1) { deletedLeft |= li.Deleted; continue; }
                if (li.Deleted || (over && li.OpenCount == 0 && li.WriteGate.CurrentCount == 1)) victims.Add(ino);
            }
            int budget = over ? _live.Count - InodeCacheLimit / 2 : 0;
            foreach (var ino in victims)
            {
                var li = _live[ino];
                if (!li.Deleted) { if (budget <= 0) continue; budget--; }
                _cachedChunks -= li.Chunks.Count;
                _live.Remove(ino);
            }
            _deletedSinceTrim = deletedLeft ? 1 : 0;
        }
        // Extent maps: drop clean chunks (dirty ones wait for their commit) until under half the limit.
        if (_cachedChunks <= ChunkCacheLimit) return;
        long cached = 0;
        foreach (var li in _live.Values) cached += li.Chunks.Count;
        var drop = new List<long>();
        foreach (var li in _live.Values)
        {
            if (cached <= ChunkCacheLimit / 2) break;
            drop.Clear();
            foreach (var (idx, c) in li.Chunks)
                if (c == null || !_dirtyChunks.Contains(c)) drop.Add(idx);
            if (drop.Count == 0) continue;
            foreach (var idx in drop) li.Chunks.Remove(idx);
            li.AllChunksLoaded = false;
            cached -= drop.Count;
        }
        _cachedChunks = cached;
    }

    private void Unpin(LiveInode li)
    {
        lock (_lock) li.Pins--;
    }

    /// <summary>Marks <paramref name="li"/> changed in the current commit group (it cannot be evicted before that commits).</summary>
    private void Touch(LiveInode li) => li.Touched = _pool.CommitSeq;

    /// <summary>Commits if enough data was written since the last commit; called after writes, outside every lock.</summary>
    internal void MaybeCommit()
    {
        DeliverMappingInvalidations();
        long blocks; int records;
        lock (_lock)
        {
            blocks = _dirtyBlocksSinceCommit;
            records = _dirtyInodes.Count + _dirtyDirents.Count + _pendingRemovals.Count;
        }
        if (blocks < CommitEveryBlocks && records < CommitEveryRecords) return;
        // Backpressure: far past the threshold, the writer itself waits for a commit.
        if (blocks >= 4 * CommitEveryBlocks || records >= 4 * CommitEveryRecords) { Commit(); return; }
        // Otherwise commit in the background, so that writers keep going while the devices flush.
        if (Interlocked.CompareExchange(ref _backgroundCommit, 1, 0) != 0) return;
        ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            try { if (!_disposed && _failure == null) Commit(); }
            catch (ObjectDisposedException) { }
            catch (CommitFailedException) { /* reported with its stack where it failed */ }
            catch (Exception e) { Report($"background commit failed: {e}"); }
            finally { Volatile.Write(ref _backgroundCommit, 0); }
        }, null);
    }

    private int _backgroundCommit;

    private volatile bool _disposed;

    public void Dispose()
    {
        _commitTimer?.Dispose();
        _commitTimer = null;
        // Under _commitLock: a background or timed commit that started before this must not run its
        // metadata transaction while the store is being closed (it would race LiteDB's own checkpoint at
        // dispose); one that starts after sees _disposed and gives up.
        lock (_commitLock)
        {
            if (_disposed) return;
            try { if (_failure == null) CommitLocked(null); }
            finally
            {
                _disposed = true;
                try { Store.Dispose(); }
                finally
                {
                    foreach (var d in _devices.Values) d.Dispose();
                    _reuseGate.Dispose();
                }
            }
        }
    }
}

/// <summary>A live inode and what the engine caches for it. Guarded by the engine's <c>_lock</c>, except
/// <see cref="WriteGate"/>, which serialises the data writes of one file (read-modify-write of shared
/// blocks must not interleave).</summary>
internal sealed class LiveInode
{
    public InodeRecord Rec;
    public long Ino => Rec.Ino;
    public bool Deleted;
    public int OpenCount;
    /// <summary>Made by O_TMPFILE and not named yet: <see cref="Engine.Link"/> may give its first name although nlink is 0.</summary>
    public bool Linkable;
    public int Reservations;
    /// <summary>Operations between their lookup and their end: a pinned inode is never evicted.</summary>
    public int Pins;
    public long Touched;
    public DirState? Dir;
    public readonly Dictionary<long, ChunkRecord?> Chunks = new();
    public bool AllChunksLoaded;
    public readonly SemaphoreSlim WriteGate = new(1, 1);
    public LiveInode(InodeRecord rec) { Rec = rec; }
}

/// <summary>A directory's entries in memory, by name and by readdir position. Guarded by the owner's lock.</summary>
internal sealed class DirState
{
    public readonly Dictionary<string, DirentRecord> ByName = new(StringComparer.Ordinal);
    public readonly SortedList<long, DirentRecord> ByPos = new();
    public void Add(DirentRecord d) { ByName[d.Name] = d; ByPos[d.Pos] = d; }
    public void Remove(DirentRecord d) { ByName.Remove(d.Name); ByPos.Remove(d.Pos); }
    public int Count => ByName.Count;
}
