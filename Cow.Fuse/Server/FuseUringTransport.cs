using System.Runtime.InteropServices;
using Cow.Fuse.Native;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>
/// FUSE over io_uring (kernel 6.14+, <c>fuse.enable_uring=1</c>): after INIT granted FUSE_OVER_IO_URING,
/// the kernel queues requests per CPU and hands each to a registered ring entry instead of a read(2) of
/// /dev/fuse; the reply goes back in the same entry with the command that also fetches the next request
/// (one system call per request instead of a read and a write, and no wake-up of a thread on another CPU).
/// Each entry here is served by its own thread with its own io_uring instance, <see cref="EntriesPerQueue"/>
/// entries for each queue, so that requests of one CPU (a read-ahead burst) run in parallel.
/// <para>Buffers: an entry owns one page-aligned native block: the 288-byte header buffer ends exactly where
/// the payload buffer (page-aligned, max_write plus a page) begins. The kernel puts fuse_in_header in the
/// header's in_out, the request's per-opcode struct in op_in and the rest (names, write data) in the payload;
/// the thread rebuilds the message /dev/fuse would have delivered — in place, just before the payload, for a
/// WRITE (no copy of its data), in a scratch buffer otherwise — and dispatches it. The reply is written so
/// that its body lands at the start of the payload; its fuse_out_header is then moved to in_out.</para>
/// Threading: <see cref="Start"/> once (after INIT was answered), then the threads run until the connection
/// ends; they share only the dispatcher (thread-safe) and the session's counters (interlocked).
/// </summary>
internal sealed unsafe class FuseUringTransport
{
    private readonly int _fd;
    private readonly int _queues;
    private readonly Func<ReadOnlySpan<byte>, Span<byte>, int> _dispatch;
    private readonly Action<string> _log;
    private readonly Action _threadEnded;
    private readonly List<Thread> _threads = new();
    private int _registered;

    /// <summary>Ring entries (threads) per queue.</summary>
    public int EntriesPerQueue { get; }
    /// <summary>Queues the kernel made: one per possible CPU.</summary>
    public int Queues => _queues;

    /// <param name="dispatch">Handles one request (the message as /dev/fuse delivers it) and writes the reply
    /// (fuse_out_header and body) into the span; returns the reply length, 0 for none.</param>
    /// <param name="threadEnded">Called once by every thread as it ends.</param>
    public FuseUringTransport(int fuseFd, int entriesPerQueue, Func<ReadOnlySpan<byte>, Span<byte>, int> dispatch, Action<string> log, Action threadEnded)
    {
        _fd = fuseFd; _dispatch = dispatch; _log = log; _threadEnded = threadEnded;
        EntriesPerQueue = Math.Clamp(entriesPerQueue, 1, 64);
        _queues = PossibleCpus();
    }

    /// <summary>Whether this process can make an io_uring with 128-byte entries (granting FUSE_OVER_IO_URING
    /// without being able to register would leave every request waiting); the reason when not.</summary>
    public static bool Available(out string? why)
    {
        var e = IoUringRing.TryCreate(2, out var ring);
        ring?.Dispose();
        why = e == 0 ? null : $"io_uring_setup failed: {LibC.Describe(e)}";
        return e == 0;
    }

    /// <summary>Number of queues the kernel makes: num_possible_cpus (the highest CPU in
    /// /sys/devices/system/cpu/possible, plus one).</summary>
    public static int PossibleCpus()
    {
        try
        {
            var text = File.ReadAllText("/sys/devices/system/cpu/possible").Trim();
            int max = -1;
            foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                var last = part.Split('-')[^1];
                if (int.TryParse(last, out int cpu)) max = Math.Max(max, cpu);
            }
            if (max >= 0) return max + 1;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return Environment.ProcessorCount;
    }

    /// <summary>Starts one thread per entry. Returns the number started.</summary>
    public int Start()
    {
        for (int q = 0; q < _queues; q++)
            for (int k = 0; k < EntriesPerQueue; k++)
            {
                ushort qid = (ushort)q;
                var t = new Thread(() => Serve(qid)) { IsBackground = true, Name = $"cow-fuse-uring-{q}.{k}" };
                _threads.Add(t);
            }
        foreach (var t in _threads) t.Start();
        return _threads.Count;
    }

