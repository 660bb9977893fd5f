using Cow.Core;
using Xunit;

namespace Cow.Tests.Engine;

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
}
