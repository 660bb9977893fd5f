using System.Runtime.InteropServices;
using Cow.Core;
using Cow.Fuse.Kernel;
using Cow.Fuse.Mounting;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Cow.Tests.Mount;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Kernel;

/// <summary>
/// <see cref="KernelIomapDevices"/>, <see cref="LoopDevice"/> and <see cref="ExclusiveBlockDevice"/> on real
/// loop devices and a real /dev/fuse. This kernel (6.18) has no fuse-iomap, so every BACKING_OPEN with
/// FUSE_BACKING_TYPE_IOMAP is refused: those tests check that the refusal is clear and that nothing stays
/// attached. Root only (CI runs as root).
/// </summary>
[Trait("Tier", "kernel")]
public sealed class KernelIomapDevicesTests(ITestOutputHelper output) : IDisposable
{
    private readonly KernelScratch _s = new();

    public void Dispose() => _s.Dispose();

    private static PoolDeviceInfo Info(uint cookie, string path, long size = 64L << 20) => new(cookie, path, size);

    [SkippableFact]
    public void Loop_device_shows_the_image_and_is_detached_on_dispose()
    {
        var img = _s.Image("base.img");
        var loop = LoopDevice.Attach(img, 4096);
        int n = loop.Number;
        try
        {
            Assert.Equal($"/dev/loop{n}", loop.Path);
            Assert.Equal(img, LoopDevice.BackingFile(n));
            Assert.Equal(img, _s.Loops()[n]);
            Assert.Equal("4096", File.ReadAllText($"/sys/block/loop{n}/queue/logical_block_size").Trim());
            Assert.Equal("1", File.ReadAllText($"/sys/block/loop{n}/loop/autoclear").Trim());
            Assert.Equal("0", File.ReadAllText($"/sys/block/loop{n}/loop/dio").Trim());   // buffered: coherent with the engine
            Assert.Equal("0", File.ReadAllText($"/sys/block/loop{n}/loop/offset").Trim());
        }
        finally { loop.Dispose(); }
        Assert.Empty(_s.WaitNoLoops());
        Assert.NotEqual(img, LoopDevice.BackingFile(n));
        loop.Dispose();   // idempotent
    }

    [SkippableFact]
    public void Loop_device_with_a_64k_block_size()
    {
        var img = _s.Image("big-blocks.img");
        using (var loop = LoopDevice.Attach(img, 65536))
            Assert.Equal("65536", File.ReadAllText($"/sys/block/loop{loop.Number}/queue/logical_block_size").Trim());
        Assert.Empty(_s.WaitNoLoops());
    }

    /// <summary>What fuse-iomap's bios do (direct I/O to the block device) and what the engine does (buffered
    /// pread/pwrite of the image) see each other's bytes at once, without any flush: the loop device is not
    /// in direct-I/O mode, so it reads and writes through the image's page cache.</summary>
    [SkippableFact]
    public unsafe void Loop_device_and_image_page_cache_are_coherent()
    {
        const int O_DIRECT = 0x4000;
        var img = _s.Image("coherent.img");
        using var loop = LoopDevice.Attach(img, 4096);
        using var image = Fd.Open(img, Native.O_RDWR);
        using var dev = Fd.Open(loop.Path, Native.O_RDWR | O_DIRECT);
        byte* mem = (byte*)NativeMemory.AlignedAlloc(8192, 4096);
        try
        {
            var buf = new Span<byte>(mem, 8192);
            new Random(1).NextBytes(buf);
            var written = buf.ToArray();
            Assert.Equal(8192, Native.Pwrite(dev.Handle, buf, 1 << 20));   // like an iomap write bio
            Assert.Equal(written, image.ReadAt(1 << 20, 8192));           // the engine's buffered read sees it

            var fromEngine = new byte[4096];
            new Random(2).NextBytes(fromEngine);
            image.WriteAt(5 << 20, fromEngine);                           // the engine's buffered write
            buf.Clear();
            Assert.Equal(4096, Native.Pread(dev.Handle, buf[..4096], 5 << 20));   // like an iomap read bio
            Assert.Equal(fromEngine, buf[..4096].ToArray());
        }
        finally { NativeMemory.AlignedFree(mem); }
    }

