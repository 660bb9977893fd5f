using System.Diagnostics;
using Cow.Core;
using Cow.Core.Metadata;
using Cow.Tests.Mount;
using Cow.Tests.Service;
using Xunit;

namespace Cow.Tests.Retention;

/// <summary><c>cow snapshot wrap</c> with the real cow program: on an unmounted pool, through a running
/// <c>cow serve</c>, and refused on a pool mounted without the service.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class SnapshotWrapTests
{
    /// <summary>Runs cow with <c>$COW_SOCKET</c> set (a path where no service listens unless one is given).</summary>
    private static (int Code, string Out, string Err) Cow(string socket, params string[] args)
    {
        var psi = CowProgram.StartInfo(args);
        psi.Environment["COW_SOCKET"] = socket;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("cow did not finish in 120 s"); }
        return (p.ExitCode, output, err.Result);
    }

    private static List<SnapshotRecord> Snapshots(string poolDir)
    {
        using var pool = Pool.Open(poolDir);
        return pool.Engine.ListSnapshots().ToList();
    }

    private sealed class TempPool : IDisposable
    {
        public readonly string Root = Path.Combine(Path.GetTempPath(), "cow-wrap-" + Guid.NewGuid().ToString("N")[..12]);
        public string Dir => Path.Combine(Root, "pool");
        public string NoSocket => Path.Combine(Root, "no.sock");
        public TempPool() => Pool.Create(Dir, new PoolCreateOptions { BaseSize = 32L << 20, LogSize = 256L << 20 }).Dispose();
        public void Dispose() { try { Directory.Delete(Root, true); } catch (IOException) { } }
    }

    [SkippableFact]
    public void OnAnUnmountedPoolRecordsPreAndPostWithCommandAndExitCodeAndPassesTheExitCodeThrough()
    {
        using var t = new TempPool();
        var marker = Path.Combine(t.Root, "ran");
        // The command gets its own options after -- and inherits stdout; the pool is closed while it runs
        // (it can open the pool itself: here cow put writes a file into it).
        var src = Path.Combine(t.Root, "src.txt");
        File.WriteAllText(src, "payload");
        var (code, output, err) = Cow(t.NoSocket, "snapshot", "wrap", "--name", "upgrade", t.Dir, "--", "sh", "-c",
            $"echo out-of-command; touch {marker}; dotnet {CowProgram.Dll} put {t.Dir} /put.txt < {src} && exit 7");
        Assert.True(code == 7, $"exit {code}; stderr: {err}");
        Assert.Contains("out-of-command", output);
        Assert.True(File.Exists(marker));
        var snaps = Snapshots(t.Dir);
        Assert.Equal(2, snaps.Count);
        var (pre, post) = (snaps[0], snaps[1]);
        Assert.Matches(@"^upgrade-pre-\d{8}-\d{6}$", pre.Name);
        Assert.Matches(@"^upgrade-post-\d{8}-\d{6}$", post.Name);
        Assert.Equal("pre", pre.Properties["kind"]);
        Assert.Equal("post", post.Properties["kind"]);
        Assert.Equal(pre.Name, post.Properties["pre"]);
        Assert.Equal("7", post.Properties["exit_code"]);
        Assert.StartsWith("sh -c 'echo out-of-command; touch ", pre.Properties["command"]);
        Assert.Equal(pre.Properties["command"], post.Properties["command"]);
        Assert.False(pre.Properties.ContainsKey("exit_code"));
        // The pre snapshot has no /put.txt, the post snapshot has it.
        using var pool = Pool.Open(t.Dir);
        Assert.NotEqual(0, (int)pool.Snapshot(pre.Name)!.Lookup(pool.Live.RootIno, "put.txt", out _));
        Assert.Equal(0, (int)pool.Snapshot(post.Name)!.Lookup(pool.Live.RootIno, "put.txt", out _));
    }

    [SkippableFact]
    public void AFailingCommandStillGetsItsPostSnapshotAndNamesInUseGetASuffix()
    {
        using var t = new TempPool();
        var (c1, _, e1) = Cow(t.NoSocket, "snapshot", "wrap", t.Dir, "--", "false");
        Assert.True(c1 == 1, e1);
        var (c2, _, e2) = Cow(t.NoSocket, "snapshot", "wrap", t.Dir, "--", "/no/such/program", "x");
        Assert.True(c2 == 127, e2);
        Assert.Contains("cannot run '/no/such/program'", e2);
        var snaps = Snapshots(t.Dir);
        Assert.Equal(4, snaps.Count);
        Assert.Equal(snaps.Count, snaps.Select(s => s.Name).Distinct().Count());
        Assert.Equal(["pre", "post", "pre", "post"], snaps.Select(s => s.Properties["kind"]));
        Assert.Equal("1", snaps[1].Properties["exit_code"]);
        Assert.Equal("127", snaps[3].Properties["exit_code"]);
        Assert.Equal("/no/such/program x", snaps[3].Properties["command"]);
        // Collisions: hand-made snapshots take the plain names of the next few seconds' stamps.
        using (var pool = Pool.Open(t.Dir))
        {
            var now = DateTime.UtcNow;
            for (int s = 0; s < 6; s++)
            {
                var stamp = now.AddSeconds(s).ToString("yyyyMMdd-HHmmss");
                Assert.Equal(0, (int)pool.Engine.CreateSnapshot($"coll-pre-{stamp}", out _));
                Assert.Equal(0, (int)pool.Engine.CreateSnapshot($"coll-post-{stamp}", out _));
            }
        }
        var (c3, _, e3) = Cow(t.NoSocket, "snapshot", "wrap", "--name", "coll", t.Dir, "--", "true");
        Assert.True(c3 == 0, e3);
        var wrapped = Snapshots(t.Dir).Where(s => s.Properties.ContainsKey("kind") && s.Name.StartsWith("coll-")).ToList();
        Assert.Equal(2, wrapped.Count);
        Assert.All(wrapped, s => Assert.EndsWith("-2", s.Name));
        Assert.Equal(wrapped[0].Name, wrapped[1].Properties["pre"]);
    }

    [SkippableFact]
    public void BadUsageChangesNothing()
    {
        using var t = new TempPool();
        var (c1, _, e1) = Cow(t.NoSocket, "snapshot", "wrap", "--name", "a/b", t.Dir, "--", "true");
        Assert.Equal(2, c1);
        Assert.Contains("--name 'a/b'", e1);
        Assert.Contains("contains '/'", e1);
        var (c2, _, _) = Cow(t.NoSocket, "snapshot", "wrap", t.Dir);
        Assert.Equal(2, c2);
        Assert.Empty(Snapshots(t.Dir));
    }

    [SkippableFact]
    public void OnAPoolMountedWithoutTheServiceItRefusesBeforeRunningTheCommand()
    {
        using var m = new MountedPool(baseSize: 32L << 20, logSize: 256L << 20);
        var marker = Path.Combine(Path.GetDirectoryName(m.PoolDir)!, "ran");
        var (code, _, err) = Cow("/nonexistent/cow.sock", "snapshot", "wrap", m.PoolDir, "--", "touch", marker);
        Assert.Equal(1, code);
        Assert.Contains($"is mounted at {m.MountPoint} without the Cow service", err);
        Assert.Contains("the command was not run", err);
        Assert.False(File.Exists(marker));
        Assert.Empty(m.Pool!.Engine.ListSnapshots());
    }

    [SkippableFact]
    public void ThroughCowServeThePropertiesAreRecordedAfterSyncfs()
    {
        using var s = new ServedPools();
        s.Start();
        s.WaitFor("READY=1");
        var file = Path.Combine(s.MountPoint(0), "state.txt");
        File.WriteAllText(file, "before");
        var (code, output, err) = s.Cli(null, "snapshot", "wrap", "--name", "svc", s.MountPoint(0), "--", "sh", "-c", $"echo after > {file}; exit 3");
        Assert.True(code == 3, $"exit {code}: {err}\n{s.Log}");
        Assert.Contains("pre snapshot 'svc-pre-", err);
        // A request with bad properties is refused and changes nothing.
        var (bc, bo, _) = s.Cli(null, "control-request", "{\"verb\":\"snapshot-create\",\"pool\":\"p0\",\"name\":\"x\",\"properties\":{\"kind\":5}}");
        Assert.Equal(1, bc);
        Assert.Contains("property 'kind' must have a string value", bo);
        s.Terminate();
        Assert.Equal(0, s.WaitExit());
        var snaps = Snapshots(s.PoolDir(0));
        Assert.Equal(["pre", "post"], snaps.Select(x => x.Properties["kind"]));
        Assert.Equal("3", snaps[1].Properties["exit_code"]);
        Assert.Equal(snaps[0].Name, snaps[1].Properties["pre"]);
        using var pool = Pool.Open(s.PoolDir(0));
        string Read(string snap)
        {
            var v = pool.Snapshot(snap)!;
            Assert.Equal(0, (int)v.Lookup(v.RootIno, "state.txt", out var a));
            var buf = new byte[64];
            Assert.Equal(0, (int)v.Read(a.Ino, 0, buf, out int n));
            return System.Text.Encoding.UTF8.GetString(buf, 0, n);
        }
        Assert.Equal("before", Read(snaps[0].Name));
        Assert.Equal("after\n", Read(snaps[1].Name));
    }
}

