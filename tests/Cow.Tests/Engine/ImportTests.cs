using Cow.Core.Engine;
using Cow.Core.Format;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

public class ImportTests
{
    [Fact]
    public void ImportedDataLivesOnTheBaseDeviceAndWritesGoToTheLog()
    {
        using var p = new MemoryPool();
        var image = Pattern(3 << 20, 11);
        Array.Clear(image, 1 << 20, 1 << 20); // an all-zero MiB stays a hole
        Assert.Equal(0, (int)p.Engine.ImportFile(1, "vm.img", new MemoryStream(image), 0x1A4, 0, 0, out var a));
        Assert.Equal(image.Length, a.Size);
        Assert.Equal((2 << 20) / 512, a.Blocks512);

        Assert.Equal(0, (int)p.Engine.IomapBegin(a.Ino, 0, 4096, IomapOp.None, out var read));
        Assert.Equal(MappingType.Mapped, read.Read.Type);
        Assert.Equal(FormatConstants.BaseCookie, read.Read.Device);
        Assert.Equal(0, (int)p.Engine.IomapBegin(a.Ino, (1 << 20) + 5, 10, IomapOp.None, out var hole));
        Assert.Equal(MappingType.Hole, hole.Read.Type);

        Assert.Equal(0, (int)p.Engine.CreateSnapshot("pristine", out _));
        // A partial-block write: read mapping on the base device for read-modify-write, write mapping on the log.
        Assert.Equal(0, (int)p.Engine.IomapBegin(a.Ino, 100, 50, IomapOp.Write, out var w));
        Assert.Equal(FormatConstants.BaseCookie, w.Read.Device);
        Assert.Equal(FormatConstants.LogCookie, w.Write.Device);
        Assert.Equal(0, (int)p.Engine.IomapEnd(a.Ino, 100, 50, 0, IomapOp.Write, w.Write));

        var patch = Pattern(50, 12);
        WriteAt(p.Live, a.Ino, 100, patch);
        patch.CopyTo(image, 100);
        Assert.Equal(image, ReadAll(p.Live, a.Ino));
        var snap = p.Pool.Snapshot("pristine")!;
        var orig = ReadAll(snap, a.Ino);
        Assert.NotEqual(patch, orig.AsSpan(100, 50).ToArray());
        p.AssertClean();
        p.Reopen();
        Assert.Equal(image, ReadAll(p.Live, Ino(p.Live, "/vm.img")));
        p.AssertClean();
    }
}
