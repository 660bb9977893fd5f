using System.Diagnostics;
using System.Text;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Kernel;

/// <summary>
/// The kernel tier: Cow on a real fuse-iomap kernel. Boots the Linux 7.2.13 fuse-iomap test kernel of
/// ../shared/kernel under qemu (<c>vm-run.sh</c>, software emulation where KVM does not run guests) with two
/// fresh virtio disks and runs <c>tests/kernel/iomap-vm.sh</c> inside: <c>cow mkfs</c> on the disks,
/// <c>cow mount --iomap on</c> (the kernel does the data I/O), every data check of
/// <c>tests/kernel/iomap_checks.py</c> compared byte for byte, unmount + fsck + remount, SIGKILL-and-remount
/// rounds with fsync'd data checked, and the guest's dmesg (with <c>fuse.debug_iomap=1</c>, which logs every
/// reply the kernel rejects) free of rejected replies, warnings, BUGs and oopses.
/// Skipped, with the reason, where the VM cannot run: no qemu-system-x86_64, no ../shared/kernel, not root.
/// </summary>
[Trait("Tier", "kernel")]
[Collection(KernelVmCollection.Name)]
public sealed class IomapVmTests(ITestOutputHelper output)
{
    /// <summary>The repository checkout the tests were built in (tests/Cow.Tests/bin/Release/net10.0 is five levels down).</summary>
    private static string Repo => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../.."));

    /// <summary>../shared/kernel beside the checkout, or $COW_KERNEL_DIR.</summary>
    private static string KernelDir => Environment.GetEnvironmentVariable("COW_KERNEL_DIR") is { Length: > 0 } d ? d : Path.GetFullPath(Path.Combine(Repo, "../shared/kernel"));

