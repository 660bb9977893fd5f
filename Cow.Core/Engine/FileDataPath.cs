using System.Buffers;
using System.Text;
using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>The userspace data path: FUSE READ and WRITE when the kernel does not do the I/O itself. Reads go
/// through the read mappings and verify every block's checksum; a write asks the iomap service for a write
/// mapping (<see cref="IomapService.IomapBegin(ITreeReader, long, long, long, IomapOp, out IomapPair, bool)"/>), writes the
/// blocks and commits them as an ioend would. State: none of its own beyond the <see cref="WriteBarrier"/>
/// that lets a snapshot wait for the writes before it; locks as in the engine's summary (the file's
/// WriteGate, then <c>_lock</c> briefly; device I/O outside it, under the reuse gate for reads).</summary>
internal sealed class FileDataPath(EngineContext context) : EnginePart(context)
{
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
                long epoch;
                lock (StateLock)
                {
                    epoch = Space.ReleaseEpoch;
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
                    ReuseGate.EnterReadLock();
                    // Frees are released only with the gate held in write mode: if none was released since the
                    // mapping was looked up, its blocks cannot be handed out again before the read ends; if some
                    // were, the mapping may be stale (its blocks freed, by an overwrite or a cleaner move, and
                    // reused): look it up again.
                    if (Space.ReleaseEpoch != epoch) { ReuseGate.ExitReadLock(); continue; }
                    try
                    {
                        how = deviceSums
                            ? Devices[run.Device].ReadOrLend(run.Address << BlockShift, part, blockSums, lend)
                            : Devices[run.Device].ReadOrLend(run.Address << BlockShift, part, default, null);
                    }
                    catch (IOException e)
                    {
                        Report($"read error: inode {ino} offset {fb << BlockShift} device {run.Device} block {run.Address}: {e.Message}");
                        return Errno.EIO;
                    }
                    finally { ReuseGate.ExitReadLock(); }
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
        lock (StateLock)
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
        lock (StateLock)
        {
            li = Live(ino);
            if (li == null) return Errno.ENOENT;
            if ((li.Rec.Mode & 0xF000) == 0x4000) return Errno.EISDIR;
            if ((li.Rec.Mode & 0xF000) != 0x8000) return Errno.EINVAL;
            if (Failed) return Errno.EIO;
            li.Pins++;
        }
        int epoch = WritesInProgress.Begin();
        try
        {
            if (data.Length == 0) return 0;
            li.WriteGate.Wait();
            try
            {
                if (append) lock (StateLock) offset = li.Rec.Size;
                if (offset < 0) return Errno.EINVAL;
                if (offset >= MaxFileSize) return Errno.EFBIG;
                if (data.Length > MaxFileSize - offset) data = data[..(int)(MaxFileSize - offset)]; // short write, as Linux
                long pos = offset;
                var err = WriteLocked(li, ref pos, data, ref written);
                if (written > 0)
                    lock (StateLock)
                    {
                        var rec = Versions.MutableInode(li);
                        if (touchTimes) rec.MtimeNs = rec.CtimeNs = NowNs();
                        // setuid/setgid are not cleared here: the engine does not know who writes. The kernel
                        // clears them with a setattr (FUSE without HANDLE_KILLPRIV), as for any FUSE server.
                    }
                if (written == 0 && err != 0) return err;
            }
            finally { li.WriteGate.Release(); }
        }
        finally { Unpin(li); WritesInProgress.End(epoch); }
        MaybeCommit();
        return 0;
    }

    /// <summary>
    /// Waits until every <see cref="Write"/> that began before this call has ended (writes that begin meanwhile
    /// are not waited for). A snapshot does this first: with the FUSE writeback cache, the kernel's syncfs
    /// sends the dirty pages as WRITE requests but (Linux 6.18) returns without waiting for their replies, so
    /// the snapshot request can overtake WRITEs that the server is still working on.
    /// </summary>
    internal void WaitForWritesInProgress() => WritesInProgress.WaitForEarlier();