    /// <summary>Entries the kernel took (registered without an immediate refusal; after a refusal the kernel
    /// stays on /dev/fuse).</summary>
    public int Registered => Volatile.Read(ref _registered);
    /// <summary>Requests answered through the ring entries.</summary>
    public long Requests => Interlocked.Read(ref _requests);
    private long _requests;

    private void Serve(ushort qid)
    {
        int payloadBytes = RequestDispatcher.RequestBufferSize;
        const int page = 4096;
        // [ ... | header (288 bytes) ][ payload ]: the header ends at the page boundary where the payload begins.
        nuint blockBytes = (nuint)(page + payloadBytes);
        byte* block = (byte*)NativeMemory.AlignedAlloc(blockBytes, page);
        byte* payload = block + page;
        byte* header = payload - FuseUringHeader.Size;
        var scratch = GC.AllocateUninitializedArray<byte>(RequestDispatcher.RequestBufferSize, pinned: true);
        var iov = (LibC.IoVec*)NativeMemory.Alloc((nuint)(2 * sizeof(LibC.IoVec)));
        IoUringRing? ring = null;
        bool registered = false;
        try
        {
            var e = IoUringRing.TryCreate(2, out ring);
            if (e != 0) { _log($"io_uring queue {qid}: {LibC.Describe(e)}"); return; }
            iov[0] = new LibC.IoVec { Base = header, Length = FuseUringHeader.Size };
            iov[1] = new LibC.IoVec { Base = payload, Length = (nuint)payloadBytes };
            var cmd = new FuseUringCmdReq { Qid = qid };
            uint op = (uint)FuseUringCmd.Register;
            fixed (byte* scr = scratch)
            {
                while (true)
                {
                    // REGISTER (first time) or COMMIT_AND_FETCH: both complete when the next request is there.
                    // A refusal completes at once: EAGAIN before the kernel finished INIT (register again).
                    int result;
                    var cmdBytes = MemoryMarshal.AsBytes(new ReadOnlySpan<FuseUringCmdReq>(in cmd));
                    e = ring!.Submit(_fd, op, (ulong)iov, 2, cmdBytes, 1);
                    if (e != 0) { _log($"io_uring queue {qid}: io_uring_enter failed: {LibC.Describe(e)}"); return; }
                    if (!registered)
                    {
                        bool immediate = ring.TryTake(out result, out _);
                        if (immediate)
                        {
                            if (result == -(int)NativeConvert.FromErrno(Errno.EAGAIN)) { Thread.Sleep(1); continue; }
                            if (result < 0)
                            {
                                _log($"io_uring queue {qid}: the kernel refused the ring entry: {LibC.Describe(NativeConvert.ToErrno(-result))}");
                                return;
                            }
                        }
                        registered = true;
                        Interlocked.Increment(ref _registered);   // taken: it now waits for a request
                        if (!immediate) e = ring.Wait(out result, out _);
                    }
                    else e = ring.Wait(out result, out _);
                    if (e != 0) { _log($"io_uring queue {qid}: io_uring_enter failed: {LibC.Describe(e)}"); return; }
                    if (result < 0)
                    {
                        // ENOTCONN / ECONNABORTED / ECANCELED: the connection is gone (unmount): the entry ends.
                        var err = NativeConvert.ToErrno(-result);
                        if (err is not (Errno.ENOTCONN or Errno.ECONNABORTED or Errno.ECANCELED or Errno.ENODEV))
                            _log($"io_uring queue {qid}: {(op == (uint)FuseUringCmd.Register ? "register" : "commit")} failed: {LibC.Describe(err)}; entry ends");
                        return;
                    }
                    cmd.CommitId = Handle(header, payload, payloadBytes, scr, scratch.Length);
                    Interlocked.Increment(ref _requests);
                    op = (uint)FuseUringCmd.CommitAndFetch;
                }
            }
        }
        catch (Exception ex)
        {
            _log($"io_uring queue {qid} failed: {ex}");
        }
        finally
        {
            ring?.Dispose();
            NativeMemory.Free(iov);
            NativeMemory.AlignedFree(block);
            _threadEnded();
        }
    }

