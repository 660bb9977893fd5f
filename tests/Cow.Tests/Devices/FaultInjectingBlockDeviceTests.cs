using Cow.Core.Devices;
using Xunit;
using static Cow.Tests.Devices.DeviceTestUtil;

namespace Cow.Tests.Devices;

[Trait("Tier", "unit")]
public class FaultInjectingBlockDeviceTests
{
    private static FaultInjectingBlockDevice NewDevice(string name = "fault0", long length = 4 << 20) =>
        new(new MemoryBlockDevice(name, length));

    [Fact]
    public void Contract()
    {
        using var device = NewDevice();
        Assert.Equal("fault0", device.Name);
        Assert.Equal(4 << 20, device.Length);
        CheckContract(device, device.Flush);
    }

    [Fact]
    public void ContractWithoutFlushing()
    {
        using var device = NewDevice();
        CheckContract(device);
        Assert.Equal(0, device.TotalFlushes);
    }

    [Fact]
    public void ConcurrentDisjointIo()
    {
        using var device = NewDevice();
        CheckConcurrentDisjointIo(device);
    }

    [Fact]
    public void UnflushedWritesAreVisibleButNotDurableUntilFlush()
    {
        using var device = NewDevice();
        device.Write(0, Pattern(1000, 1));
        device.Write(500, Pattern(1000, 2));
        Assert.Equal(2, device.WritesSinceFlush);
        Assert.Equal(2, device.TotalWrites);

        byte[] expected = new byte[1500];
        Pattern(1000, 1).CopyTo(expected, 0);
        Pattern(1000, 2).CopyTo(expected, 500);
        Assert.Equal(expected, ReadAll(device, 0, 1500));
        AssertZero(device.Inner, 0, 1500);

        device.Flush();
        Assert.Equal(0, device.WritesSinceFlush);
        Assert.Equal(1, device.TotalFlushes);
        Assert.Equal(expected, ReadAll(device.Inner, 0, 1500));
    }

    [Fact]
    public void NthWriteFailsAndChangesNothing()
    {
        using var device = NewDevice("dev-w");
        device.FailWriteNumber(2);
        device.Write(0, Pattern(512, 1));
        var ex = Assert.Throws<IOException>(() => device.Write(8192, Pattern(512, 2)));
        Assert.Equal("injected write error on dev-w at offset 8192", ex.Message);
        AssertZero(device, 8192, 512);
        Assert.Equal(1, device.WritesSinceFlush);
        Assert.Equal(1, device.TotalWrites);

        // Fires once; the device keeps working.
        device.Write(8192, Pattern(512, 3));
        device.Flush();
        Assert.Equal(Pattern(512, 1), ReadAll(device.Inner, 0, 512));
        Assert.Equal(Pattern(512, 3), ReadAll(device.Inner, 8192, 512));
        Assert.False(device.HasLostPower);
    }

    [Fact]
    public void ReadAndFlushFailures()
    {
        using var device = NewDevice("dev-r");
        device.Write(0, Pattern(100, 1));

        device.FailReads(true);
        var ex = Assert.Throws<IOException>(() => device.Read(4096, new byte[10]));
        Assert.Equal("injected read error on dev-r at offset 4096", ex.Message);
        device.FailReads(false);
        Assert.Equal(Pattern(100, 1), ReadAll(device, 0, 100));

        device.FailFlush(true);
        ex = Assert.Throws<IOException>(device.Flush);
        Assert.Equal("injected flush error on dev-r", ex.Message);
        Assert.Equal(1, device.WritesSinceFlush);
        Assert.Equal(0, device.TotalFlushes);
        AssertZero(device.Inner, 0, 100);

        device.FailFlush(false);
        device.Flush();
        Assert.Equal(Pattern(100, 1), ReadAll(device.Inner, 0, 100));
    }

    [Fact]
    public void ClearFaultsCancelsPendingFaults()
    {
        using var device = NewDevice();
        device.FailWriteNumber(1);
        device.TearWriteNumber(2);
        device.CutPowerAfterWrites(3);
        device.FailReads(true);
        device.FailFlush(true);
        device.ClearFaults();
        for (int i = 0; i < 5; i++)
            device.Write(i * 512L, Pattern(512, i));
        device.Read(0, new byte[512]);
        device.Flush();
        Assert.False(device.HasLostPower);
        Assert.Equal(5, device.TotalWrites);
    }

    [Fact]
    public void TornWriteKeepsFirstHalfInWholeSectors()
    {
        using var device = NewDevice("dev-t");
        device.Write(0, Enumerable.Repeat((byte)0xAA, 4096).ToArray());
        device.Flush();

        device.TearWriteNumber(1);
        byte[] torn = Enumerable.Repeat((byte)0x55, 3000).ToArray();
        var ex = Assert.Throws<IOException>(() => device.Write(0, torn));
        Assert.StartsWith("device dev-t has lost power", ex.Message);
        Assert.True(device.HasLostPower);

        // 3000 / 2 = 1500, rounded down to sectors = 1024 bytes land; the rest keeps the old data.
        byte[] durable = ReadAll(device.Inner, 0, 4096);
        Assert.All(durable[..1024], b => Assert.Equal(0x55, b));
        Assert.All(durable[1024..], b => Assert.Equal(0xAA, b));
    }

    [Fact]
    public void TornWriteDropsEarlierUnflushedWritesAndSmallTornWritesLandNothing()
    {
        using var device = NewDevice();
        device.TearWriteNumber(2);
        device.Write(65536, Pattern(512, 1)); // unflushed, dropped by the power loss
        var ex = Assert.Throws<IOException>(() => device.Write(0, Pattern(1000, 2))); // 500 -> 0 sectors
        Assert.Contains("has lost power", ex.Message);
        AssertZero(device.Inner, 0, 70000);
    }

