using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Fuse.Mounting;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary><c>cow mount</c> sets the mount's read-ahead after the kernel applied INIT (which caps it at the
/// kernel's 128 KiB), and leaves it alone with <see cref="MountSettings.ReadAheadKib"/> 0; it limits READ
/// requests to <see cref="MountSettings.MaxReadKib"/> with the kernel's max_read mount option.</summary>
[Trait("Tier", "mount")]
public sealed class ReadAheadMountTests
{
    private static string ReadAheadOf(MountedPool m)
    {
        var entry = MountTable.Find(m.MountPoint);
        Assert.NotNull(entry);
        return File.ReadAllText($"/sys/class/bdi/{entry!.MajorMinor}/read_ahead_kb").Trim();
    }

    private static string Settled(MountedPool m, string want)
    {
        // INIT is answered asynchronously to mount(2): give the worker a moment.
        string now = ReadAheadOf(m);
        for (int i = 0; i < 200 && now != want; i++) { Thread.Sleep(10); now = ReadAheadOf(m); }
        return now;
    }

    [SkippableFact]
    public void TheDefaultIsOneMebibyte()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");   // a request answered: INIT is long done
        Assert.Equal("1024", Settled(m, "1024"));
        m.Remount();
        Assert.Equal("1024", Settled(m, "1024"));
    }

    [SkippableFact]
    public void ZeroKeepsTheKernelsSetting()
    {
        using var m = new MountedPool(adjust: s => s with { ReadAheadKib = 0 });
        File.WriteAllText(m.P("f"), "x");
        Assert.Equal("128", ReadAheadOf(m));
    }

    [SkippableFact]
    public void AnotherValueIsApplied()
    {
        using var m = new MountedPool(adjust: s => s with { ReadAheadKib = 512 });
        Assert.Equal("512", Settled(m, "512"));
    }

    /// <summary>The super-block options of the mount (the last field of its mountinfo line), where the kernel
    /// shows max_read when it is limited.</summary>
    private static string[] SuperOptionsOf(MountedPool m)
    {
        var entry = MountTable.Find(m.MountPoint);
        Assert.NotNull(entry);
        var line = File.ReadAllLines("/proc/self/mountinfo").Single(l => l.StartsWith(entry!.Id + " ", StringComparison.Ordinal));
        return line.Split(' ')[^1].Split(',');
    }

    [SkippableFact]
    public void ReadsCutAt256KiBReadBackWhole()
    {
        using var m = new MountedPool(adjust: s => s with { MaxReadKib = 256 });
        Assert.Contains("max_read=262144", SuperOptionsOf(m));
        var data = new byte[(3 << 20) + 12345];
        new Random(7).NextBytes(data);
        File.WriteAllBytes(m.P("f"), data);
        m.Remount();   // nothing of f in the page cache: the read goes through READs of 256 KiB
        Assert.Contains("max_read=262144", SuperOptionsOf(m));
        Assert.Equal(data, File.ReadAllBytes(m.P("f")));
    }

    [SkippableFact]
    public void ByDefaultReadsAreNotCut()
    {
        Assert.Equal(0, MountSettings.DefaultMaxReadKib);
        using var m = new MountedPool();
        Assert.DoesNotContain(SuperOptionsOf(m), o => o.StartsWith("max_read=", StringComparison.Ordinal));
    }

    [SkippableFact]
    public void MaxReadReachesTheKernelThroughFusermountToo()
    {
        using var m = new MountedPool(adjust: s => s with { MaxReadKib = 128, UseFusermount = true });
        Assert.Contains("max_read=131072", SuperOptionsOf(m));
    }

    [SkippableFact]
    public void ASequentialReadIsAnsweredFromLentReadAheadBuffers()
    {
        using var m = new MountedPool();
        var data = new byte[(24 << 20) + 5000];
        new Random(11).NextBytes(data);
        File.WriteAllBytes(m.P("big"), data);
        m.Remount();   // nothing of big in the page cache, a fresh device read-ahead
        var log = (FileBlockDevice)m.Pool!.Engine.Device(FormatConstants.LogCookie);
        Assert.True(log.ReadsAheadDirect, "O_DIRECT refused where the test pool lives: nothing is read ahead");
        Assert.Equal(data, File.ReadAllBytes(m.P("big")));
        Assert.True(log.ReadAheadLent > 8, $"only {log.ReadAheadLent} of {log.ReadAheadHits} reads from read-ahead were lent (24 READs of 1 MiB)");
    }

    [SkippableTheory]
    [InlineData(0, true)]
    [InlineData(4, true)]
    [InlineData(64, true)]
    [InlineData(1024, true)]
    [InlineData(2, false)]
    [InlineData(6, false)]
    [InlineData(1028, false)]
    [InlineData(-4, false)]
    public void MaxReadBounds(int kib, bool valid) => Assert.Equal(valid, MountSettings.CheckMaxReadKib(kib) == null);
}
