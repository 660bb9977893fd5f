using Cow.Core.Engine;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Replication;

/// <summary>What a send wrote.</summary>
public readonly record struct SendSummary(long StreamBytes, long Records, long Inodes, long DataBytes, long CloneBytes, long HoleBytes);

/// <summary>
/// <c>cow send</c>: writes a snapshot, or what changed from an older one, as a stream (format.md 10).
/// <para>What is sent follows the change: an incremental stream's inodes are the ones whose records were born or died
/// between the two generations (the birth and death indexes, as <c>snapshot diff</c> finds them), and a file's data
/// is the blocks whose mapping differs (<see cref="ChangedRanges"/>); a full stream walks the snapshot's tree. Data
/// is read from the snapshot's extent maps with its checksums verified. A device range already sent in this stream
/// (a clone or reflink of another file) is sent again as a clone record naming where it was sent.</para>
/// <para>The bytes are a pure function of the two snapshots: sent again they are the same, so a resumed send skips
/// to the receiver's offset (records before it are sized, not read).</para>
/// <para>Threading: thread-safe. The change set is read under the commit and state locks (one indexed query);
/// each inode's records under the state lock; data outside both (<see cref="FileDataPath.ReadBlocks"/> guards
/// against moved blocks). A snapshot deleted during the send ends it with ESTALE.</para>
/// </summary>
internal sealed class StreamSender(EngineContext context) : EnginePart(context)
{
    /// <summary>The identity of a snapshot of this pool (format.md 10): its source's when it was received.</summary>
    internal SnapshotIdentity IdentityOf(SnapshotRecord s) =>
        s.SourcePool != Guid.Empty ? new SnapshotIdentity(s.SourcePool, s.SourceGen) : new SnapshotIdentity(PoolState.PoolUuid, s.Gen);

    /// <summary>The snapshot with identity <paramref name="id"/>, or null. Caller holds StateLock.</summary>
    internal SnapshotRecord? FindByIdentity(SnapshotIdentity id) => Snapshots.All.FirstOrDefault(s => IdentityOf(s) == id);

    /// <summary>
    /// Writes snapshot <paramref name="name"/> (from snapshot <paramref name="fromName"/> when given) to
    /// <paramref name="output"/>; with <paramref name="resume"/>, only what follows the token's offset. ENOENT a
    /// snapshot does not exist (<paramref name="problem"/> says which), EINVAL the base is not older than the
    /// snapshot or the token names other snapshots or offset, ESTALE a snapshot was deleted meanwhile, EIO a read or
    /// checksum failure (reported). An exception from <paramref name="output"/> (a closed pipe) propagates.
    /// </summary>
    public Errno Send(string? name, string? fromName, ResumeToken? resume, Stream output, out SendSummary summary, out string? problem)
    {
        summary = default;
        problem = null;
        SnapshotRecord? snap, from = null;
        lock (StateLock)
        {
            if (resume is { } t)
            {
                snap = FindByIdentity(t.Snapshot);
                if (snap == null) { problem = $"this pool holds no snapshot with identity {t.Snapshot} (the token's)"; return Errno.ENOENT; }
                if (!t.Base.IsNone && (from = FindByIdentity(t.Base)) == null) { problem = $"this pool holds no snapshot with identity {t.Base} (the token's base)"; return Errno.ENOENT; }
            }
            else
            {
                snap = Snapshots.Find(name!);
                if (snap == null) { problem = $"no snapshot named '{name}'"; return Errno.ENOENT; }
                if (fromName != null && (from = Snapshots.Find(fromName)) == null) { problem = $"no snapshot named '{fromName}'"; return Errno.ENOENT; }
            }
            if (from != null && from.Gen >= snap.Gen) { problem = $"the base '{from.Name}' is not older than '{snap.Name}'"; return Errno.EINVAL; }
        }
        var header = new StreamHeader(BlockSize, IdentityOf(snap), from == null ? default : IdentityOf(from), snap.CreatedNs,
            resume?.Offset ?? 0, resume?.Chain ?? new byte[StreamFormat.ChainBytes], snap.Name);
        using var w = new StreamWriter(output);
        var run = new SendRun(this, w, snap.Gen, from?.Gen);
        try
        {
            w.WriteHeader(header);
            var e = run.Run();
            if (e != 0) { problem = run.Problem; return e; }
            w.WriteEnd();
        }
        catch (InvalidDataException ex) when (resume != null)
        {
            problem = ex.Message;
            return Errno.EINVAL;
        }
        summary = new SendSummary(w.BytesWritten, w.Records, run.Inodes, run.DataBytes, run.CloneBytes, run.HoleBytes);
        return 0;
    }

