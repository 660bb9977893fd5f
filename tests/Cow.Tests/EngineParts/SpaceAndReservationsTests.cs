using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Xunit;

namespace Cow.Tests.EngineParts;

/// <summary>The space allocator (what new writes may use, deferred frees, held-back blocks) and the write
/// reservations (allocations in flight), each alone.</summary>
[Trait("Tier", "unit")]
public class SpaceAndReservationsTests
{
    [Fact]
    public void Every_device_less_the_reserve_is_free_and_fallocate_reservations_are_not()
    {
        using var p = new EngineParts();
        long all = p.Space.Devices.Values.Sum(d => d.FreeBlocks);
        long reserve = p.Space.ReserveBlocks;
        Assert.Equal(p.Space.Devices.Values.Sum(d => d.DataBlocks) / 100, reserve);
        Assert.Equal(all - reserve, p.Space.FreeForNewWrites());
        Assert.Equal(p.Space.Devices.Values.Sum(d => d.DataBlocks) - reserve, p.Space.SizeBlocks());
        p.Space.Preallocated = 100;
        Assert.Equal(all - reserve - 100, p.Space.FreeForNewWrites());
        p.Space.Preallocated = all + 5;
        Assert.Equal(0, p.Space.FreeForNewWrites());
    }

    [Fact]
    public void New_writes_take_the_log_then_the_base_device_and_never_the_reserve()
    {
        using var p = new EngineParts();
        var log = p.Space[FormatConstants.LogCookie];
        var base_ = p.Space[FormatConstants.BaseCookie];
        Assert.Equal(5, p.Space.AllocateForWrite(5, out uint dev, out long at));
        Assert.Equal(FormatConstants.LogCookie, dev);
        Assert.True(log.IsBusy(at));
        // Fill the log: the next writes go to the base device.
        while (log.FreeBlocks > 0) log.Allocate(FormatConstants.SegmentBlocks, out _);
        Assert.True(p.Space.AllocateForWrite(5, out dev, out at) > 0);
        Assert.Equal(FormatConstants.BaseCookie, dev);
        // Fill everything but the reserve: new writes get nothing, the cleaner still gets room.
        long room = p.Space.Devices.Values.Sum(d => d.FreeBlocks) - p.Space.ReserveBlocks;
        while (room > 0) room -= base_.Allocate(Math.Min(room, FormatConstants.SegmentBlocks), out _);
        Assert.Equal(0, p.Space.AllocateForWrite(5, out _, out _));
        Assert.Equal(0, p.Space.FreeForNewWrites());
        Assert.True(p.Space.AllocateForRelocation(5, out dev, out _) > 0);
        Assert.Equal(FormatConstants.BaseCookie, dev);
    }

    [Fact]
    public void A_transfer_moves_every_mapping_to_the_copy_and_skips_blocks_freed_meanwhile()
    {
        using var p = new EngineParts();
        var log = p.Space[FormatConstants.LogCookie];
        var base_ = p.Space[FormatConstants.BaseCookie];
        log.Allocate(4, out long from);
        log.AddRef(from, 4, 1);
        log.AddRef(from, 1, 1);       // block 0 is shared (two mappings)
        log.Release(from + 2, 1, 1);  // block 2 was freed while being copied
        base_.Allocate(4, out long to);
        var moved = p.Space.Transfer(new Relocation(FormatConstants.LogCookie, from, 4, FormatConstants.BaseCookie, to));
        Assert.Equal([new Relocation(FormatConstants.LogCookie, from, 2, FormatConstants.BaseCookie, to),
            new Relocation(FormatConstants.LogCookie, from + 3, 1, FormatConstants.BaseCookie, to + 3)], moved);
        Assert.Equal(2u, base_.RefCount(to));
        Assert.Equal(1u, base_.RefCount(to + 1));
        Assert.False(base_.IsBusy(to + 2));   // its room was given back
        Assert.Equal(1u, base_.RefCount(to + 3));
        for (int i = 0; i < 4; i++) Assert.Equal(0u, log.RefCount(from + i));
        Assert.True(log.IsBusy(from));         // freed, but not free before the commit
        var frees = p.Space.TakePendingFrees();
        p.Space.ReleaseFrees(frees);
        Assert.False(log.IsBusy(from));
    }

    [Fact]
    public void A_freed_block_stays_busy_until_its_commit_releases_it_or_holds_it_back()
    {
        using var p = new EngineParts();
        var log = p.Space[FormatConstants.LogCookie];
        Assert.Equal(8, log.Allocate(8, out long start));
        p.Space.AddRef(FormatConstants.LogCookie, start, 8);
        long free = log.FreeBlocks;
        p.Space.Release(FormatConstants.LogCookie, start, 8);
        Assert.True(p.Space.HasPendingFrees);
        Assert.Equal(free, log.FreeBlocks);                     // not reusable before the commit is durable
        var frees = p.Space.TakePendingFrees();
        p.Space.ReleaseFrees(frees);
        Assert.Equal(free + 8, log.FreeBlocks);

        Assert.Equal(8, log.Allocate(8, out long again));
        p.Space.AddRef(FormatConstants.LogCookie, again, 8);
        p.Space.Release(FormatConstants.LogCookie, again, 8);
        Assert.Equal(8, p.Space.HoldBack(p.Space.TakePendingFrees()));
        Assert.Equal(free, log.FreeBlocks);                     // held back: busy for the rest of the mount
        Assert.True(log.IsHeldBack(again));
    }

    [Fact]
    public void A_reservation_is_committed_or_released_block_by_block_and_then_dropped()
    {
        using var p = new EngineParts();
        var li = p.NewFile();
        var log = p.Space[FormatConstants.LogCookie];
        Assert.Equal(6, log.Allocate(6, out long start));
        p.Reservations.Add(li, fileBlock: 10, blocks: 6, FormatConstants.LogCookie, start);
        Assert.Equal(1, li.Reservations);
        Assert.Equal(6, p.Reservations.PendingBlocks().Count);
        var r = p.Reservations.FindPending(li.Ino, 12, FormatConstants.LogCookie, start + 2);
        Assert.NotNull(r);
        Assert.Null(p.Reservations.FindPending(li.Ino, 12, FormatConstants.LogCookie, start + 3));   // elsewhere on the device
        p.Reservations.Committed(li.Ino, r!, 0, 2);            // file blocks 10, 11 landed
        long free = log.FreeBlocks;
        p.Reservations.ReleaseRange(li.Ino, 13, 10);           // a failed write of 13..: 13, 14, 15 go back
        Assert.Equal(free + 3, log.FreeBlocks);
        Assert.Single(p.Reservations.PendingBlocks());         // block 12 still in flight
        p.Reservations.ReleaseChain(li.Ino, 12, 1, FormatConstants.LogCookie, start + 2);
        Assert.Empty(p.Reservations.PendingBlocks());
        Assert.Equal(0, li.Reservations);                      // dropped with its last pending block
        Assert.Null(p.Reservations.Find(li.Ino, 10, 1));
    }
}
