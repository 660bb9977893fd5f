using Mono.Unix.Native;

namespace Cow.Core.Devices;

/// <summary>
/// Write-behind of a <see cref="FileBlockDevice"/> with O_DIRECT writes from buffers of its own: a block-aligned
/// <see cref="TryWrite"/> copies the bytes into one of <see cref="BufferCount"/> buffers of
/// <see cref="BufferBytes"/> and returns; <see cref="Writers"/> threads write them to the device.
/// Why not pwrite through the page cache: a block device's page cache takes writes in small pages with
/// buffer heads and hands them to write-back later, at about 1 s of CPU per GiB on the benchmark machines
/// (0.5–0.6 s with O_DIRECT), and the page cache memory itself is where these VMs are slow and bimodal
/// (freshly allocated guest pages are faulted in by the host); the buffers here are allocated once and reused.
/// <para>Semantics are those of a page-cache write: a write is visible to every later read through the owner
/// (a read waits for the pending writes it overlaps: <see cref="WaitForOverlapping"/>), and durable after
/// <see cref="Drain"/> and the owner's fdatasync. A write that fails on the device is retried once through
/// the owner's ordinary (buffered) descriptor; if that fails too, the error is kept and reported by the next
/// <see cref="Drain"/>, as the kernel reports a failed write-back at the next fsync.</para>
/// <para>Ordering: a write waits for pending writes it overlaps before it is queued, so two writes of the same
/// bytes reach the device in the order they were made. (The engine never rewrites a block before a commit,
/// and a commit drains, so this wait does not occur in practice.)</para>
/// Threading: thread-safe. <c>_gate</c> guards every slot's state, range and the queue, and
/// <c>_failure</c>; a slot's buffer is written only by the thread that took the slot (state Filling) and
/// read only by the writer thread that dequeued it (state Writing). The owner's read-ahead
/// (<see cref="DirectReadAhead"/>, its own lock) is invalidated outside <c>_gate</c>, after the write landed.
/// </summary>
internal sealed unsafe class DirectWriteBehind : IDisposable
{
    /// <summary>Bytes per buffer (the largest FUSE write).</summary>
    public const int BufferBytes = 1 << 20;
    /// <summary>Buffers: how many bytes may be written behind (64 MiB). Enough to keep taking writes through a
    /// flush of the device: at each commit the loop device runs its flush (an fsync of its backing file, 70–130 ms
    /// here) ahead of every write queued behind it, while a FUSE stream brings about 1 MiB per ms. With 8 buffers
    /// sequential writes ran slower (median 788 against 960 MB/s); 128 wrote no faster than 64.</summary>
    public const int BufferCount = 64;
    /// <summary>O_DIRECT writes in flight at most (threads).</summary>
    public const int Writers = 2;
    /// <summary>Smaller writes are left to the caller (the page cache): a 4 KiB random write costs a buffered
    /// pwrite a copy into one cached page, while here it would take a whole buffer, a hand-off to a writer thread
    /// and an O_DIRECT write of its own. Measured (fio 4 KiB random writes through the mount): 26,000–27,100
    /// IOPS with this limit, 13,700–16,800 without it.</summary>
    public const int MinBytes = 64 << 10;
    /// <summary>Alignment of offsets and lengths this writes (the pool's block size; any device's logical
    /// block size divides it).</summary>
    public const int Alignment = 4096;

    private enum SlotState { Free, Filling, Queued, Writing }

    private sealed class Slot
    {
        public SlotState State;
        public long Offset;
        public int Length;
        public long Ticket;   // order in which slots were taken: Drain waits only for the ones taken before it
        public byte* Buffer;
    }

    private readonly object _gate = new();
    private readonly Slot[] _slots = new Slot[BufferCount];
    private readonly Queue<Slot> _queue = new(BufferCount);
    private byte* _region;   // the buffers of all slots, allocated at the first write (under _gate)
    private readonly int _fd;
    private readonly Action<long, ReadOnlySpan<byte>> _fallbackWrite;
    private readonly Action<long, long> _landed;
    private readonly string _name;
    private Thread[]? _writers;
    private int _busy;             // slots not Free
    private long _tickets;         // slots taken so far
    private IOException? _failure; // first write that failed on the device and through the fallback
    private bool _disposed;

    private DirectWriteBehind(int fd, string name, Action<long, ReadOnlySpan<byte>> fallbackWrite, Action<long, long> landed)
    {
        _fd = fd; _name = name; _fallbackWrite = fallbackWrite; _landed = landed;
        for (int i = 0; i < BufferCount; i++) _slots[i] = new Slot();
    }

    /// <summary>Opens <paramref name="path"/> a second time for writing with O_DIRECT; null where the file
    /// system refuses O_DIRECT (tmpfs). <paramref name="fallbackWrite"/> writes through the owner's ordinary
    /// descriptor (a failed O_DIRECT write is retried with it); <paramref name="landed"/> is called after
    /// every write reached the device (the owner drops read-ahead of the range).</summary>
    public static DirectWriteBehind? TryOpen(string path, Action<long, ReadOnlySpan<byte>> fallbackWrite, Action<long, long> landed)
    {
        int fd = Syscall.open(path, OpenFlags.O_WRONLY | OpenFlags.O_DIRECT | OpenFlags.O_CLOEXEC);
        return fd < 0 ? null : new DirectWriteBehind(fd, path, fallbackWrite, landed);
    }

