using System.Buffers;
using System.Collections.Concurrent;
using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Replication;

/// <summary>What a receive did. <see cref="Token"/> is set when the receive stopped part-way and kept what it had
/// verified (a resumed send goes on from it); <see cref="DamageOffset"/> is the byte offset of the damage that stopped it.</summary>
public sealed record ReceiveResult(string? Snapshot, long Generation, long Records, long DataBytes, long StreamBytes, string? Problem, string? Token, long? DamageOffset);

/// <summary>
/// <c>cow receive</c> (format.md 10.5): applies a stream as staged versions (<see cref="ReceiveStaging"/>) and, once
/// the end record's digest has verified every record, turns them into a read-only snapshot in one commit: the
/// snapshot gets the staged generation, the live tree the next, so the live tree becomes the received snapshot's
/// tree (a replica follows its source; the pool's live tree must not have changed since the base).
/// <para>Nothing is visible before that commit. A stream that is cut or damaged part-way leaves the records before
/// the damage applied and durable, with the pool's <c>receive</c> field saying where the stream stopped: the token
/// (<see cref="PendingToken"/>) lets a sender resume there; <see cref="Abort"/> drops it all. A stream refused at
/// its header, or whose digest or records do not hold together, changes nothing.</para>
/// <para>Threading: thread-safe; one receive at a time (the <c>receive</c> field). Records are read and verified on
/// a second thread, a batch ahead; each batch is applied and committed under the commit lock, which is let go
/// between batches.</para>
/// </summary>
internal sealed class StreamReceiver(EngineContext context) : EnginePart(context)
{
    /// <summary>Bytes of data, and records, after which a batch is applied and committed.</summary>
    internal int BatchBytes { get; set; } = 32 << 20;
    internal int BatchRecords { get; set; } = 50_000;

    private SnapshotIdentity IdentityOf(SnapshotRecord s) => Context.Sender.IdentityOf(s);

    /// <summary>The token of the pending receive, or null when none.</summary>
    public string? PendingToken()
    {
        lock (StateLock) return PoolState.Receive is { } p ? TokenOf(p) : null;
    }

    private static string TokenOf(PendingReceive p) =>
        new ResumeToken(new SnapshotIdentity(p.SnapPool, p.SnapGen), new SnapshotIdentity(p.BasePool, p.BaseGen), p.Offset, p.Records, p.Chain).ToString();

    /// <summary>
    /// Receives the stream <paramref name="input"/> as snapshot <paramref name="name"/> (null: the sender's name).
    /// 0: done. Refused with nothing changed: EINVAL (bad name, resumed stream not matching the pending receive, block
    /// size), EEXIST (the name or the snapshot is here already; a full stream into a pool that is not empty), ENOENT
    /// (an incremental stream's base is not here), EBUSY (a receive is pending; the live tree changed since the base;
    /// frozen); EBADMSG: the stream is damaged beyond keeping (its header, digest or the sense of its records) and
    /// what it staged is dropped. Kept (result's Token set): EIO (the stream was cut or a record damaged), ENOSPC.
    /// </summary>
    public Errno Receive(Stream input, string? name, out ReceiveResult result)
    {
        result = new ReceiveResult(null, 0, 0, 0, 0, null, null, null);
        var reader = new StreamReader(input);
        StreamHeader h;
        try { h = reader.Next()!.Header!; }
        catch (StreamDamagedException e) { result = result with { Problem = e.Message, DamageOffset = e.Offset }; return Errno.EBADMSG; }
        catch (IOException e) { result = result with { Problem = $"reading the stream failed: {e.Message}" }; return Errno.EIO; }
        var e0 = Begin(h, name, out var pending, out string? problem);
        if (e0 != 0) { result = result with { Problem = problem }; return e0; }
        reader.RecordsBefore = pending.Records;
        var staging = new ReceiveStaging(Context, pending.Gen);
        var batches = new BlockingCollection<RecordBatch>(boundedCapacity: 2);
        using var cts = new CancellationTokenSource();
        var producer = Task.Run(() => Produce(reader, batches, cts.Token));
        Errno outcome = 0;
        string? why = null;
        long? damage = null;
        bool ended = false, fatal = false;
        try
        {
            foreach (var b in batches.GetConsumingEnumerable())
            {
                try
                {
                    var e = ApplyBatch(staging, b, out why);
                    if (e != 0) { outcome = e; fatal = e == Errno.EBADMSG; break; }
                    if (b.Fault is { } f)
                    {
                        why = f.Message;
                        if (f is StreamDamagedException d) { damage = d.Offset; fatal = d.Fatal; }
                        outcome = fatal ? Errno.EBADMSG : Errno.EIO;
                        break;
                    }
                    ended = b.Ended;
                }
                finally { b.Release(); }
            }
        }
        finally
        {
            cts.Cancel();
            foreach (var b in batches.GetConsumingEnumerable()) b.Release();
            producer.Wait();
        }
        var stats = (reader.RecordsBefore + reader.Records, staging.DataBytes, reader.BytesRead);
        if (fatal)
        {
            var ae = Abort(out _);
            result = new ReceiveResult(null, 0, stats.Item1, stats.Item2, stats.BytesRead, why + (ae == 0 ? "; nothing of it was kept" : ""), null, damage);
            return Errno.EBADMSG;
        }
        if (outcome != 0 || !ended)
        {
            string? token = PendingToken();
            result = new ReceiveResult(null, 0, stats.Item1, stats.Item2, stats.BytesRead, why ?? "the stream ended early", token, damage);
            return outcome != 0 ? outcome : Errno.EIO;
        }
        var fe = Finish(pending, out var snap, out why);
        if (fe == Errno.EBADMSG) { Abort(out _); }
        result = new ReceiveResult(snap?.Name, snap?.Gen ?? 0, stats.Item1, stats.Item2, stats.BytesRead, why, fe == Errno.EBUSY ? PendingToken() : null, null);
        return fe;
    }

