using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>
/// A pool of two 64 TiB sparse image files (on an XFS scratch filesystem on a loop device: ext4 caps a file at 16 TiB),
/// through the real <c>cow</c> program: mkfs, mount, files written and a snapshot taken through the mount, the mount
/// server's memory under 256 MiB, umount, fsck clean, a remount reading everything back. Root only;
/// skipped without mkfs.xfs (.ci/setup installs xfsprogs).
/// </summary>
[Trait("Tier", "mount")]
public sealed class LargePoolMountTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-large-");
    private string? _xfs;

    public void Dispose() => _scratch.Dispose(() =>
    {
        if (_xfs != null) Engine.LoopDevicePoolTests.Run("umount", _xfs);
    });

    private (int Code, string Out, string Err) Cow(params string[] args) => _scratch.RunCow(output, args);

    [SkippableFact]
    public void A_pool_of_64_TiB_devices_mounts_takes_writes_and_snapshots_and_checks_clean()
    {
        MountedPool.RequireRootAndFuse();
        Skip.If(!new[] { "/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs" }.Any(File.Exists), "needs mkfs.xfs (xfsprogs)");
        Directory.CreateDirectory(_scratch.Root);
        var image = Path.Combine(_scratch.Root, "xfs.img");
        using (var f = File.Create(image)) f.SetLength(2L << 30);
        Assert.NotNull(Engine.LoopDevicePoolTests.Run("mkfs.xfs", $"-q {image}"));
        var xfs = Path.Combine(_scratch.Root, "xfs");
        Directory.CreateDirectory(xfs);
        Assert.NotNull(Engine.LoopDevicePoolTests.Run("mount", $"-o loop {image} {xfs}"));
        _xfs = xfs;

        var pool = Path.Combine(xfs, "pool");
        MountScratch.Ok(Cow("mkfs", pool, "--base-size", "64T", "--log-size", "64T"));
        Assert.Equal(64L << 40, new FileInfo(Path.Combine(pool, "log.img")).Length);
        var mp = _scratch.NewMountPoint();
        var mounted = MountScratch.Ok(Cow("mount", pool, mp));
        int pid = int.Parse(System.Text.RegularExpressions.Regex.Match(mounted, @"server pid (\d+)").Groups[1].Value);
        var data = Engine.MemoryPool.Pattern(48 << 20, 3);
        File.WriteAllBytes(Path.Combine(mp, "a"), data);
        File.WriteAllBytes(Path.Combine(mp, "b"), Engine.MemoryPool.Pattern(5 << 20, 4));
        MountScratch.Ok(Cow("snapshot", "create", mp, "s1"));
        using (var f = new FileStream(Path.Combine(mp, "a"), FileMode.Open, FileAccess.Write))
        {
            f.Position = 7 << 20;
            f.Write(Engine.MemoryPool.Pattern(1 << 20, 9));
        }
        var df = MountScratch.Ok(Cow("df", mp));
        Assert.Contains("TiB", df);
        long rssKiB = File.ReadLines($"/proc/{pid}/status").Where(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Select(l => long.Parse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1])).Single();
        output.WriteLine($"mount server RSS with two 64 TiB devices: {rssKiB / 1024} MiB");
        Assert.True(rssKiB < 256 * 1024, $"RSS {rssKiB / 1024} MiB");
        MountScratch.Ok(Cow("umount", mp));

        Assert.Contains("clean", MountScratch.Ok(Cow("fsck", pool)));
        MountScratch.Ok(Cow("mount", pool, mp));
        Assert.Equal(data, File.ReadAllBytes(Path.Combine(mp, ".snapshots", "s1", "a")));
        var now = File.ReadAllBytes(Path.Combine(mp, "a"));
        Assert.Equal(Engine.MemoryPool.Pattern(1 << 20, 9), now.AsSpan(7 << 20, 1 << 20).ToArray());
        MountScratch.Ok(Cow("umount", mp));
    }
}
