using System.Collections;
using System.Reflection;
using LiteDB;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>
/// Metadata lookups are parameterised queries. LiteDB 5.0.20 caches a parsed, compiled expression by its
/// text and never evicts it; <c>Query.EQ(field, value)</c> writes the value into that text, so a lookup per
/// distinct inode compiled (JIT) a new expression (about 70× slower) and grew the cache for the life of the
/// service. This test counts the cache's entries across thousands of distinct lookups. It reads two private
/// fields of LiteDB 5.0.20: if an upgrade renames them, the test says so (re-check the query style then).
/// </summary>
[Trait("Tier", "engine")]
public class MetadataQueryCacheTests
{
    private static int CachedExpressions()
    {
        int n = 0;
        foreach (var name in new[] { "_cacheEnumerable", "_cacheScalar" })
        {
            var f = typeof(BsonExpression).GetField(name, BindingFlags.Static | BindingFlags.NonPublic)
                ?? throw new Xunit.Sdk.XunitException($"LiteDB's BsonExpression.{name} is gone (LiteDB was upgraded?): re-check that metadata queries stay parameterised and update this test");
            n += ((ICollection)f.GetValue(null)!).Count;
        }
        return n;
    }

    [Fact]
    public void DistinctLookupsDoNotCompileNewExpressions()
    {
        using var mp = new MemoryPool();
        var inos = new List<long>();
        for (int i = 0; i < 300; i++)
        {
            Assert.Equal((Errno)0, mp.Live.Create(mp.Live.RootIno, $"f{i}", 0x1A4, 0, 0, out var a));
            Assert.Equal((Errno)0, mp.Live.Write(a.Ino, 0, new byte[] { 1 }, out _));
            inos.Add(a.Ino);
        }
        Assert.Equal((Errno)0, mp.Engine.CreateSnapshot("s", out _));
        var store = mp.Engine.Store;
        // Warm up every query shape once.
        store.LoadInode(inos[0], 1); store.LoadChunk(inos[0], 0, 1); store.LoadChunks(inos[0], 1);
        store.LoadLinks(inos[0], 1); store.LoadDirectory(mp.Live.RootIno, 1); store.FindChangedBetween(0, 1);
        int before = CachedExpressions();
        foreach (long ino in inos)
        {
            Assert.NotNull(store.LoadInode(ino, 2));
            Assert.NotNull(store.LoadChunk(ino, 0, 2));
            Assert.Single(store.LoadChunks(ino, 2));
            Assert.Single(store.LoadLinks(ino, 2));
            store.LoadDirectory(ino, 2);
        }
        for (long g = 0; g < 50; g++) store.FindChangedBetween(g, g + 1);
        Assert.InRange(CachedExpressions() - before, 0, 2);
    }
}