    [Fact]
    public void DropUnflushedLosesExactlyTheUnflushedWrites()
    {
        using var device = NewDevice();
        device.Write(0, Pattern(4096, 1));
        device.Write(10_000, Pattern(2048, 2));
        device.Flush();
        device.Write(2048, Pattern(4096, 3)); // overlaps flushed data
        device.Write(200_000, Pattern(100, 4));
        device.Write(10_000, Pattern(10, 5));
        Assert.Equal(3, device.WritesSinceFlush);

        device.PowerCut(PowerCutMode.DropUnflushed, seed: 0);

        Assert.Equal(Pattern(4096, 1), ReadAll(device.Inner, 0, 4096));
        AssertZero(device.Inner, 4096, 10_000 - 4096);
        Assert.Equal(Pattern(2048, 2), ReadAll(device.Inner, 10_000, 2048));
        AssertZero(device.Inner, 200_000, 100);
    }

    [Fact]
    public void KeepRandomSubsetIsDeterministicAndKeepsWholeWrites()
    {
        const int writes = 32;
        (byte[] image, bool[] kept) Run(int seed)
        {
            using var device = NewDevice();
            device.Write(0, Pattern(512, 99));
            device.Flush();
            for (int i = 1; i <= writes; i++)
                device.Write(i * 4096L, Pattern(1024, i));
            device.PowerCut(PowerCutMode.KeepRandomSubset, seed);

            var keptFlags = new bool[writes + 1];
            for (int i = 1; i <= writes; i++)
            {
                byte[] got = ReadAll(device.Inner, i * 4096L, 1024);
                keptFlags[i] = got.AsSpan().SequenceEqual(Pattern(1024, i));
                Assert.True(keptFlags[i] || got.AsSpan().IndexOfAnyExcept((byte)0) < 0,
                    $"write {i} was neither kept whole nor dropped");
            }

            Assert.Equal(Pattern(512, 99), ReadAll(device.Inner, 0, 512));
            return (ReadAll(device.Inner, 0, (writes + 1) * 4096), keptFlags);
        }

        var first = Run(1234);
        var second = Run(1234);
        Assert.Equal(first.image, second.image);
        Assert.Equal(first.kept, second.kept);
        int keptCount = first.kept.Count(k => k);
        Assert.InRange(keptCount, 1, writes - 1);

        // Different seeds choose different subsets.
        Assert.Contains(Enumerable.Range(0, 10), s => !Run(s).kept.SequenceEqual(first.kept));
    }

    [Fact]
    public void AfterPowerLossEverythingThrows()
    {
        using var device = NewDevice("dev-p");
        device.PowerCut(PowerCutMode.DropUnflushed, 0);
        Assert.True(device.HasLostPower);
        foreach (Action op in new Action[]
                 {
                     () => device.Read(0, new byte[1]),
                     () => device.Write(0, new byte[1]),
                     device.Flush,
                 })
        {
            var ex = Assert.Throws<IOException>(op);
            Assert.Equal("device dev-p has lost power", ex.Message);
        }

        device.PowerCut(PowerCutMode.KeepRandomSubset, 1); // already off: no-op
    }

    [Fact]
    public void CutPowerAfterWritesThenRebootSeesFlushedData()
    {
        var device = NewDevice("dev-c");
        device.Write(0, Pattern(4096, 1));
        device.Flush();

        device.CutPowerAfterWrites(2);
        device.Write(0, Pattern(4096, 2));
        Assert.False(device.HasLostPower);
        device.Write(8192, Pattern(4096, 3)); // completes, then the power goes
        Assert.True(device.HasLostPower);
        Assert.Throws<IOException>(() => device.Write(16384, new byte[1]));
        Assert.Equal(3, device.TotalWrites);

        IBlockDevice durable = device.Inner;
        device.Dispose();

        using var rebooted = new FaultInjectingBlockDevice(durable);
        Assert.Equal("dev-c", rebooted.Name);
        Assert.Equal(Pattern(4096, 1), ReadAll(rebooted, 0, 4096));
        AssertZero(rebooted, 8192, 4096);
        rebooted.Write(8192, Pattern(10, 4));
        rebooted.Flush();
        Assert.Equal(Pattern(10, 4), ReadAll(durable, 8192, 10));
    }

    [Fact]
    public void CutPowerAfterZeroWritesCutsNow()
    {
        using var device = NewDevice();
        device.Write(0, Pattern(10, 1));
        device.CutPowerAfterWrites(0);
        Assert.True(device.HasLostPower);
        AssertZero(device.Inner, 0, 10);
    }

    [Fact]
    public void DisposeDropsUnflushedWritesAndKeepsInner()
    {
        var inner = new MemoryBlockDevice("inner", 1 << 20);
        var device = new FaultInjectingBlockDevice(inner, "named");
        Assert.Equal("named", device.Name);
        device.Write(0, Pattern(10, 1));
        device.Dispose();
        Assert.Throws<ObjectDisposedException>(() => device.Read(0, new byte[1]));
        AssertZero(inner, 0, 10);
        inner.Write(0, Pattern(10, 2)); // still usable
    }

    [Fact]
    public void InvalidControlArgumentsAreRejected()
    {
        using var device = NewDevice();
        Assert.Throws<ArgumentOutOfRangeException>(() => device.FailWriteNumber(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.TearWriteNumber(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.CutPowerAfterWrites(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.PowerCut((PowerCutMode)7, 0));
        Assert.False(device.HasLostPower);
    }
}
