using Cow.Core;
using Cow.Core.Format;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// Pools that live on their devices (format.md 1, 2 and 8): the metadata in two regions at the end of the log device,
/// no folder. Opened through any of its devices (found by uuid among the block devices and the files beside the one
/// given, so renamed devices are found), refused with a clear message when a device or the metadata device is
/// missing, locked by pool uuid, listed by <see cref="Pool.Scan"/>.
/// </summary>
[Trait("Tier", "engine")]
public sealed class PoolOnDevicesTests : IDisposable
{
    private const int Mi = 1 << 20;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cow-ondev-" + Guid.NewGuid().ToString("N")[..8]);

    public PoolOnDevicesTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private string BasePath => Path.Combine(_dir, "disk-a.img");
    private string LogPath => Path.Combine(_dir, "disk-b.img");

    private Pool Create() => Pool.CreateOnDevices(new PoolCreateOptions
    {
        BaseDevice = BasePath, LogDevice = LogPath, BaseSize = 64L * Mi, LogSize = 128L * Mi, MetadataSize = 32L * Mi, Label = "ondev",
    });

    private static void Fill(Pool p)
    {
        var fs = p.Live;
        for (int i = 0; i < 5; i++) WriteAt(fs, CreateFile(fs, $"/f{i}"), 0, Pattern(Mi + 100 * i, i));
        Assert.Equal(0, (int)fs.Fsync(Ino(fs, "/f0")));
        Assert.Equal(0, (int)p.Snapshots.Create("s1", out _));
        WriteAt(fs, Ino(fs, "/f1"), 4096, Pattern(8192, 99));
    }

    private static void Check(Pool p)
    {
        for (int i = 0; i < 5; i++)
        {
            var want = Pattern(Mi + 100 * i, i);
            if (i == 1) Pattern(8192, 99).CopyTo(want, 4096);
            Assert.Equal(want, ReadAll(p.Live, Ino(p.Live, $"/f{i}")));
        }
        var s1 = p.Snapshot("s1")!;
        Assert.Equal(Pattern(Mi + 100, 1), ReadAll(s1, Ino(s1, "/f1")));
        var fsck = p.Fsck();
        Assert.True(fsck.Clean, fsck.ToString());
    }

    [Fact]
    public void A_pool_on_its_devices_opens_through_either_device_and_keeps_no_folder()
    {
        using (var p = Create())
        {
            Assert.Null(p.Folder);
            Assert.Equal(LogPath, p.Source);
            Fill(p);
        }
        Assert.Equal(["disk-a.img", "disk-b.img"], Directory.GetFiles(_dir).Select(Path.GetFileName).Order());
        using (var p = Pool.Open(BasePath))
        {
            Assert.Equal(LogPath, p.Source);
            Check(p);
        }
        using (var p = Pool.Open(LogPath))
        {
            Check(p);
            // The log's data blocks end where the metadata region begins.
            var log = p.Devices.Single(d => d.Cookie == FormatConstants.LogCookie);
            Assert.Equal(128L * Mi - 32L * Mi, log.SizeBytes);
            Assert.Throws<PoolException>(() => Pool.Open(BasePath));   // locked by its uuid: one process at a time
        }
    }

    [Fact]
    public void Devices_are_found_by_uuid_when_their_names_change()
    {
        using (var p = Create()) Fill(p);
        var movedBase = Path.Combine(_dir, "renamed-1.img");
        var movedLog = Path.Combine(_dir, "renamed-2.img");
        File.Move(BasePath, movedBase);
        File.Move(LogPath, movedLog);
        using var q = Pool.Open(movedBase);
        Assert.Equal(movedLog, q.Source);
        Assert.Equal([movedBase, movedLog], q.Devices.Select(d => d.Path));
        Check(q);
    }

    [Fact]
    public void A_missing_device_or_metadata_device_is_named()
    {
        using (var p = Create()) Fill(p);
        File.Move(LogPath, LogPath + ".away");
        Directory.CreateDirectory(Path.Combine(_dir, "away"));
        File.Move(LogPath + ".away", Path.Combine(_dir, "away", "b.img"));
        var e = Assert.Throws<PoolException>(() => Pool.Open(BasePath));
        Assert.Contains("holding its metadata", e.Message);
        File.Move(Path.Combine(_dir, "away", "b.img"), LogPath);
        File.Move(BasePath, Path.Combine(_dir, "away", "a.img"));
        var m = Assert.Throws<PoolException>(() => Pool.Open(LogPath));
        Assert.Contains("base device", m.Message);
        Assert.Contains("missing", m.Message);
        Assert.Contains(BasePath, m.Message);   // where it was last seen
    }

    [Fact]
    public void A_device_of_a_folder_pool_says_to_open_the_folder()
    {
        var folder = Path.Combine(_dir, "pool");
        using (Pool.Create(folder, new PoolCreateOptions { BaseSize = 16L * Mi, LogSize = 16L * Mi })) { }
        var e = Assert.Throws<PoolException>(() => Pool.Open(Path.Combine(folder, Pool.LogImage)));
        Assert.Contains("pool folder", e.Message);
        var n = Assert.Throws<PoolException>(() => Pool.Open(Path.Combine(folder, Pool.MetadataFile)));
        Assert.Contains("is a file, not a pool folder nor a device of a Cow pool", n.Message);
    }

    [Fact]
    public void Scan_lists_the_pools_found_with_their_metadata_device()
    {
        using (var p = Create()) Fill(p);
        var folder = Path.Combine(_dir, "folderpool");
        using (Pool.Create(folder, new PoolCreateOptions { BaseSize = 16L * Mi, LogSize = 16L * Mi, Label = "inafolder" })) { }
        var found = Pool.Scan([_dir, folder]);
        var ondev = Assert.Single(found, f => f.Label == "ondev");
        Assert.Equal(LogPath, ondev.MetadataDevice);
        Assert.Equal([(1u, DeviceRole.Base, BasePath), (2u, DeviceRole.Log, LogPath)], ondev.Devices.Select(d => (d.Cookie, d.Role, d.Path)));
        Assert.All(ondev.Devices, d => Assert.Equal(2u, d.FormatVersion));
        var inFolder = Assert.Single(found, f => f.Label == "inafolder");
        Assert.Null(inFolder.MetadataDevice);
    }

    [Fact]
    public void Devices_added_to_a_pool_on_devices_are_found_at_the_next_open()
    {
        using (var p = Create())
        {
            Fill(p);
            p.AddDevice(Path.Combine(_dir, "disk-c.img"), DeviceRole.Log, 64L * Mi);
            WriteAt(p.Live, CreateFile(p.Live, "/more"), 0, Pattern(6 * Mi, 7));
        }
        using var q = Pool.Open(BasePath);
        Assert.Equal(3, q.Devices.Count);
        Assert.Equal(Pattern(6 * Mi, 7), ReadAll(q.Live, Ino(q.Live, "/more")));
        Check(q);
    }
}