    /// <summary>One send: the two views, the writer and the device ranges sent so far.</summary>
    private sealed class SendRun(StreamSender s, StreamWriter w, long gen, long? baseGen)
    {
        /// <summary>Device ranges sent as data: where in which file they went.</summary>
        private readonly SentIndex _sent = new();
        public long Inodes, DataBytes, CloneBytes, HoleBytes;
        public string? Problem;
        private ITreeReader _b = null!;
        private ITreeReader? _a;

        public Errno Run()
        {
            List<long> inos;
            Dictionary<long, List<DirentRecord>> changedEntries = new();
            lock (s.CommitLock)
                lock (s.StateLock)
                {
                    _b = s.Snapshots.View(gen);
                    _a = baseGen is { } bg ? s.Snapshots.View(bg) : null;
                    if (baseGen is { } ga)
                    {
                        var (set, dirents) = s.Store.FindChangedBetween(ga, gen);
                        foreach (var d in dirents)
                        {
                            set.Add(d.Dir);
                            (changedEntries.TryGetValue(d.Dir, out var l) ? l : changedEntries[d.Dir] = new()).Add(d);
                        }
                        inos = set.Order().ToList();
                    }
                    else inos = Reachable();
                }
            foreach (long ino in inos)
            {
                var e = SendInode(ino, changedEntries.GetValueOrDefault(ino));
                if (e != 0) return e;
            }
            return 0;
        }

        /// <summary>Every inode of the snapshot's tree, ascending. Under StateLock.</summary>
        private List<long> Reachable()
        {
            var seen = new HashSet<long> { RootIno };
            var dirs = new Queue<long>();
            dirs.Enqueue(RootIno);
            while (dirs.Count > 0)
                foreach (var d in _b.Dir(dirs.Dequeue())?.ByPos.Values ?? [])
                    if (seen.Add(d.Child) && d.Type == 4) dirs.Enqueue(d.Child);
            return seen.Order().ToList();
        }

        private const long RootIno = Engine.Engine.RootIno;

        private static InodeRecord? Present(ITreeReader? t, long ino) =>
            t?.Inode(ino) is { } r && (ino == RootIno || r.Nlink > 0) ? r : null;

        private Errno SendInode(long ino, List<DirentRecord>? entries)
        {
            InodeRecord? ra, rb;
            List<ChunkRecord> ca = [], cb = [];
            DirState? dir = null;
            lock (s.StateLock)
            {
                if (_b.Gone || _a is { Gone: true }) { Problem = "a snapshot was deleted during the send"; return Errno.ESTALE; }
                ra = Present(_a, ino);
                rb = Present(_b, ino);
                if (rb != null && (rb.Mode & 0xF000) == 0x8000)
                {
                    cb = _b.Chunks(ino);
                    if (ra != null && (ra.Mode & 0xF000) == 0x8000) ca = _a!.Chunks(ino);
                }
                if (rb != null && (rb.Mode & 0xF000) == 0x4000 && _a == null) dir = _b.Dir(ino);
            }
            if (rb == null)
            {
                if (ra != null) w.Write(StreamRecordType.InodeGone, StreamCodec.Longs(ino));
                return 0;
            }
            Inodes++;
            if (ra == null || ra.Rid != rb.Rid) w.Write(StreamRecordType.Inode, StreamCodec.Inode(ToStream(rb)));
            if (dir != null)
                foreach (var d in dir.ByPos.Values) w.Write(StreamRecordType.Entry, StreamCodec.Entry(d.Dir, d.Pos, d.Child, d.Type, d.Name));
            else if (entries != null) SendChangedEntries(entries);
            return cb.Count > 0 || ca.Count > 0 ? SendData(ino, ca, cb) : 0;
        }

