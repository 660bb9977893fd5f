using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>Space maps in a pool: 64 TiB devices, and pools of format versions 1 and 2 (dense <c>refs</c> documents)
/// read, kept and upgraded (format.md 5.7, 9).</summary>
[Trait("Tier", "engine")]
public class SpaceMapPoolTests(ITestOutputHelper output)
{
    private const int Mi = 1 << 20;

    [Fact]
    public void A_pool_with_a_64_TiB_log_takes_writes_and_snapshots_and_reopens()
    {
        using var p = new MemoryPool(logSize: 64L << 40);
        Assert.True(p.Live.StatFs().Blocks > (63L << 40) / 4096);
        long ino = CreateFile(p.Live, "/big");
        var data = Pattern(8 * Mi + 123, 5);
        WriteAt(p.Live, ino, 0, data);
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        WriteAt(p.Live, ino, 4 * Mi, Pattern(Mi, 6));
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        p.Reopen();
        p.AssertClean();
        Assert.Equal(data, ReadAll(p.Pool.Snapshot("s")!, Ino(p.Pool.Snapshot("s")!, "/big")));
        var now = ReadAll(p.Live, Ino(p.Live, "/big"));
        Assert.Equal(Pattern(Mi, 6), now.AsSpan(4 * Mi, Mi).ToArray());
        // Two bits per 4 MiB segment, and objects only for segments partly written.
        var log = p.Engine.Space[FormatConstants.LogCookie];
        output.WriteLine($"64 TiB log: {log.SegmentCount} segments, {log.UsedSegments().Count} used, {log.PartialSegments} kept as objects");
        Assert.True(log.PartialSegments <= 4, $"{log.PartialSegments} partial segments");
    }

    /// <summary>A pool written by a build before version 3 (the pool document says 1, the space maps are dense
    /// <c>refs</c>) opens with the same counts, keeps writing <c>refs</c> (so that build can still open it), and a device
    /// added upgrades it to version 3, after which segments are written as <c>runs</c>.</summary>
    [Fact]
    public void A_version_1_pool_keeps_dense_space_maps_until_a_device_change_upgrades_it()
    {
        using var p = new MemoryPool(baseSize: 64L * Mi, logSize: 64L * Mi);
        for (int i = 0; i < 6; i++)
        {
            long ino = CreateFile(p.Live, $"/f{i}");
            WriteAt(p.Live, ino, 0, Pattern(2 * Mi + 7 * i, i));
        }
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("old", out _));
        WriteAt(p.Live, Ino(p.Live, "/f1"), 100_000, Pattern(300_000, 77));
        p.Engine.Commit();
        p.ReopenAfter(() => RewriteAsVersion1(p));
        Assert.Equal(1, p.Engine.Store.LoadPool().FormatVersion);
        p.AssertClean();
        Assert.All(p.Engine.Store.LoadSpaceMaps(), d => Assert.True(d.Dense));

        WriteAt(p.Live, Ino(p.Live, "/f2"), 0, Pattern(Mi, 88));
        p.Engine.Commit();
        Assert.All(p.Engine.Store.LoadSpaceMaps(), d => Assert.True(d.Dense, $"segment {d.Segment} written as runs in a version-1 pool"));
        p.AssertClean();

        p.AddDevice("log2", 32L * Mi, DeviceRole.Log);
        Assert.Equal((int)FormatConstants.FormatVersion, p.Engine.Store.LoadPool().FormatVersion);
        WriteAt(p.Live, Ino(p.Live, "/f3"), 0, Pattern(3 * Mi, 99));
        p.Engine.Commit();
        var maps = p.Engine.Store.LoadSpaceMaps().ToList();
        Assert.Contains(maps, d => !d.Dense);
        p.Reopen();
        p.AssertClean();
        Assert.Equal(Pattern(2 * Mi + 7 * 4, 4), ReadAll(p.Live, Ino(p.Live, "/f4")));
        Assert.Equal(Pattern(2 * Mi + 7, 1), ReadAll(p.Pool.Snapshot("old")!, Ino(p.Pool.Snapshot("old")!, "/f1")));
    }

    /// <summary>What a build before version 3 left: the pool document at version 1 and every space map as <c>refs</c>.</summary>
    private static void RewriteAsVersion1(MemoryPool p)
    {
        using var store = MetadataStore.Open(BlockDeviceStream.Open(p.MetaMem), BlockDeviceStream.Open(p.MetaLogMem));
        var pool = store.LoadPool();
        pool.FormatVersion = 1;
        var batch = new MetadataBatch { Pool = pool };
        foreach (var d in store.LoadSpaceMaps().ToList())
        {
            d.Dense = true;
            batch.Add(d);
        }
        store.Commit(batch);
    }
}
