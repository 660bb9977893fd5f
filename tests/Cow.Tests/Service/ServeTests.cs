using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Tests.Mount;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>The real <c>cow serve</c>: systemd notifications, mounts, stop, failed starts, watchdog.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ServeTests
{
    [SkippableFact]
    public void ReadyOnlyOnceEveryPoolIsMountedThenStoppingOnSigtermAndEverythingClosed()
    {
        using var s = new ServedPools(pools: 2);
        s.Start();
        s.WaitFor("READY=1");
        // READY=1 is sent after the mounts: both must be visible by the time it arrives.
        Assert.True(ServedPools.IsMounted(s.MountPoint(0)), $"READY=1 before {s.MountPoint(0)} was mounted; log:\n{s.Log}");
        Assert.True(ServedPools.IsMounted(s.MountPoint(1)), $"READY=1 before {s.MountPoint(1)} was mounted; log:\n{s.Log}");
        File.WriteAllText(Path.Combine(s.MountPoint(0), "kept.txt"), "written through the service");
        s.Terminate();
        s.WaitFor("STOPPING=1");
        Assert.Equal(0, s.WaitExit());
        Assert.False(ServedPools.IsMounted(s.MountPoint(0)));
        Assert.False(ServedPools.IsMounted(s.MountPoint(1)));
        // The lock is released and the data committed: the pool opens here.
        var (code, output, err) = CowProgram.Run("cat", s.PoolDir(0), "/kept.txt");
        Assert.True(code == 0, err);
        Assert.Equal("written through the service", output);
        Pool.Open(s.PoolDir(1)).Dispose();
        Assert.Contains("<6>", s.Log);   // journal priority prefixes (systemd console format)
    }

    [SkippableFact]
    public void APoolThatCannotMountFailsTheStartAndLeavesNothingMounted()
    {
        // The second pool's folder is not a pool.
        using var s = new ServedPools(pools: 2, makePools: false);
        Pool.Create(s.PoolDir(0), new PoolCreateOptions { BaseSize = 32L << 20, LogSize = 512L << 20 }).Dispose();
        Directory.CreateDirectory(s.PoolDir(1));
        s.Start();
        int code = s.WaitExit();
        Assert.Equal(1, code);
        Assert.DoesNotContain("READY=1", s.Notifications.ToArray());
        Assert.Contains($"pool p1 ({s.PoolDir(1)}) cannot be mounted", s.Log);
        Assert.False(ServedPools.IsMounted(s.MountPoint(0)), "the first pool stayed mounted after the second failed");
        Assert.False(ServedPools.IsMounted(s.MountPoint(1)));
        Pool.Open(s.PoolDir(0)).Dispose();   // lock released
        Assert.False(File.Exists(s.SocketPath), "the control socket stayed after a failed start");
    }

    [SkippableFact]
    public void WatchdogPingsAtHalfTheIntervalWhenWatchdogUsecIsSet()
    {
        using var s = new ServedPools();
        s.Start(watchdogUsec: 400_000);
        s.WaitFor("READY=1");
        var start = DateTime.UtcNow;
        for (int i = 0; i < 4; i++) s.WaitFor("WATCHDOG=1", seconds: 5);
        // Four pings at 200 ms: well under two seconds, and not all at once.
        var took = DateTime.UtcNow - start;
        Assert.True(took < TimeSpan.FromSeconds(3), $"4 pings took {took}");
        Assert.True(took > TimeSpan.FromMilliseconds(400), $"4 pings took only {took}: not paced at half the interval");
        s.Terminate();
        s.WaitFor("STOPPING=1");
        Assert.Equal(0, s.WaitExit());
    }

    [SkippableFact]
    public void NoWatchdogPingsWithoutWatchdogUsec()
    {
        using var s = new ServedPools();
        s.Start();
        s.WaitFor("READY=1");
        Assert.Null(s.Next(TimeSpan.FromSeconds(1.5)));
        s.Terminate();
        s.WaitFor("STOPPING=1");
        Assert.Equal(0, s.WaitExit());
    }

    [SkippableFact]
    public void ABadConfigurationMountsNothingAndExitsWithTwo()
    {
        using var s = new ServedPools(config: sv => sv.DefaultConfig() + "iomap = sometimes\n");
        s.Start();
        Assert.Equal(2, s.WaitExit());
        Assert.Contains("cow.conf:", s.Log);
        Assert.Contains("iomap must be auto, on or off, not 'sometimes'", s.Log);
        Assert.False(ServedPools.IsMounted(s.MountPoint(0)));
        Assert.Empty(s.Notifications);
    }
}

[CollectionDefinition("serve", DisableParallelization = true)]
public class ServeCollection { }

/// <summary>A pool of the service unmounted from outside.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ServeUnmountedFromOutsideTests
{
    [SkippableFact]
    public void APoolUnmountedFromOutsideIsClosedAndTheWatchdogStopsPinging()
    {
        using var s = new ServedPools();
        s.Start(watchdogUsec: 300_000);
        s.WaitFor("READY=1");
        s.WaitFor("WATCHDOG=1", seconds: 5);
        var (code, _, err) = CowProgram.Run("umount", s.MountPoint(0));
        Assert.True(code == 0, err);   // cow umount waits until the service closed the pool
        Pool.Open(s.PoolDir(0)).Dispose();
        // At most a ping already under way; then none.
        Thread.Sleep(400);
        while (s.Next(TimeSpan.Zero) != null) { }
        Assert.Null(s.Next(TimeSpan.FromSeconds(1)));
        Assert.Contains("was unmounted from outside", s.Log);
        Assert.Contains("not pinging", s.Log);
        s.Terminate();
        s.WaitFor("STOPPING=1");
        Assert.Equal(0, s.WaitExit());
    }
}
