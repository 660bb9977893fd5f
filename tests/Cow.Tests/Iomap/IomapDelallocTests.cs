using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Xunit;
using static Cow.Tests.Iomap.IomapPeer;

namespace Cow.Tests.Iomap;

/// <summary>Reports (SEEK_DATA/SEEK_HOLE, FIEMAP: IOMAP_BEGIN with OP_REPORT) see the data the kernel holds
/// dirty under a DELALLOC answer until writeback places it — found on the fuse-iomap kernel, where
/// SEEK_DATA right after a buffered write answered ENXIO.</summary>
[Trait("Tier", "engine")]
public sealed class IomapDelallocTests
{
    private const int Bs = 4096;

    [Fact]
    public void Dirty_unplaced_ranges_are_reported_as_delalloc_until_written_back()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        k.Truncate(n, ino, 1 << 20);
        // The kernel takes a buffered write of one block at 64 KiB into its page cache.
        var (e, r, w) = k.BeginRaw(n, ino, 64 << 10, 100, IomapOp.Write);
        Assert.Equal(0, e);
        Assert.Equal(Delalloc, w.Type);
        // SEEK_DATA from 0: the hole ends where the dirty block starts, and that block is data.
        var (_, r0, w0) = k.BeginRaw(n, ino, 0, 1 << 20, IomapOp.Report);
        k.CheckReply(0, IomapOp.Report, r0, w0);
        Assert.Equal((Hole, 0UL, 64UL << 10), (r0.Type, r0.Offset, r0.Length));
        var (_, r1, w1) = k.BeginRaw(n, ino, 64 << 10, 1 << 20, IomapOp.Report);
        k.CheckReply(64 << 10, IomapOp.Report, r1, w1);
        Assert.Equal((Delalloc, 64UL << 10, (ulong)Bs), (r1.Type, r1.Offset, r1.Length));
        // Plain reads are not changed (the dirty page is in the page cache already).
        Assert.Equal(Hole, k.Begin(n, ino, 64 << 10, Bs, IomapOp.None).Read.Type);
        // Writeback places it: the report now shows the mapped block.
        k.WriteBack(n, ino, 64 << 10, new byte[Bs], eof: 1 << 20);
        Assert.Equal(Mapped, k.Begin(n, ino, 64 << 10, Bs, IomapOp.Report).Read.Type);
        Assert.Equal(0, k.D.Iomap!.Delalloc.Nodes);
    }

    [Fact]
    public void A_short_write_a_truncate_and_a_failed_writeback_end_the_delayed_allocation()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        k.Truncate(n, ino, 1 << 20);
        var (_, _, w) = k.BeginRaw(n, ino, 0, 4 * Bs, IomapOp.Write);
        Assert.Equal(0, k.End(n, ino, 0, 4 * Bs, Bs, IomapOp.Write, w));   // only the first block was written
        Assert.Equal((Delalloc, (ulong)Bs), (k.Begin(n, ino, 0, 1 << 20, IomapOp.Report).Read.Type, k.Begin(n, ino, 0, 1 << 20, IomapOp.Report).Read.Length));
        Assert.Equal(Hole, k.Begin(n, ino, Bs, 1 << 20, IomapOp.Report).Read.Type);
        // a failed writeback (the kernel discards the folio and sends an ioend with the error)
        Assert.Equal(0, k.Ioend(n, ino, 0, -5, 0, Bs, 0, ulong.MaxValue).Error);
        Assert.Equal(Hole, k.Begin(n, ino, 0, 1 << 20, IomapOp.Report).Read.Type);
        // truncate drops what lies past the new end
        k.BeginRaw(n, ino, 512 << 10, Bs, IomapOp.Write);
        k.Truncate(n, ino, 256 << 10);
        Assert.Equal(0, k.D.Iomap!.Delalloc.Nodes);
    }

    /// <summary>st_blocks counts blocks dirtied over holes before writeback places them, as XFS and ext4 count
    /// delayed allocations (on the fuse-iomap kernel st_blocks was 0 right after buffered writes); overwrites of
    /// placed blocks add nothing; a hole punch drops the kernel's cached attributes (FUSE_NOTIFY_INVAL_INODE).</summary>
    [Fact]
    public void St_blocks_counts_dirty_blocks_over_holes_until_writeback()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        k.Truncate(n, ino, 1 << 20);
        Assert.Equal(0UL, k.GetAttr(n).Blocks);
        k.BeginRaw(n, ino, 64 << 10, 100, IomapOp.Write);
        k.BeginRaw(n, ino, (64 << 10) + 200, 100, IomapOp.Write);   // the same block again
        k.BeginRaw(n, ino, (512 << 10) - 10, 20, IomapOp.Write);    // across two blocks
        Assert.Equal(3UL * Bs / 512, k.GetAttr(n).Blocks);
        Assert.Equal(3UL * Bs / 512, k.Lookup(RootNode, "f").Attr.Blocks);
        // Written back: the engine counts the block, no longer the delayed allocation.
        k.WriteBack(n, ino, 64 << 10, new byte[Bs], eof: 1 << 20);
        Assert.Equal(3UL * Bs / 512, k.GetAttr(n).Blocks);
        // Dirtying the placed block again adds nothing.
        k.BeginRaw(n, ino, 64 << 10, Bs, IomapOp.Write);
        Assert.Equal(3UL * Bs / 512, k.GetAttr(n).Blocks);
        // A punch drops the dirty blocks (the kernel wrote them back first; here they are just gone) and tells
        // the kernel its cached attributes are stale.
        k.DrainNotifications();
        int before = k.OtherNotifications;
        k.Punch(n, 0, 1 << 20);
        k.DrainNotifications();
        Assert.Equal(before + 1, k.OtherNotifications);
        Assert.Equal(0UL, k.GetAttr(n).Blocks);
        Assert.Equal(0, k.D.Iomap!.Delalloc.Nodes);
        // Writeback that ends at EOF inside its block places the whole block: counted once, by the engine.
        var g = k.Create(RootNode, "g");
        k.BeginRaw(g.NodeId, g.Attr.Ino, 0, 100, IomapOp.Write);
        Assert.Equal((ulong)Bs / 512, k.GetAttr(g.NodeId).Blocks);
        k.WriteBack(g.NodeId, g.Attr.Ino, 0, new byte[Bs], eof: 100);
        Assert.Equal((ulong)Bs / 512, k.GetAttr(g.NodeId).Blocks);
        Assert.Equal(0, k.D.Iomap!.Delalloc.Nodes);
    }
}
