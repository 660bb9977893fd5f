using System.Runtime.InteropServices;
using Cow.Core.Devices;
using Cow.Fuse.Native;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>
/// Serves one FUSE connection: a set of worker threads, each with its own /dev/fuse descriptor (the first is
/// the descriptor given to mount; the others are clones made with FUSE_DEV_IOC_CLONE, so the kernel hands
/// requests to whichever worker is waiting and replies go back on the descriptor the request came from).
/// Each worker owns one pinned request buffer and one pinned reply buffer for its whole life: the request
/// path allocates nothing per request. A READ's data may stay in the device read-ahead's buffers, lent to
/// the worker's <see cref="ReadSegments"/>: the reply is then one writev of the header and those pieces, and the
/// pieces go back when it is written. A worker ends when the kernel reports the connection gone (ENODEV,
/// after unmount or abort; or end of file, when the descriptor is a socket standing in for /dev/fuse in tests).
/// The session also carries the dispatcher's notifications (<see cref="SendNotification"/>) on the first
/// descriptor, and tells the dispatcher when the connection is gone. When INIT granted FUSE_OVER_IO_URING,
/// the worker that answered INIT starts a <see cref="FuseUringTransport"/> (ring entries with threads of
/// their own); requests then come through it, while FORGET and INTERRUPT still come through the workers.
/// Threading: <see cref="Start"/> once, then any thread may call <see cref="Close"/>, <see cref="WaitEnded"/>,
/// <see cref="InFlight"/>, <see cref="SendNotification"/>. The workers only share the dispatcher
/// (thread-safe) and the in-flight counter (interlocked); <c>_running</c> counts workers and ring threads
/// (interlocked) and the last to end sets <see cref="Ended"/>. Lock order: <c>_gate</c> only (also guards
/// <c>_uring</c>), never held while dispatching; <c>_notifyGate</c> only around a notification write and the closing of the descriptors.
/// </summary>
public sealed class FuseSession : IDisposable
{
    private readonly RequestDispatcher _dispatcher;
    private readonly int _masterFd;
    private readonly int _workers;
    private readonly List<Thread> _threads = new();
    private readonly List<int> _fds = new();
    private readonly object _gate = new();
    private readonly ManualResetEventSlim _ended = new(false);
    private int _running, _inFlight;
    private volatile bool _closing;
    private int _disposed;
    private readonly object _notifyGate = new();
    private bool _fdsClosed;   // under _notifyGate
    private readonly int _uringEntriesPerQueue;
    private FuseUringTransport? _uring;   // set once, by the worker that answered INIT

    /// <summary>Requests seen (all workers).</summary>
    public long Requests => Interlocked.Read(ref _requests);
    private long _requests;

    public Action<string>? Log { get; init; }

    /// <summary>Called once, on the worker that answered INIT, after the kernel took the reply (it applies
    /// the INIT reply's limits, the read-ahead among them, within that write): the place to change what INIT
    /// set. Exceptions are logged.</summary>
    public Action? InitAnswered { get; init; }
    private int _initAnswered;

    /// <param name="deviceFd">the /dev/fuse descriptor the mount was made with; the session closes it.</param>
    /// <param name="uringEntriesPerQueue">with FUSE over io_uring (granted at INIT only when the dispatcher's
    /// options allow it): ring entries, each with its own thread, per queue (CPU).</param>
    public FuseSession(RequestDispatcher dispatcher, int deviceFd, int workers, int uringEntriesPerQueue = 2)
    {
        if (workers < 1 || workers > 64) throw new ArgumentOutOfRangeException(nameof(workers), "1 to 64 worker threads");
        _dispatcher = dispatcher; _masterFd = deviceFd; _workers = workers; _uringEntriesPerQueue = uringEntriesPerQueue;
        dispatcher.AttachConnection(deviceFd, SendNotification);
    }

    /// <summary>Writes one notification (fuse_out_header with unique 0 and its payload) to the connection in
    /// one write(2). Returns 0, or the errno the kernel answered (ENOENT/ESTALE: it does not hold the node),
    /// or ENOTCONN after the descriptors were closed.</summary>
    public unsafe Errno SendNotification(ReadOnlySpan<byte> message)
    {
        lock (_notifyGate)
        {
            if (_fdsClosed) return Errno.ENOTCONN;
            fixed (byte* m = message)
            {
                nint w = LibC.Write(_masterFd, m, (nuint)message.Length);
                if (w < 0) return LibC.LastErrno;
                return w == message.Length ? 0 : Errno.EIO;
            }
        }
    }

    /// <summary>True once every worker has ended (the connection is gone or the session was closed).</summary>
    public bool Ended => _ended.IsSet;