    private static void SkipUnlessTheVmCanRun()
    {
        Skip.IfNot(Cow.Fuse.Mounting.Mounter.IsRoot, "the fuse-iomap VM tests run as root (CI: sudo bash .ci/run)");
        Skip.If(FindOnPath("qemu-system-x86_64") == null, "qemu-system-x86_64 is not installed (.ci/setup installs qemu-system-x86)");
        Skip.IfNot(File.Exists(Path.Combine(KernelDir, "vm-run.sh")) && File.Exists(Path.Combine(KernelDir, "bzImage")),
            $"no fuse-iomap test kernel at {KernelDir} (vm-run.sh and bzImage; set COW_KERNEL_DIR to another place)");
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(p => Path.Combine(p, name)).FirstOrDefault(File.Exists);

    /// <summary>Runs iomap-vm.sh with <paramref name="steps"/> in a fresh VM; returns its output (asserting the VM
    /// reported an exit status at all, after any boot again). A guest that oopses while booting, before the script printed its first
    /// line, is booted again (twice at most, each logged): under software emulation with two vCPUs the test
    /// kernel now and then takes an int3 oops in the timer code during boot (kernel text patching racing the
    /// emulator), before any of Cow runs.</summary>
    private string RunVm(params string[] steps)
    {
        for (int attempt = 1; ; attempt++)
        {
            var o = RunVmOnce(steps);
            bool bootFailed = !o.Contains("== uname") && (o.Contains("Kernel panic") || o.Contains("Oops"));
            if (!bootFailed || attempt == 3)
            {
                Assert.DoesNotContain("VM ended without reporting an exit status", o);
                return o;
            }
            output.WriteLine($"the guest oopsed while booting (attempt {attempt}); booting again. Its console:");
            foreach (var line in o.Split('\n').Where(l => l.Contains("Oops") || l.Contains("RIP:") || l.Contains("panic"))) output.WriteLine(line.TrimEnd('\r'));
        }
    }

    private string RunVmOnce(string[] steps)
    {
        var dir = Directory.CreateTempSubdirectory("cow-iomap-vm-").FullName;
        try
        {
            var psi = new ProcessStartInfo(Path.Combine(KernelDir, "vm-run.sh")) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[]
            {
                "--append", "fuse.debug_iomap=1", "--mkdisk", Path.Combine(dir, "base.img") + ":1G", "--mkdisk", Path.Combine(dir, "log.img") + ":2G",
                "--mkdisk", Path.Combine(dir, "extra.img") + ":3G",   // /dev/vdc: the devices step adds it to the mounted pool
                "--scratch", dir, "--timeout", "600", "--",
                "env", $"COW=dotnet {Path.Combine(Repo, "Cow.Cli/bin/Release/net10.0/cow.dll")}", $"REPO={Repo}", "COW_SEED=21",
                "sh", Path.Combine(Repo, "tests/kernel/iomap-vm.sh"),
            }.Concat(steps)) psi.ArgumentList.Add(a);
            var sw = Stopwatch.StartNew();
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            var text = p.StandardOutput.ReadToEnd();
            Assert.True(p.WaitForExit(700_000), "the VM did not finish in 700 s");
            var all = text + err.Result;
            output.WriteLine($"vm-run.sh exit {p.ExitCode} after {sw.Elapsed.TotalSeconds:F0} s");
            foreach (var line in all.Split('\n').Where(l => l.Contains("@@") || l.StartsWith("CHECK") || l.Contains("round") || l.Contains("fuse iomap")))
                output.WriteLine(line.TrimEnd('\r'));
            return all;
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }

    private static void AssertClean(string o, params string[] steps)
    {
        foreach (var s in new[] { "mkfs", "mount" }.Concat(steps))
            Assert.True(o.Contains($"@@STEP {s} rc=0@@"), $"step {s} did not pass:\n{Tail(o)}");
        Assert.True(o.Contains("@@DMESG-BAD 0@@"), $"the guest's dmesg has rejected replies, warnings or oopses:\n{Tail(o)}");
        Assert.True(o.Contains("@@IOMAP-VM rc=0@@"), $"iomap-vm.sh failed:\n{Tail(o)}");
    }

    private static string Tail(string o)
    {
        var lines = o.Split('\n');
        return string.Join('\n', lines.Skip(Math.Max(0, lines.Length - 80)));
    }

    /// <summary>Every data path through the kernel (buffered, direct, unaligned, appends, truncates, holes and
    /// SEEK_DATA/HOLE also before writeback, fallocate and punch, mmap + msync, fsync/syncfs, copy_file_range
    /// sharing blocks, snapshots of open files being written, frees before reuse), then unmount, fsck and a
    /// fresh mount with the fsync'd bytes checked; then three SIGKILL-and-remount rounds.</summary>
    [SkippableFact]
    public void Cow_on_the_fuse_iomap_kernel_passes_every_data_check_and_survives_SIGKILL()
    {
        SkipUnlessTheVmCanRun();
        var o = RunVm("checks", "remount", "kill");
        foreach (var check in new[]
        {
            "buffered_write_read", "direct_write_read", "unaligned_and_partial_block_writes", "appends", "truncate_extend_and_shrink",
            "holes_and_seek_data_hole", "seek_data_before_writeback", "fallocate_and_punch_hole", "mmap_read_write_msync", "fsync_and_syncfs",
            "copy_file_range_shares_blocks", "copy_file_range_of_unsynced_data", "snapshots_of_open_files_being_written",
            "frees_invalidate_cached_mappings_before_reuse",
        })
            Assert.True(o.Contains($"CHECK OK {check}\n") || o.Contains($"CHECK OK {check}\r"), $"check {check} did not pass:\n{Tail(o)}");
        Assert.Contains("@@CHECKS pass=14 fail=0@@", o);
        Assert.Contains("fuse-iomap: pool device /dev/vda", o);
        AssertClean(o, "checks", "remount", "kill", "umount");
    }

    /// <summary>cow device add of a third disk to the pool mounted with fuse-iomap (registered with the kernel before any
    /// mapping names it; new writes land on it), then cow device remove of the original log online, with every byte
    /// read back through the kernel's I/O after each, fsck clean and a fresh mount.</summary>
    [SkippableFact]
    public void Devices_added_and_removed_on_a_mounted_pool_work_with_the_kernel_doing_the_io()
    {
        SkipUnlessTheVmCanRun();
        var o = RunVm("devices");
        AssertClean(o, "devices", "umount");
    }
}

/// <summary>The VM tests run alone, after the other test collections: the guest runs under software emulation and
/// takes both cores for minutes, which would starve the timing-sensitive mount tests running beside it.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class KernelVmCollection
{
    public const string Name = "kernel VM (alone)";
}
