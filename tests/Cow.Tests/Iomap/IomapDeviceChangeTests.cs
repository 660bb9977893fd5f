using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Fuse.Server;
using Cow.Tests.Engine;
using Xunit;
using static Cow.Tests.Iomap.IomapPeer;

namespace Cow.Tests.Iomap;

/// <summary>
/// Devices added to and removed from a pool mounted with fuse-iomap, seen from the kernel's side (the test peer):
/// an added device is registered with the connection before any mapping names it, mappings then name its kernel
/// cookie, and after a removal no mapping names the removed device, the data reads back the same, and the registrar
/// is asked to release it. A registrar that cannot register the device refuses the add, and the pool is unchanged.
/// </summary>
[Trait("Tier", "engine")]
public sealed class IomapDeviceChangeTests
{
    [Fact]
    public void An_added_device_is_registered_before_a_mapping_names_it_and_released_after_its_removal()
    {
        using var k = new IomapPeer(logSize: 16 << 20).Start();
        var f = k.Create(RootNode, "f");
        var first = MemoryPool.Pattern(1 << 20, 1);
        k.DirectWrite(f.NodeId, f.Attr.Ino, 0, first);
        k.Syncfs();

        var d = k.Pool.AddDevice(Path.Combine(k.Folder, "log2.img"), DeviceRole.Log, 64L << 20);
        Assert.Equal(FormatConstants.FirstAddedCookie, d.Cookie);
        var reg = Assert.Single(k.Registrar.Added);
        Assert.Equal(d.Cookie, reg.EngineCookie);
        Assert.Contains(k.D.IomapDevices, x => x.EngineCookie == d.Cookie && x.KernelCookie == reg.KernelCookie);
        k.OpenRegisteredDevices();

        // The new log has the most free blocks: the next write mapping names it, by its kernel cookie.
        var second = MemoryPool.Pattern(1 << 20, 2);
        var (_, w) = k.Begin(f.NodeId, f.Attr.Ino, 1 << 20, 1 << 20, IomapOp.Write | IomapOp.Direct);
        Assert.Equal(reg.KernelCookie, w.Dev);
        Assert.Equal(0, k.End(f.NodeId, f.Attr.Ino, 1 << 20, 1 << 20, 0, IomapOp.Write | IomapOp.Direct, w));
        k.DirectWrite(f.NodeId, f.Attr.Ino, 1 << 20, second);
        k.Syncfs();
        Assert.Equal([.. first, .. second], k.Read(f.NodeId, f.Attr.Ino, 0, 2 << 20, direct: true));

        // Removed: its blocks move (the kernel hears of the moved mappings), no mapping names it, the data is the same.
        int invalidationsBefore = k.Invalidations.Count;
        var r = k.Pool.RemoveDevice(d.Cookie.ToString());
        Assert.Equal("removed", r.Stop);
        k.DrainNotifications();
        Assert.True(k.Invalidations.Count > invalidationsBefore, "moved blocks of a live file invalidate the kernel's mappings");
        Assert.Equal([d.Cookie], k.Registrar.Released);
        Assert.DoesNotContain(k.D.IomapDevices, x => x.EngineCookie == d.Cookie);
        for (long pos = 0; pos < 2 << 20; pos += 1 << 20)
        {
            var (rm, _) = k.Begin(f.NodeId, f.Attr.Ino, pos, 1 << 20, IomapOp.None);
            Assert.NotEqual(reg.KernelCookie, rm.Dev);
        }
        Assert.Equal([.. first, .. second], k.Read(f.NodeId, f.Attr.Ino, 0, 2 << 20, direct: true));
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void A_device_the_kernel_cannot_register_is_not_added()
    {
        using var k = new IomapPeer(logSize: 16 << 20).Start();
        k.Registrar.FailWith = "the kernel refused it (test)";
        var img = Path.Combine(k.Folder, "log2.img");
        var e = Assert.Throws<Cow.Core.FileSystem.DeviceOperationException>(() => k.Pool.AddDevice(img, DeviceRole.Log, 64L << 20));
        Assert.Contains("the kernel refused it (test)", e.Message);
        Assert.Equal(2, k.Pool.Devices.Count);
        Assert.False(File.Exists(img), "the image made for the add is removed again");
        Assert.True(k.Pool.Fsck().Clean);
    }
}
