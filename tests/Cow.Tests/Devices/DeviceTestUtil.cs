using Cow.Core.Devices;
using Xunit;

namespace Cow.Tests.Devices;

/// <summary>Helpers shared by the device tests. Stateless; thread-safe.</summary>
internal static class DeviceTestUtil
{
    /// <summary>Deterministic, non-zero test bytes.</summary>
    public static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        uint x = (uint)seed * 2654435761u + 12345u;
        for (int i = 0; i < length; i++)
        {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes[i] = (byte)(x % 255 + 1);
        }

        return bytes;
    }

    public static byte[] ReadAll(IBlockDevice device, long offset, int count)
    {
        var buffer = new byte[count];
        device.Read(offset, buffer);
        return buffer;
    }

    public static void AssertZero(IBlockDevice device, long offset, int count) =>
        Assert.True(ReadAll(device, offset, count).AsSpan().IndexOfAnyExcept((byte)0) < 0,
            $"expected {count} zero bytes at offset {offset} on {device.Name}");

    /// <summary>The behaviour every device must show: round trips (including across 64 KiB chunk
    /// boundaries and at the very end), zero reads of unwritten space, and range errors.</summary>
    public static void CheckContract(IBlockDevice device, Action? flush = null)
    {
        Assert.True(device.Length >= 1 << 20, "contract check needs at least 1 MiB");

        byte[] a = Pattern(10_000, 1);
        long aOffset = 65_536 - 3_000; // straddles a 64 KiB boundary
        device.Write(aOffset, a);
        byte[] tail = Pattern(777, 2);
        device.Write(device.Length - tail.Length, tail);
        flush?.Invoke();

        Assert.Equal(a, ReadAll(device, aOffset, a.Length));
        Assert.Equal(tail, ReadAll(device, device.Length - tail.Length, tail.Length));
        AssertZero(device, 0, 4096);
        AssertZero(device, 300_000, 70_000);

        // Partial overwrite inside the first write.
        byte[] b = Pattern(100, 3);
        device.Write(aOffset + 50, b);
        byte[] expected = (byte[])a.Clone();
        b.CopyTo(expected, 50);
        Assert.Equal(expected, ReadAll(device, aOffset, a.Length));

        // Empty I/O at the very end is in range.
        device.Read(device.Length, Span<byte>.Empty);
        device.Write(device.Length, ReadOnlySpan<byte>.Empty);

        var one = new byte[1];
        var two = new byte[2];
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Read(-1, one));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Read(device.Length - 1, two));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Read(device.Length + 1, Span<byte>.Empty));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Write(-1, one));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Write(device.Length, one));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Write(long.MaxValue, two));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => device.Write(device.Length - 1, two));
        Assert.Contains(device.Name, ex.Message);
    }

    /// <summary>Many threads write and read back disjoint blocks at once.</summary>
    public static void CheckConcurrentDisjointIo(IBlockDevice device, int blockSize = 8192, int blocks = 64)
    {
        Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            byte[] data = Pattern(blockSize, 1000 + i);
            device.Write((long)i * blockSize, data);
            Assert.Equal(data, ReadAll(device, (long)i * blockSize, blockSize));
        });
        for (int i = 0; i < blocks; i++)
            Assert.Equal(Pattern(blockSize, 1000 + i), ReadAll(device, (long)i * blockSize, blockSize));
    }
}
