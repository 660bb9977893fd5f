using System.Text.Json.Nodes;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Service;

/// <summary><c>systemctl reload cow</c> on the real <c>cow serve</c>: SIGHUP reads the file again; retention takes
/// effect at once, pool changes wait for a restart (nothing is unmounted), a broken file changes nothing.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ReloadTests
{
    /// <summary>Waits until <paramref name="text"/> appears <paramref name="times"/> times in the service's log.</summary>
    private static void WaitForLog(ServedPools s, string text, int times = 1, int seconds = 30)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (s.Log.Split(text).Length - 1 < times)
        {
            if (DateTime.UtcNow > until)
            {
                // Whether the service is still there tells a lost or unhandled signal from a hung reload.
                string state = s.Process!.HasExited ? $"cow serve exited with {s.Process.ExitCode}" : "cow serve is still running";
                throw new Xunit.Sdk.XunitException($"no '{text}' in the log within {seconds} s ({state}):\n{s.Log}");
            }
            Thread.Sleep(50);
        }
    }

    private static string[] Snapshots(ServedPools s)
    {
        var r = s.Cli(null, "snapshot", "list", s.MountPoint(0), "--json");
        Assert.True(r.Code == 0, r.Err);
        return ((JsonArray)JsonNode.Parse(r.Out)!).Select(x => (string)x!["name"]!).ToArray();
    }

    [SkippableFact]
    public void SighupAppliesRetentionAtOnceDefersPoolChangesAndRefusesABrokenFile()
    {
        using var s = new ServedPools();
        s.Start();
        s.WaitFor("READY=1");
        File.WriteAllText(Path.Combine(s.MountPoint(0), "f"), "data");
        Assert.Equal(0, s.Cli(null, "snapshot", "create", s.MountPoint(0), "by-hand").Code);
        for (int i = 0; i < 3; i++)
        {
            var r = s.Cli(null, "control-request", $$$"""{"verb":"snapshot-create","pool":"p0","name":"tl-{{{i}}}","properties":{"kind":"timeline"}}""");
            Assert.True(r.Code == 0 && r.Out.Contains("\"ok\":true"), r.Out + r.Err);
        }
        Assert.Equal(["by-hand", "tl-0", "tl-1", "tl-2"], Snapshots(s));

        // A valid file: max-snapshots applies at once; the threads change waits for a restart.
        File.WriteAllText(s.ConfigFile, s.DefaultConfig().Replace("threads = 2", "threads = 3") + "\n[retention p0]\nmax-snapshots = 1\n");
        Assert.Equal(0, Syscall.kill(s.Process!.Id, Signum.SIGHUP));
        WaitForLog(s, "configuration reloaded from");
        Assert.Equal(["by-hand", "tl-2"], Snapshots(s));   // hand-made snapshots are never deleted
        Assert.Contains("pool p0: its path, mount point or mount options changed; this takes effect at the next restart", s.Log);
        Assert.Contains("retention of pool p0 is now", s.Log);
        Assert.True(ServedPools.IsMounted(s.MountPoint(0)));

        // A broken file: every error named, nothing changed, the service goes on.
        File.WriteAllText(s.ConfigFile, s.DefaultConfig() + "\n[retention p0]\nmax-snapshots = none\n");
        Assert.Equal(0, Syscall.kill(s.Process.Id, Signum.SIGHUP));
        WaitForLog(s, "refused: 1 error(s); the running configuration stays");
        Assert.Contains($"{s.ConfigFile}:", s.Log);
        Assert.Contains("max-snapshots", s.Log);
        Assert.False(s.Process.HasExited);
        var c = s.Cli(null, "control-request", """{"verb":"snapshot-create","pool":"p0","name":"tl-3","properties":{"kind":"timeline"}}""");
        Assert.Equal(0, c.Code);
        // The rules in force are still max-snapshots = 1: applied at the next cleanup, which a reload runs at once.
        File.WriteAllText(s.ConfigFile, s.DefaultConfig() + "\n[retention p0]\nmax-snapshots = 1\n");
        Assert.Equal(0, Syscall.kill(s.Process.Id, Signum.SIGHUP));
        WaitForLog(s, "configuration reloaded from", times: 2);
        Assert.Equal(["by-hand", "tl-3"], Snapshots(s));

        s.Terminate();
        Assert.Equal(0, s.WaitExit());
    }

    /// <summary>Started under nohup (SIGHUP ignored, inherited by exec), the service still reloads on SIGHUP: .NET
    /// alone would keep the signal ignored and the reload would silently not happen.</summary>
    [SkippableFact]
    public void SighupReloadsEvenWhenTheServiceWasStartedWithSighupIgnored()
    {
        using var s = new ServedPools();
        s.Start(sighupIgnored: true);
        s.WaitFor("READY=1");
        // The wrapper did ignore it. The handler is registered before READY=1 (hosted services start first), but the
        // console logger writes its queue on a thread of its own: the line may come just after READY=1.
        WaitForLog(s, "SIGHUP was ignored when the service started");
        File.WriteAllText(s.ConfigFile, s.DefaultConfig() + "\n[retention p0]\nmax-snapshots = 1\n");
        Assert.Equal(0, Syscall.kill(s.Process!.Id, Signum.SIGHUP));
        WaitForLog(s, "configuration reloaded from");
        Assert.Contains("retention of pool p0 is now", s.Log);
        Assert.False(s.Process.HasExited);
        Assert.True(ServedPools.IsMounted(s.MountPoint(0)));
        s.Terminate();
        Assert.Equal(0, s.WaitExit());
    }
}
