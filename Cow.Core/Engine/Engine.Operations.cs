using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

// The engine's operations, each handed to the operation family that implements it. The contract of each
// (errors, durability, locks) is documented where it is implemented; this file only routes.
public sealed partial class Engine
{
    // IomapService
    public Errno IomapBegin(long ino, long pos, long count, IomapOp op, out IomapPair pair) => _ctx.Iomap.IomapBegin(ino, pos, count, op, out pair);
    internal void SettleForExternalIo(in IomapMapping read) => _ctx.Iomap.SettleForExternalIo(in read);
    internal Errno IomapBegin(ITreeReader tree, long ino, long pos, long count, IomapOp op, out IomapPair pair, bool callerMerges = false) => _ctx.Iomap.IomapBegin(tree, ino, pos, count, op, out pair, callerMerges);
    internal HashSet<(uint, long)> ReservedBlocks() => _ctx.Iomap.ReservedBlocks();
    public Errno IomapEnd(long ino, long pos, long count, long written, IomapOp op, in IomapMapping map) => _ctx.Iomap.IomapEnd(ino, pos, count, written, op, in map);
    public Errno IoEnd(long ino, long pos, long written, int error, uint device, ulong address, out long newSize) => _ctx.Iomap.IoEnd(ino, pos, written, error, device, address, out newSize);
    internal Errno IoEnd(long ino, long pos, long written, int error, uint device, ulong address, uint[]? sums, out long newSize) => _ctx.Iomap.IoEnd(ino, pos, written, error, device, address, sums, out newSize);

    // FallocateReservations
    /// <summary>Log blocks held out of the free space by fallocate reservations (statfs, tests).</summary>
    internal long PreallocatedBlocks { get { lock (_lock) return _space.Preallocated; } }

    // FileDataPath
    internal Errno Read(ITreeReader tree, long ino, long offset, Span<byte> buffer, out int count, ReadSegments? lend = null) => _ctx.Data.Read(tree, ino, offset, buffer, out count, lend);
    public Errno Write(long ino, long offset, ReadOnlySpan<byte> data, bool append, out int written, bool touchTimes = true) => _ctx.Data.Write(ino, offset, data, append, out written, touchTimes);
    internal Errno Seek(ITreeReader tree, long ino, long offset, SeekWhence whence, out long result) => _ctx.Data.Seek(tree, ino, offset, whence, out result);

    // RangeCloner
    public Errno CloneRange(long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied) => _ctx.Cloner.CloneRange(srcIno, srcOffset, dstIno, dstOffset, length, out copied);
    internal Errno CloneRange(ITreeReader srcTree, long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied) => _ctx.Cloner.CloneRange(srcTree, srcIno, srcOffset, dstIno, dstOffset, length, out copied);

