using Cow.Core.Engine;
using Cow.Core.Format;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

[Trait("Tier", "engine")]
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

[Trait("Tier", "engine")]
public class ImportDataTests
{
    /// <summary>Data ranges as SEEK_DATA finds them on a 4 KiB host file system, imported into a pool of 64 KiB
    /// blocks: ranges that share a pool block are read once, the gaps between them read as zeros, whole pool blocks
    /// outside every range stay holes, and so do all-zero blocks inside a range.</summary>
    [Fact]
    public void RangesAreReadOnceAndHolesStayHolesWhateverTheBlockSize()
    {
        using var p = new MemoryPool(blockSize: 65536);
        const int bs = 65536;
        long length = 40L * bs + 123;
        var source = new byte[length];
        var ranges = new List<(long, long)> { (4096, 4096), (3 * 4096, 8192), (5L * bs, 2L * bs), (20L * bs, 4096), (40L * bs, 123) };
        foreach (var (off, len) in ranges) Pattern((int)len, (int)off).CopyTo(source, off);
        Array.Clear(source, (int)(6L * bs), bs);   // an all-zero pool block inside a range
        var reads = new List<(long, int)>();
        Assert.Equal(0, (int)p.Engine.MakeNode(1, "f", 0x81A4, 0, 0, 0, null, out var a));
        Assert.Equal(0, (int)p.Engine.ImportData(a.Ino, length, ranges, (off, buf) =>
        {
            reads.Add((off, buf.Length));
            int n = (int)Math.Min(buf.Length, length - off);
            source.AsSpan((int)off, n).CopyTo(buf);
            return n;
        }));
        p.Engine.Commit();
        // Pool blocks 0 (two ranges), 5, 20 and 40 hold data; 6 is all zeros; the rest were never read.
        Assert.Equal(4, p.Live.GetAttr(a.Ino, out var attr) == 0 ? attr.Blocks512 / (bs / 512) : -1);
        Assert.Equal(length, attr.Size);
        Assert.Equal(new long[] { 0, 5L * bs, 20L * bs, 40L * bs }, reads.Select(r => r.Item1).Distinct());
        Assert.Equal(source, ReadAll(p.Live, a.Ino));
        Assert.Equal(0, (int)p.Live.Seek(a.Ino, bs, Cow.Core.FileSystem.SeekWhence.Data, out long data));
        Assert.Equal(5L * bs, data);
        Assert.Equal(0, (int)p.Live.Seek(a.Ino, 5L * bs, Cow.Core.FileSystem.SeekWhence.Hole, out long hole));
        Assert.Equal(6L * bs, hole);
        // Only an empty regular file can be filled.
        Assert.Equal(Mono.Unix.Native.Errno.EEXIST, p.Engine.ImportData(a.Ino, 10, [], (_, _) => 0));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(source, ReadAll(p.Live, Ino(p.Live, "/f")));
        p.AssertClean();
    }
}
