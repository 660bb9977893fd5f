using System.Diagnostics;
using Cow.Core;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>A pool whose base and log devices are real loop block devices (root only; skipped otherwise).</summary>
[Trait("Tier", "kernel")]
public class LoopDevicePoolTests
{
    /// <summary>Runs a program (losetup) to completion: its trimmed standard output, or null when it failed.</summary>
    internal static string? Run(string file, string args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string o = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? o.Trim() : null;
    }

    [SkippableFact]
    public void PoolOnLoopDevices()
    {
        Skip.If(Environment.UserName != "root" || Run("losetup", "--version") == null, "needs root and losetup");
        var dir = Directory.CreateTempSubdirectory("cow-loop-").FullName;
        var loops = new List<string>();
        try
        {
            foreach (var n in new[] { "b.img", "l.img" })
            {
                var img = Path.Combine(dir, n);
                using (var f = File.Create(img)) f.SetLength(64L << 20);
                var dev = Run("losetup", $"--find --show {img}");
                Skip.If(dev == null, "losetup could not attach a loop device");
                loops.Add(dev);
            }
            var poolDir = Path.Combine(dir, "pool");
            var data = Pattern(5 << 20, 3);
            using (var pool = Pool.Create(poolDir, new PoolCreateOptions { BaseDevice = loops[0], LogDevice = loops[1] }))
            {
                long ino = CreateFile(pool.Live, "/f");
                WriteAt(pool.Live, ino, 0, data);
                Assert.Equal(0, (int)pool.Engine.CreateSnapshot("s", out _));
                WriteAt(pool.Live, ino, 4096, Pattern(4096, 4));
            }
            using (var pool = Pool.Open(poolDir))
            {
                var snap = pool.Snapshot("s")!;
                Assert.Equal(data, ReadAll(snap, Ino(snap, "/f")));
                var report = pool.Fsck();
                Assert.True(report.Clean, report.ToString());
            }
        }
        finally
        {
            foreach (var l in loops) Run("losetup", $"-d {l}");
            Directory.Delete(dir, true);
        }
    }
}
