using System.Collections.Concurrent;
using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>The engine's mapping-invalidation hook, ioends over several allocations, and freeze.</summary>
[Trait("Tier", "engine")]
public sealed class MappingInvalidationTests
{
    private sealed class Recorder : IMappingInvalidationListener
    {
        public readonly ConcurrentQueue<MappingRange> Ranges = new();
        public Action<MappingRange>? OnRange;
        public void MappingsInvalidated(ReadOnlySpan<MappingRange> ranges)
        {
            foreach (var r in ranges) { OnRange?.Invoke(r); Ranges.Enqueue(r); }
        }
        public List<MappingRange> Take()
        {
            var l = new List<MappingRange>();
            while (Ranges.TryDequeue(out var r)) l.Add(r);
            return l;
        }
    }

    private static bool Covers(IEnumerable<MappingRange> ranges, long ino, long from, long to) =>
        ranges.Any(r => r.Ino == ino && r.Offset <= from && (r.Length == MappingRange.ToEndOfFile || r.Offset + r.Length >= to));

    [Fact]
    public void Every_change_of_a_live_extent_map_is_reported()
    {
        using var p = new MemoryPool();
        var rec = new Recorder();
        long a = CreateFile(p.Live, "/a"), b = CreateFile(p.Live, "/b");
        WriteAt(p.Live, a, 0, Pattern(64 << 10, 1));
        WriteAt(p.Live, b, 0, Pattern(64 << 10, 2));
        p.Engine.Commit();
        p.Engine.AddMappingListener(rec);

        WriteAt(p.Live, a, 8192, Pattern(100, 3));                                   // overwrite: a remap
        Assert.True(Covers(rec.Take(), a, 8192, 12288));
        Assert.Equal(0, (int)p.Live.SetAttr(a, new SetAttrRequest { Size = 20_000 }, out _));   // truncate
        Assert.True(Covers(rec.Take(), a, 20480, 64 << 10));
        Assert.Equal(0, (int)p.Live.Fallocate(a, FallocateMode.PunchHole | FallocateMode.KeepSize, 4096, 8192));
        Assert.True(Covers(rec.Take(), a, 4096, 12288));
        Assert.Equal(0, (int)p.Live.CopyFileRange(b, 0, a, 0, 16384, out _));        // range clone over a
        Assert.True(Covers(rec.Take(), a, 0, 16384));
        Assert.Equal(0, (int)p.Live.Unlink(1, "b"));                                 // last link of b
        Assert.True(Covers(rec.Take(), b, 0, 64 << 10));
        // Nothing for changes that move no mapping, nor for snapshots.
        Assert.Equal(0, (int)p.Live.SetXattr(a, "user.x", [1]));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        Assert.Empty(rec.Take());
        // Unsubscribed: nothing is recorded any more.
        p.Engine.RemoveMappingListener(rec);
        WriteAt(p.Live, a, 0, Pattern(100, 4));
        p.Engine.Commit();
        Assert.Empty(rec.Take());
        p.AssertClean();
    }

    [Fact]
    public async Task Freed_blocks_stay_unallocatable_until_their_invalidation_was_delivered()
    {
        using var p = new MemoryPool();
        long a = CreateFile(p.Live, "/a");
        WriteAt(p.Live, a, 0, Pattern(16384, 1));
        p.Engine.Commit();
        Assert.Equal(0, (int)p.Engine.IomapBegin(a, 0, 4096, IomapOp.None, out var pair));
        long oldBlock = (long)(pair.Read.Address / 4096);
        var log = p.Engine.Space[FormatConstants.LogCookie];

        // A listener that is slow (a kernel taking its time): the commit must wait for it.
        var entered = new ManualResetEventSlim();
        var release = new ManualResetEventSlim();
        bool busyDuringDelivery = false;
        var rec = new Recorder
        {
            OnRange = r =>
            {
                busyDuringDelivery = log.IsBusy(oldBlock);
                entered.Set();
                release.Wait(TimeSpan.FromSeconds(30));
            },
        };
        p.Engine.AddMappingListener(rec);
        var writer = Task.Run(() => WriteAt(p.Live, a, 0, Pattern(4096, 2)));      // remaps block 0; delivers at its end
        Assert.True(entered.Wait(TimeSpan.FromSeconds(30)), "the write did not deliver its invalidation");
        var commit = Task.Run(() => p.Engine.Commit());
        Assert.NotSame(commit, await Task.WhenAny(commit, Task.Delay(300)));   // the commit waits for the delivery
        Assert.True(log.IsBusy(oldBlock));
        release.Set();
        await commit.WaitAsync(TimeSpan.FromSeconds(30));
        await writer.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(busyDuringDelivery);
        Assert.False(log.IsBusy(oldBlock));   // free only now
        Assert.True(Covers(rec.Take(), a, 0, 4096));
        p.AssertClean();
    }

