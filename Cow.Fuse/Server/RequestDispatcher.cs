using System.Runtime.InteropServices;
using Cow.Core;
using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>How a pool is mounted (<c>cow mount</c> options).</summary>
public sealed record FuseMountOptions
{
    /// <summary>Serve this snapshot, read-only, as the root (<c>cow mount --snapshot NAME</c>); null: the live tree.</summary>
    public string? Snapshot { get; init; }
    /// <summary>When reads update atime (<c>cow mount -o relatime|strictatime|noatime,nodiratime</c>): the server
    /// owns atime (the kernel marks FUSE inodes S_NOATIME and drops its cached atime after a READ or READDIR).</summary>
    public AtimeOptions Atime { get; init; }
    /// <summary>Request FUSE_WRITEBACK_CACHE at INIT (live mounts only). With fuse-iomap granted it is requested
    /// anyway (OpcodeTable.Init): the kernel must keep the size of iomap inodes its own in SETATTR.</summary>
    public bool WritebackCache { get; init; }
    /// <summary>List <c>.snapshots</c> in readdir of the root (lookups of it always work on a live mount).</summary>
    public bool SnapshotDirVisible { get; init; }
    /// <summary>
    /// Keep live files opened for writing out of the FUSE page cache (FOPEN_DIRECT_IO, with parallel direct
    /// writes), when the kernel still allows mmap of such files (FUSE_DIRECT_IO_ALLOW_MMAP): no second cached
    /// copy of written data. Off by default: a direct write reaches the server cut at the page boundaries of
    /// the writer's buffer (a 1 MiB write from a buffer that does not start on a page arrives as 1 MiB − 16
    /// bytes and 16 bytes), and every cut costs Cow a read-modify-write of one block in a new place; through
    /// the page cache, writes arrive page-aligned. Ignored with <see cref="WritebackCache"/> (which needs the
    /// page cache). Snapshot files are immutable and always cached (FOPEN_KEEP_CACHE).
    /// </summary>
    public bool DirectIo { get; init; }
    /// <summary>
    /// Whether to ask for fuse-iomap (the kernel then reads and writes file data on the pool's devices itself,
    /// asking the engine only where: docs/iomap.md). Granted at INIT when the kernel offers FUSE_IOMAP, this
    /// is not <see cref="IomapMode.Off"/> and <see cref="IomapDevices"/> is set; <see cref="IomapMode.On"/>
    /// fails INIT otherwise. The mount side has already asked the kernel (FUSE_DEV_IOC_ADD_IOMAP) and passes
    /// <see cref="IomapMode.Off"/> when that was refused under <see cref="IomapMode.Auto"/>.
    /// </summary>
    public IomapMode Iomap { get; init; } = IomapMode.Auto;
    /// <summary>Registers the pool's devices with the connection on the kernel's first IOMAP_CONFIG. The
    /// dispatcher calls <see cref="IIomapDeviceRegistrar.Register"/> at most once and never disposes it: the
    /// mount does, after the session ended.</summary>
    public IIomapDeviceRegistrar? IomapDevices { get; init; }
    /// <summary>Grant FUSE_OVER_IO_URING when the kernel offers it (it does with <c>fuse.enable_uring=1</c>,
    /// kernel 6.14+): the transport then takes requests from io_uring ring entries instead of read(2). Only a
    /// transport that can register ring entries may set this: once granted, the kernel holds every new
    /// request until each of its queues has an entry.</summary>
    public bool OverIoUring { get; init; }
}

/// <summary>Writes one whole notification (fuse_out_header with unique 0, then its payload) to the
/// connection; returns 0 or the errno of the write. Must be thread-safe.</summary>
public delegate Errno NotifySender(ReadOnlySpan<byte> message);

