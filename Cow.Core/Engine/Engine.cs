using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The copy-on-write engine of one open pool, and the coordinator of its parts (docs/design.md has the map).
/// It owns the locks and keeps their order, builds the parts at open and routes every operation to the
/// family that implements it (Engine.Operations.cs); it holds no other state.
/// <list type="bullet">
/// <item>Parts that own state, each guarded by <c>_lock</c> unless it says otherwise: <see cref="LiveTreeCache"/>
/// (live inodes, directories, extent chunks), <see cref="RecordVersioner"/> (the birth/death copy-on-write
/// rule and the write-behind set), <see cref="SpaceAllocator"/> (device space maps, deferred frees, fallocate
/// total), <see cref="WriteReservations"/> (write allocations in flight), <see cref="MappingInvalidations"/>
/// (extent-map changes on their way to listeners), <see cref="CommitPipeline"/> (group commit, freeze,
/// failure state), <see cref="SnapshotCatalog"/> (the snapshot list and frozen trees), <see cref="WriteBarrier"/>.</item>
/// <item>Operation families, stateless over those parts (<see cref="EnginePart"/>): <see cref="IomapService"/>,
/// <see cref="FileDataPath"/>, <see cref="RangeCloner"/>, <see cref="FallocateReservations"/>,
/// <see cref="NamespaceOps"/>, <see cref="InodeAttributes"/>, <see cref="SnapshotManager"/> (with the pure
/// <see cref="SnapshotDiff"/>), <see cref="SnapshotRestorer"/>, <see cref="ImportWriter"/>, <see cref="LogCleaner"/>,
/// <see cref="Scrubber"/>, <see cref="DeviceManager"/>; pure helpers
/// <see cref="ExtentMap"/> and <see cref="SnapshotDiff"/>.</item>
/// </list>
/// <para>Threading: thread-safe. Lock order (every part and family follows it):
/// 1. a file's <c>WriteGate</c> (an operation holds one, except <see cref="CloneRange"/>, which holds two, and
/// <see cref="RestoreFromSnapshot"/>, which holds those of the files it replaces in place, all taken lower
/// inode number first with no engine lock held); 2. <c>_commitLock</c> (serialises commits and snapshot
/// operations; a WriteGate is never taken inside it); 3. <c>_reuseGate</c>, taken with no other lock held
/// except by a commit (after <c>_commitLock</c>, before <c>_lock</c>); 4. <c>_lock</c>, the state lock of every
/// part. Device data I/O runs outside <c>_lock</c>: writes go to reserved blocks nobody else can see, and
/// reads hold <c>_reuseGate</c> (read mode) so that blocks freed meanwhile are not reused under them. Two
/// exceptions run under <c>_lock</c>: the segment header written when the allocator enters a new log segment
/// (one block per 4 MiB of log), and the read-back that checksums a kernel ioend. An inode is pinned
/// (<c>LiveInode.Pins</c>) from its lookup to the end of a data operation, and a pinned inode is never
/// evicted from the cache. The <see cref="WriteBarrier"/>'s locks and the tree-change listeners are taken or
/// called with no engine lock held.</para>
/// <para>Extent-map changes of live files are recorded under <c>_lock</c> and handed to the
/// <see cref="IMappingInvalidationListener"/>s outside it; a commit delivers what is recorded and spins until
/// every delivery in flight has finished before it lets the blocks it freed be allocated again.
/// <see cref="Freeze"/> holds every commit until <see cref="Thaw"/>. A failure anywhere on the commit path
/// makes the pool read-only until reopened (fail-stop, Engine.FailStop.cs).</para>
/// </summary>
public sealed partial class Engine : IDisposable
{
    // Locks (the order is in the summary above). The engine owns them; the parts are handed what they use.
    private readonly object _lock = new();
    private readonly object _commitLock = new();
    private readonly ReaderWriterLockSlim _reuseGate = new(LockRecursionPolicy.SupportsRecursion);

