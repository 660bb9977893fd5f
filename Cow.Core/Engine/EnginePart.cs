using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>
/// What the coordinator (<see cref="Engine"/>) hands each of its operation families: the locks it keeps in
/// order, the metadata store, the devices, the pool record, the parts that own state, and the other
/// operation families. Built once at open; the operation families are filled in by the engine's constructor
/// before any is used. Immutable after that; thread-safe to read.
/// </summary>
internal sealed class EngineContext
{
    public required object StateLock { get; init; }
    public required object CommitLock { get; init; }
    public required ReaderWriterLockSlim ReuseGate { get; init; }
    public required MetadataStore Store { get; init; }
    public required IReadOnlyDictionary<uint, IBlockDevice> Devices { get; init; }
    /// <summary>The same devices, for the one part that adds and removes them (<see cref="DeviceManager"/>).</summary>
    public required System.Collections.Concurrent.ConcurrentDictionary<uint, IBlockDevice> DeviceSlots { get; init; }
    public required PoolRecord Pool { get; init; }
    public required LiveTreeCache Cache { get; init; }
    public required RecordVersioner Versions { get; init; }
    public required SpaceAllocator Space { get; init; }
    public required WriteReservations Reservations { get; init; }
    public required MappingInvalidations Mappings { get; init; }
    public required CommitPipeline Commits { get; init; }
    public required SnapshotCatalog Snapshots { get; init; }
    public required WriteBarrier WritesInProgress { get; init; }
    public required Action<string> Report { get; init; }
    public required Action<IOException> ReportIoFailure { get; init; }
    public required Action<List<TreeChange>> DeliverTreeChanges { get; init; }

    // The operation families (set by the engine's constructor, once).
    public IomapService Iomap { get; set; } = null!;
    public FallocateReservations Prealloc { get; set; } = null!;
    public FileDataPath Data { get; set; } = null!;
    public RangeCloner Cloner { get; set; } = null!;
    public NamespaceOps Names { get; set; } = null!;
    public InodeAttributes Attrs { get; set; } = null!;
    public SnapshotManager SnapshotOps { get; set; } = null!;
    public SnapshotRestorer Restorer { get; set; } = null!;
    public ImportWriter Importer { get; set; } = null!;
    public LogCleaner Cleaner { get; set; } = null!;
    public SnapshotPurger Purger { get; set; } = null!;
    public Replication.StreamSender Sender { get; set; } = null!;
    public Replication.StreamReceiver Receiver { get; set; } = null!;
    public Scrubber Scrubber { get; set; } = null!;
    public DeviceManager DeviceManager { get; set; } = null!;
}

/// <summary>
/// Base of the engine's operation families (<see cref="IomapService"/>, <see cref="FileDataPath"/>,
/// <see cref="NamespaceOps"/>, ...): each orchestrates the parts that own state and owns none of its own
/// (beyond scratch buffers guarded by <c>StateLock</c>, the engine's <c>_lock</c>; <c>CommitLock</c> is its
/// <c>_commitLock</c>, <c>ReuseGate</c> its <c>_reuseGate</c>). This base only names what the
/// <see cref="EngineContext"/> holds and the few helpers every family uses; the lock order is the
/// <see cref="Engine"/>'s (its summary).
/// </summary>
internal abstract class EnginePart(EngineContext context)
{
    protected const int ChunkBlocks = FormatConstants.ChunkBlocks;
    protected const long RootIno = Engine.RootIno;
    protected const long MaxFileSize = Engine.MaxFileSize;
    protected const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000,
        S_IFIFO = 0x1000, S_IFSOCK = 0xC000, S_IFCHR = 0x2000, S_IFBLK = 0x6000;
    protected const int NameMax = Engine.NameMax, XattrNameMax = 255, XattrValueMax = 65536, SymlinkMax = 4095;

    protected EngineContext Context => context;
    protected object StateLock => context.StateLock;
    protected object CommitLock => context.CommitLock;
    protected ReaderWriterLockSlim ReuseGate => context.ReuseGate;
    protected MetadataStore Store => context.Store;
    protected IReadOnlyDictionary<uint, IBlockDevice> Devices => context.Devices;
    protected PoolRecord PoolState => context.Pool;
    protected LiveTreeCache Cache => context.Cache;
    protected RecordVersioner Versions => context.Versions;
    protected SpaceAllocator Space => context.Space;
    protected WriteReservations Reservations => context.Reservations;
    protected MappingInvalidations Mappings => context.Mappings;
    protected CommitPipeline Commits => context.Commits;
    protected SnapshotCatalog Snapshots => context.Snapshots;
    protected WriteBarrier WritesInProgress => context.WritesInProgress;
    protected IomapService Iomap => context.Iomap;
    protected FallocateReservations Prealloc => context.Prealloc;
    protected FileDataPath Data => context.Data;
    protected RangeCloner Cloner => context.Cloner;
    protected NamespaceOps Names => context.Names;
    protected InodeAttributes Attrs => context.Attrs;
    protected SnapshotManager SnapshotOps => context.SnapshotOps;
    protected SnapshotRestorer Restorer => context.Restorer;
    protected ImportWriter Importer => context.Importer;
    protected LogCleaner Cleaner => context.Cleaner;

    protected int BlockSize => PoolState.BlockSize;
    protected int BlockShift { get; } = System.Numerics.BitOperations.Log2((uint)context.Pool.BlockSize);

    /// <summary>The live tree as an <see cref="ITreeReader"/>.</summary>
    protected ITreeReader LiveTree => Cache.Reader;

    /// <summary>True once a failure on the commit path made the pool read-only.</summary>
    protected bool Failed => Commits.Failed;

    protected void Report(string message) => context.Report(message);

    protected void ReportIoFailure(IOException e) => context.ReportIoFailure(e);

    protected void MaybeCommit() => Commits.MaybeCommit();

    protected void NoteDeviceWrite(uint cookie) => Commits.NoteDeviceWrite(cookie);

    /// <summary>The live inode (loaded if needed) or null. Under StateLock.</summary>
    protected LiveInode? Live(long ino) => Cache.Get(ino);

    protected DirState DirOf(LiveInode dir) => Cache.DirOf(dir);

    protected ChunkRecord? LiveChunk(LiveInode li, long index) => Cache.Chunk(li, index);

    protected List<ChunkRecord> LiveChunks(LiveInode li) => Cache.Chunks(li);

    /// <summary>Ends the pin an operation took on <paramref name="li"/> at its lookup.</summary>
    protected void Unpin(LiveInode li)
    {
        lock (StateLock) li.Pins--;
    }

    /// <summary>True when a commit would make freed blocks allocatable (a write short of space commits and retries).</summary>
    protected bool HasPendingFrees()
    {
        lock (StateLock) return Space.HasPendingFrees;
    }

    protected long FreeForNewWritesLocked() => Space.FreeForNewWrites();

    protected static bool IsDir(InodeRecord r) => Engine.IsDir(r);

    protected static Errno CheckName(string name) => Engine.CheckName(name);

    protected static long NowNs() => Engine.NowNs();

    protected InodeAttr Attr(InodeRecord r) => Engine.Attr(r, BlockSize);

    protected void DeliverTreeChanges(List<TreeChange> changes) => context.DeliverTreeChanges(changes);
}
