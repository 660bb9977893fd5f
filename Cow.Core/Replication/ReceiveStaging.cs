using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Replication;

/// <summary>
/// Applies a stream's records as staged versions (format.md 10.5): every version a record makes is born at the
/// receive's generation <c>gen</c> (= live generation + 1), which no view sees until the receive finishes; the live
/// version it replaces or removes dies at <c>gen</c>, so the live view (one generation below) still sees it and the
/// snapshot made at the end does not. A version already staged changes in place. So at any moment the versions
/// visible at <c>gen</c> are the tree the stream has built so far, and a lookup "as of gen" answers what a record
/// applies to.
/// <para>Data goes to newly allocated blocks (the log devices first, as every write) and is mapped by staged chunks,
/// which take a reference on every block they map; a replaced live chunk is retired, keeping its references.</para>
/// <para>Owns the staged state changed since the last commit (<see cref="TakeInto"/> hands it to one) and caches of
/// what it looked up, dropped at each commit. Threading: not thread-safe; the caller holds the engine's commit lock
/// throughout a batch, so nothing else commits, relocates or changes a staged version meanwhile (the live tree refuses
/// changes while a receive is pending). Between batches the log cleaner may move blocks that staged chunks map: its
/// relocation rewrites every chunk document that maps them, staged ones included, and nothing staged is cached here
/// across a commit. The state lock is taken here around record and space changes; device writes happen outside it.</para>
/// </summary>
internal sealed class ReceiveStaging(EngineContext context, long gen) : EnginePart(context)
{
    private readonly Dictionary<long, InodeRecord?> _inodes = new();
    private readonly Dictionary<long, Dictionary<string, DirentRecord>> _dirs = new();
    private readonly Dictionary<(long, long), ChunkRecord?> _chunks = new();
    private readonly HashSet<InodeRecord> _dirtyInodes = new(ReferenceEqualityComparer.Instance);
    private readonly HashSet<DirentRecord> _dirtyDirents = new(ReferenceEqualityComparer.Instance);
    private readonly HashSet<ChunkRecord> _dirtyChunks = new(ReferenceEqualityComparer.Instance);
    private readonly MetadataBatch _removals = new();
    /// <summary>Inodes this batch made (no version before it): their directories start empty and they have no chunk, so
    /// neither is looked up in the store.</summary>
    private readonly HashSet<long> _created = new();
    private readonly List<Extent> _scratch = new();
    /// <summary>Inodes whose inode record this receive staged (kept across commits): with <see cref="NoPriorInodes"/>, the
    /// only ones besides the root that the store can hold as of gen.</summary>
    private readonly HashSet<long> _staged = new();

    /// <summary>As of gen, no inode but the root has a version that this receive did not stage itself (a full stream into
    /// an empty pool, nothing staged before it): an inode not staged by it is not looked up in the store.</summary>
    public bool NoPriorInodes { get; init; }

    /// <summary>Data blocks written since the last commit.</summary>
    public long PendingBytes { get; private set; }
    public long DataBytes { get; private set; }
    /// <summary>Why the last record was refused (with the errno <see cref="Apply"/> returned).</summary>
    public string? Problem { get; private set; }

    /// <summary>Applies one record (not the header or end). EINVAL (with <see cref="Problem"/>) when the record does
    /// not fit the tree built so far (the stream is not for this base, or is malformed); ENOSPC when the devices are
    /// full; EIO on a device write failure (reported).</summary>
    public Errno Apply(StreamRecord r)
    {
        Problem = null;
        switch (r.Type)
        {
            case StreamRecordType.Inode: lock (StateLock) return PutInode(r.Inode!);
            case StreamRecordType.InodeGone: lock (StateLock) return RemoveInode(r.Ino);
            case StreamRecordType.Entry: lock (StateLock) return PutEntry(r.Ino, r.Name!, r.Pos, r.Other, r.EntryType);
            case StreamRecordType.EntryGone: lock (StateLock) return RemoveEntry(r.Ino, r.Name!);
            case StreamRecordType.Data: return PutData(r.Ino, r.Pos, r.Data.Span);
            case StreamRecordType.Hole: lock (StateLock) return Punch(r.Ino, r.Pos, r.Length);
            case StreamRecordType.Clone: lock (StateLock) return CloneRange(r.Ino, r.Pos, r.Length, r.Other, r.OtherPos);
            default: return Refuse($"record type {(uint)r.Type} cannot be applied");
        }
    }

