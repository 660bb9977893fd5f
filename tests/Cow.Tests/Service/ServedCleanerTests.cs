using System.Text.Json.Nodes;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>The log cleaner of the pools <c>cow serve</c> mounts: the configured background cleaner moves data on its
/// own and <c>cow status</c> shows it; <c>cow clean NAME</c> runs a pass in the service; a pool with
/// <c>cleaner = no</c> has none running. The real program and service.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ServedCleanerTests
{
    private static JsonObject Json((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");
        return (JsonObject)JsonNode.Parse(r.Out)!;
    }

    [SkippableFact]
    public void TheServiceRunsTheConfiguredCleanerAndCowCleanGoesThroughIt()
    {
        using var s = new ServedPools(pools: 2, config: s => s.DefaultConfig()
            .Replace("[pool p0]\n", "[pool p0]\ncleaner-start = 99\ncleaner-share = 100%\n")
            .Replace("[pool p1]\n", "[pool p1]\ncleaner = no\n"));
        s.Start();
        s.WaitFor("READY=1");
        string mnt = s.MountPoint(0);
        var data = new byte[1 << 20];
        new Random(3).NextBytes(data);
        JsonObject? cleaner = null;
        int written = 0;
        var until = DateTime.UtcNow.AddSeconds(30);
        for (int i = 0; DateTime.UtcNow < until; i++)
        {
            if (i < 24)
                using (var f = new FileStream(Path.Combine(mnt, $"f{i}"), FileMode.Create))
                {
                    f.Write(data);
                    f.Flush(flushToDisk: true);
                    written++;
                }
            else Thread.Sleep(500);
            if (i % 4 != 3) continue;
            var pools = (JsonArray)Json(s.Cli(null, "status", "--json"))["pools"]!;
            cleaner = (JsonObject)pools.OfType<JsonObject>().Single(p => (string?)p["name"] == "p0")["cleaner"]!;
            if ((long)cleaner["blocks_moved"]! > 0) break;
        }
        Assert.True((long?)cleaner?["blocks_moved"] > 0, $"the service's background cleaner moved nothing in 30 s: {cleaner?.ToJsonString()}\n{s.Log}");
        Assert.True((bool)cleaner!["background"]!);
        Assert.Equal(1.0, (double)cleaner["settings"]!["share"]!);
        var status = Json(s.Cli(null, "status", "--json"));
        var p1 = ((JsonArray)status["pools"]!).OfType<JsonObject>().Single(p => (string?)p["name"] == "p1");
        Assert.False((bool)p1["cleaner"]!["background"]!);
        Assert.Null(p1["cleaner"]!["settings"]);
        var text = s.Cli(null, "status");
        Assert.Contains("cleaner=off", text.Out);
        Assert.Contains("cleaner=99..99%/1", text.Out);
        Assert.Contains("p0: cleaner: background cleaner running", text.Out);
        Assert.Contains("cleaner on (starts below 99 % free log, stops at 99 %, share 1)", s.Log);

        // cow clean by pool name, through the service; df shows the pass.
        var clean = s.Cli(null, "clean", "p0");
        Assert.True(clean.Code == 0, clean.Err);
        Assert.Contains("through the Cow service", clean.Out);
        var doc = Json(s.Cli(null, "clean", mnt, "--json", "--until", "50"));
        Assert.Equal("reached", (string?)doc["stop"]);
        var df = Json(s.Cli(null, "df", mnt, "--json"));
        Assert.Equal("reached", (string?)df["cleaner"]!["last_pass"]!["stop"]);
        for (int i = 0; i < written; i++) Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(mnt, $"f{i}"))), $"f{i} does not read back");

        s.Terminate();
        Assert.Equal(0, s.WaitExit());
        using var pool = Core.Pool.Open(s.PoolDir(0));
        Assert.True(pool.Fsck().Clean);
    }
}