/// <summary>
/// Transport-independent FUSE request dispatcher: one request buffer in, one reply written into a
/// caller-provided buffer. No device I/O, no threads. Every malformed request gets an error reply (or, when
/// no reply is possible or expected, none); nothing a request contains, and no handler failure, makes
/// <see cref="Dispatch"/> throw. Node ids are resolved through <see cref="Nodes"/> (the mounted tree, the
/// snapshots browsed under <c>.snapshots</c>, and that virtual directory).
/// Thread-safety: <see cref="Dispatch"/> may be called by many threads at once. The handlers only call the
/// thread-safe <see cref="FileSystemView"/>, <see cref="Core.Engine.Engine"/> and <see cref="NodeTable"/>,
/// and use per-thread scratch; INIT state (including the fuse-iomap state, <see cref="IomapConnection"/>)
/// is published through a volatile field; freeze and shutdown through another (<c>_hold</c>).
/// <see cref="AttachConnection"/> and <see cref="ConnectionEnded"/> are called by the session.
/// </summary>
public sealed class RequestDispatcher
{
    /// <summary>Serves <paramref name="pool"/>: its live tree, or with <see cref="FuseMountOptions.Snapshot"/> that snapshot.</summary>
    /// <exception cref="ArgumentException"><see cref="FuseMountOptions.Snapshot"/> names no snapshot of the pool.</exception>
    public RequestDispatcher(Pool pool, FuseMountOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        Pool = pool;
        Options = options ?? new FuseMountOptions();
        FileSystemView root = pool.Live;
        if (Options.Snapshot is { } name)
            root = pool.Snapshot(name) ?? throw new ArgumentException($"The pool has no snapshot named '{name}' (cow snapshot list shows them).", nameof(options));
        Nodes = new NodeTable(pool, root);
        _treeChanges = new TreeChangeNotifier(this);
        MountTimeNs = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
    }

    /// <summary>NAME_MAX: longer names are ENAMETOOLONG.</summary>
    public const int MaxNameLength = 255;
    /// <summary>max_write granted with FUSE_MAX_PAGES (1 MiB).</summary>
    public const uint MaxWrite = 1 << 20;
    /// <summary>max_pages granted with FUSE_MAX_PAGES.</summary>
    public const ushort MaxPages = 256;
    /// <summary>max_write without FUSE_MAX_PAGES (the kernel's default of 32 pages).</summary>
    public const uint DefaultMaxWrite = 128 << 10;
    /// <summary>A request buffer that holds any request the negotiated limits allow (max_write plus headers).</summary>
    public const int RequestBufferSize = (int)MaxWrite + 4096;
    /// <summary>A reply buffer that holds any reply (a 1 MiB read plus fuse_out_header).</summary>
    public const int ReplyBufferSize = (int)MaxWrite + 4096;
    /// <summary>How long the kernel may keep entries and attributes: long, since Cow is the only writer of its
    /// namespace. What changes behind the kernel's back is told to it (FUSE_NOTIFY_INVAL_ENTRY/INODE): restore, clone,
    /// snapshots created or deleted not through the mount (<see cref="TreeChangeNotifier"/>), atime updates, setuid
    /// bits cleared by a write, blocks placed by writeback (FileHandlers.InvalidateAttributes). Rollback unmounts.</summary>
    public const ulong EntryTimeoutSeconds = 3600, AttrTimeoutSeconds = 3600;

    private volatile int _state; // 0 = waiting for INIT, 1 = initialised, 2 = destroyed
    private volatile int _hold;  // 0 = serving, HoldFrozen, HoldShutDown
    private const int HoldFrozen = 1, HoldShutDown = 2;
    private long _handlerFailures;
    private IomapConnection? _iomap;       // set at INIT (before _state), never changed after
    private volatile uint _liveAttrFlags;  // fuse_attr.flags of live inodes, set at INIT
    private volatile int _fuseFd = -1;
    private volatile NotifySender? _notify;
    private readonly TreeChangeNotifier _treeChanges;  // live mounts: attached at INIT, detached when the connection ends

    public Pool Pool { get; }
    public FuseMountOptions Options { get; }
    /// <summary>Node ids ↔ (tree, inode).</summary>
    public NodeTable Nodes { get; }
    /// <summary>Open directories of the live tree (OPENDIR .. RELEASEDIR).</summary>
    public DirHandles Dirs { get; } = new();
    /// <summary>The mounted tree (node id 1 is its root).</summary>
    public FileSystemView Root => Nodes.Root;
    /// <summary>When this dispatcher was made (ns since the epoch): the times of <c>.snapshots</c> while the pool has no snapshot.</summary>
    public long MountTimeNs { get; }

