using System.Collections.Concurrent;
using System.Security.Cryptography;
using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// Fail-stop commits (Engine.FailStop.cs): an exception anywhere on the commit path makes the pool read-only
/// (EIO to every later change, reads keep working), is logged with its stack, and leaves the last durable
/// commit as it was; a mapping-invalidation listener that throws holds the freed blocks back from reuse for
/// the rest of the mount instead of letting them be allocated.
/// </summary>
[Trait("Tier", "engine")]
public sealed class FailStopCommitTests
{
    private sealed class InjectedFault(string message) : Exception(message);

    private static MemoryPool NewPool(ConcurrentQueue<string> problems, bool faulty = false, long logSize = 256 << 20)
    {
        var p = new MemoryPool(logSize: logSize, faulty: faulty);
        p.Engine.CommitInterval = TimeSpan.Zero;
        p.Engine.Problem += problems.Enqueue;
        return p;
    }

    /// <summary>The live tree and every snapshot's, as sorted lines (path, size and content hash per file).</summary>
    private static string Listing(MemoryPool p)
    {
        var lines = new List<string>();
        Tree(p.Live, "", lines);
        foreach (var s in p.Engine.ListSnapshots().OrderBy(s => s.Name, StringComparer.Ordinal))
            Tree(p.Pool.Snapshot(s.Name)!, "@" + s.Name, lines);
        lines.Sort(StringComparer.Ordinal);
        return string.Join("\n", lines);
    }

    private static void Tree(FileSystemView fs, string prefix, List<string> lines)
    {
        void Walk(long dir, string path)
        {
            var entries = new List<DirEntryInfo>();
            long off = 0;
            while (true)
            {
                var batch = new List<DirEntryInfo>();
                Assert.Equal(0, (int)fs.ReadDir(dir, off, 64, batch));
                if (batch.Count == 0) break;
                foreach (var d in batch) { off = d.NextOffset; if (d.Name is not ("." or "..")) entries.Add(d); }
            }
            foreach (var d in entries)
            {
                string p = path + "/" + d.Name;
                Assert.Equal(0, (int)fs.GetAttr(d.Ino, out var a));
                if (a.IsDirectory) { lines.Add($"d {prefix}{p}"); Walk(d.Ino, p); continue; }
                var buf = new byte[a.Size];
                Assert.Equal(0, (int)fs.Read(d.Ino, 0, buf, out int n));
                lines.Add($"f {prefix}{p} {n} {Convert.ToHexString(SHA256.HashData(buf.AsSpan(0, n)))[..16]}");
            }
        }
        Walk(fs.RootIno, "");
    }

    /// <summary>A committed state, then changes on top of it (not yet committed); returns the committed listing.</summary>
    private static string CommittedThenChanged(MemoryPool p, out string attempted)
    {
        var fs = p.Live;
        long a = CreateFile(fs, "/a");
        WriteAt(fs, a, 0, Pattern(50_000, 1));
        Assert.Equal(0, (int)fs.Mkdir(fs.RootIno, "d", 0x1ED, 0, 0, out _));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        Assert.Equal(0, (int)fs.Fsync(a));
        string committed = Listing(p);
        WriteAt(fs, a, 10_000, Pattern(20_000, 2));
        long b = CreateFile(fs, "/b");
        WriteAt(fs, b, 0, Pattern(9000, 3));
        Assert.Equal(0, (int)fs.Rename(fs.RootIno, "a", MemoryPool.Ino(fs, "/d"), "a2"));
        attempted = Listing(p);
        Assert.NotEqual(committed, attempted);
        return committed;
    }