    /// <summary>Checks that the stream may be received here and records the pending receive (a new one), or finds the
    /// pending one it resumes.</summary>
    private Errno Begin(StreamHeader h, string? name, out PendingReceive pending, out string? problem)
    {
        pending = null!;
        problem = null;
        name ??= h.Name;
        if (h.BlockSize != BlockSize) { problem = $"the stream's block size is {h.BlockSize}, this pool's {BlockSize}"; return Errno.EINVAL; }
        lock (CommitLock)
        {
            lock (StateLock)
            {
                if (Failed) { problem = "the pool failed and is read-only"; return Errno.EIO; }
                if (Commits.Frozen) { problem = "the pool is frozen"; return Errno.EBUSY; }
                var p = PoolState.Receive;
                if (h.ResumeOffset > 0)
                {
                    if (p == null) { problem = "this stream resumes a receive, but none is pending here"; return Errno.EINVAL; }
                    if (p.SnapPool != h.Snapshot.Pool || p.SnapGen != h.Snapshot.Gen || p.BasePool != h.Base.Pool || p.BaseGen != h.Base.Gen)
                    { problem = $"this stream is of snapshot {h.Snapshot} (base {h.Base}); the pending receive is of {p.SnapPool}@{p.SnapGen}"; return Errno.EINVAL; }
                    if (p.Offset != h.ResumeOffset || !p.Chain.AsSpan().SequenceEqual(h.ResumeChain))
                    { problem = $"this stream resumes at offset {h.ResumeOffset}; the pending receive stopped at {p.Offset} (token {TokenOf(p)})"; return Errno.EINVAL; }
                    pending = p;
                    return 0;
                }
                // A receive that stopped before its first record was applied is pending at offset 0, and its token
                // says so: the stream resumed there is the stream from its start (resume_offset 0), which goes on
                // with the pending receive (whatever it staged is applied again: records are idempotent).
                if (p != null && p.Offset == 0 && p.SnapPool == h.Snapshot.Pool && p.SnapGen == h.Snapshot.Gen && p.BasePool == h.Base.Pool && p.BaseGen == h.Base.Gen)
                {
                    pending = p;
                    return 0;
                }
                if (p != null) { problem = $"a receive of snapshot '{p.Name}' is pending at offset {p.Offset}: resume it (token {TokenOf(p)}) or abort it (cow receive --abort)"; return Errno.EBUSY; }
                if (SnapshotManager.SnapshotNameProblem(name) is { } np) { problem = np; return Errno.EINVAL; }
                if (Snapshots.Find(name) != null) { problem = $"a snapshot named '{name}' exists here"; return Errno.EEXIST; }
                if (Snapshots.All.FirstOrDefault(s => IdentityOf(s) == h.Snapshot) is { } have) { problem = $"this pool holds that snapshot already, as '{have.Name}'"; return Errno.EEXIST; }
                if (!h.Incremental)
                {
                    if (Snapshots.Count > 0 || LiveTree.Dir(RootIno) is not { Count: 0 })
                    { problem = "a full stream is received into an empty pool (no files, no snapshots); send incrementally from a snapshot both pools hold"; return Errno.EEXIST; }
                }
                else
                {
                    var bs = Snapshots.All.FirstOrDefault(s => IdentityOf(s) == h.Base);
                    if (bs == null) { problem = $"this pool does not hold the stream's base (snapshot {h.Base} of the sender)"; return Errno.ENOENT; }
                    if (Snapshots[^1] != bs) { problem = $"the stream's base '{bs.Name}' is not this pool's newest snapshot ('{Snapshots[^1].Name}' is newer): delete the newer ones first"; return Errno.EBUSY; }
                }
            }
            Commits.CommitLocked(null);   // whatever the live tree has in memory, so the check below sees it
            lock (StateLock)
            {
                if (h.Incremental)
                {
                    long baseGen = Snapshots[^1].Gen;
                    var (inos, dirents) = Store.FindChangedBetween(baseGen, PoolState.LiveGen);
                    if (inos.Count + dirents.Count > 0)
                    { problem = $"the live tree changed since snapshot '{Snapshots[^1].Name}' ({inos.Count} inodes): roll it back to that snapshot (cow snapshot rollback) to receive on it"; return Errno.EBUSY; }
                }
            }
            var np2 = new PendingReceive
            {
                SnapPool = h.Snapshot.Pool, SnapGen = h.Snapshot.Gen, BasePool = h.Base.Pool, BaseGen = h.Base.Gen, Name = name,
                CreatedNs = h.CreatedNs, Chain = StreamChain.Start(h.Snapshot, h.Base),
            };
            Commits.CommitLocked(_ =>
            {
                np2.Gen = PoolState.LiveGen + 1;
                PoolState.Receive = np2;
            });
            pending = np2;
            return 0;
        }
    }