    /// <summary>Requests being dispatched right now.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Worker threads serving (known after <see cref="Start"/>).</summary>
    public int Workers { get { lock (_gate) return _fds.Count; } }

    /// <summary>Ring entries the kernel accepted for FUSE over io_uring (0 when the connection stays on read/write of /dev/fuse).</summary>
    public int UringEntries => _uring?.Registered ?? 0;

    /// <summary>Requests answered through FUSE over io_uring ring entries.</summary>
    public long UringRequests => _uring?.Requests ?? 0;

    /// <summary>Ring entries that were asked for (queues × entries per queue; 0 without io_uring).</summary>
    public int UringEntriesWanted => _uring is { } u ? u.Queues * u.EntriesPerQueue : 0;

    /// <summary>Starts the workers. Extra descriptors that cannot be cloned (an old kernel) leave fewer workers.</summary>
    public unsafe void Start()
    {
        lock (_gate)
        {
            if (_threads.Count > 0) throw new InvalidOperationException("session already started");
            _fds.Add(_masterFd);
            for (int i = 1; i < _workers; i++)
            {
                int fd = LibC.Open("/dev/fuse", LibC.O_RDWR | LibC.O_CLOEXEC);
                if (fd < 0) { LogLine($"cannot open /dev/fuse for worker {i}: {LibC.Describe(LibC.LastErrno)}; continuing with {i} workers"); break; }
                uint master = (uint)_masterFd;
                if (LibC.Ioctl(fd, LibC.FUSE_DEV_IOC_CLONE, &master) != 0)
                {
                    LogLine($"FUSE_DEV_IOC_CLONE failed: {LibC.Describe(LibC.LastErrno)}; continuing with {i} workers");
                    LibC.Close(fd);
                    break;
                }
                _fds.Add(fd);
            }
            _running = _fds.Count;
            for (int i = 0; i < _fds.Count; i++)
            {
                int fd = _fds[i];
                var t = new Thread(() => Serve(fd)) { IsBackground = true, Name = $"cow-fuse-{i}" };
                _threads.Add(t);
            }
            foreach (var t in _threads) t.Start();
        }
    }

    /// <summary>
    /// Stops dispatching: requests read from now on are answered EIO without reaching the pool, so nothing
    /// touches the pool after <see cref="Close"/> returned true. Waits (up to <paramref name="timeout"/>)
    /// until no request is being dispatched. The workers themselves end when the connection goes away.
    /// </summary>
    public bool Close(TimeSpan timeout)
    {
        _closing = true;
        var until = DateTime.UtcNow + timeout;
        while (Volatile.Read(ref _inFlight) > 0)
        {
            if (DateTime.UtcNow > until) return false;
            Thread.Sleep(2);
        }
        return true;
    }

    /// <summary>Waits until every worker has ended; false on timeout.</summary>
    public bool WaitEnded(TimeSpan timeout) => _ended.Wait(timeout);

    /// <summary>A handle that is set when every worker has ended.</summary>
    public WaitHandle EndedHandle => _ended.WaitHandle;

    private unsafe void Serve(int fd)
    {
        // Huge pages (2 MiB per buffer): the kernel copies a WRITE's payload into the request buffer and a READ's
        // reply out of the reply buffer pinning one 4 KiB page at a time; in a huge page each pin is a shorter
        // walk: sequential reads through the mount ran 5–8 % faster than with ordinary pinned arrays (writes
        // level).
        byte* req = DirectIo.AllocateBuffer(RequestDispatcher.RequestBufferSize);
        byte* rep = DirectIo.AllocateBuffer(RequestDispatcher.ReplyBufferSize);
        // A READ's data may stay where the device read put it (read-ahead buffers); its reply is then gathered
        // with writev from the header here and those pieces.
        var segments = new ReadSegments(rep + FuseOutHeader.Size, RequestDispatcher.ReplyBufferSize - FuseOutHeader.Size);
        var iov = (LibC.IoVec*)NativeMemory.Alloc((nuint)(ReadSegments.MaxSegments + 1), (nuint)sizeof(LibC.IoVec));
        try
        {
            while (true)
            {
                nint n = LibC.Read(fd, req, (nuint)RequestDispatcher.RequestBufferSize);
                if (n == 0) return;   // end of file: /dev/fuse never returns it; a socket peer closed its end
                if (n < 0)
                {
                    var e = LibC.LastErrno;
                    // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: try again.
                    if (e is Errno.EINTR or Errno.EAGAIN or Errno.ENOENT) continue;
                    if (e != Errno.ENODEV) LogLine($"reading /dev/fuse failed: {LibC.Describe(e)}; worker ends");
                    return;
                }
                nint w;
                try
                {
                    int len = Dispatch(new ReadOnlySpan<byte>(req, (int)n), new Span<byte>(rep, RequestDispatcher.ReplyBufferSize), segments);
                    if (len <= 0) continue;
                    w = segments.LentBytes > 0 && len == FuseOutHeader.Size + segments.Length
                        ? WriteGathered(fd, rep, segments, iov)
                        : LibC.Write(fd, rep, (nuint)len);
                }
                finally { segments.Release(); }
                if (w < 0)
                {
                    var e = LibC.LastErrno;
                    // ENOENT: the request was interrupted/aborted meanwhile; the reply is simply dropped.
                    if (e == Errno.ENOENT) continue;
                    if (e == Errno.ENODEV) return;
                    LogLine($"writing a reply to /dev/fuse failed: {LibC.Describe(e)}");
                }
                else if (n >= 8 && MemoryMarshal.Read<uint>(new ReadOnlySpan<byte>(req + 4, 4)) == (uint)FuseOpcode.Init && _dispatcher.Initialized)
                {
                    if (Interlocked.Exchange(ref _initAnswered, 1) == 0)
                    {
                        try { InitAnswered?.Invoke(); } catch (Exception ex) { LogLine($"after INIT: {ex.Message}"); }
                    }
                    StartUringIfGranted(fd);
                }
            }
        }
        catch (Exception ex)
        {
            LogLine($"FUSE worker failed: {ex}");
        }
        finally
        {
            segments.Release();
            NativeMemory.Free(iov);
            DirectIo.FreeBuffer(req);
            DirectIo.FreeBuffer(rep);
            WorkerEnded();
        }
    }

