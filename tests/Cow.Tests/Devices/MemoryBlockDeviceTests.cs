using Cow.Core.Devices;
using Xunit;
using static Cow.Tests.Devices.DeviceTestUtil;

namespace Cow.Tests.Devices;

[Trait("Tier", "unit")]
public class MemoryBlockDeviceTests
{
    [Fact]
    public void Contract()
    {
        using var device = new MemoryBlockDevice("mem0", 4 << 20);
        Assert.Equal("mem0", device.Name);
        Assert.Equal(4 << 20, device.Length);
        CheckContract(device);
    }

    [Fact]
    public void HugeDeviceCostsNothingUntilWritten()
    {
        const long hundredGiB = 100L << 30;
        using var device = new MemoryBlockDevice("big", hundredGiB);
        Assert.Equal(0, device.AllocatedBytes);

        AssertZero(device, hundredGiB - 4096, 4096);
        AssertZero(device, 50L << 30, 200_000);
        Assert.Equal(0, device.AllocatedBytes);

        byte[] data = Pattern(100, 7);
        device.Write(hundredGiB - 50, data[..50]);
        device.Write(77L << 30, data);
        Assert.Equal(2 * MemoryBlockDevice.ChunkSize, device.AllocatedBytes);
        Assert.Equal(data, ReadAll(device, 77L << 30, 100));
        Assert.Equal(data[..50], ReadAll(device, hundredGiB - 50, 50));
    }

    [Fact]
    public void WritingZerosToUnwrittenSpaceAllocatesNothing()
    {
        using var device = new MemoryBlockDevice("zeros", 1 << 20);
        device.Write(0, new byte[300_000]);
        Assert.Equal(0, device.AllocatedBytes);
    }

    [Fact]
    public void ConcurrentDisjointIo()
    {
        using var device = new MemoryBlockDevice("mem-par", 1 << 20);
        CheckConcurrentDisjointIo(device);
    }

    [Fact]
    public void ContentsSurviveDispose()
    {
        var device = new MemoryBlockDevice("keep", 1 << 20);
        device.Write(4096, Pattern(10, 1));
        device.Dispose();
        Assert.Equal(Pattern(10, 1), ReadAll(device, 4096, 10));
    }
}