    /// <summary>Receives one line per dropped request and per handler exception. Called on the dispatching thread.</summary>
    public Action<string>? Log { get; set; }

    /// <summary>Exceptions thrown by handlers (each answered EIO).</summary>
    public long HandlerFailures => Interlocked.Read(ref _handlerFailures);

    public bool Initialized => _state != 0;
    public bool Destroyed => _state == 2;
    /// <summary>The protocol minor agreed at INIT.</summary>
    public uint NegotiatedMinor { get; private set; }
    /// <summary>The INIT flags granted.</summary>
    public FuseInitFlags NegotiatedFlags { get; private set; }

    /// <summary>FUSE_WRITEBACK_CACHE was granted: the kernel keeps file sizes and O_APPEND itself.</summary>
    public bool WritebackCacheGranted => (NegotiatedFlags & FuseInitFlags.WritebackCache) != 0;

    /// <summary>fuse_open_out.open_flags for a file of a writable tree opened for writing: direct I/O (see
    /// <see cref="FuseMountOptions.DirectIo"/>) when the kernel granted mmap of direct-I/O files.
    /// With fuse-iomap, never: the kernel would have to fall back from iomap direct I/O to buffered I/O for
    /// writes that are not block-aligned, which FOPEN_DIRECT_IO forbids (EIO).</summary>
    public uint LiveFileOpenFlags => Options.DirectIo && !WritebackCacheGranted && !IomapGranted && (NegotiatedFlags & FuseInitFlags.DirectIoAllowMmap) != 0
        ? (uint)(FuseOpenOutFlags.DirectIo | FuseOpenOutFlags.ParallelDirectWrites) : 0;

    /// <summary>fuse-iomap was granted at INIT: the kernel does the data I/O of live files itself
    /// (FUSE_READ and FUSE_WRITE are still served, for files and paths iomap does not cover).</summary>
    public bool IomapGranted => _iomap != null;

    /// <summary>Why fuse-iomap is not running although it was asked for: INIT refused with
    /// <see cref="IomapMode.On"/> and a kernel that did not offer it, or the device registration failed at
    /// IOMAP_CONFIG. Null otherwise. For the mount layer to report.</summary>
    public string? IomapFailure => _iomapFailure ?? _iomap?.RegistrationError;
    private volatile string? _iomapFailure;

    /// <summary>The devices registered with the kernel at IOMAP_CONFIG (empty before, and without iomap).</summary>
    public IReadOnlyList<RegisteredIomapDevice> IomapDevices => _iomap?.Devices ?? [];

    /// <summary>The fuse-iomap state of this connection (null unless granted).</summary>
    internal IomapConnection? Iomap => _iomap;

    /// <summary>FREEZE_FS was answered and UNFREEZE_FS not yet: requests that change the pool get EBUSY.</summary>
    public bool Frozen => _hold == HoldFrozen;

    /// <summary>SHUTDOWN_FS was answered: every request gets EIO from now on.</summary>
    public bool ShutDown => _hold == HoldShutDown;

    /// <summary>fuse_attr.flags for an inode of the tree in <paramref name="slot"/>: FUSE_ATTR_IOMAP |
    /// FUSE_ATTR_EXCLUSIVE for every inode of a live mounted tree when iomap was granted, else 0.</summary>
    public uint AttrFlags(int slot) => slot == NodeTable.RootSlot ? _liveAttrFlags : 0;

    /// <summary><paramref name="a"/> as stat shows it: under fuse-iomap, st_blocks of a live file also counts the
    /// blocks the kernel holds dirty over holes (<see cref="IomapDelalloc"/>), placed only at writeback.</summary>
    internal InodeAttr Visible(int slot, ulong nodeId, in InodeAttr a)
    {
        if (_iomap is not { } io || slot != NodeTable.RootSlot || !a.IsRegular) return a;
        long unplaced = io.Delalloc.UnplacedBytes(nodeId);
        return unplaced == 0 ? a : a with { Blocks512 = a.Blocks512 + unplaced / 512 };
    }

    /// <summary>Called by the session that serves this dispatcher: the connection's /dev/fuse descriptor
    /// (handed to <see cref="IIomapDeviceRegistrar.Register"/>) and how to send notifications on it.</summary>
    public void AttachConnection(int fuseFd, NotifySender? send)
    {
        _fuseFd = fuseFd;
        _notify = send;
    }