    private Errno Refuse(string problem)
    {
        Problem = problem;
        return Errno.EINVAL;
    }

    // ---------------------------------------------------------------- lookups as of gen

    private InodeRecord? CurrentInode(long ino)
    {
        if (!_inodes.TryGetValue(ino, out var r))
            _inodes[ino] = r = NoPriorInodes && ino != RootIno && !_staged.Contains(ino) ? null : Store.LoadInode(ino, gen);
        return r;
    }

    private Dictionary<string, DirentRecord> CurrentDir(long dir)
    {
        if (!_dirs.TryGetValue(dir, out var d))
        {
            d = new Dictionary<string, DirentRecord>(StringComparer.Ordinal);
            if (!_created.Contains(dir)) foreach (var e in Store.LoadDirectory(dir, gen)) d[e.Name] = e;
            _dirs[dir] = d;
        }
        return d;
    }

    private ChunkRecord? CurrentChunk(long ino, long index)
    {
        // An inode this batch made has no chunk but those this batch made, which are all here.
        if (!_chunks.TryGetValue((ino, index), out var c))
            _chunks[(ino, index)] = c = _created.Contains(ino) ? null : Store.LoadChunk(ino, index, gen);
        return c;
    }

    /// <summary>Every chunk of <paramref name="ino"/> as of gen, in index order.</summary>
    private List<ChunkRecord> CurrentChunks(long ino)
    {
        var byIndex = Store.LoadChunks(ino, gen).ToDictionary(c => c.Index);
        foreach (var ((i, index), c) in _chunks)
            if (i == ino) { if (c == null) byIndex.Remove(index); else byIndex[index] = c; }
        return byIndex.Values.OrderBy(c => c.Index).ToList();
    }

    private bool Staged(VersionedRecord r) => r.Birth == gen;

    /// <summary>Ends a version as of gen: a staged one is deleted (a chunk drops its references), a live one dies at gen
    /// (a chunk's references turn from live to retired).</summary>
    private void EndVersion(VersionedRecord r)
    {
        if (Staged(r))
        {
            switch (r)
            {
                case InodeRecord i: _dirtyInodes.Remove(i); _removals.DeletedInodes.Add(r.Rid); break;
                case DirentRecord d: _dirtyDirents.Remove(d); _removals.DeletedDirents.Add(r.Rid); break;
                case ChunkRecord c:
                    foreach (var e in c.Extents) Space.Release(e.Device, e.Address, e.Count);
                    _dirtyChunks.Remove(c); _removals.DeletedChunks.Add(r.Rid);
                    break;
            }
            return;
        }
        _removals.Retire(r, gen);
        if (r is ChunkRecord lc) foreach (var e in lc.Extents) Space.Retire(e.Device, e.Address, e.Count);
    }

    // ---------------------------------------------------------------- inodes

    private Errno PutInode(StreamInode s)
    {
        // The pool's next inode number goes past every inode received: it must stay a valid number (a forged
        // long.MaxValue would wrap it, and the live tree would then make inodes with negative numbers).
        if (s.Ino == long.MaxValue) return Refuse($"inode number {s.Ino} is out of range");
        var cur = CurrentInode(s.Ino);
        if (cur != null && (cur.Mode & S_IFMT) != (s.Mode & S_IFMT)) return Refuse($"inode {s.Ino} changes file type (the stream is not for this pool's base)");
        InodeRecord r;
        if (cur != null && Staged(cur)) r = cur;
        else
        {
            if (cur != null) EndVersion(cur);
            else _created.Add(s.Ino);
            r = new InodeRecord { Rid = Versions.NewRid(), Birth = gen, Ino = s.Ino, Blocks = cur?.Blocks ?? 0 };
            _inodes[s.Ino] = r;
        }
        r.Mode = s.Mode; r.Uid = s.Uid; r.Gid = s.Gid; r.Nlink = s.Nlink; r.Size = s.Size; r.Rdev = s.Rdev;
        r.AtimeNs = s.AtimeNs; r.MtimeNs = s.MtimeNs; r.CtimeNs = s.CtimeNs; r.BtimeNs = s.BtimeNs;
        r.Parent = s.Parent; r.NextPos = s.NextPos; r.Target = s.Target;
        r.Xattrs = s.Xattrs.Count == 0 ? null : s.Xattrs.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        r.Prealloc = null; r.PreallocBlocks = 0;
        _dirtyInodes.Add(r);
        _staged.Add(s.Ino);
        if (s.Ino >= PoolState.NextIno) PoolState.NextIno = s.Ino + 1;
        return 0;
    }