/// <summary>The scheduler inside the real <c>cow serve</c>: its start cleanup applies max-snapshots to the
/// managed snapshots and leaves the hand-made and held ones.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ServeRetentionTests
{
    [SkippableFact]
    public void CowServeAppliesRetentionAtStart()
    {
        using var s = new ServedPools(config: sv => sv.DefaultConfig() + "\n[retention p0]\nmax-snapshots = 2\n");
        using (var pool = Pool.Open(s.PoolDir(0)))
        {
            var pre = new Dictionary<string, string> { ["kind"] = "pre" };
            Assert.Equal(0, (int)pool.Engine.CreateSnapshot("hand", out _));
            for (int i = 0; i < 4; i++) Assert.Equal(0, (int)pool.Engine.CreateSnapshot($"w{i}", pre, out _));
            Assert.Equal(0, (int)pool.Engine.HoldSnapshot("w0", "keep"));
        }
        s.Start();
        s.WaitFor("READY=1");
        string[] names = [];
        var until = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < until)
        {
            var (code, output, err) = s.Cli(null, "control-request", "{\"verb\":\"snapshot-list\",\"pool\":\"p0\"}");
            Assert.True(code == 0, err + output);
            names = ((System.Text.Json.Nodes.JsonArray)System.Text.Json.Nodes.JsonNode.Parse(output)!["snapshots"]!).Select(n => (string)n!).Order().ToArray();
            if (names.Length == 3) break;
            Thread.Sleep(200);
        }
        // Four managed, max two: w1 and w2 go (w0 is held and counts), w3 stays; "hand" is not managed.
        Assert.True(names.SequenceEqual(["hand", "w0", "w3"]), $"snapshots: {string.Join(", ", names)}; log:\n{s.Log}");
        Assert.Contains("retention of pool p0: deleted snapshot w1", s.Log);
        s.Terminate();
        Assert.Equal(0, s.WaitExit());
    }
}