    /// <summary>Called by the session when the connection is gone: no notification is sent any more and the
    /// engine stops reporting mapping changes to this connection, and open directories are released.</summary>
    public void ConnectionEnded()
    {
        _notify = null;
        _treeChanges.Detach();
        _iomap?.Detach();
        Dirs.ReleaseAll();
    }

    internal int FuseFd => _fuseFd;

    /// <summary>Sends a notification on the attached connection; ENOTCONN when none is attached.</summary>
    internal Errno SendNotification(ReadOnlySpan<byte> message) => _notify is { } send ? send(message) : Errno.ENOTCONN;

    internal void CompleteInit(uint minor, FuseInitFlags flags)
    {
        NegotiatedMinor = minor;
        NegotiatedFlags = flags;
        if (!Root.ReadOnly) _treeChanges.Attach();
        if ((flags & FuseInitFlags.Iomap) != 0)
        {
            var io = new IomapConnection(this);
            _iomap = io;
            if (!Root.ReadOnly)
            {
                _liveAttrFlags = ExperimentalConstants.AttrIomap;   // EXCLUSIVE | __FUSE_ATTR_IOMAP
                io.Attach();
            }
            LogLine($"fuse-iomap granted: the kernel does data I/O on {Pool.Devices.Count} devices (protocol 7.{minor})");
        }
        _state = 1;
    }

    /// <summary>INIT refused because <see cref="IomapMode.On"/> could not be honoured.</summary>
    internal void RefuseIomap(string why)
    {
        _iomapFailure = why;
        LogLine(why);
    }

    internal void MarkDestroyed()
    {
        _state = 2;
        _treeChanges.Detach();
        _iomap?.Detach();
    }

    internal void Freeze(bool frozen) => _hold = frozen ? HoldFrozen : 0;
    internal void MarkShutDown() => _hold = HoldShutDown;

    /// <summary>The calling worker's <see cref="ReadSegments"/> while it dispatches with one (READ may then leave
    /// its data in device buffers lent in place), else null.</summary>
    [ThreadStatic] private static ReadSegments? t_readSegments;
    internal static ReadSegments? ReadSegmentsOfThisWorker => t_readSegments;

    /// <summary>True on a worker thread while it runs a request's handler: a change the engine reports then was made by
    /// a request the kernel sent (it knows of it), and a notification about it could wait on a lock that request's
    /// caller holds in the kernel (<see cref="TreeChangeNotifier"/>).</summary>
    [ThreadStatic] private static bool t_servingRequest;
    internal static bool ServingRequest => t_servingRequest;

    /// <summary>
    /// <see cref="Dispatch(ReadOnlySpan{byte}, Span{byte})"/> for a transport that can send a reply gathered from
    /// several pieces: a READ may leave its data as <paramref name="readSegments"/>' segments (whose scratch
    /// buffer must be <paramref name="reply"/> after the fuse_out_header). When a reply of the returned length
    /// carries <paramref name="readSegments"/>' <see cref="ReadSegments.LentBytes"/> &gt; 0, it is the
    /// fuse_out_header at the start of <paramref name="reply"/> followed by the segments; the caller sends it
    /// and releases the segments in any case.
    /// </summary>
    public int Dispatch(ReadOnlySpan<byte> request, Span<byte> reply, ReadSegments readSegments)
    {
        readSegments.Reset();
        t_readSegments = readSegments;
        try { return Dispatch(request, reply); }
        finally { t_readSegments = null; }
    }