    /// <summary>One reply, the fuse_out_header at <paramref name="header"/> and then the read's segments, in one
    /// writev (the kernel takes a reply whole from a single write).</summary>
    private static unsafe nint WriteGathered(int fd, byte* header, ReadSegments segments, LibC.IoVec* iov)
    {
        iov[0] = new LibC.IoVec { Base = header, Length = (nuint)FuseOutHeader.Size };
        for (int i = 0; i < segments.Count; i++)
            iov[i + 1] = new LibC.IoVec { Base = (void*)segments.Address(i), Length = (nuint)segments.SegmentLength(i) };
        return LibC.Writev(fd, iov, segments.Count + 1);
    }

    /// <summary>One request of either transport: counted, and answered EIO without reaching the pool once closing.
    /// With <paramref name="segments"/> (a /dev/fuse worker) a READ's reply may be gathered: see
    /// <see cref="RequestDispatcher.Dispatch(ReadOnlySpan{byte}, Span{byte}, ReadSegments)"/>.</summary>
    private int Dispatch(ReadOnlySpan<byte> request, Span<byte> reply, ReadSegments? segments = null)
    {
        Interlocked.Increment(ref _requests);
        Interlocked.Increment(ref _inFlight);
        try
        {
            if (_closing) return RequestDispatcher.ErrorReply(request, reply, Errno.EIO);
            return segments != null ? _dispatcher.Dispatch(request, reply, segments) : _dispatcher.Dispatch(request, reply);
        }
        finally { Interlocked.Decrement(ref _inFlight); }
    }

    /// <summary>After the INIT reply went out: when it granted FUSE_OVER_IO_URING, register the ring entries
    /// (the kernel holds new requests until every queue has one, and falls back to /dev/fuse if one is refused).</summary>
    private void StartUringIfGranted(int fd)
    {
        if ((_dispatcher.NegotiatedFlags & FuseInitFlags.OverIoUring) == 0) return;
        lock (_gate)
        {
            if (_uring != null) return;
            var t = new FuseUringTransport(fd, _uringEntriesPerQueue, (request, reply) => Dispatch(request, reply), LogLine, WorkerEnded);
            Interlocked.Add(ref _running, t.Queues * t.EntriesPerQueue);
            _uring = t;
            t.Start();
            LogLine($"FUSE over io_uring: {t.Queues} queues, {t.EntriesPerQueue} entries each");
        }
    }

    private void WorkerEnded()
    {
        if (Interlocked.Decrement(ref _running) == 0)
        {
            _dispatcher.ConnectionEnded();
            _ended.Set();
        }
    }

    private void LogLine(string s)
    {
        try { Log?.Invoke(s); } catch (Exception) { /* logging must not stop a worker */ }
    }

    /// <summary>Closes the descriptors of ended workers. Call after the connection is gone (or the process exits).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _closing = true;
        if (!_ended.IsSet && _threads.Count > 0) return;   // a worker still blocked in read(): leave its descriptor to the process exit
        lock (_notifyGate)
            lock (_gate)
            {
                _fdsClosed = true;
                foreach (var fd in _fds) LibC.Close(fd);
            }
        _ended.Dispose();
    }
}
