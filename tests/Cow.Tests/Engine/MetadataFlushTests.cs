using Cow.Core.Devices;
using Cow.Core.Metadata;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// How often a metadata commit flushes the metadata log. Every flush is a device cache flush; on a loop
/// device it stalls the data writes queued behind it, so a commit must not flush per LiteDB page batch.
/// (Durability itself is checked by <see cref="CrashTests"/>.)
/// </summary>
[Trait("Tier", "engine")]
public class MetadataFlushTests
{
    [Fact]
    public void ALargeCommitFlushesTheMetadataLogAFixedNumberOfTimes()
    {
        using var p = new MemoryPool(logSize: 1L << 30, faulty: true);
        p.Engine.CommitInterval = TimeSpan.Zero;
        p.Engine.CommitEveryBlocks = long.MaxValue;
        p.Engine.CommitEveryRecords = int.MaxValue;
        var fs = p.Live;
        // The commit after 256 MiB of overwrites (the engine's default threshold): chunk maps and space
        // maps of 65,536 blocks, a transaction of hundreds of LiteDB pages.
        var data = Pattern(1 << 20, 7);
        long ino = CreateFile(fs, "/big");
        for (int i = 0; i < 256; i++) WriteAt(fs, ino, (long)i << 20, data);
        p.Engine.Commit();
        for (int i = 0; i < 256; i++) WriteAt(fs, ino, (long)i << 20, data);
        long before = p.MetaLogFault!.TotalFlushes;
        p.Engine.Commit();
        long flushes = p.MetaLogFault.TotalFlushes - before;
        // The commit record is written twice with a flush after each (LogWriteLatchStream), and the
        // checkpoint's truncation of the log is flushed: a few, however large the transaction.
        Assert.InRange(flushes, 1, 4);
        p.Reopen();
        Assert.True(p.Pool.Fsck().Clean);
        var back = new byte[data.Length];
        Assert.Equal(0, (int)p.Live.Read(Ino(p.Live, "/big"), 5L << 20, back, out int n));
        Assert.Equal(data.Length, n);
        Assert.Equal(data, back);
    }

    /// <summary>LiteDB's writer task flushes the log whenever its queue runs dry (hundreds of times in one
    /// large commit on a real disk, where the committing thread is the slower one): those flushes must not
    /// reach the device. A commit record makes everything before it durable, and a truncation is flushed.</summary>
    [Fact]
    public void LiteDbFlushesOfTheLogReachTheDeviceOnlyAtCommitRecordsAndTruncation()
    {
        var dev = new FaultInjectingBlockDevice(new MemoryBlockDevice("meta-log", 1 << 20), "meta-log");
        using var log = new LogWriteLatchStream(new BlockDeviceStream(dev));
        var page = new byte[8192];
        for (int i = 0; i < 3; i++) { log.Write(page, 0, page.Length); log.Flush(); }
        Assert.Equal(0, dev.TotalFlushes);
        Assert.True(dev.WritesSinceFlush > 0);
        page[18] = 1;                       // LiteDB's "confirmed" flag: the transaction's commit record
        log.Write(page, 0, page.Length);
        Assert.True(dev.TotalFlushes > 0);  // the pages before it and the record unconfirmed, then the record
        Assert.Equal(0, dev.WritesSinceFlush);
        page[18] = 0;                       // a page of the next transaction, not yet durable
        log.Write(page, 0, page.Length);
        long before = dev.TotalFlushes;
        log.SetLength(0);                   // a checkpoint's truncation
        Assert.True(dev.TotalFlushes > before);
        Assert.Equal(0, dev.WritesSinceFlush);
    }
}
