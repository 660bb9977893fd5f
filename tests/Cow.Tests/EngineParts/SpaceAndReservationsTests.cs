using Cow.Core.Engine;
using Cow.Core.Format;
using Xunit;

namespace Cow.Tests.EngineParts;

/// <summary>The space allocator (what new writes may use, deferred frees, held-back blocks) and the write
/// reservations (allocations in flight), each alone.</summary>
[Trait("Tier", "unit")]
public class SpaceAndReservationsTests
{
    [Fact]
    public void Only_the_log_takes_new_writes_and_fallocate_reservations_are_not_free()
    {
        using var p = new EngineParts();
        long logFree = p.Space.Log.FreeBlocks;
        Assert.Equal(logFree, p.Space.FreeForNewWrites());
        p.Space.Preallocated = 100;
        Assert.Equal(logFree - 100, p.Space.FreeForNewWrites());
        p.Space.Preallocated = logFree + 5;
        Assert.Equal(0, p.Space.FreeForNewWrites());
        Assert.False(SpaceAllocator.TakesNewWrites(FormatConstants.BaseCookie));
        Assert.True(SpaceAllocator.TakesNewWrites(FormatConstants.LogCookie));
    }

    [Fact]
    public void A_freed_block_stays_busy_until_its_commit_releases_it_or_holds_it_back()
    {
        using var p = new EngineParts();
        var log = p.Space.Log;
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
        var log = p.Space.Log;
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
