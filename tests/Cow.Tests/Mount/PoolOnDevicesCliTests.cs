using System.Text.Json.Nodes;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>
/// A pool that lives on its devices, through the real <c>cow</c> program: <c>cow mkfs --on-devices</c> on image files
/// and on loop block devices (a block device implies it), <c>cow pool scan</c> finding it, <c>cow mount</c> through
/// either device, files and snapshots written through the mount, <c>cow umount</c> waiting for the pool's lock (kept
/// by pool uuid), <c>cow fsck</c> clean, and a remount reading everything back. Root only.
/// </summary>
[Trait("Tier", "mount")]
public sealed class PoolOnDevicesCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-ondev-");
    private readonly List<string> _loops = new();

    public void Dispose()
    {
        _scratch.Dispose();
        foreach (var l in _loops) Run("losetup", $"-d {l}");
    }

    private (int Code, string Out, string Err) Cow(params string[] args) => _scratch.RunCow(output, args);

    private static string? Run(string file, string args) => Engine.LoopDevicePoolTests.Run(file, args);

    private void Exercise(string baseDev, string logDev, bool scanWithoutPaths)
    {
        var scan = Cow(scanWithoutPaths ? ["pool", "scan", "--json"] : ["pool", "scan", "--json", _scratch.Root]);
        Assert.Equal(0, scan.Code);
        var pool = JsonNode.Parse(scan.Out)!.AsArray().Single(p => (string?)p!["label"] == "ondev")!;
        Assert.Equal(logDev, (string?)pool["metadata_device"]);
        Assert.Equal([baseDev, logDev], pool["devices"]!.AsArray().Select(d => (string?)d!["path"]));

        var mp = _scratch.NewMountPoint();
        Assert.Equal(0, Cow("mount", baseDev, mp).Code);
        var data = Engine.MemoryPool.Pattern(3 << 20, 5);
        File.WriteAllBytes(Path.Combine(mp, "f"), data);
        Assert.Equal(0, Cow("snapshot", "create", baseDev, "s1").Code);   // a device of the mounted pool names it
        File.WriteAllText(Path.Combine(mp, "f"), "changed");
        var df = Cow("df", logDev, "--json");
        Assert.Equal(0, df.Code);
        Assert.Equal(2, JsonNode.Parse(df.Out)!["devices"]!.AsArray().Count);
        Assert.Equal(0, Cow("umount", mp).Code);
        var fsck = Cow("fsck", logDev);
        Assert.Equal(0, fsck.Code);
        Assert.Contains("clean", fsck.Out);

        Assert.Equal(0, Cow("mount", logDev, mp).Code);
        Assert.Equal("changed", File.ReadAllText(Path.Combine(mp, "f")));
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(mp, ".snapshots", "s1", "f")));
        Assert.Equal(0, Cow("umount", mp).Code);
    }

    [SkippableFact]
    public void A_pool_on_image_files_is_made_found_mounted_through_either_device_and_checked()
    {
        MountedPool.RequireRootAndFuse();
        Directory.CreateDirectory(_scratch.Root);
        var baseImg = Path.Combine(_scratch.Root, "a.img");
        var logImg = Path.Combine(_scratch.Root, "b.img");
        var mk = Cow("mkfs", logImg, "--on-devices", "--base-device", baseImg, "--base-size", "64M", "--log-size", "128M", "--metadata-size", "24M", "--label", "ondev");
        Assert.Equal(0, mk.Code);
        Assert.Equal(["a.img", "b.img"], Directory.GetFiles(_scratch.Root).Select(Path.GetFileName).Order());   // no folder, no cow.db
        Exercise(baseImg, logImg, scanWithoutPaths: false);
        // Usage: --on-devices needs a base device; --metadata-size needs --on-devices.
        Assert.Equal(2, Cow("mkfs", Path.Combine(_scratch.Root, "c.img"), "--on-devices").Code);
        Assert.Equal(2, Cow("mkfs", Path.Combine(_scratch.Root, "pool"), "--metadata-size", "64M").Code);
    }

    [SkippableFact]
    public void A_pool_on_loop_block_devices_is_found_by_scanning_the_block_devices()
    {
        MountedPool.RequireRootAndFuse();
        Skip.If(Run("losetup", "--version") == null, "needs losetup");
        Directory.CreateDirectory(_scratch.Root);
        foreach (var n in new[] { "a.img", "b.img" })
        {
            var img = Path.Combine(_scratch.Root, n);
            using (var f = File.Create(img)) f.SetLength(n == "a.img" ? 64L << 20 : 160L << 20);
            var dev = Run("losetup", $"--find --show {img}");
            Skip.If(dev == null, "losetup could not attach a loop device");
            _loops.Add(dev!);
        }
        // A block device as POOL is the log device of a pool on its devices.
        var mk = Cow("mkfs", _loops[1], "--base-device", _loops[0], "--label", "ondev");
        Assert.Equal(0, mk.Code);
        Exercise(_loops[0], _loops[1], scanWithoutPaths: true);
    }
}
