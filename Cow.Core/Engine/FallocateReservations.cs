using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

// Space reservations of fallocate (mode 0 and FALLOC_FL_KEEP_SIZE), as ext4 and btrfs give them: the call
// fails with ENOSPC when the space is not there, and afterwards writes into the range of a file no snapshot
// shares cannot fail for lack of space.
//
// Cow writes out of place, so a reservation is a count, not blocks set aside. The rule:
// - An inode with fallocated ranges (InodeRecord.Prealloc, persisted) holds prealloc_blocks = the hole blocks
//   in those ranges + the slack (PreallocSlack: the ranges' length, at most 256 blocks). The engine's total of
//   every live inode's prealloc_blocks (SpaceAllocator.Preallocated) is kept out of the free space: statfs does
//   not count it and writes without a reservation may not use it.
// - A write of that file may use, besides the unreserved free space, the reserved holes of the range it
//   writes (filling a hole consumes its reservation: the block is the file's from then on) and the slack,
//   for overwrites of blocks already written in a range: the new block is needed before the old one is
//   freed, and the old one becomes allocatable once the commit that stopped referencing it is durable (the
//   userspace write path commits and retries when it runs short and frees are pending). So overwrites on a
//   full pool progress by up to the slack (one 1 MiB WRITE with 4 KiB blocks) per commit; a file a snapshot
//   or a clone shares does not free its old blocks, and there the promise does not hold (as for btrfs).
// - Punch, truncate and zero range release the reservation of the whole blocks they cover (zero range frees
//   the blocks it deallocates, as punch); deleting the inode releases all of it.
// Between a write's allocation and its commit into the file (ioend) the blocks it fills are counted both as
// allocated and as reserved, so the unreserved free space looks smaller by that much for a moment.

/// <summary>fallocate's space promise (the rule above): reserving, consuming and releasing the per-inode
/// reservations and keeping <see cref="SpaceAllocator.Preallocated"/> their sum. State: none of its own (the
/// reservations live in the inode records, the total in the space allocator). Every member but
/// <see cref="LoadPreallocTotal"/> is called under the engine's <c>_lock</c>.</summary>
internal sealed class FallocateReservations(EngineContext context) : EnginePart(context)
{
    /// <summary>Log blocks held out of the free space by fallocate reservations (statfs, tests).</summary>
    internal long PreallocatedBlocks { get { lock (StateLock) return Space.Preallocated; } }

    /// <summary>Most blocks of overwrite slack a file holds: a whole WRITE (1 MiB) with 4 KiB blocks.</summary>
    internal const long MaxPreallocSlack = 256;

    /// <summary>The overwrite slack of a file with fallocated <paramref name="ranges"/>: their length in
    /// blocks, at most <see cref="MaxPreallocSlack"/>; 0 for none.</summary>
    internal static long PreallocSlack(long[]? ranges)
    {
        long len = 0;
        for (int i = 0; ranges != null && i < ranges.Length && len < MaxPreallocSlack; i += 2) len += ranges[i + 1] - ranges[i];
        return Math.Min(len, MaxPreallocSlack);
    }

    /// <summary>Sums prealloc_blocks over the live inodes from the committed records (at open, after a rollback).</summary>
    internal void LoadPreallocTotal()
    {
        lock (StateLock)
        {
            long t = 0;
            foreach (var r in Store.WithPrealloc(PoolState.LiveGen)) t += r.PreallocBlocks;
            Space.Preallocated = t;
        }
    }

    /// <summary>Blocks of [fb, fb+n) of the live file that are mapped. Under StateLock.</summary>
    private long MappedBlocks(LiveInode li, long fb, long n)
    {
        if (n <= 0) return 0;
        long end = fb + n, firstChunk = fb / ChunkBlocks, lastChunk = (end - 1) / ChunkBlocks, mapped = 0;
        IEnumerable<ChunkRecord?> chunks = lastChunk - firstChunk < 64
            ? Enumerable.Range(0, (int)(lastChunk - firstChunk + 1)).Select(i => LiveChunk(li, firstChunk + i))
            : LiveChunks(li).Where(c => c.Index >= firstChunk && c.Index <= lastChunk);
        foreach (var c in chunks)
        {
            if (c == null) continue;
            long cStart = c.Index * ChunkBlocks;
            foreach (var e in c.Extents)
            {
                long a = Math.Max(fb, cStart + e.First), b = Math.Min(end, cStart + e.End);
                if (a < b) mapped += b - a;
            }
        }
        return mapped;
    }

    /// <summary>Hole blocks of [from, to) that lie in <paramref name="ranges"/>. Under StateLock.</summary>
    private long HolesInRanges(LiveInode li, long[] ranges, long from, long to)
    {
        long holes = 0;
        for (int i = 0; i < ranges.Length; i += 2)
        {
            long a = Math.Max(from, ranges[i]), b = Math.Min(to, ranges[i + 1]);
            if (a < b) holes += (b - a) - MappedBlocks(li, a, b - a);
        }
        return holes;
    }

    /// <summary>The end of the piece of <paramref name="ranges"/> (or of the gap between them) that holds
    /// <paramref name="b"/>, and whether it is in a range.</summary>
    private static long RangePieceEnd(long[] ranges, long b, out bool inRange)
    {
        for (int i = 0; i < ranges.Length; i += 2)
        {
            if (b < ranges[i]) { inRange = false; return ranges[i]; }
            if (b < ranges[i + 1]) { inRange = true; return ranges[i + 1]; }
        }
        inRange = false;
        return long.MaxValue;
    }