    [SkippableFact]
    public void Exclusive_open_of_a_held_device_is_refused_naming_it()
    {
        var img = _s.Image("held.img");
        using var loop = LoopDevice.Attach(img, 4096);
        using var holder = ExclusiveBlockDevice.Open(loop.Path, 64L << 20);
        Assert.Equal(64L << 20, holder.Size);
        Assert.True(holder.Fd >= 0);
        var e = Assert.Throws<IomapDeviceException>(() => ExclusiveBlockDevice.Open(loop.Path, 1));
        output.WriteLine(e.Message);
        Assert.Contains(loop.Path, e.Message);
        Assert.Contains("busy", e.Message);
        Assert.Contains("EBUSY", e.Message);

        // The same through the registrar, with the block device as a pool device: refused before the kernel is asked.
        using var fuse = Fd.Open("/dev/fuse", Native.O_RDWR);
        using var reg = new KernelIomapDevices(4096);
        var r = Assert.Throws<IomapDeviceException>(() => reg.Register(fuse.Handle, [Info(1, loop.Path)]));
        output.WriteLine(r.Message);
        Assert.Contains($"pool device {loop.Path} (engine cookie 1)", r.Message);
        Assert.Contains("EBUSY", r.Message);
        Assert.Empty(reg.Registered);
        Assert.Equal(img, LoopDevice.BackingFile(loop.Number));   // the holder's device is untouched
    }

    [SkippableFact]
    public void A_regular_file_or_character_device_is_not_a_block_device()
    {
        var img = _s.Image("plain.img");
        var e = Assert.Throws<IomapDeviceException>(() => ExclusiveBlockDevice.Open(img, 1));
        Assert.Contains($"{img} is not a block device (it is a regular file)", e.Message);
        e = Assert.Throws<IomapDeviceException>(() => ExclusiveBlockDevice.Open("/dev/null", 1));
        Assert.Contains("/dev/null is not a block device (it is a character device)", e.Message);
        e = Assert.Throws<IomapDeviceException>(() => ExclusiveBlockDevice.Open(_s.Dir, 1));
        Assert.Contains("a directory", e.Message);

        using var fuse = Fd.Open("/dev/fuse", Native.O_RDWR);
        using var reg = new KernelIomapDevices(4096);
        e = Assert.Throws<IomapDeviceException>(() => reg.Register(fuse.Handle, [Info(1, "/dev/zero")]));
        output.WriteLine(e.Message);
        Assert.Contains("/dev/zero is not a block device (it is a character device)", e.Message);
        e = Assert.Throws<IomapDeviceException>(() => reg.Register(fuse.Handle, [Info(1, Path.Combine(_s.Dir, "missing.img"))]));
        Assert.Contains("missing.img", e.Message);
        Assert.Contains("ENOENT", e.Message);
        Assert.Empty(_s.Loops());
    }

    [SkippableFact]
    public void A_device_smaller_than_the_pool_device_is_refused_and_its_loop_detached()
    {
        var img = _s.Image("small.img", 32L << 20);
        using var fuse = Fd.Open("/dev/fuse", Native.O_RDWR);
        using var reg = new KernelIomapDevices(4096);
        // The loop device is attached, then found too small: it must be detached again.
        var e = Assert.Throws<IomapDeviceException>(() => reg.Register(fuse.Handle, [Info(2, img, 64L << 20)]));
        output.WriteLine(e.Message);
        Assert.Contains($"pool device {img} (engine cookie 2)", e.Message);
        Assert.Contains($"has {32L << 20} bytes, fewer than the {64L << 20} bytes", e.Message);
        Assert.Empty(_s.WaitNoLoops());
    }

    [SkippableFact]
    public void More_than_1024_devices_are_refused_before_anything_is_done()
    {
        bool capabilityAsked = false;
        using var reg = new KernelIomapDevices(4096, () => { capabilityAsked = true; return true; });
        var missing = Path.Combine(_s.Dir, "nothing-here");
        var tooMany = Enumerable.Range(1, ExperimentalConstants.MaxIomapDevices + 1).Select(i => Info((uint)i, missing)).ToArray();
        var e = Assert.Throws<IomapDeviceException>(() => reg.Register(-1, tooMany));
        Assert.Contains("1025 devices", e.Message);
        Assert.Contains("at most 1024", e.Message);
        Assert.False(capabilityAsked);
        // Exactly 1024 passes the limit: it fails later, at the first (missing) device.
        var e2 = Assert.Throws<IomapDeviceException>(() => reg.Register(-1, tooMany[..ExperimentalConstants.MaxIomapDevices]));
        Assert.True(capabilityAsked);
        Assert.Contains("nothing-here", e2.Message);
    }

