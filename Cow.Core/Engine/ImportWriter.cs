using Cow.Core.FileSystem;
using Cow.Core.Format;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>
/// Writes an imported file (<c>cow mkfs --import</c>, <see cref="Import.TreeImporter"/>) into the live tree:
/// its data placed on the base device, only non-zero blocks, holes kept. State: none of its own. Threading:
/// the file's WriteGate, then the engine's <c>_lock</c> for each step; device writes outside the lock, to
/// blocks reserved for the file.
/// </summary>
internal sealed class ImportWriter(EngineContext context) : EnginePart(context)
{
    /// <summary>
    /// Creates <paramref name="name"/> in <paramref name="parent"/> with the bytes of <paramref name="source"/>
    /// placed on the **base device** (cookie 1): how data that "was there first" (a VM image, a data
    /// directory being taken over) enters a pool. All-zero blocks stay holes. Later writes to the file
    /// go out of place to the log device like any other, so the base copy stays shared with every
    /// snapshot. Durable when it returns.
    /// </summary>
    public Errno ImportFile(long parent, string name, Stream source, uint mode, uint uid, uint gid, out InodeAttr attr)
    {
        var e = Names.MakeNode(parent, name, (mode & 0xFFF) | 0x8000, 0, uid, gid, null, out attr);
        if (e != 0) return e;
        LiveInode li;
        lock (StateLock) { li = Live(attr.Ino)!; li.Pins++; }
        try { return ImportPinned(li, source, out attr); }
        finally { Unpin(li); }
    }

    private Errno ImportPinned(LiveInode li, Stream source, out InodeAttr attr)
    {
        attr = default;
        Errno e;
        li.WriteGate.Wait();
        try
        {
            var buf = new byte[1 << 20];
            long offset = 0;
            int filled;
            while ((filled = source.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false)) > 0)
            {
                e = PlaceNonZeroBlocks(li, offset >> BlockShift, buf, filled);
                if (e != 0) return e;
                offset += filled;
                lock (StateLock) Versions.MutableInode(li).Size = offset;
            }
        }
        finally { li.WriteGate.Release(); }
        Commits.Commit();
        lock (StateLock) attr = Attr(li.Rec);
        return 0;
    }


    /// <summary>
    /// Fills the empty regular file <paramref name="ino"/> of the live tree with <paramref name="length"/> bytes of
    /// which only <paramref name="dataRanges"/> (sorted (offset, length) pairs, as SEEK_DATA/SEEK_HOLE find them)
    /// are read through <paramref name="read"/>: the rest stays holes, and so do all-zero blocks inside them. The
    /// data goes to the **base device**, like <see cref="ImportFile"/>. Not committed: the caller commits (a
    /// tree import commits once at its end). A source failure (exception from <paramref name="read"/>) or
    /// <paramref name="ct"/> propagates, leaving the file partly filled; ENOSPC when the base device is full.
    /// </summary>
    public Errno ImportData(long ino, long length, IReadOnlyList<(long Offset, long Length)> dataRanges, Engine.ImportReader read, CancellationToken ct = default)
    {
        if (length < 0 || length > MaxFileSize) return Errno.EFBIG;
        LiveInode li;
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var found = Live(ino);
            if (found == null) return Errno.ENOENT;
            if ((found.Rec.Mode & S_IFMT) != S_IFREG) return Errno.EINVAL;
            if (found.Rec.Size != 0 || found.Rec.Blocks != 0) return Errno.EEXIST;
            li = found; li.Pins++;
        }
        try
        {
            li.WriteGate.Wait();
            try
            {
                const int bufBlocksBytes = 1 << 20;
                var buf = new byte[Math.Max(bufBlocksBytes, BlockSize)];
                int bufBlocks = buf.Length >> BlockShift;
                long next = 0;   // first file block not yet placed (ranges may share a block once aligned)
                foreach (var (off, len) in dataRanges)
                {
                    if (off < 0 || len <= 0 || off >= length) continue;
                    long end = Math.Min(length, off + len);
                    long fb = Math.Max(off >> BlockShift, next), endBlock = (end + BlockSize - 1) >> BlockShift;
                    while (fb < endBlock)
                    {
                        ct.ThrowIfCancellationRequested();
                        int nb = (int)Math.Min(endBlock - fb, bufBlocks);
                        long pos = fb << BlockShift;
                        int want = (int)Math.Min((long)nb << BlockShift, length - pos), filled = 0;
                        while (filled < want)
                        {
                            int n = read(pos + filled, buf.AsSpan(filled, want - filled));
                            if (n <= 0) break;   // the source shrank: the rest reads as zeros
                            filled += n;
                        }
                        var e = PlaceNonZeroBlocks(li, fb, buf, filled);
                        if (e != 0) return e;
                        fb += nb;
                    }
                    next = Math.Max(next, endBlock);
                }
                lock (StateLock) Versions.MutableInode(li).Size = length;
            }
            finally { li.WriteGate.Release(); }
        }
        finally { Unpin(li); }
        MaybeCommit();
        return 0;
    }

    /// <summary>Places the non-zero blocks of <paramref name="buf"/>[..<paramref name="filled"/>] (zero-padded to a
    /// whole block) at file block <paramref name="fileBlock"/> on the base device. Caller holds the WriteGate.</summary>
    private Errno PlaceNonZeroBlocks(LiveInode li, long fileBlock, byte[] buf, int filled)
    {
        int blocks = (filled + BlockSize - 1) >> BlockShift;
        buf.AsSpan(filled, (blocks << BlockShift) - filled).Clear();
        for (int b = 0; b < blocks;)
        {
            // Skip all-zero blocks: they stay holes.
            if (buf.AsSpan(b << BlockShift, BlockSize).IndexOfAnyExcept((byte)0) < 0) { b++; continue; }
            int run = 1;
            while (b + run < blocks && buf.AsSpan((b + run) << BlockShift, BlockSize).IndexOfAnyExcept((byte)0) >= 0) run++;
            var e = PlaceOnBase(li, fileBlock + b, buf.AsSpan(b << BlockShift, run << BlockShift));
            if (e != 0) return e;
            b += run;
        }
        return 0;
    }

    private Errno PlaceOnBase(LiveInode li, long fileBlock, ReadOnlySpan<byte> data)
    {
        var dev = Devices[FormatConstants.BaseCookie];
        while (data.Length > 0)
        {
            long start, n;
            lock (StateLock) n = Space[FormatConstants.BaseCookie].Allocate(data.Length >> BlockShift, out start);
            if (n == 0) return Errno.ENOSPC;
            var part = data[..(int)(n << BlockShift)];
            dev.Write(start << BlockShift, part);
            NoteDeviceWrite(FormatConstants.BaseCookie);
            var sums = new uint[n];
            for (int i = 0; i < n; i++) sums[i] = Crc32C.Compute(part.Slice(i << BlockShift, BlockSize));
            lock (StateLock) Iomap.RemapRange(li, fileBlock, n, FormatConstants.BaseCookie, start, sums);
            fileBlock += n;
            data = data[part.Length..];
        }
        return 0;
    }
}
