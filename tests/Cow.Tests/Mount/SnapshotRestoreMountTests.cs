using System.Diagnostics;
using System.Security.Cryptography;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>Restoring from <c>.snapshots</c> on a real mount: <c>cp</c> (copy_file_range) from a snapshot's file
/// shares its blocks, and a restore made behind the kernel's back (as the control socket makes it) is seen
/// at once: cached pages, attributes, dentries and negative dentries are invalidated.</summary>
[Trait("Tier", "mount")]
public class SnapshotRestoreMountTests
{
    private static void Ok(int rc, string what) => Assert.True(rc == 0, $"{what}: {Stdlib.GetLastError()}");

    private static long FreeBytes(string mnt)
    {
        Ok(Syscall.statvfs(mnt, out var v), "statvfs");
        return (long)(v.f_bfree * v.f_frsize);
    }

    private static (int Code, string Err) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err.Result);
    }

    private static ulong StatIno(string path)
    {
        Ok(Syscall.stat(path, out var st), "stat " + path);
        return st.st_ino;
    }

    private static byte[] Random(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [SkippableFact]
    public void CpFromASnapshotIntoTheLiveTreeSharesEveryBlock()
    {
        using var m = new MountedPool();
        var data = Random(80 << 20, 1);
        File.WriteAllBytes(m.P("big.img"), data);
        Directory.CreateDirectory(m.P(".snapshots/monday"));
        // The live file changes in place (same inode): its snapshot version is still another file to cp, cmp and
        // diff (another st_ino), so cp restores it and cmp compares the bytes.
        using (var f = new FileStream(m.P("big.img"), FileMode.Open, FileAccess.Write)) f.Write(Random(1 << 20, 2));
        Assert.NotEqual(StatIno(m.P("big.img")), StatIno(m.P(".snapshots/monday/big.img")));
        Assert.Equal(1, Run("cmp", "-s", m.P(".snapshots/monday/big.img"), m.P("big.img")).Code);
        Syscall.sync();
        long free = FreeBytes(m.MountPoint);

        var (code, err) = Run("cp", m.P(".snapshots/monday/big.img"), m.P("big.img"));
        Assert.True(code == 0, err);
        Syscall.sync();
        long used = free - FreeBytes(m.MountPoint);
        Assert.True(used < (1 << 20), $"cp of an 80 MiB file from .snapshots used {used} bytes of new space");
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(File.ReadAllBytes(m.P("big.img"))));
        Assert.Equal(0, Run("cmp", "-s", m.P(".snapshots/monday/big.img"), m.P("big.img")).Code);

        // A copy to a new name shares too; --reflink=always cannot work (FICLONE never reaches a FUSE server).
        (code, err) = Run("cp", "--reflink=auto", m.P(".snapshots/monday/big.img"), m.P("copy.img"));
        Assert.True(code == 0, err);
        Syscall.sync();
        Assert.True(free - FreeBytes(m.MountPoint) < (2 << 20), "cp --reflink=auto from .snapshots copied bytes");
        (code, err) = Run("cp", "--reflink=always", m.P(".snapshots/monday/big.img"), m.P("clone.img"));
        Assert.NotEqual(0, code);
        Assert.Contains("Operation not supported", err);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(File.ReadAllBytes(m.P("copy.img"))));

        // The snapshot goes; the live copies keep the blocks, and the pool checks clean.
        Directory.Delete(m.P(".snapshots/monday"));
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(File.ReadAllBytes(m.P("big.img"))));
        m.UnmountNow();
        using var p = Core.Pool.Open(m.PoolDir);
        var report = p.Fsck(verifyData: true);
        Assert.True(report.Clean, report.ToString());
    }

    [SkippableFact]
    public void ARestoreBehindTheKernelsBackIsSeenAtOnceThroughTheMount()
    {
        using var m = new MountedPool();
        var v1 = Random(3 << 20, 3);
        File.WriteAllBytes(m.P("data.bin"), v1);
        Directory.CreateDirectory(m.P("dir"));
        File.WriteAllText(m.P("dir/gone.txt"), "in the snapshot");
        Directory.CreateDirectory(m.P(".snapshots/s"));

        // Change everything, and make the kernel cache the changed state: pages, size, dentries, a negative dentry.
        var v2 = Random(4 << 20, 4);
        using (var f = new FileStream(m.P("data.bin"), FileMode.Open, FileAccess.Write)) { f.Write(v2); f.Flush(true); }
        File.Delete(m.P("dir/gone.txt"));
        File.WriteAllText(m.P("dir/extra.txt"), "made after the snapshot");
        using var reader = new FileStream(m.P("data.bin"), FileMode.Open, FileAccess.Read);
        Assert.Equal(SHA256.HashData(v2), SHA256.HashData(File.ReadAllBytes(m.P("data.bin"))));
        Assert.False(File.Exists(m.P("dir/gone.txt")));
        Assert.True(File.Exists(m.P("dir/extra.txt")));
        Assert.Equal(v2.Length, new FileInfo(m.P("data.bin")).Length);   // stat: attributes cached too

        var e = m.Pool!.Engine.RestoreFromSnapshot("s", ["/data.bin", "/dir"], dryRun: false, out var changes, out _);
        Assert.Equal((Errno)0, e);
        Assert.Equal(["/data.bin replaced", "/dir attributes", "/dir/extra.txt removed", "/dir/gone.txt created"],
            changes.Select(c => $"{c.Path} {c.Action.ToString().ToLowerInvariant()}"));

        // Read at once (well within the 1 s entry and attribute timeouts): the restored state, nothing stale.
        Assert.Equal(v1.Length, new FileInfo(m.P("data.bin")).Length);
        Assert.Equal(SHA256.HashData(v1), SHA256.HashData(File.ReadAllBytes(m.P("data.bin"))));
        var again = new byte[v1.Length];
        reader.ReadExactly(again);                                      // a descriptor opened before the restore
        Assert.Equal(SHA256.HashData(v1), SHA256.HashData(again));
        Assert.True(File.Exists(m.P("dir/gone.txt")), "negative dentry of a restored file not invalidated");
        Assert.Equal("in the snapshot", File.ReadAllText(m.P("dir/gone.txt")));
        Assert.False(File.Exists(m.P("dir/extra.txt")), "dentry of a removed file not invalidated");
        Assert.Equal(["gone.txt"], Directory.GetFileSystemEntries(m.P("dir")).Select(Path.GetFileName));
    }

    [SkippableFact]
    public void TheDemoMountsWritesSnapshotsRestoresSharingBlocksAndUnmounts()
    {
        MountedPool.RequireRootAndFuse();
        var dir = Path.Combine(Path.GetTempPath(), "cow-demo-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            var (code, output, err) = CowProgram.Run("demo", dir);
            Assert.True(code == 0, $"exit {code}: {err}\n{output}");
            foreach (var step in new[] { "$ cow mkfs", "cow mount", "mkdir", ".snapshots/before", "$ cow snapshot restore", "replaced    /data.txt", "$ cow umount", "$ cow fsck" })
                Assert.Contains(step, output);
            Assert.Contains("version one of the file", output.Split("$ cow snapshot restore")[1]);   // read back through the mount after the restore
            Assert.Contains("copied 16,777,216 bytes using 0 B of new space", output);
            Assert.Contains("clean:", output);
            Assert.False(ServedPoolsMounted(Path.Combine(dir, "mnt")), "the demo left its mount behind");
            Assert.True(File.Exists(Path.Combine(dir, "base.img")), "the pool stays to explore");
            // Run again: the earlier demo pool is replaced; --remove removes it.
            (code, output, err) = CowProgram.Run("demo", dir, "--remove");
            Assert.True(code == 0, $"exit {code}: {err}\n{output}");
            Assert.False(Directory.Exists(dir));
        }
        finally
        {
            MountedPool.ForceUnmount(Path.Combine(dir, "mnt"));
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private static bool ServedPoolsMounted(string mountPoint) => File.ReadLines("/proc/self/mountinfo").Any(l => l.Split(' ')[4] == mountPoint);
}