    /// <summary>Records read and verified ahead of the applying thread, with where the stream stands after each.</summary>
    private sealed class RecordBatch
    {
        public readonly List<(StreamRecord Record, long After, long Records, byte[] Chain, byte[]? Rented)> Items = new();
        public long Bytes;
        public bool Ended;
        public Exception? Fault;

        public void Release()
        {
            foreach (var it in Items) if (it.Rented != null) ArrayPool<byte>.Shared.Return(it.Rented);
            Items.Clear();
        }
    }

    private void Produce(StreamReader reader, BlockingCollection<RecordBatch> batches, CancellationToken ct)
    {
        var b = new RecordBatch();
        try
        {
            while (!ct.IsCancellationRequested)
            {
                StreamRecord? r;
                try { r = reader.Next(); }
                catch (IOException e) { b.Fault = e; break; }
                if (r == null || r.Type == StreamRecordType.End) { b.Ended = true; break; }
                byte[]? rented = null;
                if (r.Data.Length > 0)
                {
                    rented = ArrayPool<byte>.Shared.Rent(r.Data.Length);
                    r.Data.CopyTo(rented);
                    r.Data = rented.AsMemory(0, r.Data.Length);
                }
                b.Items.Add((r, reader.Offset, reader.RecordsBefore + reader.Records, reader.Chain, rented));
                b.Bytes += r.Data.Length;
                if (b.Bytes >= BatchBytes || b.Items.Count >= BatchRecords)
                {
                    batches.Add(b, ct);
                    b = new RecordBatch();
                }
            }
            batches.Add(b, ct);
        }
        catch (OperationCanceledException) { b.Release(); }
        finally { batches.CompleteAdding(); }
    }

    /// <summary>Applies a batch and commits it with the pending receive's new position. A record refused by a full
    /// pool or a write error stops the batch: what came before it is committed (the record is applied again on
    /// resume: every record but a removal is idempotent, and a removal is applied whole or not at all).</summary>
    private Errno ApplyBatch(ReceiveStaging staging, RecordBatch b, out string? why)
    {
        why = null;
        lock (CommitLock)
        {
            Errno e = 0;
            int applied = 0;
            for (; applied < b.Items.Count; applied++)
            {
                e = staging.Apply(b.Items[applied].Record);
                if (e != 0) { why = $"record at offset {b.Items[applied].Record.Offset}: {staging.Problem}"; break; }
            }
            if (e == Errno.EINVAL) { CommitStaged(staging, null); return Errno.EBADMSG; }
            var last = applied > 0 ? b.Items[applied - 1] : default;
            CommitStaged(staging, applied > 0 ? p =>
            {
                p.Offset = last.After; p.Records = last.Records; p.Chain = last.Chain;
            }
            : null);
            Commits.Fault("receive-batch");
            return e;
        }
    }

    /// <summary>Commits the staged changes and, with <paramref name="advance"/>, the pending receive's new position.</summary>
    private void CommitStaged(ReceiveStaging staging, Action<PendingReceive>? advance) =>
        Commits.CommitLocked(batch =>
        {
            staging.TakeInto(batch);
            if (advance != null && PoolState.Receive != null)
            {
                var p = PoolState.Receive.Copy();
                advance(p);
                PoolState.Receive = p;
            }
        });

