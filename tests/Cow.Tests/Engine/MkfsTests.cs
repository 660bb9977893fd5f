using Cow.Core;
using Xunit;

namespace Cow.Tests.Engine;

[Trait("Tier", "engine")]
public class MkfsTests
{
    [Fact]
    public void MkfsRefusesDevicesOfAnotherPoolUnlessForced()
    {
        var dir = Directory.CreateTempSubdirectory("cow-mkfs-").FullName;
        try
        {
            var b = Path.Combine(dir, "b.img"); var l = Path.Combine(dir, "l.img");
            using (Pool.Create(Path.Combine(dir, "one"), new PoolCreateOptions { BaseDevice = b, LogDevice = l, BaseSize = 16 << 20, LogSize = 16 << 20 })) { }
            var before = File.ReadAllBytes(b);
            var e = Assert.Throws<PoolException>(() => Pool.Create(Path.Combine(dir, "two"), new PoolCreateOptions { BaseDevice = b, LogDevice = l }));
            Assert.Contains(b, e.Message);
            Assert.Contains("already holds a Cow device", e.Message);
            Assert.Contains("--force", e.Message);
            Assert.Equal(before, File.ReadAllBytes(b));
            Assert.False(File.Exists(Path.Combine(dir, "two", Pool.MetadataFile)));
            using (var p = Pool.Create(Path.Combine(dir, "three"), new PoolCreateOptions { BaseDevice = b, LogDevice = l, Force = true }))
                Assert.True(p.Fsck().Clean);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>The size check of an import counts the base device's data blocks as the pool will: whatever the
    /// size and block size, its figure is the engine's once the pool exists.</summary>
    [Theory]
    [InlineData(16L << 20, 4096)]
    [InlineData((16L << 20) + 12345, 4096)]
    [InlineData(100L << 20, 65536)]
    [InlineData((1L << 30) - 8192, 8192)]
    public void TheImportSizeCheckCountsTheBaseDeviceAsTheEngineDoes(long baseSize, int blockSize)
    {
        var dir = Directory.CreateTempSubdirectory("cow-mkfs-").FullName;
        try
        {
            var o = new PoolCreateOptions { BaseSize = baseSize, LogSize = 16 << 20, BlockSize = blockSize };
            long expected = Cow.Core.Import.PoolImport.BaseDataBlocks(o);
            using var p = Pool.Create(Path.Combine(dir, "pool"), o);
            Assert.Equal(expected, p.Engine.DeviceUsage().Single(u => u.Cookie == Cow.Core.Format.FormatConstants.BaseCookie).DataBlocks);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>A source file that goes away between the scan and the copy fails the import half way: mkfs is undone,
    /// the message names the file and says what was cleaned up.</summary>
    [Fact]
    public void AnImportFailingHalfWayLeavesNothingBehind()
    {
        var dir = Directory.CreateTempSubdirectory("cow-mkfs-").FullName;
        try
        {
            var src = Path.Combine(dir, "src");
            Directory.CreateDirectory(src);
            File.WriteAllBytes(Path.Combine(src, "a"), new byte[8192].Select((_, i) => (byte)(i | 1)).ToArray());
            File.WriteAllBytes(Path.Combine(src, "b"), new byte[8192].Select((_, i) => (byte)(i | 3)).ToArray());
            var o = new PoolCreateOptions { BaseSize = 16 << 20, LogSize = 16 << 20 };
            var plan = Cow.Core.Import.ImportPlan.Scan([(src, "src")], o.BlockSize);
            Assert.Equal(4, plan.DataBlocks);
            File.Delete(Path.Combine(src, "b"));
            var folder = Path.Combine(dir, "pool");
            var e = Assert.Throws<PoolException>(() => Cow.Core.Import.PoolImport.Create(folder, o, plan));
            Assert.Contains($"import source {Path.Combine(src, "b")}: cannot be read", e.Message);
            Assert.Contains($"no pool was made: the pool folder {folder} was removed", e.Message);
            Assert.False(Directory.Exists(folder));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>The images and metadata hold every file's bytes: only the pool's owner may read them.</summary>
    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void MkfsMakesThePoolPrivateToItsOwner()
    {
        var dir = Directory.CreateTempSubdirectory("cow-mkfs-").FullName;
        try
        {
            var folder = Path.Combine(dir, "pool");
            using (Pool.Create(folder, new PoolCreateOptions { BaseSize = 16 << 20, LogSize = 16 << 20 })) { }
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(folder));
            var files = Directory.GetFiles(folder);
            Assert.Contains(Path.Combine(folder, Pool.BaseImage), files);
            Assert.Contains(Path.Combine(folder, Pool.MetadataFile), files);
            foreach (var f in files)
                Assert.True((File.GetUnixFileMode(f) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) == 0,
                    $"{f} is {File.GetUnixFileMode(f)}");
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>A device with more blocks than the space map addresses (over 4 PiB at 4 KiB blocks) is refused with the
    /// limit named, not an OverflowException.</summary>
    [Fact]
    public void A_device_over_the_space_map_limit_is_refused_naming_the_limit()
    {
        var meta = new Cow.Core.Devices.MemoryBlockDevice("meta", 1L << 30);
        var metaLog = new Cow.Core.Devices.MemoryBlockDevice("meta-log", 1L << 30);
        var media = new PoolMedia(new Cow.Core.Devices.MemoryBlockDevice("base", 64L << 20), new Cow.Core.Devices.MemoryBlockDevice("log", 8L << 50),
            new Cow.Core.Devices.BlockDeviceStream(meta), new Cow.Core.Devices.BlockDeviceStream(metaLog));
        var e = Assert.Throws<PoolException>(() => Pool.Create(media, new PoolCreateOptions()));
        Assert.Contains("log device log", e.Message);
        Assert.Contains("8192 TiB", e.Message);
        Assert.Contains("at most 1,099,511,627,776 blocks per device (4 PiB at this block size)", e.Message);
    }
}
