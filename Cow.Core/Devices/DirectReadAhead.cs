using Mono.Unix.Native;

namespace Cow.Core.Devices;

/// <summary>
/// Sequential read-ahead of a <see cref="FileBlockDevice"/> with O_DIRECT reads of whole 4 MiB chunks, several
/// in flight, into buffers of its own. A file written sequentially lies sequentially on the log device, so
/// a sequential reader of the file reads the device sequentially; once two reads in a row continue the
/// stream, the next <see cref="Window"/> chunks are read by <see cref="Loaders"/> threads in parallel and
/// later reads are copied out of them, or lent in place (<see cref="ReadSegments"/>: the FUSE READ reply is
/// written straight from the buffer), with each 4 KiB block's CRC-32C, computed by the loader as the chunk
/// landed. Why not the kernel's read-ahead: buffered reads of a block device go
/// through its page cache in small pages, a single stream at a time (on the loop devices of the benchmark
/// machines about 850 MB/s, against 1.6–2.5 GB/s for 1 MiB O_DIRECT reads four deep).
/// <para>Coherency: O_DIRECT reads see every completed write (the kernel writes dirty cached pages of the
/// range back first). A chunk read before a write to its range is dropped by <see cref="Invalidate"/>, which
/// the owner calls after every write it makes, and the engine for device writes it did not make itself
/// (fuse-iomap). A chunk being loaded while its range is written is marked stale and dropped when the read
/// returns. Readers only read blocks that are mapped, and the engine never writes a mapped block, so a
/// read never races with a write of its own bytes.</para>
/// <para>Failures: a failed or short O_DIRECT read is not reported here: the reader falls back to the
/// ordinary read, which reports the error with the device name and offset.</para>
/// Threading: thread-safe. <c>_gate</c> guards every slot's state, offset and pin count, the queue and the
/// stream position; slot buffers are read outside it only while pinned (a pinned slot is never reused) and
/// written by a loader only while the slot is Loading (no reader copies from it then); a lent slot stays
/// pinned until its <see cref="ReadSegments"/> returns it (<see cref="Return"/>, under <c>_gate</c>). No other lock is
/// taken under <c>_gate</c>.
/// </summary>
internal sealed unsafe class DirectReadAhead : IDisposable
{
    /// <summary>Bytes per O_DIRECT read and per buffer. With 4 MiB chunks, 8 ahead (a 32 MiB reach) and 4 in
    /// flight, a sequential read gets close to what the benchmark's loop devices give; a reach under 32 MiB
    /// (1 MiB chunks 8 ahead, or fewer chunks) or more loaders (8) read slower, and smaller chunks at the same
    /// reach read no faster (bench/README.md).</summary>
    public const int ChunkBytes = 4 << 20;
    /// <summary>Chunks read ahead of the reader.</summary>
    public const int Window = 8;
    /// <summary>Buffers held: the window, the chunks being copied from, and room for readers a little behind.</summary>
    public const int SlotCount = 2 * Window;
    /// <summary>O_DIRECT reads in flight at most (threads).</summary>
    public const int Loaders = 4;
    /// <summary>How far (bytes) a read may start before or after the end of the last read and still continue
    /// the stream: FUSE workers deliver one stream's reads out of order, by up to the kernel's read-ahead
    /// window (<c>cow mount --read-ahead</c>). With 4 MiB the stream restarted 83–761 times per 3 GiB read
    /// through a mount with 8 MiB read-ahead (9 times with this slack), each restart costing 2 MiB of reads
    /// that bypass the read-ahead (<see cref="StartBytes"/>). A whole <see cref="Window"/>: a reader further
    /// off is another stream.</summary>
    public const long StreamSlack = Window * (long)ChunkBytes;
    /// <summary>Bytes a stream must have read, covering at least half of its span, before read-ahead starts
    /// (random reads and sparse walks never do).</summary>
    public const long StartBytes = 2L << 20;
    private const int MaxChunksPerRead = 8;
    /// <summary>The block size of <see cref="TryRead"/>'s sums.</summary>
    public const int BlockBytes = IBlockDevice.ChecksumBlockBytes;

    private enum SlotState { Empty, Queued, Loading, Ready, Failed }

