using Cow.Fuse.Mounting;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary><c>cow mount</c> sets the mount's read-ahead after the kernel applied INIT (which caps it at the
/// kernel's 128 KiB), and leaves it alone with <see cref="MountSettings.ReadAheadKib"/> 0.</summary>
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

    [Fact]
    public void TheDefaultIsOneMebibyte()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");   // a request answered: INIT is long done
        Assert.Equal("1024", Settled(m, "1024"));
        m.Remount();
        Assert.Equal("1024", Settled(m, "1024"));
    }

    [Fact]
    public void ZeroKeepsTheKernelsSetting()
    {
        using var m = new MountedPool(adjust: s => s with { ReadAheadKib = 0 });
        File.WriteAllText(m.P("f"), "x");
        Assert.Equal("128", ReadAheadOf(m));
    }

    [Fact]
    public void AnotherValueIsApplied()
    {
        using var m = new MountedPool(adjust: s => s with { ReadAheadKib = 512 });
        Assert.Equal("512", Settled(m, "512"));
    }
}
