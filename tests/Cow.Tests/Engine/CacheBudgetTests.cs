using Cow.Core.Engine;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>The metadata caches' byte budget (<see cref="CacheBudget"/>): LiteDB's page cache, which LiteDB never shrinks
/// by itself, is given back after commits once over its share, losing nothing; the other caches' limits follow the
/// budget; a budget under the minimum is refused.</summary>
[Trait("Tier", "engine")]
public class CacheBudgetTests(ITestOutputHelper output)
{
    [Fact]
    public void Over_its_share_LiteDB_pages_are_given_back_after_commits_and_nothing_is_lost()
    {
        using var p = new MemoryPool(logSize: 512L << 20);
        p.Engine.CacheBudget = new CacheBudget(CacheBudget.MinBytes);   // 16 MiB of LiteDB pages
        Assert.Equal(CacheBudget.MinBytes / 4 / CacheBudget.ChunkBytes, p.Engine.ChunkCacheLimit);
        Assert.Equal(CacheBudget.MinBytes / 8 / CacheBudget.InodeBytes, p.Engine.InodeCacheLimit);
        Assert.Equal(1365, p.Engine.CommitEveryRecords);   // a sixteenth of 32 MiB at 1.5 KiB a record
        // Here the test commits, in one large transaction.
        p.Engine.CommitEveryBlocks = long.MaxValue; p.Engine.CommitEveryRecords = int.MaxValue; p.Engine.CommitInterval = TimeSpan.Zero;
        var fs = p.Live;
        Assert.Equal(0, (int)fs.Mkdir(1, "d", 0x1ED, 0, 0, out var d));
        for (int i = 0; i < 6000; i++)
        {
            Assert.Equal(0, (int)fs.Create(d.Ino, $"f{i}", 0x81A4, 0, 0, out var a));
            Assert.Equal(0, (int)fs.Write(a.Ino, 0, Pattern(4096, i), out _));
            fs.Release(a.Ino);
        }
        // One commit of 6,000 files: a transaction of some 30 MiB of pages, which LiteDB would keep cached.
        p.Engine.Commit();
        long releases = p.Engine.Store.CacheReleases;
        output.WriteLine($"LiteDB cache released {releases} times; now {p.Engine.Store.CacheBytes() >> 20} MiB");
        Assert.True(releases > 0, "the page cache was never given back");
        Assert.True(p.Engine.Store.CacheBytes() < 16L << 20, $"{p.Engine.Store.CacheBytes() >> 20} MiB of LiteDB pages");
        for (int i = 0; i < 6000; i += 997) Assert.Equal(Pattern(4096, i), ReadAll(fs, Ino(fs, $"/d/f{i}")));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(Pattern(4096, 5999), ReadAll(p.Live, Ino(p.Live, "/d/f5999")));
    }

    [Fact]
    public void A_budget_under_the_minimum_is_refused()
    {
        using var p = new MemoryPool();
        var before = p.Engine.CacheBudget;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => p.Engine.CacheBudget = new CacheBudget(1 << 20));
        Assert.Contains("at least 32 MiB", e.Message);
        Assert.Equal(before, p.Engine.CacheBudget);
        Assert.InRange(CacheBudget.Default().Bytes, 64L << 20, 256L << 20);
    }
}