    private sealed class Slot
    {
        public long Chunk = -1;
        public SlotState State;
        public bool Stale;
        public int Pins;
        public int Length;
        public byte* Buffer;
        /// <summary>CRC-32C of each 4 KiB block of the buffer, computed by the loader once the read completed.</summary>
        public readonly uint[] Sums = new uint[ChunkBytes / BlockBytes];
    }

    private readonly object _gate = new();
    private readonly Slot[] _slots = new Slot[SlotCount];
    private readonly Queue<Slot> _queue = new(SlotCount);
    private readonly int _fd;
    private readonly long _length;
    private Thread[]? _loaders;
    private long _streamStart, _streamEnd = -1, _streamBytes, _aheadTo;
    private bool _disposed;

    /// <summary>Reads served from read-ahead buffers (for tests and the benchmark notes).</summary>
    public long Hits => Interlocked.Read(ref _hits);
    private long _hits;
    /// <summary>Of <see cref="Hits"/>, the reads lent in place rather than copied.</summary>
    public long Lent => Interlocked.Read(ref _lent);
    private long _lent;

    private DirectReadAhead(int fd, long length)
    {
        _fd = fd; _length = length;
        for (int i = 0; i < SlotCount; i++) _slots[i] = new Slot();
    }

    /// <summary>Opens <paramref name="path"/> a second time with O_DIRECT; null where the file system refuses
    /// O_DIRECT (tmpfs) or the device is too small to be worth it.</summary>
    public static DirectReadAhead? TryOpen(string path, long length)
    {
        if (length < 2L * ChunkBytes) return null;
        int fd = Syscall.open(path, OpenFlags.O_RDONLY | OpenFlags.O_DIRECT | OpenFlags.O_CLOEXEC);
        return fd < 0 ? null : new DirectReadAhead(fd, length);
    }

    /// <summary>
    /// Copies [<paramref name="offset"/>, +<paramref name="dest"/>.Length) from read-ahead buffers when the read
    /// continues a sequential stream and its chunks are (or are being) read ahead; false when the caller must
    /// read the device itself (null). Waits for chunks in flight. With <paramref name="blockSums"/> (one entry per
    /// 4 KiB block; offset and length whole blocks) it also gives the CRC-32C of each block, computed by the
    /// loader when the chunk came off the device. With <paramref name="lend"/>, and room in it, the bytes are
    /// not copied but lent in place (<see cref="DeviceReadResult.Lent"/>): the chunks stay pinned until the reader releases them.
    /// </summary>
    public DeviceReadResult? TryRead(long offset, Span<byte> dest, Span<uint> blockSums = default, ReadSegments? lend = null)
    {
        if (dest.IsEmpty) return null;
        long end = offset + dest.Length;
        long first = offset / ChunkBytes, last = (end - 1) / ChunkBytes;
        if (last - first >= MaxChunksPerRead) return null;
        bool withSums = !blockSums.IsEmpty;
        if (withSums && ((offset | (long)dest.Length) & (BlockBytes - 1)) != 0) throw new ArgumentException("block sums need whole 4 KiB blocks");
        if (withSums && blockSums.Length < dest.Length / BlockBytes) throw new ArgumentException("blockSums shorter than the read's blocks");
        Span<int> held = stackalloc int[MaxChunksPerRead];
        int count = (int)(last - first + 1);
        lock (_gate)
        {
            if (_disposed) return null;
            bool continues = _streamEnd >= 0 && offset >= _streamEnd - StreamSlack && offset <= _streamEnd + StreamSlack;
            if (!continues)
            {
                _streamStart = offset;
                _streamEnd = end;
                _streamBytes = dest.Length;
                _aheadTo = 0;
                return null;
            }
            _streamStart = Math.Min(_streamStart, offset);
            _streamEnd = Math.Max(_streamEnd, end);
            _streamBytes += dest.Length;
            // A stream is sequential when it has read enough, densely: the read-modify-write of one block per
            // megabyte by a writer (or a sparse walk) never starts read-ahead.
            if (_streamBytes < StartBytes || _streamBytes * 2 < _streamEnd - _streamStart) return null;
            Schedule(first);
            for (int i = 0; i < count; i++)
            {
                int s = Find(first + i);
                if (s < 0) { Unpin(held[..i]); return null; }
                _slots[s].Pins++;
                held[i] = s;
            }
            while (true)
            {
                bool waiting = false, usable = true;
                for (int i = 0; i < count; i++)
                {
                    var slot = _slots[held[i]];
                    if (slot.Chunk != first + i || slot.State is SlotState.Empty or SlotState.Failed) usable = false;
                    else if (slot.State is SlotState.Queued or SlotState.Loading) waiting = true;
                    else if ((long)slot.Chunk * ChunkBytes + slot.Length < Math.Min(end, (first + i + 1) * ChunkBytes)) usable = false;
                }
                if (!usable) { Unpin(held[..count]); return null; }
                if (!waiting) break;
                Monitor.Wait(_gate);
                if (_disposed) { Unpin(held[..count]); return null; }
            }
        }
        // Pinned and Ready: copy (or lend) outside the lock. A Ready slot's buffer and sums change only after it
        // is unpinned and reused.
        bool lending = lend != null && withSums && lend.HasRoom(count + 1);
        for (int i = 0; i < count; i++)
        {
            var slot = _slots[held[i]];
            long chunkStart = (first + i) * ChunkBytes;
            long from = Math.Max(offset, chunkStart), to = Math.Min(end, chunkStart + ChunkBytes);
            if (withSums)
                slot.Sums.AsSpan((int)((from - chunkStart) / BlockBytes), (int)((to - from) / BlockBytes)).CopyTo(blockSums[(int)((from - offset) / BlockBytes)..]);
            if (lending) lend!.AddLent(slot.Buffer + (from - chunkStart), (int)(to - from), this, held[i]);
            else new ReadOnlySpan<byte>(slot.Buffer + (from - chunkStart), (int)(to - from)).CopyTo(dest[(int)(from - offset)..]);
        }
        Interlocked.Increment(ref _hits);
        if (lending) { Interlocked.Increment(ref _lent); return DeviceReadResult.Lent; }
        lock (_gate) Unpin(held[..count]);
        return withSums ? DeviceReadResult.ReadWithSums : DeviceReadResult.Read;
    }

