using Cow.Core;
using Cow.Fuse.Kernel;
using Cow.Fuse.Mounting;
using Cow.Fuse.Server;
using Cow.Tests.Kernel;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>
/// The mount side of the fuse-iomap negotiation on this kernel (6.18: no fuse-iomap, FUSE_DEV_IOC_ADD_IOMAP is
/// answered ENOTTY): <c>--iomap on</c> is refused with exit code 3 and leaves no mount, <c>--iomap auto</c>
/// logs the reason once and serves in userspace, <c>--iomap off</c> does not ask; the same through the API,
/// through fusermount3, and in a child process without CAP_SYS_RAWIO (setpriv). Root only.
/// </summary>
[Trait("Tier", "mount")]
public sealed class IomapMountTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-iomap-");
    private string Root => _scratch.Root;
    private string PoolDir => _scratch.PoolDir;
    private string NewMountPoint() => _scratch.NewMountPoint();
    private void MakePool() => _scratch.MakePool("256M");

    private (int Code, string Out, string Err) Run(string file, params string[] args)
    {
        var r = file == "cow" ? CowProgram.Run(args) : KernelScratch.Run(file, args);
        output.WriteLine($"{file} {string.Join(' ', args)} -> {r.Code}\n{r.Out}{r.Err}");
        return r;
    }

    /// <summary>The pool is closed again (its lock free) and nothing of it is mounted or attached.</summary>
    private void AssertNothingLeft(string mp)
    {
        Assert.Null(MountTable.Find(mp));
        Assert.Empty(KernelScratch.LoopsUnder(Root));
        using var pool = Pool.Open(PoolDir);
    }

    public void Dispose() => _scratch.Dispose(() =>
    {
        foreach (var n in KernelScratch.LoopsUnder(Root).Keys) KernelScratch.Run("losetup", "-d", $"/dev/loop{n}");
    });

    [SkippableFact]
    public void This_kernel_refuses_ADD_IOMAP()
    {
        MountedPool.RequireRootAndFuse();
        using var fuse = Fd.Open("/dev/fuse", Native.O_RDWR);
        var r = IomapNegotiation.RequestIomap(fuse.Handle);
        output.WriteLine($"ADD_IOMAP: granted={r.Granted} errno={r.Errno} reason={r.Reason}");
        Assert.False(r.Granted, "this test expects a kernel without fuse-iomap (mainline 6.18)");
        Assert.Equal(Errno.ENOTTY, r.Errno);
        Assert.Equal("this kernel has no fuse-iomap (FUSE_DEV_IOC_ADD_IOMAP: Inappropriate ioctl for device (ENOTTY))", r.Reason);
        var noCap = IomapNegotiation.RequestIomap(fuse.Handle, () => false);
        Assert.False(noCap.Granted);
        Assert.Contains("CAP_SYS_RAWIO", noCap.Reason);
    }

    [SkippableFact]
    public void Api_iomap_on_is_refused_and_leaves_no_mount()
    {
        MakePool();
        var mp = NewMountPoint();
        using (var pool = Pool.Open(PoolDir))
        {
            var e = Assert.Throws<MountException>(() => MountedFileSystem.Start(pool, new MountSettings { MountPoint = mp, Iomap = IomapMode.On }));
            output.WriteLine(e.Message);
            Assert.True(e.IomapUnavailable);
            Assert.StartsWith("fuse-iomap is not available: this kernel has no fuse-iomap", e.Message);
            Assert.Contains("refused because of --iomap on; mount with --iomap auto (or off)", e.Message);
            Assert.Null(MountTable.Find(mp));
        }
        AssertNothingLeft(mp);
    }

    [SkippableFact]
    public void Api_iomap_on_without_the_capability_is_refused_naming_it()
    {
        MakePool();
        var mp = NewMountPoint();
        using (var pool = Pool.Open(PoolDir))
        {
            var e = Assert.Throws<MountException>(() => MountedFileSystem.Start(pool, new MountSettings { MountPoint = mp, Iomap = IomapMode.On, HasSysRawio = () => false }));
            Assert.True(e.IomapUnavailable);
            Assert.Contains("the server lacks CAP_SYS_RAWIO", e.Message);
        }
        AssertNothingLeft(mp);
    }

    /// <summary>fusermount3 mounts before it hands the descriptor over, so the refusal comes after the mount:
    /// the mount must be taken away again.</summary>
    [SkippableFact]
    public void Api_iomap_on_through_fusermount_is_refused_and_unmounted()
    {
        MakePool();
        var mp = NewMountPoint();
        using (var pool = Pool.Open(PoolDir))
        {
            var e = Assert.Throws<MountException>(() => MountedFileSystem.Start(pool, new MountSettings { MountPoint = mp, Iomap = IomapMode.On, UseFusermount = true }));
            Assert.True(e.IomapUnavailable);
        }
        AssertNothingLeft(mp);
        Assert.False(Mounter.IsDisconnected(mp));
    }

    [SkippableFact]
    public void Api_iomap_auto_logs_the_reason_once_and_serves_in_userspace()
    {
        using var m = new MountedPool(adjust: s => s with { Iomap = IomapMode.Auto });
        File.WriteAllText(m.P("a.txt"), "served in userspace");
        Assert.Equal("served in userspace", File.ReadAllText(m.P("a.txt")));
        Assert.False(m.Mount!.IomapRequest.Granted);
        Assert.Equal(Errno.ENOTTY, m.Mount.IomapRequest.Errno);
        Assert.Equal(IomapMode.Off, m.Mount.Dispatcher.Options.Iomap);   // refused under Auto: the dispatcher does not negotiate it
        Assert.Null(m.Mount.Dispatcher.Options.IomapDevices);
        List<string> lines;
        lock (m.Log) lines = m.Log.Where(l => l.Contains("fuse-iomap")).ToList();
        Assert.Equal(["fuse-iomap not available (this kernel has no fuse-iomap (FUSE_DEV_IOC_ADD_IOMAP: Inappropriate ioctl for device (ENOTTY))): serving I/O in userspace"], lines);
    }

    [SkippableFact]
    public void Api_iomap_off_does_not_ask()
    {
        using var m = new MountedPool(adjust: s => s with { Iomap = IomapMode.Off });
        Assert.False(m.Mount!.IomapRequest.Granted);
        Assert.Equal((Errno)0, m.Mount.IomapRequest.Errno);
        Assert.Equal(IomapMode.Off, m.Mount.Dispatcher.Options.Iomap);
        lock (m.Log) Assert.DoesNotContain(m.Log, l => l.Contains("fuse-iomap"));
        File.WriteAllText(m.P("b.txt"), "off");
        Assert.Equal("off", File.ReadAllText(m.P("b.txt")));
    }

    [SkippableFact]
    public void Api_a_missing_snapshot_leaves_no_mount()
    {
        MakePool();
        var mp = NewMountPoint();
        using (var pool = Pool.Open(PoolDir))
            Assert.Throws<ArgumentException>(() => MountedFileSystem.Start(pool, new MountSettings { MountPoint = mp, Snapshot = "nope" }));
        AssertNothingLeft(mp);
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Cli_iomap_on_exits_3_with_a_clear_message_and_no_mount(bool foreground)
    {
        MakePool();
        var mp = NewMountPoint();
        var r = foreground ? Run("cow", "mount", "-f", "--iomap", "on", PoolDir, mp) : Run("cow", "mount", "--iomap", "on", PoolDir, mp);
        Assert.Equal(3, r.Code);
        Assert.Contains("cow: fuse-iomap is not available: this kernel has no fuse-iomap", r.Err);
        Assert.Contains("--iomap on", r.Err);
        AssertNothingLeft(mp);
    }

    [SkippableFact]
    public void Cli_iomap_auto_mounts_and_works()
    {
        MakePool();
        var mp = NewMountPoint();
        Assert.Equal(0, Run("cow", "mount", "--iomap", "auto", PoolDir, mp).Code);
        File.WriteAllText(Path.Combine(mp, "c.txt"), "auto");
        Assert.Equal("auto", File.ReadAllText(Path.Combine(mp, "c.txt")));
        Assert.Equal(0, Run("cow", "umount", mp).Code);
        var log = File.ReadAllText(Path.Combine(PoolDir, "mount.log"));
        Assert.Single(log.Split('\n'), l => l.Contains("fuse-iomap not available (this kernel has no fuse-iomap") && l.EndsWith("): serving I/O in userspace"));
        AssertNothingLeft(mp);
    }

    /// <summary>A real child process without CAP_SYS_RAWIO (setpriv drops it from the bounding and inheritable
    /// sets, so the exec'd program does not get it): <c>--iomap on</c> is refused naming the capability,
    /// <c>--iomap auto</c> mounts and logs why it did not ask.</summary>
    [SkippableFact]
    public void Cli_without_CAP_SYS_RAWIO_in_a_child_process()
    {
        MakePool();
        string[] drop = ["--inh-caps=-sys_rawio", "--bounding-set=-sys_rawio"];
        var probe = Run("setpriv", [.. drop, "grep", "^CapEff", "/proc/self/status"]);
        Assert.True(probe.Code == 0, $"setpriv (util-linux, installed by .ci/setup) failed: {probe.Err}");
        ulong capEff = Convert.ToUInt64(probe.Out.Split(':')[1].Trim(), 16);
        Assert.Equal(0UL, capEff & (1UL << Capabilities.CapSysRawio));
        Assert.NotEqual(0UL, capEff & (1UL << Capabilities.CapSysAdmin));   // mount(2) still allowed

        var mp = NewMountPoint();
        var on = Run("setpriv", [.. drop, "dotnet", CowProgram.Dll, "mount", "-f", "--iomap", "on", PoolDir, mp]);
        Assert.Equal(3, on.Code);
        Assert.Contains("fuse-iomap is not available: the server lacks CAP_SYS_RAWIO", on.Err);
        AssertNothingLeft(mp);

        var auto = Run("setpriv", [.. drop, "dotnet", CowProgram.Dll, "mount", "--iomap", "auto", PoolDir, mp]);
        Assert.Equal(0, auto.Code);
        File.WriteAllText(Path.Combine(mp, "d.txt"), "no rawio");
        Assert.Equal("no rawio", File.ReadAllText(Path.Combine(mp, "d.txt")));
        Assert.Equal(0, Run("cow", "umount", mp).Code);
        Assert.Contains("fuse-iomap not available (the server lacks CAP_SYS_RAWIO", File.ReadAllText(Path.Combine(PoolDir, "mount.log")));
        AssertNothingLeft(mp);
    }
}