    [Fact]
    public void One_ioend_commits_several_allocations_and_refuses_an_address_they_do_not_continue()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f"), other = CreateFile(p.Live, "/o");
        WriteAt(p.Live, f, 4096, Pattern(4096, 1));   // block 1 has data, block 0 is a hole: two runs
        p.Engine.Commit();
        var dev = p.Engine.Device(FormatConstants.LogCookie);

        // Direct I/O: one completion for the whole write, no address.
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 0, 8192, IomapOp.Write | IomapOp.Direct, out var m0));
        Assert.Equal(4096, m0.Write.Length);
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 4096, 4096, IomapOp.Write | IomapOp.Direct, out var m1));
        var data = Pattern(8192, 2);
        dev.Write((long)m0.Write.Address, data.AsSpan(0, 4096));
        dev.Write((long)m1.Write.Address, data.AsSpan(4096));
        Assert.Equal(0, (int)p.Engine.IoEnd(f, 0, 8192, 0, 0, FormatConstants.NoAddress, out long size));
        Assert.Equal(8192, size);
        Assert.Equal(data, ReadAll(p.Live, f));

        // Writeback: allocations separated on the device by someone else's cannot be one merged ioend.
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 0, 4096, IomapOp.Writeback, out var w0));
        Assert.Equal(0, (int)p.Engine.IomapBegin(other, 0, 4096, IomapOp.Writeback, out var wo));
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 4096, 4096, IomapOp.Writeback, out var w1));
        Assert.NotEqual(w0.Write.Address + 4096, w1.Write.Address);
        var v2 = Pattern(8192, 3);
        dev.Write((long)w0.Write.Address, v2.AsSpan(0, 4096));
        dev.Write((long)w1.Write.Address, v2.AsSpan(4096));
        long free = p.Live.StatFs().FreeBlocks;
        Assert.Equal(Errno.EINVAL, p.Engine.IoEnd(f, 0, 8192, 0, w0.Write.Device, w0.Write.Address, out _));
        Assert.Equal(data, ReadAll(p.Live, f));             // nothing changed
        Assert.Equal(free, p.Live.StatFs().FreeBlocks);
        Assert.Equal(0, (int)p.Engine.IoEnd(f, 0, 4096, 0, w0.Write.Device, w0.Write.Address, out _));
        Assert.Equal(0, (int)p.Engine.IoEnd(f, 4096, 4096, 0, w1.Write.Device, w1.Write.Address, out _));
        Assert.Equal(v2, ReadAll(p.Live, f));
        Assert.Equal(0, (int)p.Engine.IomapEnd(other, 0, 4096, 0, IomapOp.Writeback, wo.Write));

        // Contiguous allocations merged into one ioend with the first one's address.
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 0, 4096, IomapOp.Writeback, out var c0));
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 4096, 4096, IomapOp.Writeback, out var c1));
        Assert.Equal(c0.Write.Address + 4096, c1.Write.Address);
        var v3 = Pattern(8192, 4);
        dev.Write((long)c0.Write.Address, v3);
        Assert.Equal(0, (int)p.Engine.IoEnd(f, 0, 8192, 0, c0.Write.Device, c0.Write.Address, out _));
        Assert.Equal(v3, ReadAll(p.Live, f));
        Assert.Equal(0, p.Engine.Exclusive(() => p.Engine.ReservedBlocks().Count));
        p.AssertClean();
    }

    [Fact]
    public void A_failed_ioend_with_an_address_releases_only_that_allocation()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        long free = p.Live.StatFs().FreeBlocks;
        // Two allocations for one range (a kernel writeback in flight, and another write of the range).
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 0, 8192, IomapOp.Writeback, out var a));
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 0, 8192, IomapOp.Write | IomapOp.Direct, out var b));
        Assert.Equal(free - 4, p.Live.StatFs().FreeBlocks);
        Assert.Equal(0, (int)p.Engine.IoEnd(f, 0, 8192, (int)Errno.EIO, b.Write.Device, b.Write.Address, out _));
        Assert.Equal(free - 2, p.Live.StatFs().FreeBlocks);   // b given back, a still pending
        var data = Pattern(8192, 1);
        p.Engine.Device(a.Write.Device).Write((long)a.Write.Address, data);
        Assert.Equal(0, (int)p.Engine.IoEnd(f, 0, 8192, 0, a.Write.Device, a.Write.Address, out long size));
        Assert.Equal(8192, size);
        Assert.Equal(data, ReadAll(p.Live, f));
        // Without an address, a failure gives back every allocation of the range.
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 0, 8192, IomapOp.Writeback, out _));
        Assert.Equal(0, (int)p.Engine.IomapBegin(f, 0, 8192, IomapOp.Write | IomapOp.Direct, out _));
        Assert.Equal(0, (int)p.Engine.IoEnd(f, 0, 8192, (int)Errno.EIO, 0, FormatConstants.NoAddress, out _));
        Assert.Equal(0, p.Engine.Exclusive(() => p.Engine.ReservedBlocks().Count));
        p.AssertClean();
    }

    [Fact]
    public void A_frozen_engine_commits_nothing_until_thawed()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("old", out _));
        WriteAt(p.Live, f, 0, Pattern(4096, 1));
        long commits = p.Engine.CommitCount;
        Assert.Equal(0, (int)p.Engine.Freeze());
        Assert.Equal(commits + 1, p.Engine.CommitCount);     // what was written is durable
        Assert.True(p.Engine.Frozen);
        p.AssertClean();                                     // fsck of the frozen state: no commit
        WriteAt(p.Live, f, 4096, Pattern(4096, 2));          // (the kernel stops writers; the engine itself does not)
        p.Engine.Commit();                                   // fsync while frozen: returns, commits nothing
        Assert.Equal(Errno.EBUSY, p.Engine.CreateSnapshot("s", out _));
        Assert.Equal(Errno.EBUSY, p.Engine.DeleteSnapshot("old"));
        Assert.Throws<InvalidOperationException>(() => p.Pool.Fsck());   // would take the changes since for leaks
        Assert.Equal(commits + 1, p.Engine.CommitCount);
        p.Engine.Thaw();
        Assert.False(p.Engine.Frozen);
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        Assert.True(p.Engine.CommitCount > commits + 1);
        p.AssertClean();
        p.Reopen();
        Assert.Equal(8192, ReadAll(p.Live, f).Length);       // the write made while frozen was committed after the thaw
    }

    /// <summary>A snapshot deletion commits with the state lock held and waits for every delivery in flight: a
    /// delivery that a writer started before must be able to finish (it must not need that lock).</summary>
    [Fact]
    public async Task A_snapshot_deletion_waits_for_a_delivery_in_flight_without_deadlock()
    {
        var p = new MemoryPool(); // not disposed when the deletion hangs: closing would wait for it forever
        long a = CreateFile(p.Live, "/a");
        WriteAt(p.Live, a, 0, Pattern(16384, 1));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        var entered = new ManualResetEventSlim();
        var release = new ManualResetEventSlim();
        var rec = new Recorder { OnRange = _ => { entered.Set(); release.Wait(TimeSpan.FromSeconds(30)); } };
        p.Engine.AddMappingListener(rec);
        var writer = Task.Run(() => WriteAt(p.Live, a, 0, Pattern(4096, 2)));      // delivers at its end
        Assert.True(entered.Wait(TimeSpan.FromSeconds(30)), "the write did not deliver its invalidation");
        var delete = Task.Run(() => p.Engine.DeleteSnapshot("s"));
        Assert.NotSame(delete, await Task.WhenAny(delete, Task.Delay(300)));   // the deletion waits for the delivery
        release.Set();
        await writer.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, (int)await delete.WaitAsync(TimeSpan.FromSeconds(30)));
        p.AssertClean();
        p.Dispose();
    }
}