    /// <summary>Every kind of change is refused with EIO; reads still answer from memory.</summary>
    private static void AssertReadOnly(MemoryPool p, string inMemory)
    {
        var fs = p.Live;
        long b = MemoryPool.Ino(fs, "/b");
        Assert.ThrowsAny<IOException>(() => p.Engine.Commit());
        Assert.Equal(Errno.EIO, fs.Fsync(b));
        Assert.Equal(Errno.EIO, fs.Create(fs.RootIno, "c", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EIO, fs.Mkdir(fs.RootIno, "e", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.EIO, fs.Write(b, 0, new byte[10], out _));
        Assert.Equal(Errno.EIO, fs.Unlink(fs.RootIno, "b"));
        Assert.Equal(Errno.EIO, fs.SetAttr(b, new SetAttrRequest { Size = 1 }, out _));
        Assert.Equal(Errno.EIO, fs.IomapBegin(b, 0, 4096, IomapOp.Write, out _));
        Assert.Equal(Errno.EIO, p.Engine.CreateSnapshot("t", out _));
        Assert.Equal(Errno.EIO, p.Engine.DeleteSnapshot("s"));
        Assert.Equal(Errno.EIO, p.Engine.Freeze());
        Assert.Equal(inMemory, Listing(p));
    }

    /// <summary>One problem line holds the whole exception: its type, message and a stack frame of the commit path.</summary>
    private static void AssertLoggedWithStack(ConcurrentQueue<string> problems, string type, string message, string frame)
    {
        var line = problems.FirstOrDefault(l => l.Contains(message));
        Assert.True(line != null, "no problem line names the fault:\n" + string.Join("\n", problems));
        Assert.Contains(type, line);
        Assert.Contains(" at ", line);
        Assert.Contains(frame, line);
    }

    /// <summary>
    /// An exception while the commit gathers its batch (after the dirty state was taken out of memory),
    /// before the metadata transaction, or after the commit is durable (releasing its frees): the commit fails,
    /// the pool is read-only from then on, the failure is logged with its stack, and reopening gives exactly
    /// the last durable commit (for "frees", that commit itself) with a clean fsck.
    /// </summary>
    [Theory]
    [InlineData("gather")]
    [InlineData("write")]
    [InlineData("frees")]
    public void AFaultOnTheCommitPathMakesThePoolReadOnly(string point)
    {
        var problems = new ConcurrentQueue<string>();
        using var p = NewPool(problems);
        string committed = CommittedThenChanged(p, out string attempted);

        p.Engine.CommitFaultHook = at => { if (at == point) throw new InjectedFault($"injected fault at {point}"); };
        Assert.Equal(Errno.EIO, p.Live.Fsync(MemoryPool.Ino(p.Live, "/b")));
        p.Engine.CommitFaultHook = null;

        AssertLoggedWithStack(problems, nameof(InjectedFault), $"injected fault at {point}", "CommitPipeline.CommitLocked");
        Assert.Contains(problems, l => l.Contains("read-only until reopened"));
        AssertReadOnly(p, attempted);

        p.Reopen();
        p.Engine.CommitInterval = TimeSpan.Zero;
        Assert.Equal(point == "frees" ? attempted : committed, Listing(p));
        p.AssertClean();
        long c = CreateFile(p.Live, "/c");               // the reopened pool takes changes again
        WriteAt(p.Live, c, 0, Pattern(1000, 4));
        Assert.Equal(0, (int)p.Live.Fsync(c));
        p.AssertClean();
    }

    /// <summary>
    /// An exception in a snapshot operation's step of the commit (after it ran: the new snapshot is recorded in
    /// memory and the live generation moved, or the deleted snapshot is gone from memory), or halfway through a
    /// deletion's purge (some of its blocks released in memory): the operation fails
    /// with the commit's IOException, the pool is read-only, and reopening gives the last durable commit (for a
    /// purge, the one that dropped the snapshot; the reopen finishes the purge).
    /// </summary>
    [Theory]
    [InlineData("create", "snapshot")]
    [InlineData("delete", "snapshot")]
    [InlineData("delete", "purge")]
    public void AFaultInTheSnapshotStepMakesThePoolReadOnly(string op, string point)
    {
        var problems = new ConcurrentQueue<string>();
        using var p = NewPool(problems);
        string committed = CommittedThenChanged(p, out _);
        // A deletion commits the pending changes first, then fails purging (half the blocks released in memory)
        // or in its own commit.
        if (op == "delete") { Assert.Equal(0, (int)p.Engine.CreateSnapshot("s2", out _)); committed = Listing(p); }

        p.Engine.CommitFaultHook = at => { if (at == point) throw new InjectedFault("injected fault in the snapshot step"); };
        if (op == "create") Assert.ThrowsAny<IOException>(() => p.Engine.CreateSnapshot("new", out _));
        else Assert.ThrowsAny<IOException>(() => p.Engine.DeleteSnapshot("s2"));
        p.Engine.CommitFaultHook = null;

        AssertLoggedWithStack(problems, nameof(InjectedFault), "injected fault in the snapshot step", point == "purge" ? "SnapshotPurger.Purge" : "CommitPipeline.CommitLocked");
        AssertReadOnly(p, Listing(p));

        p.Reopen();
        if (point == "purge")   // the commit that dropped s2 was durable
            committed = string.Join("\n", committed.Split('\n').Where(l => l.Split(' ').ElementAtOrDefault(1) is not { } path || !(path == "@s2" || path.StartsWith("@s2/"))));
        Assert.Equal(committed, Listing(p));
        // A purge starts after the commit that dropped the snapshot: the reopen finishes it.
        Assert.Equal(op == "create" || point == "purge" ? ["s"] : new[] { "s", "s2" }, p.Engine.ListSnapshots().Select(s => s.Name).Order().ToArray());
        p.AssertClean();
    }

    /// <summary>
    /// An exception in the in-memory step of a rollback, a clone or a restore from a snapshot (some of the live
    /// tree already changed in memory, nothing of the step committed): the operation fails with the commit's
    /// IOException, the pool is read-only, and reopening gives the last durable commit — for a rollback the one it
    /// made of the pending changes before its step, for a clone or a restore the one before the operation.
    /// </summary>
    [Theory]
    [InlineData("rollback")]
    [InlineData("clone")]
    [InlineData("restore")]
    public void AFaultInASnapshotOperationsInMemoryStepMakesThePoolReadOnly(string op)
    {
        var problems = new ConcurrentQueue<string>();
        using var p = NewPool(problems);
        string committed = CommittedThenChanged(p, out string attempted);

        p.Engine.CommitFaultHook = at => { if (at == op) throw new InjectedFault($"injected fault in the {op} step"); };
        switch (op)
        {
            case "rollback": Assert.ThrowsAny<IOException>(() => p.Engine.RollbackToSnapshot("s")); break;
            case "clone": Assert.ThrowsAny<IOException>(() => p.Engine.CloneSnapshot("s", "/copy")); break;
            default: Assert.ThrowsAny<IOException>(() => p.Engine.RestoreFromSnapshot("s", ["/a"], dryRun: false, out _, out _)); break;
        }
        p.Engine.CommitFaultHook = null;

        AssertLoggedWithStack(problems, nameof(InjectedFault), $"injected fault in the {op} step", "CommitPipeline.FailStop");
        Assert.Contains(problems, l => l.Contains("read-only until reopened"));
        AssertReadOnly(p, Listing(p));

        p.Reopen();
        Assert.Equal(op == "rollback" ? attempted : committed, Listing(p));
        p.AssertClean();
    }

    /// <summary>
    /// The metadata log device fails a write in the middle of the metadata transaction: the pool turns
    /// read-only, the device's IOException is logged with its stack, and reopening gives exactly the last
    /// durable commit (the failed transaction never completed) with a clean fsck.
    /// </summary>
    [Fact]
    public void AFailedMetadataWriteMakesThePoolReadOnlyAndKeepsTheLastCommit()
    {
        var problems = new ConcurrentQueue<string>();
        using var p = NewPool(problems, faulty: true);
        string committed = CommittedThenChanged(p, out string attempted);

        p.MetaLogFault!.FailWriteNumber(1);
        Assert.Equal(Errno.EIO, p.Live.Fsync(MemoryPool.Ino(p.Live, "/b")));

        AssertLoggedWithStack(problems, "IOException", "failed while writing it", "FaultInjectingBlockDevice");
        AssertReadOnly(p, attempted);

        p.Reopen();
        Assert.Equal(committed, Listing(p));
        p.AssertClean();
    }

    /// <summary>A background commit (the timer's) that fails logs the full exception, and the pool turns read-only.</summary>
    [Fact]
    public void AFailedBackgroundCommitIsLoggedWithItsStackAndStopsChanges()
    {
        var problems = new ConcurrentQueue<string>();
        using var p = NewPool(problems);
        string committed = CommittedThenChanged(p, out string attempted);

        p.Engine.CommitFaultHook = at => { if (at == "gather") throw new InjectedFault("injected fault in a background commit"); };
        p.Engine.CommitInterval = TimeSpan.FromMilliseconds(20);
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!problems.Any(l => l.Contains("injected fault in a background commit")) && DateTime.UtcNow < until) Thread.Sleep(10);
        p.Engine.CommitInterval = TimeSpan.Zero;
        p.Engine.CommitFaultHook = null;

        AssertLoggedWithStack(problems, nameof(InjectedFault), "injected fault in a background commit", "CommitPipeline.CommitLocked");
        AssertReadOnly(p, attempted);
        p.Reopen();
        Assert.Equal(committed, Listing(p));
        p.AssertClean();
    }

    private sealed class ThrowingListener : IMappingInvalidationListener
    {
        public volatile bool Throw = true;
        public void MappingsInvalidated(ReadOnlySpan<MappingRange> ranges)
        {
            if (Throw) throw new InjectedFault("injected mapping listener fault");
        }
    }

    /// <summary>
    /// A mapping-invalidation listener throws for an overwrite: the block the overwrite freed is held back
    /// (busy, never handed out again in this mount, even when writes cycle through every other free block),
    /// the failure is logged with its stack, the pool keeps taking changes, fsck is clean in the mount, later
    /// frees are released again, and after a reopen the block is free and fsck clean.
    /// </summary>
    [Fact]
    public void AFailedMappingListenerHoldsTheFreedBlocksBack()
    {
        var problems = new ConcurrentQueue<string>();
        using var p = NewPool(problems, logSize: 8 << 20); // two log segments: the writes below wrap the allocator
        var fs = p.Live;
        var log = p.Engine.Space[FormatConstants.LogCookie];
        long a = CreateFile(fs, "/a");
        WriteAt(fs, a, 0, Pattern(16384, 1));
        p.Engine.Commit();
        Assert.Equal(0, (int)p.Engine.IomapBegin(a, 0, 4096, IomapOp.None, out var pair));
        long oldBlock = (long)(pair.Read.Address / 4096);
        Assert.Equal(1u, log.RefCount(oldBlock));

        var listener = new ThrowingListener();
        p.Engine.AddMappingListener(listener);
        WriteAt(fs, a, 0, Pattern(4096, 2));   // remaps block 0 of /a: oldBlock is freed
        Assert.Equal(0, (int)fs.Fsync(a));     // the pool still takes changes
        Assert.Equal(0u, log.RefCount(oldBlock));
        Assert.True(log.IsBusy(oldBlock), "a block whose cached mapping may not have been dropped became allocatable");
        Assert.True(log.IsHeldBack(oldBlock));
        Assert.True(log.HeldBackBlocks >= 1);
        AssertLoggedWithStack(problems, nameof(InjectedFault), "injected mapping listener fault", "MappingInvalidations.Deliver");
        Assert.Contains(problems, l => l.Contains("held back from reuse"));
        p.AssertClean();                       // held back is not a leak

        // The listener works again: later frees are released as usual (the hold-back covers the failure only).
        listener.Throw = false;
        Assert.Equal(0, (int)p.Engine.IomapBegin(a, 4096, 4096, IomapOp.None, out var pair2));
        long laterBlock = (long)(pair2.Read.Address / 4096);
        WriteAt(fs, a, 4096, Pattern(4096, 3));
        Assert.Equal(0, (int)fs.Fsync(a));
        Assert.False(log.IsBusy(laterBlock), "a freed block was held back although no listener failed");

        // Fill the log again and again: every free block is handed out, never the held-back one.
        long free = fs.StatFs().FreeBlocks;
        for (int round = 0; round < 3; round++)
        {
            long f = CreateFile(fs, "/fill");
            var e = fs.Write(f, 0, new byte[(free - 64) * 4096], out _);
            Assert.Equal(0, (int)e);
            Assert.Equal(0, (int)fs.Fsync(f));
            Assert.Equal(0u, log.RefCount(oldBlock));
            Assert.True(log.IsBusy(oldBlock));
            Assert.Equal(0, (int)fs.Unlink(fs.RootIno, "fill"));
            Assert.Equal(0, (int)fs.Fsync(a));
        }
        p.AssertClean();
        var content = ReadAll(fs, a);

        p.Reopen();
        log = p.Engine.Space[FormatConstants.LogCookie];
        Assert.False(log.IsBusy(oldBlock), "after a reopen the held-back block is free (no kernel caches its mapping)");
        Assert.Equal(0, log.HeldBackBlocks);
        Assert.Equal(content, ReadAll(p.Live, MemoryPool.Ino(p.Live, "/a")));
        p.AssertClean();
    }
}
