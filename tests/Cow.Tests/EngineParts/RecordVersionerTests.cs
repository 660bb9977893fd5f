using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Xunit;

namespace Cow.Tests.EngineParts;

/// <summary>The birth/death copy-on-write rule of format.md "Generations", on the versioner alone.</summary>
[Trait("Tier", "unit")]
public class RecordVersionerTests
{
    [Fact]
    public void A_private_inode_changes_in_place()
    {
        using var p = new EngineParts();
        var li = p.NewFile();
        var rec = li.Rec;
        var m = p.Versions.MutableInode(li);
        Assert.Same(rec, m);
        var batch = p.Versions.Gather();
        Assert.Empty(batch.Retired);
        Assert.Single(batch.Inodes);
    }

    [Fact]
    public void An_inode_a_snapshot_shares_is_retired_and_copied_under_a_new_record_id()
    {
        using var p = new EngineParts();
        var li = p.NewFile();
        var old = li.Rec;
        p.Versions.Gather();
        p.TakeSnapshot();
        var m = p.Versions.MutableInode(li);
        Assert.NotSame(old, m);
        Assert.NotEqual(old.Rid, m.Rid);
        Assert.Equal(p.Pool.LiveGen, m.Birth);
        Assert.Equal(FormatConstants.Forever, m.Death);
        var batch = p.Versions.Gather();
        Assert.Equal((RecordKind.Inode, old.Rid, p.Pool.LiveGen), Assert.Single(batch.Retired));
        // The second change of the copy is in place: it is private now.
        Assert.Same(m, p.Versions.MutableInode(li));
    }

    [Fact]
    public void A_shared_chunk_is_copied_with_a_reference_on_every_block_it_maps()
    {
        using var p = new EngineParts();
        var li = p.NewFile();
        var log = p.Space[FormatConstants.LogCookie];
        Assert.Equal(4, log.Allocate(4, out long start));
        var c = p.Versions.MutableChunk(li, 0);
        c.Extents.Add(new Extent(0, 4, FormatConstants.LogCookie, start));
        p.Space.AddRef(FormatConstants.LogCookie, start, 4);
        p.Versions.Gather();
        p.TakeSnapshot();
        var copy = p.Versions.MutableChunk(li, 0);
        Assert.NotSame(c, copy);
        Assert.Equal(2u, log.RefCount(start));           // the snapshot's version and the live one
        p.Versions.DropChunk(li, copy);                   // private now: dropping it releases its references
        Assert.Equal(1u, log.RefCount(start));
        Assert.Null(li.Chunks[0]);
        var batch = p.Versions.Gather();
        Assert.Contains(copy.Rid, batch.DeletedChunks);
        Assert.Contains((RecordKind.Chunk, c.Rid, p.Pool.LiveGen), batch.Retired);
    }

    [Fact]
    public void Removing_a_private_record_deletes_it_and_a_shared_one_retires_it()
    {
        using var p = new EngineParts();
        var a = p.NewFile();
        var b = p.NewFile();
        p.Versions.Gather();
        p.TakeSnapshot();
        var c = p.NewFile();                              // born after the snapshot: private
        p.Versions.RemoveInode(a);
        p.Versions.RemoveInode(c);
        Assert.True(a.Deleted && c.Deleted && !b.Deleted);
        var batch = p.Versions.Gather();
        Assert.Contains((RecordKind.Inode, a.Rec.Rid, p.Pool.LiveGen), batch.Retired);
        Assert.Contains(c.Rec.Rid, batch.DeletedInodes);
        Assert.DoesNotContain(b.Rec.Rid, batch.DeletedInodes);
    }

    [Fact]
    public void Gather_takes_everything_once_and_counts_restart()
    {
        using var p = new EngineParts();
        var li = p.NewFile();
        p.Versions.AddDirtyBlocks(7);
        Assert.True(p.Versions.HasChanges);
        Assert.Equal(7, p.Versions.DirtyBlocks);
        var batch = p.Versions.Gather();
        Assert.Single(batch.Inodes);
        Assert.False(p.Versions.HasChanges);
        Assert.Equal(0, p.Versions.DirtyBlocks);
        Assert.Equal(0, p.Versions.Gather().Count);
        Assert.Equal(1, li.Rec.Rid);
    }
}
