using System.Buffers;
using System.Collections.Concurrent;
using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Replication;

/// <summary>What a receive did. <see cref="Token"/> is set when the receive stopped part-way and kept what it had
/// verified (a resumed send goes on from it); <see cref="DamageOffset"/> is the byte offset of the damage that stopped it;
/// <see cref="Verified"/>: the whole stream is applied and verified (a receive asked not to finish stops there).</summary>
public sealed record ReceiveResult(string? Snapshot, long Generation, long Records, long DataBytes, long StreamBytes, string? Problem, string? Token, long? DamageOffset, bool Verified = false);

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
/// a second thread, a batch ahead; batches are applied under the commit lock, held from the first batch of a commit
/// group to its commit (the engine's group-commit thresholds) and let go between groups.</para>
/// </summary>
internal sealed class StreamReceiver(EngineContext context) : EnginePart(context)
{
    /// <summary>Bytes of data, and records, after which the reading thread hands a batch to the applying one (tests set
    /// them small to cut power between batches).</summary>
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
    /// With <paramref name="finish"/> false a verified stream is left pending for <see cref="FinishPending"/> (a mounted
    /// pool finishes unmounted, as a rollback does).
    /// </summary>
    public Errno Receive(Stream input, string? name, bool finish, out ReceiveResult result)
    {
        result = new ReceiveResult(null, 0, 0, 0, 0, null, null, null);
        var reader = new StreamReader(input) { DetachData = true };
        StreamHeader h;
        try { h = reader.Next()!.Header!; }
        catch (StreamDamagedException e) { result = result with { Problem = e.Message, DamageOffset = e.Offset }; return Errno.EBADMSG; }
        catch (IOException e) { result = result with { Problem = $"reading the stream failed: {e.Message}" }; return Errno.EIO; }
        var e0 = Begin(h, name, out var pending, out string? problem);
        if (e0 != 0) { result = result with { Problem = problem }; return e0; }
        reader.RecordsBefore = pending.Records;
        // A full stream into a pool that never had an inode but its root, with nothing staged yet: every inode number the
        // stream brings is new here, so none is looked up in the store (a fresh replica's first receive).
        bool noPrior;
        lock (StateLock) noPrior = !h.Incremental && pending.Offset == 0 && PoolState.NextIno <= RootIno + 1 && !Store.AnyInodeBornAt(pending.Gen);
        var staging = new ReceiveStaging(Context, pending.Gen) { NoPriorInodes = noPrior };
        var batches = new BlockingCollection<RecordBatch>(boundedCapacity: 2);
        using var cts = new CancellationTokenSource();
        // A thread of its own, not the pool's: the reader blocks (input, a full queue), and a busy mount or test host can
        // leave a pool task unscheduled for as long as the pool takes to grow.
        var producer = Task.Factory.StartNew(() => Produce(reader, batches, cts.Token), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        Errno outcome = 0;
        string? why = null;
        long? damage = null;
        bool ended = false, fatal = false;
        // Batches are applied under the commit lock, held from the first batch of a commit group to its commit, so that no
        // other commit takes the group's space changes without its records (format.md 10.5). A group ends at the engine's
        // group-commit thresholds (its data blocks, its records), at the end of the stream, or where it stopped.
        bool locked = false;
        var at = default(Position);
        try
        {
            foreach (var b in batches.GetConsumingEnumerable())
            {
                try
                {
                    if (!locked) { Monitor.Enter(CommitLock); locked = true; }
                    var e = ApplyBatch(staging, b, ref at, out why);
                    bool stop = e != 0 || b.Fault != null;
                    if (stop || b.Ended || staging.PendingBytes >= (long)Commits.EveryBlocks * BlockSize || staging.PendingRecords >= Commits.EveryRecords)
                    {
                        // A record that does not fit the tree (EINVAL) drops the receive: what was staged is committed as it
                        // is, without moving the pending position, and then aborted.
                        CommitStaged(staging, e == Errno.EINVAL ? null : at, verified: e == 0 && b.Ended);
                        Monitor.Exit(CommitLock); locked = false;
                    }
                    if (e != 0) { outcome = e == Errno.EINVAL ? Errno.EBADMSG : e; fatal = e == Errno.EINVAL; break; }
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
            if (locked) Monitor.Exit(CommitLock);
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
        if (!finish)
        {
            result = new ReceiveResult(null, 0, stats.Item1, stats.Item2, stats.BytesRead, null, null, null, Verified: true);
            return 0;
        }
        var fe = FinishPending(out var snap, out why);
        result = new ReceiveResult(snap?.Name, snap?.Gen ?? 0, stats.Item1, stats.Item2, stats.BytesRead, why, fe == Errno.EBUSY ? PendingToken() : null, null, Verified: true);
        return fe;
    }

    /// <summary>Finishes the pending receive whose stream was applied and verified whole: the snapshot appears and the live
    /// tree becomes it. EINVAL when none is pending or its stream is not verified yet (resume it); EBUSY when a live file
    /// is open (it stays pending); EBADMSG when the records do not make a tree (everything staged is dropped).</summary>
    public Errno FinishPending(out SnapshotRecord? snap, out string? problem)
    {
        snap = null;
        PendingReceive? p;
        lock (StateLock) p = PoolState.Receive;
        if (p is not { Verified: true })
        {
            problem = p == null ? "no receive is pending" : $"the stream of '{p.Name}' is not all here yet (it stopped at offset {p.Offset}): resume it";
            return Errno.EINVAL;
        }
        var e = Finish(p, out snap, out problem);
        if (e == Errno.EBADMSG) Abort(out _);
        return e;
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
                    // The chain at the offset stands for the original header too (10.1); its creation time is checked here.
                    if (p.Offset != h.ResumeOffset || !p.Chain.AsSpan().SequenceEqual(h.ResumeChain) || p.CreatedNs != h.CreatedNs)
                    { problem = $"this stream resumes at offset {h.ResumeOffset}; the pending receive stopped at {p.Offset} (token {TokenOf(p)})"; return Errno.EINVAL; }
                    pending = p;
                    return 0;
                }
                // A receive that stopped before its first record was applied is pending at offset 0, and its token says
                // so: the stream resumed there is the stream from its start (resume_offset 0), which goes on with the
                // pending receive (whatever it staged is applied again: records are idempotent).
                if (p != null && p.Offset == 0 && p.SnapPool == h.Snapshot.Pool && p.SnapGen == h.Snapshot.Gen
                    && p.BasePool == h.Base.Pool && p.BaseGen == h.Base.Gen)
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
                    // A read that moved an atime (relatime on a mounted replica) is not a change: the stream's version of
                    // the inode replaces it, or the snapshot keeps the atime the read gave it.
                    inos.RemoveWhere(ino => OnlyAtimeMoved(ino, baseGen, PoolState.LiveGen));
                    if (inos.Count + dirents.Count > 0)
                    { problem = $"the live tree changed since snapshot '{Snapshots[^1].Name}' ({inos.Count} inodes, {dirents.Count} entries): roll it back to that snapshot (cow snapshot rollback) to receive on it"; return Errno.EBUSY; }
                }
            }
            var np2 = new PendingReceive
            {
                SnapPool = h.Snapshot.Pool, SnapGen = h.Snapshot.Gen, BasePool = h.Base.Pool, BaseGen = h.Base.Gen, Name = name,
                CreatedNs = h.CreatedNs, Chain = StreamChain.Start(h),
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

    /// <summary>Whether inode <paramref name="ino"/> differs between the two generations only in its atime (same extents).</summary>
    private bool OnlyAtimeMoved(long ino, long baseGen, long liveGen)
    {
        if (Store.LoadInode(ino, baseGen) is not { } a || Store.LoadInode(ino, liveGen) is not { } b) return false;
        if (a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Nlink != b.Nlink || a.Size != b.Size || a.Blocks != b.Blocks
            || a.Rdev != b.Rdev || a.MtimeNs != b.MtimeNs || a.CtimeNs != b.CtimeNs || a.BtimeNs != b.BtimeNs || a.Target != b.Target
            || a.NextPos != b.NextPos || a.Parent != b.Parent || !SnapshotDiff.SameXattrs(a.Xattrs, b.Xattrs)) return false;
        var ca = Store.LoadChunks(ino, baseGen).Select(c => c.Rid).Order();
        var cb = Store.LoadChunks(ino, liveGen).Select(c => c.Rid).Order();
        return ca.SequenceEqual(cb);
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
                b.Items.Add((r, reader.Offset, reader.RecordsBefore + reader.Records, reader.Chain, r.Rented));
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

    /// <summary>Where the stream stands after the last record applied: its record offset, records and chain (null Chain:
    /// no record applied yet in this receive).</summary>
    private record struct Position(long After, long Records, byte[]? Chain);

    /// <summary>Applies a batch (the caller holds the commit lock and commits later), moving <paramref name="at"/> past
    /// each record applied. A record refused by a full pool or a write error stops the batch: the records before it are
    /// what the next commit makes durable (the record is applied again on resume: every record but a removal is
    /// idempotent, and a removal is applied whole or not at all). An exception is a bug: the pool fails (fail-stop).</summary>
    private Errno ApplyBatch(ReceiveStaging staging, RecordBatch b, ref Position at, out string? why)
    {
        why = null;
        Errno e = 0;
        string? problem = null;
        var pos = at;
        Commits.FailStop("while receiving a stream", () =>
        {
            foreach (var it in b.Items)
            {
                e = staging.Apply(it.Record);
                if (e != 0) { problem = $"record at offset {it.Record.Offset}: {staging.Problem}"; break; }
                pos = new Position(it.After, it.Records, it.Chain);
            }
        });
        at = pos;
        why = problem;
        return e;
    }

    /// <summary>Commits the staged changes and, with <paramref name="at"/>, the pending receive's new position (and
    /// whether the end record verified the whole stream). Caller holds the commit lock. A fault point follows.</summary>
    private void CommitStaged(ReceiveStaging staging, Position? at, bool verified)
    {
        Commits.CommitLocked(batch =>
        {
            staging.TakeInto(batch);
            if (at is { } p && PoolState.Receive != null && (p.Chain != null || verified))
            {
                var r = PoolState.Receive.Copy();
                if (p.Chain != null) { r.Offset = p.After; r.Records = p.Records; r.Chain = p.Chain; }
                r.Verified = verified;
                PoolState.Receive = r;
            }
        });
        Commits.Fault("receive-batch");
    }

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
                var staged = Store.FindDirentsBornAt(g);
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