    /// <summary>The staged version of regular file <paramref name="ino"/> (copied from the live one when there is no
    /// staged one yet), to account its mapped blocks.</summary>
    private InodeRecord? MutableFile(long ino, out Errno e)
    {
        e = 0;
        var cur = CurrentInode(ino);
        if (cur == null || (cur.Mode & S_IFMT) != S_IFREG) { e = Refuse($"data for inode {ino}, which is not a regular file here"); return null; }
        if (!Staged(cur))
        {
            EndVersion(cur);
            var c = cur.Clone();
            c.Rid = Versions.NewRid(); c.Birth = gen; c.Death = FormatConstants.Forever; c.Prealloc = null; c.PreallocBlocks = 0;
            _inodes[ino] = cur = c;
        }
        _dirtyInodes.Add(cur);
        return cur;
    }

    private Errno RemoveInode(long ino)
    {
        var cur = CurrentInode(ino);
        if (cur == null) return Refuse($"inode {ino} to remove does not exist here");
        if (ino == RootIno) return Refuse("the stream removes the root directory");
        foreach (var c in CurrentChunks(ino)) { EndVersion(c); _chunks[(ino, c.Index)] = null; }
        if ((cur.Mode & S_IFMT) == S_IFDIR)
        {
            var dir = CurrentDir(ino);
            foreach (var d in dir.Values) EndVersion(d);
            dir.Clear();
        }
        EndVersion(cur);
        _inodes[ino] = null;
        return 0;
    }

    // ---------------------------------------------------------------- entries

    private Errno PutEntry(long dir, string name, long pos, long child, uint type)
    {
        var d = CurrentInode(dir);
        if (d == null || (d.Mode & S_IFMT) != S_IFDIR) return Refuse($"entry '{name}' in inode {dir}, which is not a directory here");
        if (child < 1 || pos < 0) return Refuse($"entry '{name}' in directory {dir} names inode {child} at position {pos}");
        var entries = CurrentDir(dir);
        if (entries.TryGetValue(name, out var cur) && Staged(cur))
        {
            cur.Pos = pos; cur.Child = child; cur.Type = type;
            _dirtyDirents.Add(cur);
            return 0;
        }
        if (cur != null) EndVersion(cur);
        var n = new DirentRecord { Rid = Versions.NewRid(), Birth = gen, Dir = dir, Name = name, Pos = pos, Child = child, Type = type };
        entries[name] = n;
        _dirtyDirents.Add(n);
        return 0;
    }

    private Errno RemoveEntry(long dir, string name)
    {
        if (CurrentInode(dir) is not { } d || (d.Mode & S_IFMT) != S_IFDIR) return Refuse($"entry '{name}' to remove is in inode {dir}, which is not a directory here");
        var entries = CurrentDir(dir);
        if (!entries.Remove(name, out var cur)) return Refuse($"entry '{name}' to remove from directory {dir} does not exist here (the stream is not for this pool's base)");
        EndVersion(cur);
        return 0;
    }

    // ---------------------------------------------------------------- data