    /// <summary>Over a descriptor the caller opened (tests: one that refuses writes, to reach the fallback);
    /// it is closed by <see cref="Dispose"/>.</summary>
    internal static DirectWriteBehind OverDescriptor(int fd, string name, Action<long, ReadOnlySpan<byte>> fallbackWrite, Action<long, long> landed) =>
        new(fd, name, fallbackWrite, landed);

    /// <summary>Writes queued behind so far (for tests and diagnostics).</summary>
    public long Queued => Interlocked.Read(ref _queuedWrites);
    private long _queuedWrites;

    /// <summary>
    /// Queues [<paramref name="offset"/>, +<paramref name="data"/>.Length) to be written behind; false (nothing
    /// done) when the range is not <see cref="Alignment"/>-aligned or shorter than <see cref="MinBytes"/>: the caller writes it itself, after
    /// <see cref="WaitForOverlapping"/>. Waits while every buffer is in use.
    /// </summary>
    public bool TryWrite(long offset, ReadOnlySpan<byte> data)
    {
        if (((offset | (long)data.Length) & (Alignment - 1)) != 0 || data.Length < MinBytes) return false;
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, BufferBytes);
            Slot slot;
            lock (_gate)
            {
                while (true)
                {
                    if (_disposed) throw new ObjectDisposedException(_name);
                    if (!OverlapsLocked(offset, n))
                    {
                        int free = FreeSlotLocked();
                        if (free >= 0) { slot = _slots[free]; break; }
                    }
                    Monitor.Wait(_gate);
                }
                slot.State = SlotState.Filling;
                slot.Offset = offset; slot.Length = n; slot.Ticket = ++_tickets;
                _busy++;
                if (_region == null)
                {
                    // One region for all buffers, so that they lie in huge pages (DirectIo.AllocateBuffer).
                    _region = DirectIo.AllocateBuffer(BufferCount * BufferBytes);
                    for (int i = 0; i < BufferCount; i++) _slots[i].Buffer = _region + i * (long)BufferBytes;
                }
            }
            data[..n].CopyTo(new Span<byte>(slot.Buffer, n));
            lock (_gate)
            {
                slot.State = SlotState.Queued;
                _queue.Enqueue(slot);
                _queuedWrites++;
                StartWriters();
                Monitor.PulseAll(_gate);
            }
            data = data[n..];
            offset += n;
        }
        return true;
    }

    /// <summary>Waits until no pending write overlaps [<paramref name="offset"/>, +<paramref name="length"/>).</summary>
    public void WaitForOverlapping(long offset, long length)
    {
        if (Volatile.Read(ref _busy) == 0) return;
        lock (_gate)
            while (!_disposed && OverlapsLocked(offset, length)) Monitor.Wait(_gate);
    }

    /// <summary>Waits until every write queued so far reached the device (not durably: the owner's fdatasync
    /// does that); writes queued meanwhile by other threads are not waited for, so a steady writer cannot
    /// starve a commit. Throws the first write failure since the last drain, naming the device and the range.</summary>
    public void Drain()
    {
        lock (_gate)
        {
            long upTo = _tickets;
            while (!_disposed && PendingUpToLocked(upTo)) Monitor.Wait(_gate);
            var failure = _failure;
            _failure = null;
            if (failure != null) throw failure;
        }
    }

    private bool OverlapsLocked(long offset, long length)
    {
        if (_busy == 0) return false;
        long end = offset + length;
        foreach (var s in _slots)
            if (s.State != SlotState.Free && s.Offset < end && offset < s.Offset + s.Length) return true;
        return false;
    }

    private bool PendingUpToLocked(long ticket)
    {
        if (_busy == 0) return false;
        foreach (var s in _slots)
            if (s.State != SlotState.Free && s.Ticket <= ticket) return true;
        return false;
    }

    private int FreeSlotLocked()
    {
        for (int i = 0; i < BufferCount; i++)
            if (_slots[i].State == SlotState.Free) return i;
        return -1;
    }

    private void StartWriters() => _writers ??= DirectIo.StartThreads(Writers, $"cow-writebehind-{_fd}", WriteLoop);

    private void WriteLoop()
    {
        while (true)
        {
            Slot s;
            lock (_gate)
            {
                while (_queue.Count == 0)
                {
                    if (_disposed) return;
                    Monitor.Wait(_gate);
                }
                s = _queue.Dequeue();
                s.State = SlotState.Writing;
            }
            IOException? failure = null;
            if (!DirectIo.Transfer(_fd, write: true, s.Offset, s.Buffer, s.Length))
            {
                try { _fallbackWrite(s.Offset, new ReadOnlySpan<byte>(s.Buffer, s.Length)); }
                catch (IOException e) { failure = e; }
                catch (ObjectDisposedException e) { failure = new IOException($"device {_name}: closed with a write pending", e); }
            }
            _landed(s.Offset, s.Length);
            lock (_gate)
            {
                if (failure != null) _failure ??= failure;
                s.State = SlotState.Free;
                _busy--;
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>Writes what is pending, stops the writers and frees the buffers. Pending failures are lost: call
    /// <see cref="Drain"/> first to see them. No write may be in progress.</summary>
    public void Dispose()
    {
        Thread[]? writers;
        lock (_gate)
        {
            if (_disposed) return;
            while (_busy > 0) Monitor.Wait(_gate);
            _disposed = true;
            writers = _writers;
            Monitor.PulseAll(_gate);
        }
        if (writers != null) foreach (var t in writers) t.Join();
        foreach (var s in _slots) s.Buffer = null;
        if (_region != null) { DirectIo.FreeBuffer(_region); _region = null; }
        Syscall.close(_fd);
    }
}
