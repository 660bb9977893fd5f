using Cow.Core.Engine;
using Cow.Core.Format;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>fsck names the paths of an inode it reports: every name in the live tree, and the path in each snapshot
/// that sees it (where it may have another name), or says the live tree has none.</summary>
[Trait("Tier", "engine")]
public class FsckPathTests
{
    /// <summary>Flips a byte of the device block holding file block 0 of <paramref name="ino"/> (as <paramref name="fs"/> sees it).</summary>
    private static void CorruptFirstBlock(MemoryPool p, Cow.Core.FileSystem.FileSystemView fs, long ino)
    {
        Assert.Equal(0, (int)fs.IomapBegin(ino, 0, 4096, IomapOp.None, out var m));
        Assert.Equal(MappingType.Mapped, m.Read.Type);
        var dev = m.Read.Device == FormatConstants.LogCookie ? p.LogMem : p.BaseMem;
        var block = new byte[4096];
        dev.Read((long)m.Read.Address, block);
        block[100] ^= 0xFF;
        dev.Write((long)m.Read.Address, block);
    }

    [Fact]
    public void AProblemNamesTheInodesPathsInTheLiveTreeAndInEachSnapshot()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        Assert.Equal(0, (int)fs.Mkdir(1, "dir", 0x1ED, 0, 0, out var dir));
        long f = CreateFile(fs, "/dir/f.txt");
        WriteAt(fs, f, 0, Pattern(4096, 1));
        long gone = CreateFile(fs, "/gone.txt");
        WriteAt(fs, gone, 0, Pattern(4096, 2));
        Assert.Equal(0, (int)fs.Fsync(f));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("monday", out _));
        Assert.Equal(0, (int)fs.Rename(dir.Ino, "f.txt", dir.Ino, "g.txt"));
        Assert.Equal(0, (int)fs.Link(f, 1, "h.txt", out _));
        Assert.Equal(0, (int)fs.Unlink(1, "gone.txt"));
        Assert.Equal(0, (int)fs.Fsync(1));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("tuesday", out _));
        CorruptFirstBlock(p, fs, f);
        CorruptFirstBlock(p, p.Pool.Snapshot("monday")!, gone);

        var report = p.Pool.Fsck();
        var text = report.ToString();
        var bad = report.Problems.Single(x => x.Kind == "checksum" && x.Ino == f);
        Assert.Equal("/dir/g.txt, /h.txt; snapshot tuesday: /dir/g.txt, /h.txt; snapshot monday: /dir/f.txt", bad.Paths);
        Assert.Contains($"[inode {f} (/dir/g.txt, /h.txt; snapshot tuesday: /dir/g.txt, /h.txt; snapshot monday: /dir/f.txt) offset 0]", text);
        var only = report.Problems.Single(x => x.Kind == "checksum" && x.Ino == gone);
        Assert.Equal("not in the live tree; snapshot monday: /gone.txt", only.Paths);
    }

    [Fact]
    public void AnInodeWithNoNameAnywhereIsSaidToHaveNone()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = CreateFile(fs, "/open.txt");
        WriteAt(fs, f, 0, Pattern(4096, 3));
        Assert.Equal(0, (int)fs.Open(f, writable: false));
        Assert.Equal(0, (int)fs.Unlink(1, "open.txt"));   // unlinked while open: no name, kept until closed
        Assert.Equal(0, (int)fs.Fsync(f));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        CorruptFirstBlock(p, fs, f);
        var bad = p.Pool.Fsck().Problems.Single(x => x.Kind == "checksum");
        Assert.Equal(f, bad.Ino);
        Assert.Equal("no path: orphan", bad.Paths);
        Assert.Equal(0, (int)fs.Release(f));
    }
}
