using Cow.Core.Format;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>statfs counts every device's data blocks, less the pool's reserve, as the pool's size; what new writes
/// can use as free (the log first, then the base device); what data occupies, on any device, as used.</summary>
[Trait("Tier", "engine")]
public class StatFsTests
{
    [Fact]
    public void AFreshPoolIsEmptyAndItsSizeIsEveryDeviceLessTheReserve()
    {
        using var p = new MemoryPool(baseSize: 512L << 20, logSize: 256L << 20);
        var st = p.Live.StatFs();
        var usage = p.Engine.DeviceUsage();
        long data = usage.Sum(u => u.DataBlocks);
        Assert.Equal(0, st.UsedBlocks);
        Assert.Equal(data - data / 100, st.Blocks);
        Assert.Equal(st.Blocks, st.FreeBlocks);
        Assert.Equal(st.FreeBlocks, st.AvailableBlocks);
        Assert.All(usage, u => Assert.True(u.TakesNewWrites));
    }

    [Fact]
    public void ImportedDataIsUsedAndNewWritesTakeFromTheFreeSpace()
    {
        using var p = new MemoryPool(baseSize: 512L << 20, logSize: 256L << 20);
        var s0 = p.Live.StatFs();
        var image = Pattern(4 << 20, 3);
        Array.Clear(image, 1 << 20, 1 << 20);   // a hole: 768 blocks of data
        Assert.Equal(0, (int)p.Engine.ImportFile(1, "img", new MemoryStream(image), 0x1A4, 0, 0, out _));
        var s1 = p.Live.StatFs();
        Assert.Equal(768, s1.UsedBlocks);
        Assert.Equal(s0.FreeBlocks - 768, s1.FreeBlocks);
        Assert.Equal(s0.Blocks, s1.Blocks);
        var usage = p.Engine.DeviceUsage();
        Assert.Equal(768, usage.Single(u => u.Cookie == FormatConstants.BaseCookie).UsedBlocks);

        long f = CreateFile(p.Live, "/new");
        WriteAt(p.Live, f, 0, Pattern(1 << 20, 4));
        Assert.Equal(0, (int)p.Live.Fsync(f));
        var s2 = p.Live.StatFs();
        Assert.Equal(s1.FreeBlocks - 256, s2.FreeBlocks);
        Assert.Equal(768 + 256, s2.UsedBlocks);
        Assert.Equal(s1.Blocks, s2.Blocks);
        Assert.Equal(256, p.Engine.DeviceUsage().Single(u => u.Cookie == FormatConstants.LogCookie).UsedBlocks);   // new writes: the log
        p.Reopen();
        Assert.Equal(s2, p.Live.StatFs());
    }
}