    /// <summary>Takes back a slot lent through <see cref="ReadSegments"/>.</summary>
    internal void Return(int slot)
    {
        lock (_gate)
        {
            _slots[slot].Pins--;
            if (_disposed || _slots[slot].Pins == 0) Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Drops read-ahead of [<paramref name="offset"/>, +<paramref name="length"/>): call after the range was written.</summary>
    public void Invalidate(long offset, long length)
    {
        if (length <= 0) return;
        long first = offset / ChunkBytes, last = (offset + length - 1) / ChunkBytes;
        lock (_gate)
        {
            bool changed = false;
            foreach (var s in _slots)
            {
                if (s.Chunk < first || s.Chunk > last) continue;
                switch (s.State)
                {
                    case SlotState.Loading: s.Stale = true; break;
                    case SlotState.Empty: break;
                    default: s.State = SlotState.Empty; s.Chunk = -1; break;   // Queued: its loader skips it
                }
                changed = true;
            }
            if (changed) Monitor.PulseAll(_gate);
        }
    }

    // Under _gate: make sure chunks [from, from + Window) are held or on their way. Chunks below the frontier
    // (_aheadTo) were scheduled once already: if they are gone (reused for chunks further ahead, or
    // invalidated) the reader reads the device itself rather than load a whole chunk again for one read.
    private void Schedule(long from)
    {
        long lastChunk = (_length - 1) / ChunkBytes;
        bool queued = false;
        long c = Math.Max(from, _aheadTo);
        for (; c < from + Window && c <= lastChunk; c++)
        {
            if (Find(c) >= 0) continue;
            int length = (int)(Math.Min(ChunkBytes, _length - c * ChunkBytes) & ~4095L);
            if (length == 0) break;
            int v = Victim(from);
            if (v < 0) break;
            var s = _slots[v];
            if (s.Buffer == null) s.Buffer = DirectIo.AllocateBuffer(ChunkBytes);
            s.Chunk = c; s.State = SlotState.Queued; s.Stale = false; s.Length = length;
            _queue.Enqueue(s);
            queued = true;
        }
        _aheadTo = Math.Max(_aheadTo, c);
        if (queued)
        {
            StartLoaders();
            Monitor.PulseAll(_gate);
        }
    }

    private int Find(long chunk)
    {
        for (int i = 0; i < SlotCount; i++)
            if (_slots[i].Chunk == chunk && _slots[i].State != SlotState.Empty) return i;
        return -1;
    }

    // A slot to reuse: an empty one, else the unpinned finished chunk furthest from the reader's window
    // [from - 1, from + Window) (the chunk just before it is kept, for readers a little behind); none when
    // every other slot holds the window or is in use. Chunks past the window are as dead as chunks behind
    // it: they were read ahead for an earlier stream, for instance the previous file, when the log's cursor
    // has since wrapped and the next file lies lower on the device.
    private int Victim(long from)
    {
        int best = -1;
        long bestDistance = 0;
        for (int i = 0; i < SlotCount; i++)
        {
            var s = _slots[i];
            if (s.Pins > 0 || s.State is SlotState.Queued or SlotState.Loading) continue;
            if (s.State == SlotState.Empty) return i;
            if (s.Chunk >= from - 1 && s.Chunk < from + Window) continue;
            long distance = s.Chunk < from ? from - s.Chunk : s.Chunk - from;
            if (distance > bestDistance) { best = i; bestDistance = distance; }
        }
        return best;
    }

    private void Unpin(ReadOnlySpan<int> held)
    {
        foreach (int i in held) _slots[i].Pins--;
    }

    private void StartLoaders() => _loaders ??= DirectIo.StartThreads(Loaders, $"cow-readahead-{_fd}", Load);

    private void Load()
    {
        while (true)
        {
            Slot s;
            long offset;
            int length;
            lock (_gate)
            {
                while (!_disposed && _queue.Count == 0) Monitor.Wait(_gate);
                if (_disposed) return;
                s = _queue.Dequeue();
                if (s.State != SlotState.Queued) continue;   // invalidated or recycled meanwhile
                s.State = SlotState.Loading;
                s.Stale = false;
                offset = s.Chunk * ChunkBytes;
                length = s.Length;
            }
            bool ok = DirectIo.Transfer(_fd, write: false, offset, s.Buffer, length);
            // The checksums of the chunk's blocks, here on a loader rather than on the reader that waits for them
            // (the first pass over bytes fresh from the device is the slow one): a READ then needs no checksum pass
            // of its own (the engine compares these with the extent map's), and a lent one no copy either.
            if (ok)
                for (int b = 0; b < length / BlockBytes; b++)
                    s.Sums[b] = Format.Crc32C.Compute(new ReadOnlySpan<byte>(s.Buffer + (long)b * BlockBytes, BlockBytes));
            lock (_gate)
            {
                if (s.Stale || !ok) { s.State = s.Stale ? SlotState.Empty : SlotState.Failed; if (s.Stale) s.Chunk = -1; }
                else s.State = SlotState.Ready;
                s.Stale = false;
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>How long <see cref="Dispose"/> waits for lent buffers to come back before it leaves them allocated.</summary>
    private static readonly TimeSpan ReturnWait = TimeSpan.FromSeconds(10);

    /// <summary>Stops the loaders (after their read in flight) and frees the buffers. No read should be in
    /// progress; buffers still lent (<see cref="ReadSegments"/>) are waited for a while, then left allocated
    /// rather than freed under their reader.</summary>
    public void Dispose()
    {
        Thread[]? loaders;
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            loaders = _loaders;
            Monitor.PulseAll(_gate);
        }
        if (loaders != null) foreach (var t in loaders) t.Join();
        var until = DateTime.UtcNow + ReturnWait;
        lock (_gate)
        {
            while (_slots.Any(s => s.Pins > 0) && DateTime.UtcNow < until) Monitor.Wait(_gate, TimeSpan.FromMilliseconds(100));
            foreach (var s in _slots)
                if (s.Buffer != null && s.Pins == 0) { DirectIo.FreeBuffer(s.Buffer); s.Buffer = null; }
        }
        Syscall.close(_fd);
    }
}