    /// <summary>Turns the staged versions into the received snapshot: checks that they make a tree (the root, and every
    /// staged entry's inode, exist as of the staged generation), deletes the replaced versions no view will see, and in
    /// one commit adds the snapshot at the staged generation and moves the live tree past it. EBUSY when a live file is
    /// open or in use (the pending receive stays: resume the send to finish); EBADMSG when the records do not make a tree.</summary>
    private Errno Finish(PendingReceive pending, out SnapshotRecord? snap, out string? problem)
    {
        snap = null;
        problem = null;
        long g = pending.Gen;
        lock (CommitLock)
            lock (StateLock)
            {
                foreach (var li in Cache.Inodes)
                    if (!li.Deleted && (li.OpenCount > 0 || li.Pins > 0 || li.Reservations > 0 || li.WriteGate.CurrentCount == 0))
                    { problem = "a live file is open: close it and resume the send to finish the receive"; return Errno.EBUSY; }
                if (Store.LoadInode(RootIno, g) is not { } root || !IsDir(root)) { problem = "the stream leaves no root directory"; return Errno.EBADMSG; }
                var (_, staged, _) = Store.FindBornAt(g);
                foreach (var d in staged)
                    if (Store.LoadInode(d.Child, g) == null) { problem = $"entry '{d.Name}' of directory {d.Dir} names inode {d.Child}, which the stream does not hold"; return Errno.EBADMSG; }
                var (di, dd, dc) = Store.FindDiedAt(g);
                long newest = Snapshots.NewestGen;
                var s = new SnapshotRecord { Name = pending.Name, Gen = g, CreatedNs = pending.CreatedNs, SourcePool = pending.SnapPool, SourceGen = pending.SnapGen };
                if (s.SourcePool == PoolState.PoolUuid && s.SourceGen == g) s.SourcePool = Guid.Empty;
                // Replaced versions born after every snapshot were the live tree's alone: no view sees them now. Their
                // space changes come first, so that this commit gathers them (no other commit can: both locks are held).
                var goneChunks = dc.Where(c => c.Birth > newest).ToList();
                foreach (var c in goneChunks) foreach (var e in c.Extents) Space.ReleaseRetired(e.Device, e.Address, e.Count);
                Commits.CommitLocked(batch =>
                {
                    batch.DeletedInodes.AddRange(di.Where(r => r.Birth > newest).Select(r => r.Rid));
                    batch.DeletedDirents.AddRange(dd.Where(r => r.Birth > newest).Select(r => r.Rid));
                    batch.DeletedChunks.AddRange(goneChunks.Select(c => c.Rid));
                    s.CommitSeq = PoolState.CommitSeq + 1;
                    PoolState.LiveGen = g + 1;
                    PoolState.Receive = null;
                    Snapshots.Add(s);
                    batch.Add(s);
                });
                Cache.Clear();
                Prealloc.LoadPreallocTotal();
                snap = s.Copy();
                return 0;
            }
    }

    /// <summary>Drops a pending receive: its staged versions are deleted (their blocks freed) and the versions they
    /// replaced are live again. ENOENT when none is pending.</summary>
    public Errno Abort(out string? name)
    {
        name = null;
        lock (CommitLock)
            lock (StateLock)
            {
                if (PoolState.Receive is not { } p) return Errno.ENOENT;
                name = p.Name;
                var (bi, bd, bc) = Store.FindBornAt(p.Gen);
                var (di, dd, dc) = Store.FindDiedAt(p.Gen);
                // Space first (this commit gathers it; no other commit can run: both locks are held).
                foreach (var c in bc) foreach (var e in c.Extents) Space.Release(e.Device, e.Address, e.Count);
                // Live again: a live mapping first (its era goes on: no view lies between), then the retired one goes.
                foreach (var c in dc) foreach (var e in c.Extents) { Space.AddRef(e.Device, e.Address, e.Count); Space.ReleaseRetired(e.Device, e.Address, e.Count); }
                Commits.CommitLocked(batch =>
                {
                    batch.DeletedInodes.AddRange(bi.Select(r => r.Rid));
                    batch.DeletedDirents.AddRange(bd.Select(r => r.Rid));
                    batch.DeletedChunks.AddRange(bc.Select(r => r.Rid));
                    foreach (var r in di) batch.Retire(r, FormatConstants.Forever);
                    foreach (var r in dd) batch.Retire(r, FormatConstants.Forever);
                    foreach (var r in dc) batch.Retire(r, FormatConstants.Forever);
                    PoolState.Receive = null;
                });
                return 0;
            }
    }
}