    /// <summary><paramref name="ranges"/> with [a, b) added (merged with what it overlaps or touches).</summary>
    internal static long[] RangeAdd(long[]? ranges, long a, long b)
    {
        var list = new List<long>();
        bool placed = false;
        for (int i = 0; ranges != null && i < ranges.Length; i += 2)
        {
            long s = ranges[i], e = ranges[i + 1];
            if (e < a) { list.Add(s); list.Add(e); continue; }
            if (s > b)
            {
                if (!placed) { list.Add(a); list.Add(b); placed = true; }
                list.Add(s); list.Add(e);
                continue;
            }
            a = Math.Min(a, s); b = Math.Max(b, e);
        }
        if (!placed) { list.Add(a); list.Add(b); }
        return list.ToArray();
    }

    /// <summary><paramref name="ranges"/> without [a, b); null when nothing is left.</summary>
    internal static long[]? RangeRemove(long[] ranges, long a, long b)
    {
        var list = new List<long>();
        for (int i = 0; i < ranges.Length; i += 2)
        {
            long s = ranges[i], e = ranges[i + 1];
            if (e <= a || s >= b) { list.Add(s); list.Add(e); continue; }
            if (s < a) { list.Add(s); list.Add(a); }
            if (e > b) { list.Add(b); list.Add(e); }
        }
        return list.Count == 0 ? null : list.ToArray();
    }

    /// <summary>
    /// How many blocks from <paramref name="fb"/> on (at most <paramref name="want"/>) a write of the live
    /// file may allocate now: the unreserved free space, plus its reserved holes in the range, plus its
    /// overwrite slack for written blocks inside a fallocated range. Under StateLock.
    /// </summary>
    internal long WriteAllowance(LiveInode li, long fb, long want)
    {
        long general = FreeForNewWritesLocked();
        var ranges = li.Rec.Prealloc;
        if (ranges == null || general >= want) return Math.Clamp(general, 0, want);
        long slack = PreallocSlack(ranges);
        long b = fb, end = fb + want;
        while (b < end)
        {
            var run = ExtentMap.FindRun(LiveChunk(li, b / ChunkBlocks), b, end - b);
            long pieceEnd = Math.Min(b + run.Blocks, RangePieceEnd(ranges, b, out bool inRange));
            long len = pieceEnd - b;
            if (inRange && run.IsHole) { b = pieceEnd; continue; }   // reserved for exactly this
            long take = Math.Min(len, Math.Max(0, general));
            general -= take; b += take;
            if (take == len) continue;
            if (!inRange || slack == 0) break;
            long more = Math.Min(len - take, slack);
            slack -= more; b += more;
            if (take + more < len) break;
        }
        return b - fb;
    }

    /// <summary>File blocks [fb, fb+n) of <paramref name="li"/> are about to be mapped (a write's ioend, a
    /// clone): the reserved holes among them are the file's now, and stop being held. Under StateLock, before the
    /// extent map changes; <paramref name="rec"/> is the inode's mutable record.</summary>
    internal void ConsumePrealloc(LiveInode li, InodeRecord rec, long fb, long n)
    {
        if (rec.Prealloc == null) return;
        long filled = Math.Min(HolesInRanges(li, rec.Prealloc, fb, fb + n), rec.PreallocBlocks - PreallocSlack(rec.Prealloc));
        if (filled <= 0) return;
        rec.PreallocBlocks -= filled;
        Space.Preallocated -= filled;
    }

    /// <summary>Releases the reservation of file blocks [from, to) (punch, truncate, zero range): the range
    /// leaves the fallocated ranges, its holes stop being held, and the slack shrinks with the ranges (all of
    /// it goes when none is left). Under StateLock, before the extent map changes.</summary>
    internal void ReleasePrealloc(LiveInode li, long from, long to)
    {
        if (li.Rec.Prealloc == null || to <= from) return;
        var rec = Versions.MutableInode(li);
        long holes = HolesInRanges(li, rec.Prealloc!, from, to);
        var left = RangeRemove(rec.Prealloc!, from, to);
        long release = left == null ? rec.PreallocBlocks
            : Math.Clamp(holes + PreallocSlack(rec.Prealloc) - PreallocSlack(left), 0, rec.PreallocBlocks - PreallocSlack(left));
        rec.Prealloc = left;
        rec.PreallocBlocks -= release;
        if (left == null) rec.PreallocBlocks = 0;
        Space.Preallocated -= release;
    }

    /// <summary>The inode is being deleted: its whole reservation goes back to the free space. Under StateLock.</summary>
    internal void DropPrealloc(LiveInode li)
    {
        if (li.Rec.Prealloc == null) return;
        Space.Preallocated -= li.Rec.PreallocBlocks;
    }

    /// <summary>
    /// fallocate mode 0 / KEEP_SIZE of bytes [offset, end): reserves the hole blocks of the range that no
    /// earlier fallocate reserved, and what the slack grows by. ENOSPC, with nothing
    /// changed, when the unreserved free space is smaller. Under the WriteGate.
    /// </summary>
    internal Errno ReserveForFallocate(LiveInode li, long offset, long end)
    {
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            long a = offset >> BlockShift, b = (end + BlockSize - 1) >> BlockShift;
            var ranges = li.Rec.Prealloc;
            long holes = (b - a) - MappedBlocks(li, a, b - a);
            long already = ranges == null ? 0 : HolesInRanges(li, ranges, a, b);
            var grown = RangeAdd(ranges, a, b);
            long need = holes - already + PreallocSlack(grown) - PreallocSlack(ranges);
            if (need > 0 && need > FreeForNewWritesLocked()) return Errno.ENOSPC;
            var rec = Versions.MutableInode(li);
            rec.Prealloc = grown;
            rec.PreallocBlocks += need;
            Space.Preallocated += need;
            return 0;
        }
    }
}
