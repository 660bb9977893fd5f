using System.Buffers;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>
/// Range clone (reflink), the engine side of copy_file_range(2): whole blocks are shared, not copied.
/// <para>Sharing: where source and destination offsets are mutually block-aligned, the destination's
/// chunk records get extents pointing at the source's device blocks (holes stay holes, per-block
/// checksums copied) and each such block gains one reference (format.md, "spacemaps": a block's count is
/// the number of chunk-version mappings of it, of any file and any generation). Nothing else changes:
/// writes always go out of place, and every path that stops mapping a block (overwrite, punch, truncate,
/// unlink, chunk copy-on-write, snapshot purge) drops exactly the mapping's own reference, so a shared
/// block is freed only when its last mapping, live or in a snapshot, is gone.</para>
/// <para>Threading: <see cref="CloneRange"/> takes the WriteGates of both files, the lower inode number
/// first (one gate when source and destination are the same file), then <c>_lock</c> for each step;
/// every other operation takes at most one WriteGate, so the order cannot deadlock.</para>
/// </summary>
internal sealed class RangeCloner(EngineContext context) : EnginePart(context)
{
    /// <summary>Largest piece the byte-copy path (unaligned head, tail, or mutually unaligned offsets) moves at once.</summary>
    private const int CloneCopyBuffer = 1 << 20;

    /// <summary>
    /// copy_file_range(2) on the live tree: copies min(<paramref name="length"/>, source size −
    /// <paramref name="srcOffset"/>) bytes (0 at or after the source's end) from file
    /// <paramref name="srcIno"/> to file <paramref name="dstIno"/>, growing the destination if needed.
    /// Whole blocks at mutually block-aligned offsets are shared with the source (no data is written, no
    /// space is used); a partial last block ending at the source's end is shared too when the destination
    /// range also ends at or past the destination's end (as btrfs does). Everything else is copied
    /// through the read and write paths. <paramref name="copied"/> is the bytes done: a later failure
    /// after some progress returns success with a short count, as write(2) does.
    /// Errors: ENOENT, EISDIR (either is a directory), EINVAL (not regular files, a negative offset or
    /// length, or overlapping ranges of one file), EFBIG (the destination would pass
    /// <see cref="MaxFileSize"/>), ENOSPC/EIO from the copy path.
    /// </summary>
    public Errno CloneRange(long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied) =>
        CloneRange(LiveTree, srcIno, srcOffset, dstIno, dstOffset, length, out copied);

