using System.Buffers;
using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    /// <summary>Largest file size: 2^50 bytes (1 PiB), s_maxbytes of a Cow mount.</summary>
    public const long MaxFileSize = 1L << 50;

    private const int ChunkBlocks = FormatConstants.ChunkBlocks;

    private static bool IsWriteOp(IomapOp op) => (op & (IomapOp.Write | IomapOp.Zero | IomapOp.Unshare | IomapOp.Writeback)) != 0;

    private IomapMapping ToMapping(BlockRun r) => r.IsHole
        ? IomapMapping.Hole(r.FileBlock << BlockShift, r.Blocks << BlockShift)
        : new IomapMapping(r.FileBlock << BlockShift, r.Blocks << BlockShift, (ulong)r.Address << BlockShift, MappingType.Mapped, MappingFlags.None, r.Device);

    // ---------------------------------------------------------------- the iomap contract

    /// <summary>
    /// iomap_begin on the live tree: for reads and reports the read mapping of the range starting at
    /// <paramref name="pos"/>; for writes additionally a write mapping on freshly allocated log space
    /// (flag SHARED so the kernel sends ioend), never on a block any snapshot or file references.
    /// Both mappings cover the same block-aligned range, which may be shorter than asked.
    /// </summary>
    public Errno IomapBegin(long ino, long pos, long count, IomapOp op, out IomapPair pair) => IomapBegin(LiveTree, ino, pos, count, op, out pair);

    /// <summary>Before a mapping goes to a caller that does the I/O itself (the kernel, with fuse-iomap): waits until
    /// the engine's own writes to the mapped blocks are on the device (<see cref="IBlockDevice.Settle"/>).</summary>
    internal void SettleForExternalIo(in IomapMapping read)
    {
        if (read.Type == MappingType.Mapped && _devices.TryGetValue(read.Device, out var dev))
            dev.Settle((long)read.Address, read.Length);
    }

    /// <param name="callerMerges">
    /// Userspace write path only (<see cref="WriteLocked"/>): the caller reads partial blocks through the tree
    /// itself and overwrites every block of the write mapping, so the write mapping may span several old
    /// extents (up to the end of the chunk) instead of stopping where the read mapping ends. A fragmented
    /// file is then rewritten in one allocation, one device write and one remap per request, not one per old
    /// extent. The returned read mapping covers only the first old run and must not be used beyond it.
    /// </param>
    internal Errno IomapBegin(ITreeReader tree, long ino, long pos, long count, IomapOp op, out IomapPair pair, bool callerMerges = false)
    {
        pair = default;
        if (pos < 0 || count <= 0 || pos >= MaxFileSize) return Errno.EINVAL;
        count = Math.Min(count, MaxFileSize - pos);
        bool write = IsWriteOp(op);
        lock (_lock)
        {
            if (write && tree.ReadOnly) return Errno.EROFS;
            if (write && Failed) return Errno.EIO;
            var rec = tree.Inode(ino);
            if (rec == null) return Errno.ENOENT;
            if ((rec.Mode & 0xF000) != 0x8000) return (rec.Mode & 0xF000) == 0x4000 ? Errno.EISDIR : Errno.EINVAL;
            long fb = pos >> BlockShift;
            long endBlock = (pos + count + BlockSize - 1) >> BlockShift;
            var run = ExtentMap.FindRun(tree.Chunk(ino, fb / ChunkBlocks), fb, endBlock - fb);
            if (!write)
            {
                var read = ToMapping(run);
                pair = new IomapPair(read, new IomapMapping(read.Offset, read.Length, FormatConstants.NoAddress, MappingType.PureOverwrite, MappingFlags.None, 0));
                return 0;
            }
            var li = Live(ino)!;
            var log = _space.Log;
            long want = callerMerges ? Math.Min(endBlock - fb, ChunkBlocks - fb % ChunkBlocks) : run.Blocks;
            // Fallocate reservations are not free space for others (Engine.Prealloc.cs).
            if (_space.Preallocated != 0 && (want = WriteAllowance(li, fb, want)) == 0) return Errno.ENOSPC;
            long n = log.Allocate(want, out long start);
            if (n == 0) return Errno.ENOSPC;
            if (!OpenSegmentIfNew(log, start))
            {
                log.Unreserve(start, n);
                return Errno.EIO;
            }
            var readRun = run with { Blocks = Math.Min(run.Blocks, n) };
            run = run with { Blocks = n };
            _reservations.Add(li, fb, n, log.Cookie, start);
            var readMap = ToMapping(readRun);
            var flags = MappingFlags.Shared | (run.IsHole && readRun.Blocks == n ? MappingFlags.New : MappingFlags.None);
            pair = new IomapPair(readMap, new IomapMapping(readMap.Offset, n << BlockShift, (ulong)start << BlockShift, MappingType.Mapped, flags, log.Cookie));
            return 0;
        }
    }

    /// <summary>Writes the header of a log segment the first time the allocator enters it (format.md, "Log device").
    /// False if that write failed: the segment stays unopened (the next allocation in it tries again).</summary>
    private bool OpenSegmentIfNew(DeviceSpace log, long start)
    {
        long seg = start / FormatConstants.SegmentBlocks;
        if (seg == log.OpenSegment || seg == 0) { log.OpenSegment = seg; return true; }
        var block = new byte[BlockSize];
        new SegmentHeader(_pool.PoolUuid, (ulong)seg, (ulong)_pool.SegmentSeq++, _pool.LiveGen).Write(block);
        try { _devices[log.Cookie].Write((seg * FormatConstants.SegmentBlocks) << BlockShift, block); }
        catch (IOException e)
        {
            Report($"write error: header of log segment {seg}: {e.Message}");
            return false;
        }
        log.OpenSegment = seg;
        NoteDeviceWrite(log.Cookie);
        return true;
    }

    /// <summary>Blocks handed out by iomap_begin and not yet committed or released (fsck; under _lock).</summary>
    internal HashSet<(uint, long)> ReservedBlocks() => _reservations.PendingBlocks();

    /// <summary>
    /// iomap_end: releases the part of a write mapping that a short or failed write did not use.
    /// Blocks covering [pos, pos+written) stay reserved until their ioend commits or fails them.
    /// </summary>
    public Errno IomapEnd(long ino, long pos, long count, long written, IomapOp op, in IomapMapping map)
    {
        if (!IsWriteOp(op) || map.Type != MappingType.Mapped) return 0;
        if (written < 0 || pos < 0 || count < 0) return Errno.EINVAL;
        lock (_lock)
        {
            long mapBlock = map.Offset >> BlockShift, mapBlocks = map.Length >> BlockShift;
            var r = _reservations.Find(ino, mapBlock, mapBlocks);
            if (r == null || r.Device != map.Device || (ulong)(r.Address + (mapBlock - r.FileBlock)) << BlockShift != map.Address) return 0;
            long usedFrom = (pos >> BlockShift) - r.FileBlock;
            long usedTo = written == 0 ? usedFrom : ((pos + written + BlockSize - 1) >> BlockShift) - r.FileBlock;
            long mapFrom = mapBlock - r.FileBlock, mapTo = mapFrom + mapBlocks;
            _reservations.Release(ino, r, mapFrom, Math.Clamp(usedFrom, mapFrom, mapTo));
            if (r.PendingCount > 0) _reservations.Release(ino, r, Math.Clamp(usedTo, mapFrom, mapTo), mapTo);
            return 0;
        }
    }

    /// <summary>
    /// ioend: the bytes [pos, pos+written) landed at the write mappings iomap_begin handed out for that
    /// range. Commits the remap atomically (the file range now points at the new blocks; the old blocks
    /// lose this file's reference) and returns the file size, grown for appends.
    /// <para>One ioend may cover several iomap_begin allocations: a direct write's completion covers the
    /// whole write, and the kernel merges writeback ioends that are contiguous in the file and on the
    /// device. <paramref name="address"/> (bytes on <paramref name="device"/>) is where the kernel says the
    /// bytes went: then the allocations must continue each other on that device from there. It may be
    /// <see cref="FormatConstants.NoAddress"/> (direct I/O): the engine uses what it handed out. Either way
    /// every block of the range must be pending in an allocation of this file; otherwise the answer is
    /// EINVAL and nothing changes (an address the engine did not hand out is never committed). Where two
    /// pending allocations cover one block, the latest one that fits wins.</para>
    /// <para><paramref name="error"/> ≠ 0 or nothing written releases the allocation: without an address every
    /// pending block of the file in the range, with one only the blocks that sit there (none is not an
    /// error: the kernel reports failed buffered writes that never had an allocation).
    /// The data's checksums are read back from the device.</para>
    /// </summary>
    public Errno IoEnd(long ino, long pos, long written, int error, uint device, ulong address, out long newSize)
    {
        var e = IoEnd(ino, pos, written, error, device, address, null, out newSize);
        MaybeCommit();   // delivers the mapping changes, commits once enough was written
        return e;
    }

    // Scratch of IoEnd (under _lock): the pieces of the range, one per allocation.
    private readonly List<(Reservation R, long First, long Count)> _ioEndPieces = new();
    private byte[]? _ioEndBlock;

    internal Errno IoEnd(long ino, long pos, long written, int error, uint device, ulong address, uint[]? sums, out long newSize)
    {
        newSize = 0;
        if (pos < 0 || written < 0 || pos > MaxFileSize || written > MaxFileSize - pos) return Errno.EINVAL;
        long fb = pos >> BlockShift;
        long nb = written == 0 ? 0 : ((pos + written + BlockSize - 1) >> BlockShift) - fb;
        lock (_lock)
        {
            var li = Live(ino);
            if (error != 0 || nb == 0 || li == null)
            {
                if (address == FormatConstants.NoAddress) _reservations.ReleaseRange(ino, fb, Math.Max(nb, 1));
                else if ((address & (ulong)(BlockSize - 1)) == 0) _reservations.ReleaseChain(ino, fb, Math.Max(nb, 1), device, (long)(address >> BlockShift));
                newSize = li?.Rec.Size ?? 0;
                return 0;
            }
            var pieces = _ioEndPieces;
            pieces.Clear();
            try
            {
                // The range, allocation by allocation; with an address, each piece must start where the last ended.
                long b = fb, end = fb + nb;
                uint dev = device;
                long expect = address == FormatConstants.NoAddress ? -1 : (long)(address >> BlockShift);
                if (expect >= 0 && (address & (ulong)(BlockSize - 1)) != 0) return Errno.EINVAL;
                while (b < end)
                {
                    var r = _reservations.FindPending(ino, b, dev, expect);
                    if (r == null) return Errno.EINVAL;
                    long first = b - r.FileBlock;
                    long n = 1, max = Math.Min(end - b, r.Blocks - first);
                    while (n < max && r.Pending[first + n]) n++;
                    pieces.Add((r, first, n));
                    b += n;
                    if (expect >= 0) { dev = r.Device; expect = r.Address + first + n; }
                }
                if (sums != null && sums.Length < nb) throw new ArgumentException($"{sums.Length} checksums for {nb} blocks", nameof(sums));
                int si = 0;
                foreach (var (r, first, n) in pieces)
                {
                    ReadOnlySpan<uint> pieceSums;
                    if (sums != null) pieceSums = sums.AsSpan(si, (int)n);
                    else
                    {
                        var computed = new uint[n];
                        var buf = _ioEndBlock ??= new byte[BlockSize];
                        // The kernel wrote these blocks, past the device object: nothing it read ahead is current.
                        _devices[r.Device].DropCached((r.Address + first) << BlockShift, n << BlockShift);
                        for (long i = 0; i < n; i++)
                        {
                            _devices[r.Device].Read((r.Address + first + i) << BlockShift, buf);
                            computed[i] = Crc32C.Compute(buf);
                        }
                        pieceSums = computed;
                    }
                    RemapRange(li, r.FileBlock + first, n, r.Device, r.Address + first, pieceSums);
                    _reservations.Committed(ino, r, first, first + n);
                    si += (int)n;
                }
                if (pos + written > li.Rec.Size) _versions.MutableInode(li).Size = pos + written;
                newSize = li.Rec.Size;
                _versions.AddDirtyBlocks(nb);
                return 0;
            }
            finally { pieces.Clear(); }
        }
    }

    // ---------------------------------------------------------------- extent map surgery (under _lock)

    /// <summary>Points file blocks [fb, fb+n) of <paramref name="li"/> at device blocks [addr, addr+n): each chunk
    /// is made private, remapped (<see cref="ExtentMap.Remap"/>), the blocks it stopped mapping lose its
    /// reference and the new ones gain one.</summary>
    private void RemapRange(LiveInode li, long fb, long n, uint dev, long addr, ReadOnlySpan<uint> sums)
    {
        var rec = _versions.MutableInode(li);
        ConsumePrealloc(li, rec, fb, n);
        var release = _space.Releaser;
        int si = 0;
        while (n > 0)
        {
            long idx = fb / ChunkBlocks;
            uint cb = (uint)(fb - idx * ChunkBlocks);
            uint len = (uint)Math.Min(n, ChunkBlocks - cb);
            var c = _versions.MutableChunk(li, idx);
            _mappings.Record(li.Ino, fb, len);
            long removed = ExtentMap.Remap(c, cb, len, dev, addr, sums.Slice(si, (int)len), ref release);
            _space[dev].AddRef(addr, len);
            rec.Blocks += len - removed;
            fb += len; addr += len; n -= len; si += (int)len;
        }
    }

    /// <summary>Unmaps chunk blocks [a, b) of a private chunk, dropping the chunk's reference on the blocks it
    /// mapped there; returns how many mapped blocks it removed.</summary>
    private long PunchInChunk(ChunkRecord c, uint a, uint b)
    {
        _mappings.Record(c.Ino, c.Index * ChunkBlocks + a, b - a);
        var release = _space.Releaser;
        return ExtentMap.Punch(c, a, b, ref release);
    }

    /// <summary>Unmaps file blocks [from, to) of the live file (truncate, punch hole).</summary>
    private void PunchRange(LiveInode li, long from, long to)
    {
        if (to <= from) return;
        ReleasePrealloc(li, from, to);
        var rec = _versions.MutableInode(li);
        long firstChunk = from / ChunkBlocks, lastChunk = (to - 1) / ChunkBlocks;
        IEnumerable<long> indexes = lastChunk - firstChunk < 64
            ? Enumerable.Range(0, (int)(lastChunk - firstChunk + 1)).Select(i => firstChunk + i)
            : LiveChunks(li).Where(c => c.Index >= firstChunk && c.Index <= lastChunk).Select(c => c.Index).ToList();
        foreach (long idx in indexes)
        {
            var c = LiveChunk(li, idx);
            if (c == null) continue;
            long cStart = idx * ChunkBlocks;
            uint a = (uint)Math.Max(0, from - cStart), b = (uint)Math.Min(ChunkBlocks, to - cStart);
            if (a == 0 && b == ChunkBlocks)
            {
                foreach (var e in c.Extents) rec.Blocks -= e.Count;
                _versions.DropChunk(li, c);
                continue;
            }
            c = _versions.MutableChunk(li, idx);
            rec.Blocks -= PunchInChunk(c, a, b);
            if (c.Extents.Count == 0)
            {
                _versions.DropEmptyChunk(li, c);
            }
        }
    }

    // ---------------------------------------------------------------- the userspace data path

    /// <summary>
    /// Reads whole file blocks [fb, fb+n) into <paramref name="dest"/> through the read mappings,
    /// verifying every mapped block's checksum. Holes read as zeros. With <paramref name="lend"/> (whose
    /// scratch buffer <paramref name="dest"/> is, from its current length on) the devices may lend bytes they
    /// hold in place instead of copying them into <paramref name="dest"/>; every piece, lent or not, is added
    /// to <paramref name="lend"/> in order.
    /// </summary>
    internal Errno ReadBlocks(ITreeReader tree, long ino, long fb, long n, Span<byte> dest, ReadSegments? lend = null)
    {
        var sums = ArrayPool<uint>.Shared.Rent(ChunkBlocks);
        var computed = ArrayPool<uint>.Shared.Rent(ChunkBlocks);
        try
        {
            while (n > 0)
            {
                BlockRun run;
                lock (_lock)
                {
                    if (tree.Gone) return Errno.ESTALE;
                    var c = tree.Chunk(ino, fb / ChunkBlocks);
                    run = ExtentMap.FindRun(c, fb, n);
                    if (!run.IsHole) c!.Sums.AsSpan((int)(fb % ChunkBlocks), (int)run.Blocks).CopyTo(sums);
                }
                var part = dest.Slice(0, (int)(run.Blocks << BlockShift));
                if (run.IsHole)
                {
                    part.Clear();
                    lend?.AddScratch(part.Length);
                }
                else
                {
                    var blockSums = computed.AsSpan(0, (int)run.Blocks);
                    // The devices' own checksums are of 4 KiB blocks: a pool with larger blocks reads and computes
                    // its checksums here, as before (and lends nothing, since a lent read is verified by them).
                    bool deviceSums = BlockSize == IBlockDevice.ChecksumBlockBytes;
                    DeviceReadResult how;
                    _reuseGate.EnterReadLock();
                    try
                    {
                        how = deviceSums
                            ? _devices[run.Device].ReadOrLend(run.Address << BlockShift, part, blockSums, lend)
                            : _devices[run.Device].ReadOrLend(run.Address << BlockShift, part, default, null);
                    }
                    catch (IOException e)
                    {
                        Report($"read error: inode {ino} offset {fb << BlockShift} device {run.Device} block {run.Address}: {e.Message}");
                        return Errno.EIO;
                    }
                    finally { _reuseGate.ExitReadLock(); }
                    if (how == DeviceReadResult.Read)
                        for (int i = 0; i < run.Blocks; i++) blockSums[i] = Crc32C.Compute(part.Slice(i << BlockShift, BlockSize));
                    for (int i = 0; i < run.Blocks; i++)
                        if (blockSums[i] != sums[i])
                        {
                            Report($"checksum mismatch: inode {ino} offset {(fb + i) << BlockShift} device {run.Device} block {run.Address + i}");
                            return Errno.EIO;
                        }
                    if (how != DeviceReadResult.Lent) lend?.AddScratch(part.Length);
                }
                dest = dest[part.Length..];
                fb += run.Blocks; n -= run.Blocks;
            }
            return 0;
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(sums);
            ArrayPool<uint>.Shared.Return(computed);
        }
    }

    /// <summary>read(2) through the engine: clamps to the file size; returns bytes read in <paramref name="count"/>.
    /// With <paramref name="lend"/> (reset here; <paramref name="buffer"/> must be its scratch buffer) the read
    /// may be left partly in device buffers lent in place: the read is then <paramref name="lend"/>'s segments,
    /// and the caller releases them (also after an error).</summary>
    internal Errno Read(ITreeReader tree, long ino, long offset, Span<byte> buffer, out int count, ReadSegments? lend = null)
    {
        count = 0;
        lend?.Reset();
        if (offset < 0) return Errno.EINVAL;
        long size;
        lock (_lock)
        {
            var rec = tree.Inode(ino);
            if (rec == null) return Errno.ENOENT;
            if ((rec.Mode & 0xF000) == 0x4000) return Errno.EISDIR;
            if ((rec.Mode & 0xF000) != 0x8000) return Errno.EINVAL;
            size = rec.Size;
        }
        if (offset >= size || buffer.Length == 0) return 0;
        int len = (int)Math.Min(buffer.Length, size - offset);
        long fb = offset >> BlockShift, last = (offset + len - 1) >> BlockShift;
        long nb = last - fb + 1;
        int head = (int)(offset & (BlockSize - 1));
        if (head == 0 && (len & (BlockSize - 1)) == 0)
        {
            var e = ReadBlocks(tree, ino, fb, nb, buffer[..len], lend);
            if (e != 0) return e;
        }
        else
        {
            var tmp = ArrayPool<byte>.Shared.Rent((int)(nb << BlockShift));
            try
            {
                var e = ReadBlocks(tree, ino, fb, nb, tmp.AsSpan(0, (int)(nb << BlockShift)));
                if (e != 0) return e;
                tmp.AsSpan(head, len).CopyTo(buffer);
                lend?.AddScratch(len);
            }
            finally { ArrayPool<byte>.Shared.Return(tmp); }
        }
        count = len;
        return 0;
    }

    /// <summary>
    /// write(2) through the engine, executing the iomap contract exactly as the kernel would: ask for
    /// mappings, read partial blocks from the read mapping, write whole blocks to the write mapping,
    /// ioend, iomap_end. With <paramref name="append"/> the write goes to the end of the file.
    /// </summary>
    public Errno Write(long ino, long offset, ReadOnlySpan<byte> data, bool append, out int written, bool touchTimes = true)
    {
        written = 0;
        LiveInode? li;
        lock (_lock)
        {
            li = Live(ino);
            if (li == null) return Errno.ENOENT;
            if ((li.Rec.Mode & 0xF000) == 0x4000) return Errno.EISDIR;
            if ((li.Rec.Mode & 0xF000) != 0x8000) return Errno.EINVAL;
            if (Failed) return Errno.EIO;
            li.Pins++;
        }
        int epoch = BeginWriteInProgress();
        try
        {
            if (data.Length == 0) return 0;
            li.WriteGate.Wait();
            try
            {
                if (append) lock (_lock) offset = li.Rec.Size;
                if (offset < 0) return Errno.EINVAL;
                if (offset >= MaxFileSize) return Errno.EFBIG;
                if (data.Length > MaxFileSize - offset) data = data[..(int)(MaxFileSize - offset)]; // short write, as Linux
                long pos = offset;
                var err = WriteLocked(li, ref pos, data, ref written);
                if (written > 0)
                    lock (_lock)
                    {
                        var rec = _versions.MutableInode(li);
                        if (touchTimes) rec.MtimeNs = rec.CtimeNs = NowNs();
                        // setuid/setgid are not cleared here: the engine does not know who writes. The kernel
                        // clears them with a setattr (FUSE without HANDLE_KILLPRIV), as for any FUSE server.
                    }
                if (written == 0 && err != 0) return err;
            }
            finally { li.WriteGate.Release(); }
        }
        finally { Unpin(li); EndWriteInProgress(epoch); }
        MaybeCommit();
        return 0;
    }

    // Writes in progress (Write), counted by the parity of the barrier epoch they began in, so that a
    // snapshot can wait for the writes that began before it without waiting for the ones that begin after.
    // _writeBarrierGate guards the counts and the epoch; _writeBarrierSerial serialises the waiters (two
    // overlapping waits would otherwise share a parity with new writes). Lock order: _writeBarrierSerial,
    // then _writeBarrierGate; neither is held while taking another engine lock, nor taken under one.
    private readonly object _writeBarrierGate = new(), _writeBarrierSerial = new();
    private readonly int[] _writesInProgress = new int[2];
    private int _writeEpoch;

    private int BeginWriteInProgress()
    {
        lock (_writeBarrierGate)
        {
            int parity = _writeEpoch & 1;
            _writesInProgress[parity]++;
            return parity;
        }
    }

    private void EndWriteInProgress(int parity)
    {
        lock (_writeBarrierGate)
            if (--_writesInProgress[parity] == 0) Monitor.PulseAll(_writeBarrierGate);
    }

    /// <summary>
    /// Waits until every <see cref="Write"/> that began before this call has ended (writes that begin meanwhile
    /// are not waited for). A snapshot does this first: with the FUSE writeback cache, the kernel's syncfs
    /// sends the dirty pages as WRITE requests but (Linux 6.18) returns without waiting for their replies, so
    /// the snapshot request can overtake WRITEs that the server is still working on.
    /// </summary>
    internal void WaitForWritesInProgress()
    {
        lock (_writeBarrierSerial)
            lock (_writeBarrierGate)
            {
                int before = _writeEpoch & 1;
                _writeEpoch++;
                while (_writesInProgress[before] > 0) Monitor.Wait(_writeBarrierGate);
            }
    }

    /// <summary>The body of <see cref="Write"/>; the caller holds the file's WriteGate.</summary>
    private Errno WriteLocked(LiveInode li, ref long pos, ReadOnlySpan<byte> data, ref int written)
    {
        long ino = li.Ino;
        int remaining = data.Length;
        while (remaining > 0)
        {
            var e = IomapBegin(LiveTree, ino, pos, remaining, IomapOp.Write, out var pair, callerMerges: true);
            if (e == Errno.ENOSPC && HasPendingFrees())
            {
                // Blocks freed since the last commit become allocatable once that commit is durable.
                Commit();
                e = IomapBegin(LiveTree, ino, pos, remaining, IomapOp.Write, out pair, callerMerges: true);
            }
            if (e != 0) return e;
            var wm = pair.Write;
            long mapStart = wm.Offset, mapEnd = wm.Offset + wm.Length;
            long dataEnd = Math.Min(pos + remaining, mapEnd);
            long bufEnd = (dataEnd + BlockSize - 1) & ~(long)(BlockSize - 1);
            int bufLen = (int)(bufEnd - mapStart);
            int chunk = (int)(dataEnd - pos);
            int head = (int)(pos - mapStart);
            // Whole blocks go straight from the caller's buffer; partial blocks are merged in a staging
            // buffer with the old bytes of the read mapping (read-modify-write).
            bool aligned = head == 0 && chunk == bufLen;
            var buf = aligned ? null : ArrayPool<byte>.Shared.Rent(bufLen);
            try
            {
                ReadOnlySpan<byte> blocks;
                if (aligned) blocks = data.Slice(written, chunk);
                else
                {
                    var span = buf.AsSpan(0, bufLen);
                    if (head > 0)
                    {
                        e = ReadBlocks(LiveTree, ino, mapStart >> BlockShift, 1, span[..BlockSize]);
                        if (e != 0) { IomapEnd(ino, pos, remaining, 0, IomapOp.Write, wm); return e; }
                    }
                    // A partial last block that is not also the (already read) partial first block.
                    bool lastPartial = head + chunk < bufLen;
                    if (lastPartial && !(head > 0 && bufLen == BlockSize))
                    {
                        e = ReadBlocks(LiveTree, ino, (bufEnd >> BlockShift) - 1, 1, span[(bufLen - BlockSize)..]);
                        if (e != 0) { IomapEnd(ino, pos, remaining, 0, IomapOp.Write, wm); return e; }
                    }
                    data.Slice(written, chunk).CopyTo(span[head..]);
                    blocks = span;
                }
                try
                {
                    _devices[wm.Device].Write((long)wm.Address, blocks);
                    NoteDeviceWrite(wm.Device);
                }
                catch (IOException ex)
                {
                    Report($"write error: inode {ino} offset {pos} device {wm.Device} address {wm.Address}: {ex.Message}");
                    IoEnd(ino, pos, chunk, (int)Errno.EIO, wm.Device, wm.Address, null, out _);
                    IomapEnd(ino, pos, remaining, 0, IomapOp.Write, wm);
                    return Errno.EIO;
                }
                int nb = bufLen >> BlockShift;
                // IoEnd copies the checksums into the chunk: a pooled array (longer than nb) is enough.
                var sums = ArrayPool<uint>.Shared.Rent(nb);
                try
                {
                    for (int i = 0; i < nb; i++) sums[i] = Crc32C.Compute(blocks.Slice(i << BlockShift, BlockSize));
                    e = IoEnd(ino, pos, chunk, 0, wm.Device, wm.Address, sums, out _);
                }
                finally { ArrayPool<uint>.Shared.Return(sums); }
                IomapEnd(ino, pos, remaining, chunk, IomapOp.Write, wm);
                if (e != 0) return e;
            }
            finally { if (buf != null) ArrayPool<byte>.Shared.Return(buf); }
            pos += chunk; written += chunk; remaining -= chunk;
        }
        return 0;
    }

    internal static long NowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;
}