        /// <summary>An incremental stream's entry changes of one directory: names gone (not named again), then names
        /// the snapshot has that the base did not see (new, renamed to, or pointing elsewhere).</summary>
        private void SendChangedEntries(List<DirentRecord> entries)
        {
            var now = entries.Where(d => d.VisibleAt(gen)).OrderBy(d => d.Pos).ToList();
            var names = now.Select(d => d.Name).ToHashSet(StringComparer.Ordinal);
            foreach (var d in entries.Where(d => d.VisibleAt(baseGen!.Value) && !names.Contains(d.Name)).OrderBy(d => d.Name, StringComparer.Ordinal))
                w.Write(StreamRecordType.EntryGone, StreamCodec.EntryGone(d.Dir, d.Name));
            foreach (var d in now) w.Write(StreamRecordType.Entry, StreamCodec.Entry(d.Dir, d.Pos, d.Child, d.Type, d.Name));
        }

        private static StreamInode ToStream(InodeRecord r) => new(r.Ino, r.Mode, r.Uid, r.Gid, r.Nlink, r.Size, r.Rdev,
            r.AtimeNs, r.MtimeNs, r.CtimeNs, r.BtimeNs, r.Parent, r.NextPos, r.Target,
            r.Xattrs == null ? [] : r.Xattrs.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList());

        /// <summary>The blocks of a file whose mapping changed: data (or a clone of a range sent before), holes. Record
        /// boundaries depend only on the file's logical layout (which blocks changed, which share blocks sent before and
        /// where those went), never on where the blocks lie on the devices: data records end at file offsets that are
        /// multiples of <see cref="StreamFormat.DataRecordBytes"/>, clone records where their source stops being
        /// contiguous. So a stream sent again after the cleaner moved blocks is the same bytes (a resume needs that).</summary>
        private Errno SendData(long ino, List<ChunkRecord> older, List<ChunkRecord> newer)
        {
            int shift = s.BlockShift;
            var byIndex = newer.ToDictionary(c => c.Index);
            foreach (var run in ChangedRanges.Between(older, newer))
            {
                if (!run.Mapped)
                {
                    w.Write(StreamRecordType.Hole, StreamCodec.Longs(ino, run.FileBlock << shift, run.Blocks << shift));
                    HoleBytes += run.Blocks << shift;
                    continue;
                }
                _pending = default;
                for (long fb = run.FileBlock; fb < run.End;)
                {
                    var m = ExtentMap.FindRun(byIndex.GetValueOrDefault(fb / ChunkBlocksL), fb, run.End - fb);
                    var e = m.IsHole ? Flush(ino) : Classify(ino, fb, m.Blocks, m.Device, m.Address);
                    if (e != 0) return e;
                    fb += m.Blocks;
                }
                var fe = Flush(ino);
                if (fe != 0) return fe;
            }
            return 0;
        }

        private const long ChunkBlocksL = Format.FormatConstants.ChunkBlocks;

        /// <summary>The run of file blocks being gathered into records: data (<see cref="Pending.SrcIno"/> 0) or a clone of
        /// <see cref="Pending.SrcIno"/> from <see cref="Pending.SrcBlock"/>.</summary>
        private record struct Pending(long FileBlock, long Blocks, long SrcIno, long SrcBlock);
        private Pending _pending;

        /// <summary>File blocks [fb, fb+n) mapped at device blocks [addr, addr+n): each part sent before becomes (part of)
        /// a clone, the rest data; adjacent parts of one kind and contiguous source are gathered.</summary>
        private Errno Classify(long ino, long fb, long n, uint dev, long addr)
        {
            while (n > 0)
            {
                long take = n, srcIno = 0, srcBlock = 0;
                if (_sent.Find(dev, addr) is { } f)
                {
                    take = Math.Min(n, f.Address + f.Blocks - addr);
                    srcIno = f.Ino; srcBlock = f.FileBlock + (addr - f.Address);
                }
                else
                {
                    take = _sent.NextStart(dev, addr, addr + n) - addr;
                    _sent.Add(new SentRange(dev, addr, take, ino, fb));
                }
                var p = _pending;
                bool joins = p.Blocks > 0 && p.FileBlock + p.Blocks == fb && p.SrcIno == srcIno && (srcIno == 0 || p.SrcBlock + p.Blocks == srcBlock);
                if (joins) _pending = p with { Blocks = p.Blocks + take };
                else
                {
                    var e = Flush(ino);
                    if (e != 0) return e;
                    _pending = new Pending(fb, take, srcIno, srcBlock);
                }
                fb += take; addr += take; n -= take;
            }
            return 0;
        }