    /// <summary>
    /// <see cref="CloneRange(long, long, long, long, long, out long)"/> with the source in
    /// <paramref name="srcTree"/>: the live tree, or a snapshot (copy_file_range from a file under
    /// <c>.snapshots</c> into a live file). A snapshot's blocks are shared exactly as a live file's are: each
    /// block mapped again gains one reference, so it stays allocated after the snapshot is deleted for as
    /// long as the live file maps it. ESTALE: the snapshot was deleted.
    /// </summary>
    internal Errno CloneRange(ITreeReader srcTree, long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied)
    {
        copied = 0;
        if (srcOffset < 0 || dstOffset < 0 || length < 0) return Errno.EINVAL;
        bool live = !srcTree.ReadOnly;
        LiveInode? src = null, dst;
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            if (srcTree.Gone) return Errno.ESTALE;
            var srcRec = live ? (src = Live(srcIno))?.Rec : srcTree.Inode(srcIno);
            dst = Live(dstIno);
            if (srcRec == null || dst == null) return Errno.ENOENT;
            if (IsDir(srcRec) || IsDir(dst.Rec)) return Errno.EISDIR;
            if ((srcRec.Mode & S_IFMT) != S_IFREG || (dst.Rec.Mode & S_IFMT) != S_IFREG) return Errno.EINVAL;
            if (src != null) src.Pins++;
            if (dst != src) dst.Pins++;
        }
        var source = new CloneSource(srcTree, srcIno, src);
        try
        {
            if (src == null)
            {
                // A snapshot's file never changes: only the destination's gate is needed.
                dst.WriteGate.Wait();
                try { return CloneGated(source, srcOffset, dst, dstOffset, length, out copied); }
                finally { dst.WriteGate.Release(); }
            }
            var first = src.Ino <= dst.Ino ? src : dst;
            var second = first == src ? dst : src;
            first.WriteGate.Wait();
            try
            {
                if (second != first) second.WriteGate.Wait();
                try { return CloneGated(source, srcOffset, dst, dstOffset, length, out copied); }
                finally { if (second != first) second.WriteGate.Release(); }
            }
            finally { first.WriteGate.Release(); }
        }
        finally
        {
            if (src != null) Unpin(src);
            if (dst != src) Unpin(dst);
        }
    }

    /// <summary>The source file of a clone: a live inode (<see cref="Live"/> set, its WriteGate held by the
    /// caller) or an inode of a snapshot tree (immutable). Every member is used under <c>StateLock</c>.</summary>
    internal readonly record struct CloneSource(ITreeReader Tree, long Ino, LiveInode? Live)
    {
        public bool Same(LiveInode dst) => ReferenceEquals(Live, dst);
    }

    private bool SourceGone(in CloneSource s) => s.Live != null ? s.Live.Deleted : s.Tree.Gone;

    private long SourceSize(in CloneSource s) => s.Live != null ? s.Live.Rec.Size : s.Tree.Inode(s.Ino)?.Size ?? 0;

    private ChunkRecord? SourceChunk(in CloneSource s, long index) => s.Live != null ? LiveChunk(s.Live, index) : s.Tree.Chunk(s.Ino, index);

    private List<ChunkRecord> SourceChunks(in CloneSource s) => s.Live != null ? LiveChunks(s.Live) : s.Tree.Chunks(s.Ino);

    /// <summary>The body of <see cref="CloneRange(ITreeReader, long, long, long, long, long, out long)"/>; the
    /// caller holds the WriteGates of the destination and of a live source.</summary>
    private Errno CloneGated(CloneSource src, long srcOff, LiveInode dst, long dstOff, long length, out long copied)
    {
        copied = 0;
        long srcSize;
        lock (StateLock)
        {
            if (SourceGone(src) || dst.Deleted) return src.Live == null && src.Tree.Gone ? Errno.ESTALE : Errno.ENOENT;
            srcSize = SourceSize(src);
        }
        long len = srcOff >= srcSize ? 0 : Math.Min(length, srcSize - srcOff);
        if (len == 0) return 0;
        if (dstOff >= MaxFileSize || len > MaxFileSize - dstOff) return Errno.EFBIG;
        if (src.Same(dst) && srcOff < dstOff + len && dstOff < srcOff + len) return Errno.EINVAL;

        long mask = BlockSize - 1;
        Errno err;
        if (((srcOff ^ dstOff) & mask) != 0)
            err = CopyBytes(src, srcOff, dst, dstOff, len, ref copied);
        else
        {
            // Head up to the first block boundary, whole blocks shared, then the tail.
            long head = Math.Min(len, (BlockSize - (srcOff & mask)) & mask);
            err = head > 0 ? CopyBytes(src, srcOff, dst, dstOff, head, ref copied) : 0;
            if (err == 0)
            {
                long rest = len - head;
                long nb = rest >> BlockShift, tail = rest & mask;
                lock (StateLock)
                {
                    if (SourceGone(src) || dst.Deleted) err = src.Live == null && src.Tree.Gone ? Errno.ESTALE : Errno.ENOENT;
                    else
                    {
                        // A partial last block ending at the source's end (its bytes past the end are zero)
                        // may become the destination's last block whole.
                        bool shareTail = tail > 0 && !src.Same(dst) && srcOff + len == SourceSize(src) && dstOff + len >= dst.Rec.Size;
                        long shared = shareTail ? nb + 1 : nb;
                        if (shared > 0)
                        {
                            ShareBlocks(src, (srcOff + head) >> BlockShift, dst, (dstOff + head) >> BlockShift, shared);
                            long end = shareTail ? dstOff + len : dstOff + head + (nb << BlockShift);
                            var rec = Versions.MutableInode(dst);
                            if (end > rec.Size) rec.Size = end;
                            copied += shareTail ? rest : nb << BlockShift;
                        }
                        if (shareTail) tail = 0;
                    }
                }
                if (err == 0 && tail > 0)
                    err = CopyBytes(src, srcOff + len - tail, dst, dstOff + len - tail, tail, ref copied);
            }
        }
        if (copied > 0)
            lock (StateLock)
            {
                var rec = Versions.MutableInode(dst);
                rec.MtimeNs = rec.CtimeNs = NowNs();
            }
        return copied > 0 ? 0 : err;
    }

    /// <summary>
    /// Makes file blocks [dFb, dFb+n) of <paramref name="dst"/> map what [sFb, sFb+n) of
    /// <paramref name="src"/> maps: the destination range is punched first (its old blocks lose this
    /// file's reference exactly as an overwrite would release them, respecting snapshots), then every
    /// mapped run of the source is mapped there with its checksums, each block gaining one reference.
    /// Source holes stay holes. Under <c>StateLock</c>, with both WriteGates held; when the files are one,
    /// the ranges do not overlap. The destination's size is the caller's business.
    /// </summary>
    internal void ShareBlocks(in CloneSource src, long sFb, LiveInode dst, long dFb, long n)
    {
        Iomap.PunchRange(dst, dFb, dFb + n);
        long firstChunk = sFb / ChunkBlocks, lastChunk = (sFb + n - 1) / ChunkBlocks;
        IEnumerable<long> indexes = lastChunk - firstChunk < 64
            ? Enumerable.Range(0, (int)(lastChunk - firstChunk + 1)).Select(i => firstChunk + i)
            : SourceChunks(src).Where(c => c.Index >= firstChunk && c.Index <= lastChunk).Select(c => c.Index).ToList();
        var sums = ArrayPool<uint>.Shared.Rent(ChunkBlocks);
        var pieces = new List<Extent>();
        try
        {
            foreach (long idx in indexes)
            {
                // Copy what the source chunk maps in the range before changing anything: with one file,
                // the destination's chunk may be this very chunk (made private or re-created below).
                var c = SourceChunk(src, idx);
                if (c == null) continue;
                long cStart = idx * ChunkBlocks;
                uint a = (uint)Math.Max(0, sFb - cStart), b = (uint)Math.Min(ChunkBlocks, sFb + n - cStart);
                pieces.Clear();
                ExtentMap.MappedIn(c, a, b, pieces);
                c.Sums.AsSpan((int)a, (int)(b - a)).CopyTo(sums.AsSpan((int)a));
                foreach (var p in pieces)
                    Iomap.RemapRange(dst, cStart + p.First - sFb + dFb, p.Count, p.Device, p.Address, sums.AsSpan((int)p.First, (int)p.Count));
            }
        }
        finally { ArrayPool<uint>.Shared.Return(sums); }
    }

    /// <summary>Copies bytes [srcOff, srcOff+n) of <paramref name="src"/> to <paramref name="dstOff"/> of
    /// <paramref name="dst"/> through the read and write paths (holes are read as zeros and written).
    /// Adds what it wrote to <paramref name="copied"/>. The caller holds both WriteGates.</summary>
    private Errno CopyBytes(in CloneSource src, long srcOff, LiveInode dst, long dstOff, long n, ref long copied)
    {
        var buf = ArrayPool<byte>.Shared.Rent((int)Math.Min(n, CloneCopyBuffer));
        try
        {
            while (n > 0)
            {
                int want = (int)Math.Min(n, CloneCopyBuffer);
                var e = Data.Read(src.Tree, src.Ino, srcOff, buf.AsSpan(0, want), out int got);
                if (e != 0) return e;
                if (got == 0) throw new InvalidOperationException($"clone: inode {src.Ino} shrank under its WriteGate"); // a bug, not an I/O error
                long pos = dstOff;
                int written = 0;
                e = Data.WriteLocked(dst, ref pos, buf.AsSpan(0, got), ref written);
                copied += written;
                if (e != 0) return e;
                srcOff += got; dstOff += got; n -= got;
            }
            return 0;
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }
}