    internal readonly MetadataStore Store;
    /// <summary>The open devices by cookie. Concurrent: data I/O looks devices up without a lock; a device joins
    /// (<see cref="DeviceManager"/>) before any block of it is handed out and leaves, with <c>_reuseGate</c> held in
    /// write mode, only after no committed or cached mapping names it.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<uint, IBlockDevice> _devices;
    private readonly PoolRecord _pool;   // the pool record: changed in place under _lock, written by each commit

    // The parts (each says what it owns and how it is guarded).
    private readonly LiveTreeCache _cache;
    private readonly RecordVersioner _versions;
    private readonly SpaceAllocator _space;
    private readonly WriteReservations _reservations;
    private readonly MappingInvalidations _mappings;
    private readonly CommitPipeline _commits;
    private readonly SnapshotCatalog _snapshots;
    private readonly WriteBarrier _writesInProgress = new();
    private readonly EngineContext _ctx;   // what the operation families are handed (EnginePart.cs)

    public int BlockSize { get; }
    internal int BlockShift { get; }
    public Guid PoolUuid => _pool.PoolUuid;

    /// <summary>Metadata commits made since open (a burst of writes must make far fewer than one each).</summary>
    public long CommitCount => Store.CommitCount;

    /// <summary>Commit automatically once this many blocks were written since the last commit.</summary>
    public long CommitEveryBlocks { get => _commits.EveryBlocks; set => _commits.EveryBlocks = value; }

    /// <summary>Commit automatically once this many metadata records changed since the last commit.</summary>
    public int CommitEveryRecords { get => _commits.EveryRecords; set => _commits.EveryRecords = value; }

    /// <summary>Longest time a completed change waits for its group commit (0 disables the timer).</summary>
    public TimeSpan CommitInterval { get => _commits.Interval; set => _commits.Interval = value; }

    /// <summary>The byte budget of the metadata caches (<see cref="Engine.CacheBudget"/>): setting it sets the chunk, inode
    /// and snapshot-record limits and LiteDB's page cache bound. <see cref="CacheBudget.Default"/> at open.</summary>
    public CacheBudget CacheBudget
    {
        get { lock (_lock) return _budget; }
        set
        {
            if (value.Bytes < CacheBudget.MinBytes) throw new ArgumentOutOfRangeException(nameof(value), value.Bytes, $"a cache budget is at least {CacheBudget.MinBytes >> 20} MiB");
            lock (_lock)
            {
                _budget = value;
                _cache.ChunkLimit = value.Chunks;
                _cache.InodeLimit = value.Inodes;
                _snapshots.RecordLimit = value.SnapshotRecords;
                _commits.StoreCacheBytes = value.StorePages;
                _commits.HeapCeiling = value.HeapCeiling;
                _commits.EveryRecords = value.CommitRecords;
            }
        }
    }
    private CacheBudget _budget;

    /// <summary>Upper bound on cached clean extent-map chunks (about 4–30 KiB each); trimmed after each commit.</summary>
    public int ChunkCacheLimit { get => _cache.ChunkLimit; set => _cache.ChunkLimit = value; }

    /// <summary>Live inodes cached now (deleted ones until the next trim).</summary>
    public int CachedInodeCount { get { lock (_lock) return _cache.Inodes.Count(); } }

    /// <summary>Extent-map chunks cached for the live tree now (clean and dirty).</summary>
    public long CachedChunks { get { lock (_lock) return _cache.ChunkCount; } }

    /// <summary>Upper bound on cached live inodes that are clean and closed (trimmed after each commit).</summary>
    public int InodeCacheLimit { get => _cache.InodeLimit; set => _cache.InodeLimit = value; }

    /// <summary>Receives one line for each problem the engine reports (checksum mismatches; failed commits and
    /// failed mapping-invalidation listeners with the exception's full text and stack).</summary>
    public event Action<string>? Problem;