    /// <summary>The staged chunk <paramref name="index"/> of <paramref name="ino"/>, made if absent, copied (with a
    /// reference on every block it maps) from the live one if that is all there is.</summary>
    private ChunkRecord MutableChunk(long ino, long index)
    {
        var cur = CurrentChunk(ino, index);
        if (cur == null) cur = new ChunkRecord { Rid = Versions.NewRid(), Birth = gen, Ino = ino, Index = index };
        else if (!Staged(cur))
        {
            EndVersion(cur);
            var n = cur.CloneAsNewVersion();
            n.Rid = Versions.NewRid(); n.Birth = gen; n.Death = FormatConstants.Forever;
            foreach (var e in n.Extents) Space.AddRef(e.Device, e.Address, e.Count);
            cur = n;
        }
        _chunks[(ino, index)] = cur;
        _dirtyChunks.Add(cur);
        return cur;
    }

    private bool Aligned(long v) => (v & (BlockSize - 1)) == 0;

    /// <summary>Whether bytes [pos, pos + length) lie within the largest file. The decoder refuses negative offsets and
    /// lengths; the sum is not formed, because a huge length from a damaged or forged record would overflow it past
    /// the check (a clone would then loop over 2^51 blocks, data would land at an absurd offset).</summary>
    private static bool WithinFile(long pos, long length) => pos <= MaxFileSize && length <= MaxFileSize - pos;

    private Errno PutData(long ino, long pos, ReadOnlySpan<byte> data)
    {
        if (!Aligned(pos) || !Aligned(data.Length) || data.Length == 0 || !WithinFile(pos, data.Length))
            return Refuse($"data for inode {ino} at {pos}, {data.Length} bytes, is not whole blocks of {BlockSize} bytes within the largest file");
        Errno e;
        lock (StateLock) if (MutableFile(ino, out e) == null) return e;
        long fb = pos >> BlockShift, n = data.Length >> BlockShift;
        var sums = new uint[Math.Min(n, ChunkBlocks)];
        while (n > 0)
        {
            long got, start;
            uint dev;
            IomapService.NewSegment? header = null;
            lock (StateLock)
            {
                got = Space.AllocateForWrite(Math.Min(n, ChunkBlocks), out dev, out start);
                if (got == 0) { Problem = "the pool is full"; return Errno.ENOSPC; }
                if (Space[dev].Role == DeviceRole.Log) header = Iomap.NewSegmentHeader(Space[dev], start);
            }
            var part = data[..(int)(got << BlockShift)];
            var e2 = WriteData(dev, start, part, header);
            if (e2 != 0)
            {
                lock (StateLock) Space[dev].Unreserve(start, got);
                return e2;
            }
            if (header != null) lock (StateLock) Iomap.SegmentHeaderWritten(Space[dev], header);
            NoteDeviceWrite(dev);
            for (int i = 0; i < got; i++) sums[i] = Crc32C.Compute(part.Slice(i << BlockShift, BlockSize));
            lock (StateLock) Map(ino, fb, got, dev, start, sums);
            data = data[part.Length..];
            fb += got; n -= got;
            PendingBytes += part.Length; DataBytes += part.Length;
        }
        return 0;
    }

    /// <summary>Writes <paramref name="part"/> at block <paramref name="start"/> of device <paramref name="dev"/>, and the new
    /// segment's <paramref name="header"/> first: in the same write when the data follows it (the allocator's first block
    /// of a segment), so the device sees one large write and no small one between (a small write into a file being written
    /// with O_DIRECT waits for those writes to land).</summary>
    private Errno WriteData(uint dev, long start, ReadOnlySpan<byte> part, IomapService.NewSegment? header)
    {
        long at = start;
        try
        {
            if (header == null) Devices[dev].Write(start << BlockShift, part);
            else if (start == header.Segment * FormatConstants.SegmentBlocks + 1)
            {
                at = start - 1;
                var both = System.Buffers.ArrayPool<byte>.Shared.Rent(BlockSize + part.Length);
                try
                {
                    header.Block.CopyTo(both, 0);
                    part.CopyTo(both.AsSpan(BlockSize));
                    Devices[dev].Write(at << BlockShift, both.AsSpan(0, BlockSize + part.Length));
                }
                finally { System.Buffers.ArrayPool<byte>.Shared.Return(both); }
            }
            else
            {
                at = header.Segment * FormatConstants.SegmentBlocks;
                Devices[dev].Write(at << BlockShift, header.Block);
                at = start;
                Devices[dev].Write(start << BlockShift, part);
            }
            return 0;
        }
        catch (IOException ex)
        {
            Report($"receive: write error on device {dev} block {at}: {ex.Message}");
            Problem = $"write error on device {dev}: {ex.Message}";
            return Errno.EIO;
        }
    }

