using System.Diagnostics;
using Cow.Core;
using Cow.Fuse.Mounting;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>cow mount / cow umount as an administrator uses them: the real program, real mounts, signals,
/// dead servers, double mounts, and a server killed with SIGKILL in the middle of writes.</summary>
[Trait("Tier", "slow")]
public sealed class MountLifecycleTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-lc-");
    private readonly List<Process> _servers = new();
    private string PoolDir => _scratch.PoolDir;
    private string NewMountPoint() => _scratch.NewMountPoint();
    private void MakePool() => _scratch.MakePool("1G");

    private (int Code, string Out, string Err) Cow(params string[] args)
    {
        var r = CowProgram.Run(args);
        output.WriteLine($"cow {string.Join(' ', args)} -> {r.Code}\n{r.Out}{r.Err}");
        return r;
    }

    /// <summary>Starts a foreground server and waits until its mount is up.</summary>
    private Process StartForeground(string mp, params string[] extra)
    {
        // Started as from a terminal, with the signals at their default: a runner that ignores SIGINT (a shell's
        // background job does) would hand that on, and .NET, like any program, leaves an inherited SIG_IGN of
        // SIGINT in place, so the server would never see the signal the test sends.
        var psi = CowProgram.StartInfo(["mount", "--foreground", PoolDir, mp, .. extra]);
        psi.ArgumentList.Insert(0, psi.FileName);
        psi.ArgumentList.Insert(0, "--default-signal=INT,QUIT,TERM,HUP");
        psi.FileName = "env";
        var p = Process.Start(psi)!;
        _servers.Add(p);
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (output) output.WriteLine("server: " + e.Data); };
        p.BeginErrorReadLine();
        var until = DateTime.UtcNow.AddSeconds(30);
        while (MountTable.Find(mp) is not { IsCow: true })
        {
            Assert.False(p.HasExited, $"server exited with {(p.HasExited ? p.ExitCode : 0)} before mounting");
            Assert.True(DateTime.UtcNow < until, "mount did not appear within 30 s");
            Thread.Sleep(1);
        }
        return p;
    }

    [SkippableFact]
    public void Background_mount_serves_files_and_umount_waits_for_the_commit()
    {
        MakePool();
        var mp = NewMountPoint();
        var r = Cow("mount", PoolDir, mp);
        Assert.Equal(0, r.Code);
        Assert.Contains("mounted", r.Out);
        var entry = MountTable.Find(mp);
        Assert.NotNull(entry);
        Assert.Equal("fuse.cow", entry!.FsType);
        var data = new byte[300_000];
        new Random(7).NextBytes(data);
        File.WriteAllBytes(Path.Combine(mp, "f.bin"), data);   // no fsync: the unmount must commit it
        Assert.Equal(0, Cow("umount", mp).Code);
        Assert.Null(MountTable.Find(mp));
        // The server has closed the pool: it can be opened at once, and holds the data.
        using var pool = Pool.Open(PoolDir);
        Assert.Equal(0, (int)pool.Live.Resolve("/f.bin", out var a));
        var back = new byte[a.Size];
        Assert.Equal(0, (int)pool.Live.Read(a.Ino, 0, back, out int n));
        Assert.Equal(data, back[..n]);
        Assert.True(pool.Fsck().Clean);
    }

    [SkippableFact]
    public void A_pool_is_mounted_once_and_a_mount_point_takes_one_mount()
    {
        MakePool();
        var mp1 = NewMountPoint();
        var mp2 = NewMountPoint();
        Assert.Equal(0, Cow("mount", PoolDir, mp1).Code);
        var again = Cow("mount", PoolDir, mp2);
        Assert.Equal(1, again.Code);
        Assert.Matches("already open by process [0-9]+", again.Err);
        Assert.Null(MountTable.Find(mp2));
        var same = Cow("mount", PoolDir, mp1);
        Assert.Equal(1, same.Code);
        Assert.Contains("already a Cow mount", same.Err);
        Assert.Equal(0, Cow("umount", mp1).Code);
        var notMounted = Cow("umount", mp1);
        Assert.Equal(1, notMounted.Code);
        Assert.Contains("not mounted", notMounted.Err);
        var missing = Cow("mount", PoolDir, Path.Combine(_scratch.Root, "nowhere"));
        Assert.Equal(1, missing.Code);
        Assert.Contains("No such file", missing.Err);
        var noPool = Cow("mount", Path.Combine(_scratch.Root, "nopool"), mp1);
        Assert.Equal(1, noPool.Code);
        Assert.Contains("does not exist", noPool.Err);
    }

    [SkippableTheory]
    [InlineData("SIGTERM")]
    [InlineData("SIGINT")]
    public void A_signal_commits_and_unmounts(string signal)
    {
        MakePool();
        var mp = NewMountPoint();
        var p = StartForeground(mp);
        File.WriteAllText(Path.Combine(mp, "note.txt"), "written before the signal");
        Assert.Equal(0, Mono.Unix.Native.Syscall.kill(p.Id, signal == "SIGTERM" ? Mono.Unix.Native.Signum.SIGTERM : Mono.Unix.Native.Signum.SIGINT));
        Assert.True(p.WaitForExit(30_000), "server did not exit within 30 s of the signal");
        Assert.Equal(0, p.ExitCode);
        Assert.Null(MountTable.Find(mp));
        using var pool = Pool.Open(PoolDir);
        Assert.Equal(0, (int)pool.Live.Resolve("/note.txt", out var a));
        Assert.Equal(25, a.Size);
    }

    /// <summary>A signal sent the moment the mount appears (the server may still be setting up) stops the server
    /// cleanly: exit 0, unmounted, the pool closed — not killed by the signal with a dead mount left behind.</summary>
    [SkippableFact]
    public void A_signal_as_soon_as_the_mount_appears_still_unmounts_cleanly()
    {
        MakePool();
        var mp = NewMountPoint();
        for (int round = 0; round < 3; round++)
        {
            var p = StartForeground(mp);
            Assert.Equal(0, Mono.Unix.Native.Syscall.kill(p.Id, Mono.Unix.Native.Signum.SIGINT));
            Assert.True(p.WaitForExit(30_000), "server did not exit within 30 s of the signal");
            Assert.Equal(0, p.ExitCode);
            Assert.Null(MountTable.Find(mp));
        }
        using var pool = Pool.Open(PoolDir);
        Assert.True(pool.Fsck().Clean);
    }

    [SkippableFact]
    public void A_dead_server_is_reported_and_cleared_by_umount()
    {
        MakePool();
        var mp = NewMountPoint();
        var p = StartForeground(mp);
        p.Kill();
        p.WaitForExit();
        Assert.True(Mounter.IsDisconnected(mp));
        var again = Cow("mount", PoolDir, mp);
        Assert.Equal(1, again.Code);
        Assert.Contains("server has died", again.Err);
        var r = Cow("umount", mp);
        Assert.Equal(0, r.Code);
        Assert.Contains("server had died", r.Out);
        Assert.Null(MountTable.Find(mp));
        Assert.Equal(0, Cow("mount", PoolDir, mp).Code);
        Assert.Equal(0, Cow("umount", mp).Code);
    }

    [SkippableFact]
    public void Fusermount_path_mounts_and_unmounts()
    {
        MakePool();
        var mp = NewMountPoint();
        Assert.Equal(0, Cow("mount", "--fusermount", PoolDir, mp).Code);
        Assert.Equal("fuse.cow", MountTable.Find(mp)!.FsType);
        File.WriteAllText(Path.Combine(mp, "x"), "via fusermount3");
        Assert.Equal("via fusermount3", File.ReadAllText(Path.Combine(mp, "x")));
        Assert.Equal(0, Cow("umount", mp).Code);
        Assert.Null(MountTable.Find(mp));
    }

    /// <summary>
    /// SIGKILL while writers run: every file whose fsync returned before the kill must read back intact after
    /// the dead mount is cleared and the pool reopened, and fsck must be clean. Writers keep going without
    /// fsync on a big file too, so the kill lands in the middle of writes.
    /// </summary>
    [SkippableTheory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Sigkill_mid_write_keeps_fsynced_data_and_a_clean_pool(int seed)
    {
        MakePool();
        var mp = NewMountPoint();
        var p = StartForeground(mp);
        var durable = new System.Collections.Concurrent.ConcurrentDictionary<string, byte[]>();
        using var stop = new CancellationTokenSource();
        var writers = Enumerable.Range(0, 3).Select(w => new Thread(() =>
        {
            var rnd = new Random(seed * 100 + w);
            int i = 0;
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    var name = $"w{w}-{i++}.bin";
                    var data = new byte[rnd.Next(1, 300_000)];
                    rnd.NextBytes(data);
                    // Raw syscalls: .NET's FileStream.Flush(true) ignores some fsync errors (it reported
                    // success for an fsync the kernel failed with ECONNABORTED when the server died).
                    if (!WriteAll(Path.Combine(mp, name), data, data.Length, 0, OpenFlags.O_CREAT | OpenFlags.O_EXCL, fsync: true)) break;
                    durable[name] = data;
                    // and some unsynced overwrites of a shared big file
                    if (!WriteAll(Path.Combine(mp, $"big{w}"), data, Math.Min(data.Length, 200_000), rnd.Next(0, 8 << 20), OpenFlags.O_CREAT, fsync: false)) break;
                }
            }
            catch (IOException) { /* the server died under us: expected */ }
        })).ToArray();
        foreach (var t in writers) t.Start();
        // The kill lands at a random point after the first fsync, however slow the machine is to get there.
        var firstDurable = System.Diagnostics.Stopwatch.StartNew();
        while (durable.IsEmpty && firstDurable.Elapsed < TimeSpan.FromSeconds(60) && writers.Any(t => t.IsAlive)) Thread.Sleep(10);
        var delay = new Random(seed).Next(300, 1500);
        Thread.Sleep(delay);
        p.Kill();
        p.WaitForExit();
        stop.Cancel();
        foreach (var t in writers) Assert.True(t.Join(60_000), "a writer hung after the server died");
        output.WriteLine($"killed {delay} ms after the first fsync with {durable.Count} files fsync'd");
        Assert.True(durable.Count > 0, "no file was fsync'd before the kill: the test proved nothing");
        Assert.Equal(0, Cow("umount", mp).Code);
        using var pool = Pool.Open(PoolDir);
        var missing = durable.Keys.Where(k => pool.Live.Resolve("/" + k, out _) != 0).Order().ToList();
        Assert.True(missing.Count == 0, $"{missing.Count} of {durable.Count} fsync'd files are gone: {string.Join(", ", missing.Take(20))}");
        foreach (var (name, data) in durable)
        {
            Assert.True(pool.Live.Resolve("/" + name, out var a) == 0, $"{name} was fsync'd but is gone");
            var back = new byte[a.Size];
            pool.Live.Read(a.Ino, 0, back, out int n);
            Assert.True(data.AsSpan().SequenceEqual(back.AsSpan(0, n)), $"{name} was fsync'd but reads back different ({n} of {data.Length} bytes)");
        }
        var report = pool.Fsck();
        Assert.True(report.Clean, report.ToString());
    }

    /// <summary>open, pwrite everything, optionally fsync, close: false on any error (the server died).</summary>
    private static unsafe bool WriteAll(string path, byte[] data, int length, long offset, OpenFlags flags, bool fsync)
    {
        // O_CLOEXEC: a process another test starts meanwhile must not inherit it (it would keep the dead mount busy).
        int fd = Syscall.open(path, OpenFlags.O_WRONLY | OpenFlags.O_CLOEXEC | flags, FilePermissions.S_IRUSR | FilePermissions.S_IWUSR);
        if (fd < 0) return false;
        try
        {
            fixed (byte* b = data)
                for (int done = 0; done < length;)
                {
                    long n = Syscall.pwrite(fd, b + done, (ulong)(length - done), offset + done);
                    if (n <= 0) return false;
                    done += (int)n;
                }
            return !fsync || Syscall.fsync(fd) == 0;
        }
        finally { Syscall.close(fd); }
    }

    public void Dispose()
    {
        foreach (var p in _servers)
        {
            try { if (!p.HasExited) { p.Kill(); p.WaitForExit(10_000); } } catch (Exception) { }
            p.Dispose();
        }
        _scratch.Dispose();
    }
}