    /// <summary>The engine over an open store and the devices of its device table (by cookie).</summary>
    internal Engine(MetadataStore store, PoolRecord pool, IReadOnlyDictionary<uint, IBlockDevice> devices)
    {
        Store = store;
        _pool = pool;
        BlockSize = pool.BlockSize;
        BlockShift = System.Numerics.BitOperations.Log2((uint)BlockSize);
        _devices = new(devices);
        var table = store.LoadDevices();
        SpaceAllocator NewSpace()
        {
            var space = new SpaceAllocator(table.ToDictionary(d => d.Cookie, d => d.DeviceSize / pool.BlockSize), table.ToDictionary(d => d.Cookie, d => d.Role), () => pool.LiveGen, (from, to) => _snapshots!.AnyIn(from, to));
            foreach (var d in table) space[d.Cookie].Draining = d.State == DeviceState.Removing;
            return space;
        }
        _space = NewSpace();
        bool dense = false;
        foreach (var seg in store.LoadSpaceMaps())
        {
            if (!_space.TryGet(seg.Device, out var sp)) throw new InvalidDataException($"metadata: space map for unknown device cookie {seg.Device}");
            if (seg.Dense) { dense = true; break; }
            sp.Load(seg.Segment, seg.Runs);
        }
        if (dense)
        {
            // Written before version 3: refs documents carry no live counts or generations; rebuilt from the extent maps.
            _space = NewSpace();
            SpaceMapRebuild.FromExtentMaps(store, _space, store.LoadSnapshots().Select(x => x.Gen).ToList());
            if (pool.FormatVersion >= FormatConstants.RunSpaceMapsVersion) foreach (var sp in _space.Devices.Values) sp.MarkAllDirty();
        }
        // Logs added by cow device add resume at block 1 (their cursor is not stored: any free block is valid).
        foreach (var l in _space.Devices.Values) if (l.Role == DeviceRole.Log) l.Cursor = 1;
        if (_space.TryGet(FormatConstants.LogCookie, out var logSpace) && logSpace.Role == DeviceRole.Log)
            logSpace.Cursor = pool.LogCursor;
        long cursorSeg = pool.LogCursor / FormatConstants.SegmentBlocks;
        if (logSpace != null && logSpace.Role == DeviceRole.Log && cursorSeg > 0 && (cursorSeg * FormatConstants.SegmentBlocks) < logSpace.Blocks)
        {
            // The segment the allocator resumes in keeps its header (rewriting a header of a segment that
            // holds committed data would rely on that write landing whole).
            var hdr = new byte[BlockSize];
            devices[FormatConstants.LogCookie].Read((cursorSeg * FormatConstants.SegmentBlocks) << BlockShift, hdr);
            if (SegmentHeader.TryRead(hdr) is { } h && h.PoolUuid == pool.PoolUuid && h.SegmentIndex == (ulong)cursorSeg)
                logSpace.OpenSegment = cursorSeg;
        }
        _cache = new LiveTreeCache(store, pool);
        _mappings = new MappingInvalidations(_lock, BlockShift, Report);
        _versions = new RecordVersioner(pool, _cache, _space, _mappings);
        _reservations = new WriteReservations(_space, _cache);
        _snapshots = new SnapshotCatalog(store, _versions);
        _commits = new CommitPipeline(_commitLock, _lock, _reuseGate, store, pool, _devices, _versions, _space, _cache, _mappings, Report);
        _ctx = new EngineContext
        {
            StateLock = _lock, CommitLock = _commitLock, ReuseGate = _reuseGate, Store = store, Devices = _devices, DeviceSlots = _devices, Pool = pool,
            Cache = _cache, Versions = _versions, Space = _space, Reservations = _reservations, Mappings = _mappings,
            Commits = _commits, Snapshots = _snapshots, WritesInProgress = _writesInProgress,
            Report = Report, ReportIoFailure = ReportIoFailure, DeliverTreeChanges = DeliverTreeChanges,
        };
        _ctx.Iomap = new IomapService(_ctx);
        _ctx.Prealloc = new FallocateReservations(_ctx);
        _ctx.Data = new FileDataPath(_ctx);
        _ctx.Cloner = new RangeCloner(_ctx);
        _ctx.Names = new NamespaceOps(_ctx);
        _ctx.Attrs = new InodeAttributes(_ctx);
        _ctx.SnapshotOps = new SnapshotManager(_ctx);
        _ctx.Restorer = new SnapshotRestorer(_ctx);
        _ctx.Importer = new ImportWriter(_ctx);
        _ctx.Cleaner = new LogCleaner(_ctx);
        _ctx.Purger = new SnapshotPurger(_ctx);
        _ctx.Sender = new Replication.StreamSender(_ctx);
        _ctx.Receiver = new Replication.StreamReceiver(_ctx);
        _ctx.Scrubber = new Scrubber(_ctx);
        _ctx.DeviceManager = new DeviceManager(_ctx);
        _ctx.Prealloc.LoadPreallocTotal();
        CacheBudget = CacheBudget.Default();
    }