    /// <summary>Maps file blocks [fb, fb+n) of the staged file at device blocks [addr, addr+n). Under StateLock.</summary>
    private void Map(long ino, long fb, long n, uint dev, long addr, uint[] sums)
    {
        var rec = _inodes[ino]!;
        var release = Space.Releaser;
        int si = 0;
        while (n > 0)
        {
            long idx = fb / ChunkBlocks;
            uint cb = (uint)(fb - idx * ChunkBlocks), len = (uint)Math.Min(n, ChunkBlocks - cb);
            var c = MutableChunk(ino, idx);
            long removed = ExtentMap.Remap(c, cb, len, dev, addr, sums.AsSpan(si, (int)len), ref release);
            Space.AddRef(dev, addr, len);
            rec.Blocks += len - removed;
            fb += len; addr += len; n -= len; si += (int)len;
        }
    }

    private Errno Punch(long ino, long pos, long length)
    {
        if (!Aligned(pos) || !Aligned(length) || length == 0 || !WithinFile(pos, length)) return Refuse($"hole in inode {ino} at {pos}, {length} bytes, is not whole blocks within the largest file");
        var rec = MutableFile(ino, out var e);
        if (rec == null) return e;
        long from = pos >> BlockShift, to = (pos + length) >> BlockShift;
        var release = Space.Releaser;
        foreach (var c0 in CurrentChunks(ino))
        {
            long start = c0.Index * ChunkBlocks;
            if (start + ChunkBlocks <= from || start >= to) continue;
            var c = MutableChunk(ino, c0.Index);
            uint a = (uint)Math.Max(0, from - start), b = (uint)Math.Min(ChunkBlocks, to - start);
            rec.Blocks -= ExtentMap.Punch(c, a, b, ref release);
            if (c.Extents.Count == 0) { EndVersion(c); _chunks[(ino, c.Index)] = null; }
        }
        return 0;
    }

    private Errno CloneRange(long ino, long pos, long length, long src, long srcPos)
    {
        if (!Aligned(pos) || !Aligned(length) || !Aligned(srcPos) || length == 0 || !WithinFile(pos, length) || !WithinFile(srcPos, length))
            return Refuse($"clone into inode {ino} at {pos}, {length} bytes, from inode {src} at {srcPos} is not whole blocks within the largest file");
        if (CurrentInode(src) is not { } s || (s.Mode & S_IFMT) != S_IFREG) return Refuse($"clone from inode {src}, which is not a regular file here");
        if (src == ino && pos < srcPos + length && srcPos < pos + length) return Refuse($"clone within inode {ino} over overlapping ranges");
        var rec = MutableFile(ino, out var e);
        if (rec == null) return e;
        long fb = pos >> BlockShift, sb = srcPos >> BlockShift, n = length >> BlockShift;
        var release = Space.Releaser;
        var gain = new AddRefSink(Space);
        // A range of a few chunks is walked chunk by chunk (each looked up once, then cached). A longer one visits only
        // the destination chunks that something maps (a chunk of the destination in the range, or one a source chunk
        // lands on), found from both files' chunk lists: the cost follows the chunks, not the length, which a damaged
        // or forged record may make a petabyte of holes.
        long firstChunk = fb / ChunkBlocks, lastChunk = (fb + n - 1) / ChunkBlocks;
        IEnumerable<long> visit = lastChunk - firstChunk < WalkedCloneChunks
            ? Enumerable.Range(0, (int)(lastChunk - firstChunk + 1)).Select(i => firstChunk + i)
            : ChunksTouched(ino, fb, src, sb, n);
        foreach (long di in visit)
        {
            long first = Math.Max(fb, di * ChunkBlocks), end = Math.Min(fb + n, (di + 1) * ChunkBlocks);
            for (long d = first; d < end;)
            {
                long from0 = sb + (d - fb), si = from0 / ChunkBlocks;
                uint dcb = (uint)(d - di * ChunkBlocks), scb = (uint)(from0 - si * ChunkBlocks);
                uint len = (uint)Math.Min(end - d, ChunkBlocks - scb);
                var from = CurrentChunk(src, si);
                if (from != null || CurrentChunk(ino, di) != null)
                {
                    var dst = MutableChunk(ino, di);
                    if (from == null) rec.Blocks -= ExtentMap.Punch(dst, dcb, dcb + len, ref release);
                    else rec.Blocks += ExtentMap.Clone(from, scb, scb + len, dst, dcb, _scratch, ref release, ref gain);
                    if (dst.Extents.Count == 0) { EndVersion(dst); _chunks[(ino, di)] = null; }
                }
                d += len;
            }
        }
        return 0;
    }

