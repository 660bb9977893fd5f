using Cow.Core.Engine;
using Cow.Core.Metadata;
using Xunit;

namespace Cow.Tests.EngineParts;

/// <summary>The live tree cache's trim rules, alone: what a commit may drop and what it must keep.</summary>
[Trait("Tier", "unit")]
public class LiveTreeCacheTests
{
    [Fact]
    public void A_trim_drops_deleted_inodes_and_clean_closed_ones_over_the_limit_but_never_pinned_open_or_fresh_ones()
    {
        using var p = new EngineParts();
        p.Cache.InodeLimit = 4;
        var files = Enumerable.Range(0, 10).Select(_ => p.NewFile()).ToList();
        p.Versions.Gather();
        p.Pool.CommitSeq = 5;                          // the commit that made them clean
        files[0].Pins = 1;
        files[1].OpenCount = 1;
        files[2].Touched = 6;                          // changed after the commit's gather
        p.Versions.RemoveInode(files[3]);
        files[3].Touched = 0;
        p.Cache.Trim(committedSeq: 5, _ => false);
        Assert.True(p.Cache.TryGetCached(files[0].Ino, out _));
        Assert.True(p.Cache.TryGetCached(files[1].Ino, out _));
        Assert.True(p.Cache.TryGetCached(files[2].Ino, out _));
        Assert.False(p.Cache.TryGetCached(files[3].Ino, out _));
        Assert.True(p.Cache.Inodes.Count() <= 4, $"{p.Cache.Inodes.Count()} inodes cached over a limit of 4");
    }

    [Fact]
    public void A_trim_over_the_chunk_limit_keeps_dirty_chunks()
    {
        using var p = new EngineParts();
        p.Cache.ChunkLimit = 4;
        var li = p.NewFile();
        var chunks = Enumerable.Range(0, 10).Select(i => p.Versions.MutableChunk(li, i)).ToList();
        var dirty = chunks.Take(3).ToHashSet();
        p.Cache.Trim(committedSeq: 0, dirty.Contains);
        Assert.Equal(3, p.Cache.ChunkCount);
        Assert.All(dirty, c => Assert.Same(c, li.Chunks[c.Index]));
        Assert.False(li.AllChunksLoaded);              // what was dropped loads again from the store
    }
}