    internal long LiveGen => _pool.LiveGen;

    /// <summary>A stream is being received (format.md 10.5): the live tree takes no change until it finishes or is aborted.</summary>
    public bool ReceivePending => Volatile.Read(ref _pool.Receive) != null;
    /// <summary>The pool document's format_version (changed under _lock by a device change).</summary>
    public int FormatVersion
    {
        get { lock (_lock) return _pool.FormatVersion; }
    }
    internal IBlockDevice Device(uint cookie) => _devices[cookie];
    internal long? DeviceBytes(uint cookie)
    {
        lock (_lock) return _space.TryGet(cookie, out var s) ? s.Blocks << BlockShift : null;
    }

    private void Report(string message) => Problem?.Invoke(message);

    private int _ioFailuresReported;

    /// <summary>An I/O failure surfaced to a caller as EIO; the first few are reported with their message.</summary>
    internal void ReportIoFailure(IOException e)
    {
        if (Interlocked.Increment(ref _ioFailuresReported) <= 10) Report($"I/O failure returned as EIO: {e.Message}");
    }

    /// <summary>True once a failure on the commit path made the pool read-only (fail-stop, Engine.FailStop.cs).</summary>
    private bool Failed => _commits.Failed;

    // ---------------------------------------------------------------- the live tree (under _lock)

    internal ITreeReader LiveTree => _cache.Reader;

    internal ITreeReader SnapshotTree(long gen)
    {
        lock (_lock) return _snapshots.View(gen);
    }

    /// <summary>The live inode, loading it if needed; null if it does not exist in the live tree.</summary>
    internal LiveInode? Live(long ino) => _cache.Get(ino);

    // ---------------------------------------------------------------- commit

    /// <summary>
    /// Makes every completed change durable (format.md, "Commit order"): flush every data device written
    /// since the last commit, then one metadata transaction (checkpointed, fsynced), then let the blocks
    /// it freed be reused. Called on fsync, snapshot, unmount, and every <see cref="CommitEveryBlocks"/>.
    /// </summary>
    public void Commit() => _commits.Commit();

    /// <summary>True between <see cref="Freeze"/> and <see cref="Thaw"/>.</summary>
    public bool Frozen => _commits.Frozen;

    /// <summary>
    /// fsfreeze: makes every completed change durable, then keeps the devices and the metadata file as they
    /// are until <see cref="Thaw"/> — no commit runs (timed, background, fsync: <see cref="Commit"/> returns
    /// at once), snapshots cannot be taken or deleted (EBUSY). Changes made meanwhile stay in memory and are
    /// committed after the thaw; whoever freezes also stops the writers (the kernel does, before it sends
    /// FUSE_FREEZE_FS). EIO when the commit fails or the pool already failed.
    /// </summary>
    public Mono.Unix.Native.Errno Freeze() => _commits.Freeze();

    /// <summary>Ends a <see cref="Freeze"/>: commits resume (what changed meanwhile goes with the next one).</summary>
    public void Thaw() => _commits.Thaw();

    /// <summary>Commits if enough data was written since the last commit; called after writes, outside every lock.</summary>
    internal void MaybeCommit() => _commits.MaybeCommit();

    public void Dispose()
    {
        _ctx.Purger.Stop();
        _ctx.Cleaner.Stop();
        _ctx.Scrubber.Stop();
        _commits.Close(() =>
        {
            try { Store.Dispose(); }
            finally
            {
                foreach (var d in _devices.Values) d.Dispose();
                _reuseGate.Dispose();
            }
        });
    }
}