    /// <summary>Clones spanning fewer destination chunks than this are walked chunk by chunk: a sender's clone records
    /// are runs of shared extents, mostly within a chunk or two, and listing both files' chunks for each would cost
    /// their whole extent maps per record.</summary>
    private const int WalkedCloneChunks = 64;

    /// <summary>The indexes, ascending, of the chunks of <paramref name="ino"/> that a clone of <paramref name="n"/>
    /// blocks from block <paramref name="sb"/> of <paramref name="src"/> to block <paramref name="fb"/> must visit:
    /// those of the destination that exist within the range, and those a chunk of the source within its range lands
    /// on. What a chunk maps does not matter here: a chunk is visited or not.</summary>
    private SortedSet<long> ChunksTouched(long ino, long fb, long src, long sb, long n)
    {
        var touched = new SortedSet<long>();
        foreach (var c in CurrentChunks(ino))
            if (c.Index * ChunkBlocks < fb + n && (c.Index + 1) * ChunkBlocks > fb) touched.Add(c.Index);
        foreach (var c in CurrentChunks(src))
        {
            long a = Math.Max(sb, c.Index * ChunkBlocks), b = Math.Min(sb + n, (c.Index + 1) * ChunkBlocks);
            if (a >= b) continue;
            touched.Add((fb + (a - sb)) / ChunkBlocks);
            touched.Add((fb + (b - 1 - sb)) / ChunkBlocks);
        }
        return touched;
    }

    private readonly struct AddRefSink(SpaceAllocator space) : IDeviceRangeSink
    {
        public void Add(uint device, long address, long blocks) => space.AddRef(device, address, blocks);
    }

    // ---------------------------------------------------------------- commit

    /// <summary>Hands every staged change since the last commit to <paramref name="batch"/> and drops the caches.
    /// Under StateLock (inside the commit).</summary>
    public void TakeInto(MetadataBatch batch)
    {
        batch.Retired.AddRange(_removals.Retired);
        batch.DeletedInodes.AddRange(_removals.DeletedInodes);
        batch.DeletedDirents.AddRange(_removals.DeletedDirents);
        batch.DeletedChunks.AddRange(_removals.DeletedChunks);
        foreach (var r in _dirtyInodes) batch.Add(r);
        foreach (var d in _dirtyDirents) batch.Add(d);
        foreach (var c in _dirtyChunks) batch.Add(c);
        _removals.Retired.Clear(); _removals.DeletedInodes.Clear(); _removals.DeletedDirents.Clear(); _removals.DeletedChunks.Clear();
        _dirtyInodes.Clear(); _dirtyDirents.Clear(); _dirtyChunks.Clear();
        _inodes.Clear(); _dirs.Clear(); _chunks.Clear();
        _created.Clear();   // their entries are in the store now: a later batch looks names up there
        PendingBytes = 0;
    }

    /// <summary>Changed records waiting for the next commit, counted as the engine's group commit counts them (a chunk as
    /// <see cref="CacheBudget.ChunkRecordWeight"/>), for the same threshold.</summary>
    public int PendingRecords => _dirtyInodes.Count + _dirtyDirents.Count + CacheBudget.ChunkRecordWeight * _dirtyChunks.Count + _removals.Count;
}