    // NamespaceOps
    internal Errno Lookup(ITreeReader tree, long parent, string name, out InodeAttr attr) => _ctx.Names.Lookup(tree, parent, name, out attr);
    internal Errno Readlink(ITreeReader tree, long ino, out string target) => _ctx.Names.Readlink(tree, ino, out target);
    public Errno MakeNode(long parent, string name, uint mode, ulong rdev, uint uid, uint gid, string? symlinkTarget, out InodeAttr attr, uint umask = 0) => _ctx.Names.MakeNode(parent, name, mode, rdev, uid, gid, symlinkTarget, out attr, umask);
    public Errno Link(long ino, long newParent, string newName, out InodeAttr attr) => _ctx.Names.Link(ino, newParent, newName, out attr);
    public Errno Unlink(long parent, string name) => _ctx.Names.Unlink(parent, name);
    public Errno Rmdir(long parent, string name) => _ctx.Names.Rmdir(parent, name);
    internal void RemoveOrphans() => _ctx.Names.RemoveOrphans();
    /// <summary>Finishes the snapshot purges a crash or an unmount interrupted (at open).</summary>
    internal void ResumePurges() => _ctx.Purger.RunPending();
    /// <summary>Records a snapshot purge removes per commit (0: the cache budget's commit size).</summary>
    internal int PurgeBatchRecords { get => _ctx.Purger.BatchRecords; set => _ctx.Purger.BatchRecords = value; }
    /// <summary>Purges deleted snapshots' records on a background thread from now on (a mounted pool): a snapshot delete
    /// returns once the snapshot is gone, and its space is freed after. Begins with the purges already pending.</summary>
    public void StartPurger() => _ctx.Purger.Start();
    /// <summary>Deleted snapshots whose records are still being purged.</summary>
    public int PendingPurges => _ctx.Purger.Pending;
    /// <summary>Waits until no purge is pending (inline when the background purger does not run); false when
    /// <paramref name="timeout"/> passed first or the pool failed or closed.</summary>
    public bool WaitForPurges(TimeSpan timeout) => _ctx.Purger.WaitIdle(timeout);
    public Errno Rename(long parent, string name, long newParent, string newName, RenameFlags flags) => _ctx.Names.Rename(parent, name, newParent, newName, flags);
    public Errno Open(long ino) => _ctx.Names.Open(ino);
    public Errno Release(long ino) => _ctx.Names.Release(ino);
    public Errno MakeTmpfile(long parent, uint mode, uint uid, uint gid, out FileSystem.InodeAttr attr, uint umask = 0) => _ctx.Names.MakeTmpfile(parent, mode, uid, gid, out attr, umask);
    public Errno RenameWhiteout(long parent, string name, long newParent, string newName, bool noReplace, uint uid, uint gid) => _ctx.Names.RenameWhiteout(parent, name, newParent, newName, noReplace, uid, gid);
    internal Errno ReadDir(ITreeReader tree, long ino, long offset, int max, List<DirEntryInfo> into, long before = long.MaxValue) => _ctx.Names.ReadDir(tree, ino, offset, max, into, before);
    internal Errno DirEnd(ITreeReader tree, long ino, out long end) => _ctx.Names.DirEnd(tree, ino, out end);

    // InodeAttributes
    internal Errno GetAttr(ITreeReader tree, long ino, out InodeAttr attr) => _ctx.Attrs.GetAttr(tree, ino, out attr);
    internal Errno GetXattr(ITreeReader tree, long ino, string name, out byte[] value) => _ctx.Attrs.GetXattr(tree, ino, name, out value);
    internal Errno ListXattr(ITreeReader tree, long ino, out List<string> names) => _ctx.Attrs.ListXattr(tree, ino, out names);
    public Errno SetXattr(long ino, string name, ReadOnlySpan<byte> value, XattrSetFlags flags) => _ctx.Attrs.SetXattr(ino, name, value, flags);
    public Errno RemoveXattr(long ino, string name) => _ctx.Attrs.RemoveXattr(ino, name);
    public Errno SetAttr(long ino, SetAttrRequest req, out InodeAttr attr) => _ctx.Attrs.SetAttr(ino, req, out attr);
    public Errno Fallocate(long ino, FallocateMode mode, long offset, long length) => _ctx.Attrs.Fallocate(ino, mode, offset, length);
    internal Errno NoteAccess(long ino, AtimePolicy policy, out bool updated) => _ctx.Attrs.NoteAccess(ino, policy, out updated);