    /// <summary>
    /// Handles one request and writes its reply at the start of <paramref name="reply"/>.
    /// Returns the reply length (fuse_out_header.len), or 0 when no reply is to be sent.
    /// </summary>
    public int Dispatch(ReadOnlySpan<byte> request, Span<byte> reply)
    {
        if (reply.Length < FuseOutHeader.Size) { LogLine("reply buffer smaller than fuse_out_header; request dropped"); return 0; }
        if (request.Length < 16) { LogLine($"request of {request.Length} bytes has no readable unique; dropped"); return 0; }
        uint opcode = MemoryMarshal.Read<uint>(request[4..]);
        ulong unique = MemoryMarshal.Read<ulong>(request[8..]);
        var entry = OpcodeTable.Get(opcode);

        if (!Wire.TryRead(request, out FuseInHeader h)) return Fail(entry, reply, unique, Errno.EINVAL, "truncated fuse_in_header");
        if (h.Len != (uint)request.Length) return Fail(entry, reply, unique, Errno.EINVAL, "fuse_in_header.len differs from the request length");
        int extBytes = h.TotalExtLen * 8;
        if (extBytes > request.Length - FuseInHeader.Size) return Fail(entry, reply, unique, Errno.EINVAL, "total_extlen beyond the request");
        // Extensions (security contexts, supplementary groups) trail the payload; nothing here uses them yet.
        var payload = request[FuseInHeader.Size..(request.Length - extBytes)];

        int state = _state;
        if (state == 0 && opcode != (uint)FuseOpcode.Init) return Fail(entry, reply, unique, Errno.EIO, null);
        if (state != 0 && opcode == (uint)FuseOpcode.Init) return Fail(entry, reply, unique, Errno.EIO, "second INIT");
        int hold = _hold;
        if (hold != 0)
        {
            // Shut down: nothing reaches the pool any more. Frozen: the kernel stops its writers before it
            // freezes us, so a change arriving now is refused rather than held (a worker blocked here
            // could keep UNFREEZE_FS from being read).
            if (hold == HoldShutDown) return Fail(entry, reply, unique, Errno.EIO, null);
            if (entry.Changes) return Fail(entry, reply, unique, Errno.EBUSY, null);
        }
        if (entry.Handler is null) return Fail(entry, reply, unique, Errno.ENOSYS, null);
        if (payload.Length < entry.MinPayload) return Fail(entry, reply, unique, Errno.EINVAL, "payload shorter than its struct");

        var body = reply[FuseOutHeader.Size..];
        Errno e;
        int n;
        t_servingRequest = true;
        try
        {
            e = entry.Handler(this, in h, payload, body, out n);
        }
        catch (Exception ex)
        {
            Interlocked.Increment(ref _handlerFailures);
            LogLine($"opcode {opcode} (unique {unique}, node {h.NodeId}) failed: {ex}");
            e = Errno.EIO;
            n = 0;
        }
        finally { t_servingRequest = false; }
        if (!entry.Replies) return 0;
        if (e != 0) n = 0;
        else if ((uint)n > (uint)body.Length)
        {
            LogLine($"opcode {opcode} reported a {n}-byte reply; answered EIO");
            e = Errno.EIO;
            n = 0;
        }
        return WriteHeader(reply, unique, e, n);
    }

    /// <summary>
    /// An error reply to <paramref name="request"/> without dispatching it (a closing session answers this
    /// way so that nothing reaches the pool); 0 when the request gets no reply (FORGET, unique 0, too short).
    /// </summary>
    public static int ErrorReply(ReadOnlySpan<byte> request, Span<byte> reply, Errno error)
    {
        if (request.Length < 16 || reply.Length < FuseOutHeader.Size) return 0;
        uint opcode = MemoryMarshal.Read<uint>(request[4..]);
        ulong unique = MemoryMarshal.Read<ulong>(request[8..]);
        return OpcodeTable.Get(opcode).Replies ? WriteHeader(reply, unique, error, 0) : 0;
    }

    private int Fail(in OpcodeEntry entry, Span<byte> reply, ulong unique, Errno e, string? why)
    {
        if (why != null) LogLine($"unique {unique}: {why} ({e})");
        if (!entry.Replies) return 0;
        return WriteHeader(reply, unique, e, 0);
    }

    private static int WriteHeader(Span<byte> reply, ulong unique, Errno e, int payloadLength)
    {
        if (unique == 0) return 0;   // a reply with unique 0 would read as a notification
        int len = FuseOutHeader.Size + payloadLength;
        var o = new FuseOutHeader { Len = (uint)len, Error = ErrnoMap.ToReplyError(e), Unique = unique };
        MemoryMarshal.Write(reply, in o);
        return len;
    }

    internal void LogLine(string line)
    {
        var log = Log;
        if (log == null) return;
        try { log(line); } catch (Exception) { /* a failing logger must not break dispatch */ }
    }
}
