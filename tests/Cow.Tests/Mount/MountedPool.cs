using System.Diagnostics;
using Cow.Core;
using Cow.Fuse.Mounting;
using Cow.Fuse.Server;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>
/// A pool of sparse image files in a temporary folder, mounted through /dev/fuse by a server running in
/// this test process. Dispose always unmounts (lazily if something is still open), closes the pool and
/// removes the folder, even when the test failed. Needs root and /dev/fuse (CI runs as root).
/// </summary>
public sealed class MountedPool : IDisposable
{
    public string PoolDir { get; }
    public string MountPoint { get; }
    public Pool? Pool { get; private set; }
    public MountedFileSystem? Mount { get; private set; }
    public List<string> Log { get; } = new();
    private readonly MountSettings _settings;

    public MountedPool(string? snapshot = null, bool writebackCache = false, bool showSnapshots = false, long baseSize = 64L << 20, long logSize = 2L << 30, int threads = 4,
        Func<MountSettings, MountSettings>? adjust = null)
    {
        RequireRootAndFuse();
        var root = Path.Combine(Path.GetTempPath(), "cow-mt-" + Guid.NewGuid().ToString("N")[..12]);
        PoolDir = Path.Combine(root, "pool");
        MountPoint = Path.Combine(root, "mnt");
        Directory.CreateDirectory(MountPoint);
        _settings = new MountSettings
        {
            MountPoint = MountPoint, Snapshot = snapshot, WritebackCache = writebackCache, SnapshotDirVisible = showSnapshots, Threads = threads,
            Log = line => { lock (Log) Log.Add(line); },
        };
        if (adjust != null) _settings = adjust(_settings);
        // The kernel tier (tests/kernel/iomap-vm.sh) runs mount tests inside the fuse-iomap VM with
        // COW_TEST_IOMAP=on|auto|off (the mount's --iomap) and COW_TEST_IOMAP_DEVICES=BASE,LOG (block devices
        // formatted for every pool, instead of image files: one pool at a time, so run one test class serially).
        var iomapEnv = Environment.GetEnvironmentVariable("COW_TEST_IOMAP");
        if (!string.IsNullOrEmpty(iomapEnv))
            _settings = _settings with
            {
                Iomap = iomapEnv switch
                {
                    "on" => IomapMode.On,
                    "off" => IomapMode.Off,
                    "auto" => IomapMode.Auto,
                    _ => throw new ArgumentException($"COW_TEST_IOMAP must be on, off or auto, not '{iomapEnv}'"),
                },
            };
        var devices = Environment.GetEnvironmentVariable("COW_TEST_IOMAP_DEVICES")?.Split(',', StringSplitOptions.RemoveEmptyEntries);
        if (devices != null && devices.Length != 2) throw new ArgumentException("COW_TEST_IOMAP_DEVICES must name two devices: BASE,LOG");
        try
        {
            Pool.Create(PoolDir, devices == null ? new PoolCreateOptions { BaseSize = baseSize, LogSize = logSize }
                : new PoolCreateOptions { BaseDevice = devices[0], LogDevice = devices[1], Force = true }).Dispose();
            if (snapshot == null) MountNow();
        }
        catch { Dispose(); throw; }
    }

    /// <summary>Mounts the (closed) pool with the current settings, or with <paramref name="snapshot"/> as root.</summary>
    public void MountNow(string? snapshot = null)
    {
        if (Mount != null) throw new InvalidOperationException("already mounted");
        Pool ??= Pool.Open(PoolDir);
        Mount = MountedFileSystem.Start(Pool, snapshot == null ? _settings : _settings with { Snapshot = snapshot });
    }

    /// <summary>Unmounts and closes the pool (final commit).</summary>
    public void UnmountNow()
    {
        try { Mount?.Unmount(lazyIfBusy: true); }
        finally
        {
            Mount = null;
            Pool?.Dispose();
            Pool = null;
        }
    }

    /// <summary>Unmount, close, reopen, mount: everything the test sees afterwards came from the devices.</summary>
    public void Remount(string? snapshot = null)
    {
        UnmountNow();
        MountNow(snapshot);
    }

    /// <summary>A path inside the mount.</summary>
    public string P(string relative) => Path.Combine(MountPoint, relative.TrimStart('/'));

    public void Dispose()
    {
        try { UnmountNow(); }
        catch (Exception) { ForceUnmount(MountPoint); }
        try { Directory.Delete(Path.GetDirectoryName(PoolDir)!, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Last resort: a lazy unmount of whatever is still mounted at <paramref name="mp"/>.</summary>
    public static void ForceUnmount(string mp)
    {
        try { if (MountTable.Find(mp) != null) Mounter.Unmount(mp, lazy: true); } catch (Exception) { }
    }

    public static void RequireRootAndFuse()
    {
        Skip.IfNot(Mounter.IsRoot, "mount tests need root (CI runs them as root: sudo bash .ci/run)");
        Skip.IfNot(File.Exists("/dev/fuse"), "mount tests need /dev/fuse (modprobe fuse)");
    }
}

/// <summary>Runs the real <c>cow</c> program (built next to the tests) as a child process.</summary>
public static class CowProgram
{
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "cow.dll");

    public static ProcessStartInfo StartInfo(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>Runs cow to completion: exit code, standard output, standard error.</summary>
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        using var p = Process.Start(StartInfo(args))!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException($"cow {string.Join(' ', args)} did not finish in 120 s"); }
        return (p.ExitCode, output, err.Result);
    }
}