    /// <summary>Dispatches the request in the entry's buffers and puts the reply there; returns the commit id.</summary>
    private ulong Handle(byte* header, byte* payload, int payloadBytes, byte* scratch, int scratchBytes)
    {
        var ent = MemoryMarshal.Read<FuseUringEntInOut>(new ReadOnlySpan<byte>(header + FuseUringHeader.EntInOutOffset, FuseUringEntInOut.Size));
        var inHeader = new ReadOnlySpan<byte>(header, FuseInHeader.Size);
        uint len = MemoryMarshal.Read<uint>(inHeader);
        uint opcode = MemoryMarshal.Read<uint>(inHeader[4..]);
        ulong unique = MemoryMarshal.Read<ulong>(inHeader[8..]);
        long opBytes = (long)len - FuseInHeader.Size - ent.PayloadSz;
        var replySpan = new Span<byte>(payload - FuseOutHeader.Size, FuseOutHeader.Size + payloadBytes);
        int replyLen;
        if (opBytes < 0 || opBytes > FuseUringHeader.OpInSize || ent.PayloadSz > (uint)payloadBytes)
        {
            _log($"io_uring: request {unique} (opcode {opcode}) has impossible sizes (len {len}, payload {ent.PayloadSz}); answered EINVAL");
            replyLen = WriteError(replySpan, unique, Errno.EINVAL);
        }
        else
        {
            int k = (int)opBytes, p = (int)ent.PayloadSz;
            ReadOnlySpan<byte> request;
            if (opcode == (uint)FuseOpcode.Write)
            {
                // In place: fuse_in_header and fuse_write_in moved to just before the data.
                byte* start = payload - k - FuseInHeader.Size;
                new ReadOnlySpan<byte>(header + FuseUringHeader.OpInOffset, k).CopyTo(new Span<byte>(payload - k, k));
                new ReadOnlySpan<byte>(header, FuseInHeader.Size).CopyTo(new Span<byte>(start, FuseInHeader.Size));
                request = new ReadOnlySpan<byte>(start, (int)len);
            }
            else if (len <= (uint)scratchBytes)
            {
                var s = new Span<byte>(scratch, (int)len);
                inHeader.CopyTo(s);
                new ReadOnlySpan<byte>(header + FuseUringHeader.OpInOffset, k).CopyTo(s[FuseInHeader.Size..]);
                new ReadOnlySpan<byte>(payload, p).CopyTo(s[(FuseInHeader.Size + k)..]);
                request = s;
            }
            else
            {
                request = default;
            }
            replyLen = request.IsEmpty ? WriteError(replySpan, unique, Errno.EINVAL) : _dispatch(request, replySpan);
            if (replyLen <= 0) replyLen = WriteError(replySpan, unique, Errno.EIO);   // every ring request needs an answer
        }
        // fuse_out_header to in_out; the body is already at the start of the payload.
        var outHeader = new Span<byte>(payload - FuseOutHeader.Size, FuseOutHeader.Size);
        outHeader.CopyTo(new Span<byte>(header, FuseOutHeader.Size));
        var o = new FuseUringEntInOut { CommitId = ent.CommitId, PayloadSz = (uint)(replyLen - FuseOutHeader.Size) };
        MemoryMarshal.Write(new Span<byte>(header + FuseUringHeader.EntInOutOffset, FuseUringEntInOut.Size), in o);
        return ent.CommitId;
    }

    private static int WriteError(Span<byte> reply, ulong unique, Errno e)
    {
        var o = new FuseOutHeader { Len = FuseOutHeader.Size, Error = ErrnoMap.ToReplyError(e), Unique = unique };
        MemoryMarshal.Write(reply, in o);
        return FuseOutHeader.Size;
    }
}