    /// <summary>The body of <see cref="Write"/>; the caller holds the file's WriteGate.</summary>
    internal Errno WriteLocked(LiveInode li, ref long pos, ReadOnlySpan<byte> data, ref int written)
    {
        long ino = li.Ino;
        int remaining = data.Length;
        while (remaining > 0)
        {
            var e = Iomap.IomapBegin(LiveTree, ino, pos, remaining, IomapOp.Write, out var pair, callerMerges: true);
            if (e == Errno.ENOSPC && HasPendingFrees())
            {
                // Blocks freed since the last commit become allocatable once that commit is durable.
                Commits.Commit();
                e = Iomap.IomapBegin(LiveTree, ino, pos, remaining, IomapOp.Write, out pair, callerMerges: true);
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
                        if (e != 0) { Iomap.IomapEnd(ino, pos, remaining, 0, IomapOp.Write, wm); return e; }
                    }
                    // A partial last block that is not also the (already read) partial first block.
                    bool lastPartial = head + chunk < bufLen;
                    if (lastPartial && !(head > 0 && bufLen == BlockSize))
                    {
                        e = ReadBlocks(LiveTree, ino, (bufEnd >> BlockShift) - 1, 1, span[(bufLen - BlockSize)..]);
                        if (e != 0) { Iomap.IomapEnd(ino, pos, remaining, 0, IomapOp.Write, wm); return e; }
                    }
                    data.Slice(written, chunk).CopyTo(span[head..]);
                    blocks = span;
                }
                try
                {
                    Devices[wm.Device].Write((long)wm.Address, blocks);
                    NoteDeviceWrite(wm.Device);
                }
                catch (IOException ex)
                {
                    Report($"write error: inode {ino} offset {pos} device {wm.Device} address {wm.Address}: {ex.Message}");
                    Iomap.IoEnd(ino, pos, chunk, (int)Errno.EIO, wm.Device, wm.Address, null, out _);
                    Iomap.IomapEnd(ino, pos, remaining, 0, IomapOp.Write, wm);
                    return Errno.EIO;
                }
                int nb = bufLen >> BlockShift;
                // IoEnd copies the checksums into the chunk: a pooled array (longer than nb) is enough.
                var sums = ArrayPool<uint>.Shared.Rent(nb);
                try
                {
                    for (int i = 0; i < nb; i++) sums[i] = Crc32C.Compute(blocks.Slice(i << BlockShift, BlockSize));
                    e = Iomap.IoEnd(ino, pos, chunk, 0, wm.Device, wm.Address, sums, out _);
                }
                finally { ArrayPool<uint>.Shared.Return(sums); }
                Iomap.IomapEnd(ino, pos, remaining, chunk, IomapOp.Write, wm);
                if (e != 0) return e;
            }
            finally { if (buf != null) ArrayPool<byte>.Shared.Return(buf); }
            pos += chunk; written += chunk; remaining -= chunk;
        }
        return 0;
    }

    /// <summary>lseek SEEK_DATA / SEEK_HOLE. ENXIO when <paramref name="offset"/> is at or past the end,
    /// or (SEEK_DATA) there is no data after it.</summary>
    internal Errno Seek(ITreeReader tree, long ino, long offset, SeekWhence whence, out long result)
    {
        result = 0;
        lock (StateLock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (offset < 0) return Errno.ENXIO;
            if (offset >= r.Size) return Errno.ENXIO;
            long fb = offset >> BlockShift;
            long endBlock = (r.Size + BlockSize - 1) >> BlockShift;
            var chunks = tree.Chunks(ino);
            if (whence == SeekWhence.Data)
            {
                foreach (var c in chunks)
                {
                    long cStart = c.Index * ChunkBlocks;
                    if (cStart + ChunkBlocks <= fb) continue;
                    foreach (var e in c.Extents)
                    {
                        long eStart = cStart + e.First, eEnd = cStart + e.End;
                        if (eEnd <= fb) continue;
                        long at = Math.Max(offset, eStart << BlockShift);
                        if (at >= r.Size) return Errno.ENXIO;
                        result = at;
                        return 0;
                    }
                }
                return Errno.ENXIO;
            }
            // SEEK_HOLE: the first unmapped block at or after fb, or the end of the file.
            long b = fb;
            foreach (var c in chunks)
            {
                long cStart = c.Index * ChunkBlocks;
                if (cStart + ChunkBlocks <= b) continue;
                if (cStart > b) break; // gap before this chunk
                foreach (var e in c.Extents)
                {
                    long eStart = cStart + e.First, eEnd = cStart + e.End;
                    if (eEnd <= b) continue;
                    if (eStart > b) break;
                    b = eEnd;
                }
                if (b < cStart + ChunkBlocks) break;
            }
            result = b >= endBlock ? r.Size : Math.Max(offset, b << BlockShift);
            return 0;
        }
    }
}