    // SnapshotManager
    /// <summary>Tests only: the UTC time recorded as a new snapshot's <c>created_ns</c> (null: the system clock).</summary>
    internal Func<DateTime>? SnapshotClock { get => _ctx.SnapshotOps.SnapshotClock; set => _ctx.SnapshotOps.SnapshotClock = value; }
    internal IReadOnlyList<SnapshotRecord> ListSnapshots() => _ctx.SnapshotOps.ListSnapshots();
    internal SnapshotRecord? FindSnapshot(string name) => _ctx.SnapshotOps.FindSnapshot(name);
    internal Errno CreateSnapshot(string name, out SnapshotRecord snapshot) => _ctx.SnapshotOps.CreateSnapshot(name, out snapshot);
    public Errno DeleteSnapshot(string name) => _ctx.SnapshotOps.DeleteSnapshot(name);
    public List<SnapshotSpace> SpaceReport() => _ctx.SnapshotOps.SpaceReport();
    internal List<SnapshotSpace> SpaceReportByScan() => _ctx.SnapshotOps.SpaceReportByScan();
    internal Errno CreateSnapshot(string name, IReadOnlyDictionary<string, string>? properties, out SnapshotRecord snapshot) => _ctx.SnapshotOps.CreateSnapshot(name, properties, out snapshot);
    public IReadOnlyList<string>? SnapshotHolds(string name) => _ctx.SnapshotOps.SnapshotHolds(name);
    public Errno HoldSnapshot(string name, string tag) => _ctx.SnapshotOps.HoldSnapshot(name, tag);
    public Errno ReleaseSnapshot(string name, string tag) => _ctx.SnapshotOps.ReleaseSnapshot(name, tag);
    public Errno SetSnapshotProperties(string name, IReadOnlyDictionary<string, string?> changes) => _ctx.SnapshotOps.SetSnapshotProperties(name, changes);
    public Errno RollbackToSnapshot(string name) => _ctx.SnapshotOps.RollbackToSnapshot(name);
    public Errno CloneSnapshot(string name, string destinationPath, string sourcePath = "/") => _ctx.SnapshotOps.CloneSnapshot(name, destinationPath, sourcePath);
    public Errno DiffSnapshots(string fromName, string? toName, out List<SnapshotChange> changes, bool withRanges = false) => _ctx.SnapshotOps.DiffSnapshots(fromName, toName, out changes, withRanges);
    internal Errno DiffSnapshotsByWalk(string fromName, string? toName, out List<SnapshotChange> changes, bool withRanges = false) => _ctx.SnapshotOps.DiffSnapshotsByWalk(fromName, toName, out changes, withRanges);

    // SnapshotRestorer
    public Errno RestoreFromSnapshot(string name, IReadOnlyList<string> paths, bool dryRun, out List<RestoreChange> changes, out string? badPath) => _ctx.Restorer.RestoreFromSnapshot(name, paths, dryRun, out changes, out badPath);

    // ImportWriter
    public Errno ImportFile(long parent, string name, Stream source, uint mode, uint uid, uint gid, out InodeAttr attr) => _ctx.Importer.ImportFile(parent, name, source, mode, uid, gid, out attr);
    /// <summary>Reads source bytes at a file offset into a buffer; returns the count read, 0 at the end of the
    /// source. Throws (IOException) when the source cannot be read.</summary>
    public delegate int ImportReader(long offset, Span<byte> buffer);
    public Errno ImportData(long ino, long length, IReadOnlyList<(long Offset, long Length)> dataRanges, ImportReader read, CancellationToken ct = default) => _ctx.Importer.ImportData(ino, length, dataRanges, read, ct);

    // Scrubber
    /// <summary>Reads every referenced block at a bounded rate and compares it with its checksum (cow scrub; Scrubber.cs).</summary>
    public ScrubReport Scrub(ScrubSettings settings, Action<ScrubProgress>? progress = null, CancellationToken token = default) => _ctx.Scrubber.Scrub(settings, progress, token);
    /// <summary>Cancels the scrub in progress; false when none runs.</summary>
    public bool CancelScrub() => _ctx.Scrubber.Cancel();
    /// <summary>Tests only: runs after a scrub loaded a segment's mappings, before it enters the reuse gate.</summary>
    internal Action? ScrubAfterLoadHook { set => _ctx.Scrubber.AfterLoadHook = value; }
    /// <summary>Tests only: segments a scrub read again because blocks were released meanwhile.</summary>
    internal long ScrubRedone => _ctx.Scrubber.Redone;

    internal Replication.StreamSender Sender => _ctx.Sender;
    internal Replication.StreamReceiver Receiver => _ctx.Receiver;
}
