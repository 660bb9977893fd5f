using Cow.Core.Devices;
using LiteDB;
using Xunit;
using static Cow.Tests.Devices.DeviceTestUtil;

namespace Cow.Tests.Devices;

[Trait("Tier", "unit")]
public class BlockDeviceStreamTests
{
    private static byte[] ReadStream(Stream s, long offset, int count)
    {
        s.Position = offset;
        var buffer = new byte[count];
        int total = 0;
        while (total < count)
        {
            int n = s.Read(buffer, total, count - total);
            if (n == 0)
                break;
            total += n;
        }

        Assert.Equal(count, total);
        return buffer;
    }

    [Fact]
    public void WriteReadSeekAndSetLength()
    {
        var device = new MemoryBlockDevice("meta", 1 << 20);
        using var s = new BlockDeviceStream(device);
        Assert.True(s.CanRead && s.CanWrite && s.CanSeek);
        Assert.Equal(0, s.Length);
        Assert.Equal(-1, s.ReadByte());

        byte[] data = Pattern(100_000, 1);
        s.Write(data, 0, data.Length);
        Assert.Equal(100_000, s.Length);
        Assert.Equal(100_000, s.Position);
        Assert.Equal(0, s.Read(new byte[10], 0, 10));

        Assert.Equal(data, ReadStream(s, 0, data.Length));
        Assert.Equal(99_990, s.Seek(-10, SeekOrigin.End));
        Assert.Equal(data[99_990], (byte)s.ReadByte());
        Assert.Equal(99_995, s.Seek(4, SeekOrigin.Current));
        Assert.Equal(5, s.Read(new byte[100], 0, 100));
        Assert.Throws<IOException>(() => s.Seek(-1, SeekOrigin.Begin));

        // Overwrite in the middle.
        s.Position = 1000;
        s.Write(Pattern(10, 2));
        s.WriteByte(0xEE);
        Assert.Equal(Pattern(10, 2), ReadStream(s, 1000, 10));
        Assert.Equal(0xEE, ReadStream(s, 1010, 1)[0]);
        Assert.Equal(100_000, s.Length);

        // Shrink, then grow: the regrown bytes read as zero, not as the old data.
        s.SetLength(50_000);
        Assert.Equal(50_000, s.Length);
        Assert.Equal(50_000, s.Seek(0, SeekOrigin.End));
        s.SetLength(80_000);
        Assert.Equal(data[10_000..50_000], ReadStream(s, 10_000, 40_000));
        Assert.True(ReadStream(s, 50_000, 30_000).AsSpan().IndexOfAnyExcept((byte)0) < 0);

        // Writing past the end zero-fills the gap.
        s.SetLength(10);
        s.Position = 60_000;
        s.Write(Pattern(5, 3));
        Assert.Equal(60_005, s.Length);
        Assert.True(ReadStream(s, 10, 59_990).AsSpan().IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(Pattern(5, 3), ReadStream(s, 60_000, 5));

        // Stream data lives after the 4 KiB header.
        Assert.Equal(Pattern(5, 3), ReadAll(device, BlockDeviceStream.HeaderSize + 60_000, 5));
    }

    [Fact]
    public void InitialLengthIsZeroFilled()
    {
        var device = new MemoryBlockDevice("meta", 1 << 20);
        device.Write(BlockDeviceStream.HeaderSize, Pattern(1000, 1)); // stale data
        using var s = new BlockDeviceStream(device, initialLength: 5000);
        Assert.Equal(5000, s.Length);
        Assert.True(ReadStream(s, 0, 5000).AsSpan().IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void MetadataDeviceFull()
    {
        var device = new MemoryBlockDevice("tiny-meta", 64 * 1024);
        using var s = new BlockDeviceStream(device);
        Assert.Equal(60 * 1024, s.Capacity);
        s.Write(new byte[60 * 1024]);
        var ex = Assert.Throws<IOException>(() => s.WriteByte(1));
        Assert.Contains("metadata device full", ex.Message);
        Assert.Contains("tiny-meta", ex.Message);
        Assert.Equal(60 * 1024, s.Length);
        ex = Assert.Throws<IOException>(() => s.SetLength(60 * 1024 + 1));
        Assert.Contains("metadata device full", ex.Message);
        Assert.Throws<IOException>(() => new BlockDeviceStream(device, 60 * 1024 + 1));
        Assert.Throws<ArgumentException>(() => new BlockDeviceStream(new MemoryBlockDevice("x", 4095)));
    }

    [Fact]
    public void FreshDeviceOpensEmpty()
    {
        using var s = BlockDeviceStream.Open(new MemoryBlockDevice("fresh", 1 << 20));
        Assert.Equal(0, s.Length);
        s.Write(Pattern(10, 1));
        Assert.Equal(10, s.Length);
    }

    [Fact]
    public void OpenRecoversLength()
    {
        var device = new MemoryBlockDevice("meta", 1 << 20);
        using (var s = new BlockDeviceStream(device))
        {
            s.Write(Pattern(12_345, 1));
            s.Flush();
        }

        using (var s = BlockDeviceStream.Open(device))
        {
            Assert.Equal(12_345, s.Length);
            Assert.Equal(Pattern(12_345, 1), ReadStream(s, 0, 12_345));
            s.SetLength(777); // SetLength writes the header at once
        }

        using (var s = BlockDeviceStream.Open(device))
        {
            Assert.Equal(777, s.Length);
            Assert.Equal(Pattern(12_345, 1)[..777], ReadStream(s, 0, 777));
            for (int i = 0; i < 5; i++)
            {
                s.SetLength(1000 + i);
                s.Flush();
            }
        }

        using (var s = BlockDeviceStream.Open(device))
            Assert.Equal(1004, s.Length);

        // Formatting anew discards the old stream, whatever its header sequence.
        using (var s = new BlockDeviceStream(device, 3))
            Assert.Equal(3, s.Length);
        using (var s = BlockDeviceStream.Open(device))
            Assert.Equal(3, s.Length);
    }

    [Fact]
    public void DamagedNewestHeaderFallsBackToThePreviousOne()
    {
        var device = new MemoryBlockDevice("meta", 1 << 20);
        using (var s = new BlockDeviceStream(device))
        {
            s.SetLength(100);
            s.SetLength(200);
            s.Flush();
        }

        // Corrupt whichever copy holds length 200 (flip a byte of its length field).
        for (int copy = 0; copy < 2; copy++)
        {
            byte[] header = ReadAll(device, copy * 512, 28);
            if (BitConverter.ToInt64(header, 16) == 200)
            {
                header[16] ^= 0xFF;
                device.Write(copy * 512, header);
            }
        }

        using (var s = BlockDeviceStream.Open(device))
            Assert.Equal(100, s.Length);

        // Both copies damaged: refuse rather than guess.
        device.Write(0, Pattern(28, 1));
        device.Write(512, Pattern(28, 2));
        var ex = Assert.Throws<InvalidDataException>(() => BlockDeviceStream.Open(device));
        Assert.Contains("meta", ex.Message);
    }

    [Fact]
    public void PowerCutDropUnflushedShowsStateAtLastFlush()
    {
        var media = new MemoryBlockDevice("meta", 1 << 20);
        var device = new FaultInjectingBlockDevice(media);
        byte[] v1 = Pattern(5000, 1);
        using (var s = new BlockDeviceStream(device))
        {
            s.Write(v1);
            s.Flush();

            s.Position = 0;
            s.Write(Pattern(3000, 2)); // overwrite
            s.Position = 5000;
            s.Write(Pattern(20_000, 3)); // extend
            s.SetLength(9000); // header write, unflushed
            device.PowerCut(PowerCutMode.DropUnflushed, 0);
            Assert.Throws<IOException>(s.Flush);
        }

        using var rebooted = new FaultInjectingBlockDevice(device.Inner);
        using var reopened = BlockDeviceStream.Open(rebooted);
        Assert.Equal(5000, reopened.Length);
        Assert.Equal(v1, ReadStream(reopened, 0, 5000));

        // Growing again must not resurrect anything.
        reopened.SetLength(30_000);
        Assert.True(ReadStream(reopened, 5000, 25_000).AsSpan().IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void PowerCutKeepRandomSubsetAlwaysLeavesAReadableStream()
    {
        for (int seed = 0; seed < 20; seed++)
        {
            var device = new FaultInjectingBlockDevice(new MemoryBlockDevice("meta", 1 << 20));
            using (var s = new BlockDeviceStream(device))
            {
                s.Write(Pattern(5000, 1));
                s.Flush();
                s.SetLength(7000);
                s.SetLength(8000);
                s.Write(Pattern(100, 2));
                device.PowerCut(PowerCutMode.KeepRandomSubset, seed);
            }

            using var reopened = BlockDeviceStream.Open(new FaultInjectingBlockDevice(device.Inner));
            Assert.Contains(reopened.Length, new long[] { 5000, 7000, 8000 });
            Assert.Equal(Pattern(5000, 1), ReadStream(reopened, 0, 5000));
        }
    }

    [Fact]
    public void DisposedStreamThrows()
    {
        var s = new BlockDeviceStream(new MemoryBlockDevice("meta", 1 << 20));
        s.Dispose();
        Assert.False(s.CanRead);
        Assert.Throws<ObjectDisposedException>(() => s.Length);
        Assert.Throws<ObjectDisposedException>(() => s.Write(new byte[1]));
    }

    [Fact]
    public void LiteDbRoundTripsOnDeviceStreams()
    {
        var dataDevice = new MemoryBlockDevice("meta-data", 32 << 20);
        var logDevice = new MemoryBlockDevice("meta-log", 32 << 20);

        using (var data = new BlockDeviceStream(dataDevice))
        using (var log = new BlockDeviceStream(logDevice))
        {
            using (var db = new LiteDatabase(data, logStream: log))
            {
                var col = db.GetCollection<BsonDocument>("snapshots");
                for (int i = 0; i < 500; i++)
                    col.Insert(new BsonDocument { ["_id"] = i, ["name"] = $"snap-{i}", ["blob"] = Pattern(300, i) });
                db.Checkpoint();
            }

            data.Flush();
            log.Flush();
        }

        using (var data = BlockDeviceStream.Open(dataDevice))
        using (var log = BlockDeviceStream.Open(logDevice))
        using (var db = new LiteDatabase(data, logStream: log))
        {
            var col = db.GetCollection<BsonDocument>("snapshots");
            Assert.Equal(500, col.Count());
            BsonDocument doc = col.FindById(123);
            Assert.Equal("snap-123", doc["name"].AsString);
            Assert.Equal(Pattern(300, 123), doc["blob"].AsBinary);
        }
    }
}