    [SkippableFact]
    public void Missing_CAP_SYS_RAWIO_is_refused_with_a_clear_message_and_nothing_attached()
    {
        var img = _s.Image("base.img");
        using var fuse = Fd.Open("/dev/fuse", Native.O_RDWR);
        using var reg = new KernelIomapDevices(4096, hasSysRawio: () => false);
        var e = Assert.Throws<IomapDeviceException>(() => reg.Register(fuse.Handle, [Info(1, img)]));
        Assert.Equal("registering block devices for fuse-iomap needs CAP_SYS_RAWIO; run cow mount as root or give it the capability, or use --iomap off", e.Message);
        Assert.Empty(_s.Loops());
    }

    [SkippableFact]
    public void The_real_capability_check_sees_root_s_capabilities()
    {
        // CI runs as root with the full set; the child-process test without CAP_SYS_RAWIO is in IomapMountTests.
        Assert.True(Capabilities.HasSysRawio());
        Assert.True(Capabilities.HasEffective(Capabilities.CapSysAdmin));
    }

    [SkippableFact]
    public void Duplicate_or_zero_engine_cookies_are_refused()
    {
        using var reg = new KernelIomapDevices(4096);
        Assert.Contains("used twice", Assert.Throws<IomapDeviceException>(() => reg.Register(-1, [Info(1, "/a"), Info(1, "/b")])).Message);
        Assert.Contains("reserved", Assert.Throws<IomapDeviceException>(() => reg.Register(-1, [Info(0, "/a")])).Message);
    }

    /// <summary>An unmounted /dev/fuse descriptor: the kernel refuses BACKING_OPEN (EPERM here: no connection
    /// yet). Both image files were attached to loop devices first; afterwards none is attached.</summary>
    [SkippableFact]
    public void Backing_open_on_an_unmounted_fuse_fd_is_refused_and_everything_undone()
    {
        var b = _s.Image("base.img");
        var l = _s.Image("log.img");
        using var fuse = Fd.Open("/dev/fuse", Native.O_RDWR);
        using var reg = new KernelIomapDevices(4096);
        var e = Assert.Throws<IomapDeviceException>(() => reg.Register(fuse.Handle, [Info(1, b), Info(2, l)]));
        output.WriteLine(e.Message);
        Assert.Matches($"^pool device {b} \\(engine cookie 1\\): the kernel refused to register /dev/loop[0-9]+ \\(the image's loop device\\) for fuse-iomap", e.Message);
        Assert.Contains("(EPERM)", e.Message);
        Assert.Empty(_s.WaitNoLoops());
        Assert.Empty(reg.Registered);
        // The failure left the registrar usable for nothing but Dispose; a retry fails the same clean way.
        Assert.Throws<IomapDeviceException>(() => reg.Register(fuse.Handle, [Info(1, b)]));
        Assert.Empty(_s.WaitNoLoops());
    }

    /// <summary>A mounted, served connection (no passthrough or iomap negotiated on this kernel): BACKING_OPEN
    /// with FUSE_BACKING_TYPE_IOMAP is refused, the pool's image files are detached again, and the mount
    /// keeps working.</summary>
    [SkippableFact]
    public void Backing_open_on_a_mounted_connection_is_refused_and_everything_undone()
    {
        using var m = new MountedPool();
        var devices = MountedFileSystem.IomapDeviceInfos(m.Pool!);
        Assert.Equal([1u, 2u], devices.Select(d => d.EngineCookie));
        Assert.Equal(Path.Combine(m.PoolDir, Pool.BaseImage), devices[0].Path);
        Assert.Equal(Path.Combine(m.PoolDir, Pool.LogImage), devices[1].Path);
        Assert.Equal(64L << 20, devices[0].SizeBytes);
        using (var reg = new KernelIomapDevices(m.Pool!.Engine.BlockSize))
        {
            var e = Assert.Throws<IomapDeviceException>(() => reg.Register(m.Mount!.DeviceFd, devices));
            output.WriteLine(e.Message);
            Assert.StartsWith($"pool device {devices[0].Path} (engine cookie 1): the kernel refused to register /dev/loop", e.Message);
            Assert.Contains("(EPERM)", e.Message);
        }
        Assert.Empty(KernelScratch.LoopsUnder(m.PoolDir));
        File.WriteAllText(m.P("after.txt"), "still served");
        Assert.Equal("still served", File.ReadAllText(m.P("after.txt")));
    }

    [SkippableFact]
    public void Register_after_dispose_is_refused()
    {
        var reg = new KernelIomapDevices(4096);
        reg.Dispose();
        reg.Dispose();
        Assert.Throws<ObjectDisposedException>(() => reg.Register(-1, [Info(1, "/x")]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new KernelIomapDevices(1000));
    }
}