        /// <summary>Sends the gathered run: one clone record, or data records cut at multiples of the data record size.</summary>
        private Errno Flush(long ino)
        {
            var p = _pending;
            _pending = default;
            if (p.Blocks == 0) return 0;
            int shift = s.BlockShift;
            if (p.SrcIno != 0)
            {
                w.Write(StreamRecordType.Clone, StreamCodec.Longs(ino, p.FileBlock << shift, p.Blocks << shift, p.SrcIno, p.SrcBlock << shift));
                CloneBytes += p.Blocks << shift;
                return 0;
            }
            long per = StreamFormat.DataRecordBytes >> shift;
            for (long fb = p.FileBlock, end = p.FileBlock + p.Blocks; fb < end;)
            {
                long n = Math.Min(end, (fb / per + 1) * per) - fb;
                var e = SendDataRecord(ino, fb, n);
                if (e != 0) return e;
                fb += n;
            }
            return 0;
        }

        private Errno SendDataRecord(long ino, long fb, long blocks)
        {
            int shift = s.BlockShift, len = (int)(blocks << shift);
            // Read straight into the buffer the writer takes over: no copy of the data between here and the output.
            var buf = System.Buffers.ArrayPool<byte>.Shared.Rent(16 + len);
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(buf, ino);
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(buf.AsSpan(8), fb << shift);
            if (!w.Skipping)
            {
                var e = s.Data.ReadBlocks(_b, ino, fb, blocks, buf.AsSpan(16, len));
                if (e != 0)
                {
                    System.Buffers.ArrayPool<byte>.Shared.Return(buf);
                    Problem = e == Errno.ESTALE ? "a snapshot was deleted during the send" : $"reading inode {ino} at {fb << shift} failed";
                    return e;
                }
            }
            w.WriteRented(StreamRecordType.Data, buf, 16 + len);
            DataBytes += len;
            return 0;
        }
    }

    /// <summary>A device range sent as data: <see cref="Blocks"/> blocks at <see cref="Address"/> of <see cref="Device"/>
    /// went to file block <see cref="FileBlock"/> of inode <see cref="Ino"/>.</summary>
    private readonly record struct SentRange(uint Device, long Address, long Blocks, long Ino, long FileBlock)
    {
        public long End => Address + Blocks;
    }

    /// <summary>The device ranges a send has sent as data, found by block: each range is listed under every segment
    /// (1024 blocks) it covers, so a lookup reads one segment's few ranges whatever the size of the stream. Ranges do not
    /// overlap (a block is sent once). Not thread-safe: one send.</summary>
    private sealed class SentIndex
    {
        private const long SegmentBlocks = Format.FormatConstants.SegmentBlocks;
        private readonly Dictionary<(uint, long), List<SentRange>> _bySegment = new();

        public void Add(SentRange r)
        {
            for (long seg = r.Address / SegmentBlocks; seg <= (r.End - 1) / SegmentBlocks; seg++)
            {
                if (!_bySegment.TryGetValue((r.Device, seg), out var l)) _bySegment[(r.Device, seg)] = l = new List<SentRange>(2);
                l.Add(r);
            }
        }

        /// <summary>The range holding block <paramref name="addr"/> of <paramref name="dev"/>, or null.</summary>
        public SentRange? Find(uint dev, long addr)
        {
            if (_bySegment.TryGetValue((dev, addr / SegmentBlocks), out var l))
                foreach (var r in l) if (r.Address <= addr && addr < r.End) return r;
            return null;
        }

        /// <summary>The first block in (<paramref name="addr"/>, <paramref name="limit"/>) that a range starts at, else <paramref name="limit"/>.</summary>
        public long NextStart(uint dev, long addr, long limit)
        {
            long best = limit;
            for (long seg = addr / SegmentBlocks; seg <= (limit - 1) / SegmentBlocks && seg * SegmentBlocks < best; seg++)
                if (_bySegment.TryGetValue((dev, seg), out var l))
                    foreach (var r in l) if (r.Address > addr && r.Address < best) best = r.Address;
            return best;
        }
    }
}
