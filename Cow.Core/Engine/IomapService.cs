using System.Buffers;
using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>The iomap service: the contract the kernel's fuse-iomap asks (IOMAP_BEGIN, IOMAP_END, IOMAP_IOEND) and
/// that the userspace data path uses too. Read mappings come from the <see cref="ExtentMap"/>; write mappings
/// are fresh space from the <see cref="SpaceAllocator"/> (the log device while it has room, else the base device), remembered in <see cref="WriteReservations"/>
/// until an ioend commits them into the file (<see cref="RemapRange"/>) or iomap_end releases them. Every map
/// change is recorded for the <see cref="MappingInvalidations"/>. State: scratch of IoEnd only. Under the engine's <c>_lock</c>; no device data I/O except a
/// new log segment's header and an ioend's checksum read-back.</summary>
internal sealed class IomapService(EngineContext context) : EnginePart(context)
{
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
        if (read.Type == MappingType.Mapped && Devices.TryGetValue(read.Device, out var dev))
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
        lock (StateLock)
        {
            if (write && (tree.ReadOnly || PoolState.Receive != null)) return Errno.EROFS;
            if (write && Failed) return Errno.EIO;
            var rec = tree.Inode(ino);
            if (rec == null) return Errno.ENOENT;
            if ((rec.Mode & 0xF000) != 0x8000) return (rec.Mode & 0xF000) == 0x4000 ? Errno.EISDIR : Errno.EINVAL;
            long fb = pos >> BlockShift;
            long endBlock = (pos + count + BlockSize - 1) >> BlockShift;
            var run = ExtentMap.FindRun(tree.Chunk(ino, fb / ChunkBlocks), fb, endBlock - fb);
            if (!write)
            {
                if (run.IsHole && run.FileBlock + run.Blocks < endBlock && (run.FileBlock + run.Blocks) % ChunkBlocks == 0) run = run with { Blocks = HoleEnd(tree, ino, run.FileBlock + run.Blocks, endBlock) - run.FileBlock };
                var read = ToMapping(run);
                pair = new IomapPair(read, new IomapMapping(read.Offset, read.Length, FormatConstants.NoAddress, MappingType.PureOverwrite, MappingFlags.None, 0));
                return 0;
            }
            var li = Live(ino)!;
            long want = callerMerges ? Math.Min(endBlock - fb, ChunkBlocks - fb % ChunkBlocks) : run.Blocks;
            // Fallocate reservations are not free space for others (FallocateReservations.cs).
            if (Space.Preallocated != 0 && (want = Prealloc.WriteAllowance(li, fb, want)) == 0) return Errno.ENOSPC;
            long n = Space.AllocateForWrite(want, out uint device, out long start);
            if (n == 0) return Errno.ENOSPC;
            if (Space[device].Role == DeviceRole.Log && !OpenSegmentIfNew(Space[device], start))
            {
                Space[device].Unreserve(start, n);
                return Errno.EIO;
            }
            var readRun = run with { Blocks = Math.Min(run.Blocks, n) };
            run = run with { Blocks = n };
            Reservations.Add(li, fb, n, device, start);
            var readMap = ToMapping(readRun);
            var flags = MappingFlags.Shared | (run.IsHole && readRun.Blocks == n ? MappingFlags.New : MappingFlags.None);
            pair = new IomapPair(readMap, new IomapMapping(readMap.Offset, n << BlockShift, (ulong)start << BlockShift, MappingType.Mapped, flags, device));
            return 0;
        }
    }

    /// <summary>
    /// Where a hole that reaches the chunk boundary <paramref name="from"/> ends: the first mapped block at or after
    /// it, at most <paramref name="limit"/> (blocks). A read-side hole mapping is not cut at chunk boundaries: the
    /// kernel walks a range one mapping per IOMAP_BEGIN (zeroing from EOF to a write far past it, truncate up,
    /// SEEK_DATA/SEEK_HOLE), and over a hole of 2^50 bytes one mapping per 4 MiB chunk is 2^28 round trips.
    /// The next chunk is looked at directly; only if it maps nothing are the file's chunks searched.
    /// </summary>
    private static long HoleEnd(ITreeReader tree, long ino, long from, long limit)
    {
        var next = tree.Chunk(ino, from / ChunkBlocks);
        if (next != null && next.Extents.Count > 0) return Math.Min(limit, from + next.Extents[0].First);
        foreach (var c in tree.Chunks(ino))   // in index order
        {
            long start = c.Index * ChunkBlocks;
            if (start < from || c.Extents.Count == 0) continue;
            return Math.Min(limit, start + c.Extents[0].First);
        }
        return limit;
    }

    /// <summary>Writes the header of a log segment the first time the allocator enters it (format.md, "Log device").
    /// False if that write failed: the segment stays unopened (the next allocation in it tries again).</summary>
    internal bool OpenSegmentIfNew(DeviceSpace log, long start)
    {
        if (NewSegmentHeader(log, start) is not { } h) return true;
        try { Devices[log.Cookie].Write((h.Segment * FormatConstants.SegmentBlocks) << BlockShift, h.Block); }
        catch (IOException e)
        {
            Report($"write error: header of log segment {h.Segment}: {e.Message}");
            return false;
        }
        SegmentHeaderWritten(log, h);
        return true;
    }

    /// <summary>The header a write at block <paramref name="start"/> of a log must put first into its segment, when the
    /// allocator just entered that segment (null: the segment is open already, or is segment 0); its sequence number is
    /// taken. The caller writes it (<see cref="OpenSegmentIfNew"/>; a receive writes it with the data that follows it, in
    /// one write) and then calls <see cref="SegmentHeaderWritten"/>. Under StateLock.</summary>
    internal NewSegment? NewSegmentHeader(DeviceSpace log, long start)
    {
        long seg = start / FormatConstants.SegmentBlocks;
        if (seg == log.OpenSegment || seg == 0) { log.OpenSegment = seg; return null; }
        var block = new byte[BlockSize];
        long sequence = PoolState.SegmentSeq++;
        new SegmentHeader(PoolState.PoolUuid, (ulong)seg, (ulong)sequence, PoolState.LiveGen).Write(block);
        return new NewSegment(seg, sequence, block);
    }

    /// <summary>The segment's header is on the device: the allocator's segment is open. Under StateLock.</summary>
    internal void SegmentHeaderWritten(DeviceSpace log, NewSegment h)
    {
        log.OpenSegment = h.Segment;
        log.NoteSegmentSequence(h.Segment, h.Sequence);
        NoteDeviceWrite(log.Cookie);
    }

    /// <summary>A log segment's header to write (<see cref="NewSegmentHeader"/>).</summary>
    internal sealed record NewSegment(long Segment, long Sequence, byte[] Block);

    /// <summary>Blocks handed out by iomap_begin and not yet committed or released (fsck; under StateLock).</summary>
    internal HashSet<(uint, long)> ReservedBlocks() => Reservations.PendingBlocks();

    /// <summary>
    /// iomap_end: releases the part of a write mapping that a short or failed write did not use.
    /// Blocks covering [pos, pos+written) stay reserved until their ioend commits or fails them.
    /// </summary>
    public Errno IomapEnd(long ino, long pos, long count, long written, IomapOp op, in IomapMapping map)
    {
        if (!IsWriteOp(op) || map.Type != MappingType.Mapped) return 0;
        if (written < 0 || pos < 0 || count < 0) return Errno.EINVAL;
        lock (StateLock)
        {
            long mapBlock = map.Offset >> BlockShift, mapBlocks = map.Length >> BlockShift;
            var r = Reservations.Find(ino, mapBlock, mapBlocks);
            if (r == null || r.Device != map.Device || (ulong)(r.Address + (mapBlock - r.FileBlock)) << BlockShift != map.Address) return 0;
            long usedFrom = (pos >> BlockShift) - r.FileBlock;
            long usedTo = written == 0 ? usedFrom : ((pos + written + BlockSize - 1) >> BlockShift) - r.FileBlock;
            long mapFrom = mapBlock - r.FileBlock, mapTo = mapFrom + mapBlocks;
            Reservations.Release(ino, r, mapFrom, Math.Clamp(usedFrom, mapFrom, mapTo));
            if (r.PendingCount > 0) Reservations.Release(ino, r, Math.Clamp(usedTo, mapFrom, mapTo), mapTo);
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

    // Scratch of IoEnd (under StateLock): the pieces of the range, one per allocation.
    private readonly List<(Reservation R, long First, long Count)> _ioEndPieces = new();

    private byte[]? _ioEndBlock;

    internal Errno IoEnd(long ino, long pos, long written, int error, uint device, ulong address, uint[]? sums, out long newSize)
    {
        newSize = 0;
        if (pos < 0 || written < 0 || pos > MaxFileSize || written > MaxFileSize - pos) return Errno.EINVAL;
        long fb = pos >> BlockShift;
        long nb = written == 0 ? 0 : ((pos + written + BlockSize - 1) >> BlockShift) - fb;
        lock (StateLock)
        {
            var li = Live(ino);
            if (error != 0 || nb == 0 || li == null)
            {
                if (address == FormatConstants.NoAddress) Reservations.ReleaseRange(ino, fb, Math.Max(nb, 1));
                else if ((address & (ulong)(BlockSize - 1)) == 0) Reservations.ReleaseChain(ino, fb, Math.Max(nb, 1), device, (long)(address >> BlockShift));
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
                    var r = Reservations.FindPending(ino, b, dev, expect);
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
                        Devices[r.Device].DropCached((r.Address + first) << BlockShift, n << BlockShift);
                        for (long i = 0; i < n; i++)
                        {
                            Devices[r.Device].Read((r.Address + first + i) << BlockShift, buf);
                            computed[i] = Crc32C.Compute(buf);
                        }
                        pieceSums = computed;
                    }
                    RemapRange(li, r.FileBlock + first, n, r.Device, r.Address + first, pieceSums);
                    Reservations.Committed(ino, r, first, first + n);
                    si += (int)n;
                }
                if (pos + written > li.Rec.Size) Versions.MutableInode(li).Size = pos + written;
                newSize = li.Rec.Size;
                Versions.AddDirtyBlocks(nb);
                return 0;
            }
            finally { pieces.Clear(); }
        }
    }

    // ---------------------------------------------------------------- extent map surgery (under StateLock)

    /// <summary>Points file blocks [fb, fb+n) of <paramref name="li"/> at device blocks [addr, addr+n): each chunk
    /// is made private, remapped (<see cref="ExtentMap.Remap"/>), the blocks it stopped mapping lose its
    /// reference and the new ones gain one.</summary>
    internal void RemapRange(LiveInode li, long fb, long n, uint dev, long addr, ReadOnlySpan<uint> sums)
    {
        var rec = Versions.MutableInode(li);
        Prealloc.ConsumePrealloc(li, rec, fb, n);
        var release = Space.Releaser;
        int si = 0;
        while (n > 0)
        {
            long idx = fb / ChunkBlocks;
            uint cb = (uint)(fb - idx * ChunkBlocks);
            uint len = (uint)Math.Min(n, ChunkBlocks - cb);
            var c = Versions.MutableChunk(li, idx);
            Mappings.Record(li.Ino, fb, len);
            long removed = ExtentMap.Remap(c, cb, len, dev, addr, sums.Slice(si, (int)len), ref release);
            Space.AddRef(dev, addr, len);
            rec.Blocks += len - removed;
            fb += len; addr += len; n -= len; si += (int)len;
        }
    }

    /// <summary>Unmaps chunk blocks [a, b) of a private chunk, dropping the chunk's reference on the blocks it
    /// mapped there; returns how many mapped blocks it removed.</summary>
    private long PunchInChunk(ChunkRecord c, uint a, uint b)
    {
        Mappings.Record(c.Ino, c.Index * ChunkBlocks + a, b - a);
        var release = Space.Releaser;
        return ExtentMap.Punch(c, a, b, ref release);
    }

    /// <summary>Unmaps file blocks [from, to) of the live file (truncate, punch hole).</summary>
    internal void PunchRange(LiveInode li, long from, long to)
    {
        if (to <= from) return;
        Prealloc.ReleasePrealloc(li, from, to);
        var rec = Versions.MutableInode(li);
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
                Versions.DropChunk(li, c);
                continue;
            }
            c = Versions.MutableChunk(li, idx);
            rec.Blocks -= PunchInChunk(c, a, b);
            if (c.Extents.Count == 0)
            {
                Versions.DropEmptyChunk(li, c);
            }
        }
    }
}
