using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Tests.Mount;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>The control socket of a real <c>cow serve</c>: status, snapshots while a writer runs, the
/// SO_PEERCRED check, malformed requests, and the CLI going through it.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ControlSocketTests
{
    private static readonly string[] Nobody = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"];

    private static ServedPools Started(bool writebackCache = false)
    {
        var s = new ServedPools(config: writebackCache ? sv => sv.DefaultConfig().Replace("threads = 2", "threads = 2\nwriteback-cache = yes") : null);
        try { s.Start(); s.WaitFor("READY=1"); return s; }
        catch { s.Dispose(); throw; }
    }

    private static ControlClient Connect(ServedPools s)
        => ControlClient.TryConnect(s.SocketPath, out var why) ?? throw new Xunit.Sdk.XunitException(why);

    private static JsonObject Ok(JsonObject r)
    {
        Assert.True(r["ok"]?.GetValue<bool>() == true, r.ToJsonString());
        return r;
    }

    [SkippableFact]
    public void StatusReportsPoolsMountOptionsPidAndUptime()
    {
        using var s = Started();
        using var c = Connect(s);
        var r = Ok(c.Request(new JsonObject { ["verb"] = "status" }));
        Assert.Equal(s.Process!.Id, (int)r["pid"]!);
        Assert.True((long)r["uptimeSeconds"]! >= 0);
        var p = (JsonObject)Assert.Single((JsonArray)r["pools"]!)!;
        Assert.Equal("p0", (string?)p["name"]);
        Assert.Equal(s.PoolDir(0), (string?)p["path"]);
        Assert.Equal(s.MountPoint(0), (string?)p["mountpoint"]);
        Assert.True((bool)p["mounted"]!);
        Assert.Equal(2, (int)p["threads"]!);
        Assert.False((bool)p["writebackCache"]!);
        // The CLI's status goes through the socket.
        var (code, output, err) = s.Cli(null, "status");
        Assert.True(code == 0, err);
        Assert.Contains($"Cow service pid {s.Process.Id}", output);
        Assert.Contains("p0", output);   // (the table wraps long paths at 80 columns)
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]   // kernel writeback cache: the service's syncfs flushes it before the snapshot
    public void SnapshotCreateWhileAWriterRunsHoldsEverythingFsyncedBeforeTheRequest(bool writebackCache)
    {
        using var s = Started(writebackCache);
        const int block = 4096;
        var file = Path.Combine(s.MountPoint(0), "log.bin");
        long durable = 0;
        using var stop = new CancellationTokenSource();
        Exception? writerError = null;
        var writer = new Thread(() =>
        {
            try
            {
                using var f = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, 1, FileOptions.None);
                var buf = new byte[block];
                for (long i = 0; !stop.IsCancellationRequested && i < 20_000; i++)
                {
                    BitConverter.TryWriteBytes(buf, i);
                    buf.AsSpan(8).Fill((byte)i);
                    f.Write(buf);
                    f.Flush(flushToDisk: true);
                    Volatile.Write(ref durable, i + 1);
                }
            }
            catch (Exception e) { writerError = e; }
        });
        writer.Start();
        try
        {
            while (Volatile.Read(ref durable) < 50) Thread.Sleep(5);
            using var c = Connect(s);
            long before = Volatile.Read(ref durable);
            Ok(c.Request(new JsonObject { ["verb"] = "snapshot-create", ["pool"] = s.MountPoint(0), ["name"] = "during" }));
            long after = Volatile.Read(ref durable);
            stop.Cancel();
            writer.Join();
            Assert.Null(writerError);
            var snap = File.ReadAllBytes(Path.Combine(s.MountPoint(0), ".snapshots", "during", "log.bin"));
            long blocks = snap.Length / block;
            Assert.True(blocks >= before, $"the snapshot holds {blocks} blocks; {before} were fsync'd before the request");
            Assert.True(blocks <= after + 1, $"the snapshot holds {blocks} blocks; only {after} were written when it returned");
            for (long i = 0; i < blocks; i++)
            {
                Assert.Equal(i, BitConverter.ToInt64(snap, (int)(i * block)));
                Assert.Equal((byte)i, snap[i * block + block - 1]);
            }
            // List and delete, by pool folder and by configured name.
            var list = Ok(c.Request(new JsonObject { ["verb"] = "snapshot-list", ["pool"] = s.PoolDir(0) }));
            Assert.Equal(["during"], ((JsonArray)list["snapshots"]!).Select(n => (string)n!));
            Ok(c.Request(new JsonObject { ["verb"] = "snapshot-delete", ["pool"] = "p0", ["name"] = "during" }));
            list = Ok(c.Request(new JsonObject { ["verb"] = "snapshot-list", ["pool"] = "p0" }));
            Assert.Empty((JsonArray)list["snapshots"]!);
            var gone = c.Request(new JsonObject { ["verb"] = "snapshot-delete", ["pool"] = "p0", ["name"] = "during" });
            Assert.Equal("ENOENT", (string?)gone["error"]);
            Assert.Contains("no snapshot named 'during'", (string?)gone["message"]);
        }
        finally { stop.Cancel(); writer.Join(); }
    }

    [SkippableFact]
    public void StatusWithoutAServiceSaysSoAndListsTheCowMounts()
    {
        using var m = new MountedPool();
        var psi = CowProgram.StartInfo("status");
        psi.Environment["COW_SOCKET"] = Path.Combine(Path.GetTempPath(), "cow-no-such-" + Guid.NewGuid().ToString("N") + ".sock");
        using var p = System.Diagnostics.Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        Assert.Contains("no Cow service (no control socket at", output);
        Assert.Contains("pool", output);
    }

    [SkippableFact]
    public void SnapshotCommandsOfTheCliGoThroughTheService()
    {
        using var s = Started();
        File.WriteAllText(Path.Combine(s.MountPoint(0), "a.txt"), "one");
        var (code, output, err) = s.Cli(null, "snapshot", "create", s.PoolDir(0), "cli1");
        Assert.True(code == 0, err);
        Assert.Contains("through the Cow service", output);
        Assert.Equal("one", File.ReadAllText(Path.Combine(s.MountPoint(0), ".snapshots", "cli1", "a.txt")));
        (code, output, err) = s.Cli(null, "snapshot", "list", s.MountPoint(0));
        Assert.True(code == 0, err);
        Assert.Contains("cli1", output);
        Assert.Contains("served by the Cow service", output);
        (code, _, err) = s.Cli(null, "snapshot", "create", s.MountPoint(0), "cli1");
        Assert.Equal(1, code);
        Assert.Contains("a snapshot named 'cli1' already exists", err);
        (code, _, err) = s.Cli(null, "snapshot", "delete", s.MountPoint(0), "cli1");
        Assert.True(code == 0, err);
        Assert.False(Directory.Exists(Path.Combine(s.MountPoint(0), ".snapshots", "cli1")));
    }

    [SkippableFact]
    public void ACallerNotRootNorInTheGroupGetsEaccesAndNothingIsDone()
    {
        using var s = Started();
        var (code, output, err) = s.Cli(Nobody, "control-request",
            $$"""{"verb":"snapshot-create","pool":"p0","name":"intruder"}""", """{"verb":"status"}""");
        Assert.True(code == 1, $"exit {code}; out: {output}; err: {err}");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        foreach (var l in lines)
        {
            var r = (JsonObject)JsonNode.Parse(l)!;
            Assert.False((bool)r["ok"]!);
            Assert.Equal("EACCES", (string?)r["error"]);
            Assert.Contains("only root and members of group", (string?)r["message"]);
        }
        Assert.False(Directory.Exists(Path.Combine(s.MountPoint(0), ".snapshots", "intruder")));
        using var c = Connect(s);
        Assert.Empty((JsonArray)Ok(c.Request(new JsonObject { ["verb"] = "snapshot-list", ["pool"] = "p0" }))["snapshots"]!);
    }

    [SkippableFact]
    public void MalformedRequestsGetAnErrorAndTheConnectionStaysUsable()
    {
        using var s = Started();
        using var c = Connect(s);
        (string Line, string Expect)[] bad =
        [
            ("this is not json", "malformed JSON request"),
            ("[1,2]", "must be a JSON object"),
            ("{}", "has no \"verb\""),
            ("""{"verb":5}""", "\"verb\" must be a string"),
            ("""{"verb":"reboot"}""", "unknown verb 'reboot'"),
            ("""{"verb":"snapshot-create","pool":"p0"}""", "needs \"name\""),
            ("""{"verb":"snapshot-create","name":"x"}""", "needs \"pool\""),
            ("""{"verb":"snapshot-list","pool":"/no/such/pool"}""", "serves no mounted pool '/no/such/pool'"),
            ("""{"verb":"snapshot-create","pool":"p0","name":"a/b"}""", ""),
        ];
        foreach (var (line, expect) in bad)
        {
            var r = c.Raw(line);
            Assert.False((bool)r["ok"]!, $"{line}: {r.ToJsonString()}");
            Assert.Contains(expect, (string?)r["message"]);
        }
        Assert.Equal(s.Process!.Id, (int)Ok(c.Request(new JsonObject { ["verb"] = "status" }))["pid"]!);
        Assert.Empty(Directory.GetDirectories(Path.Combine(s.MountPoint(0), ".snapshots")));
        // Requests sent together (one write, CRLF or LF) get their answers in order.
        using (var raw = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified))
        {
            raw.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(s.SocketPath));
            raw.Send(System.Text.Encoding.UTF8.GetBytes("{\"verb\":\"status\"}\r\n\n{\"verb\":\"nope\"}\n{\"verb\":\"snapshot-list\",\"pool\":\"p0\"}"));
            using var reader = new StreamReader(new System.Net.Sockets.NetworkStream(raw));
            raw.Shutdown(System.Net.Sockets.SocketShutdown.Send);
            var answers = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (JsonObject)JsonNode.Parse(l)!).ToArray();
            Assert.Equal(3, answers.Length);
            Assert.True((bool)answers[0]["ok"]!);
            Assert.Contains("unknown verb 'nope'", (string?)answers[1]["message"]);
            Assert.True((bool)answers[2]["ok"]!);   // the last line needs no newline before the end
        }
        // An oversized request is answered, then the connection is closed (its rest cannot be parsed).
        var big = c.Raw("{\"verb\":\"" + new string('x', 70_000) + "\"}");
        Assert.Equal("E2BIG", (string?)big["error"]);
        Assert.Throws<IOException>(() => c.Raw("""{"verb":"status"}"""));
        using var again = Connect(s);
        Ok(again.Request(new JsonObject { ["verb"] = "status" }));
    }
}

/// <summary>Who may use the control socket, and a service that cannot get its socket.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ControlSocketAccessTests
{
    private static string GroupConfig(ServedPools sv) => sv.DefaultConfig().Replace("mode = 0666", "mode = 0666\ngroup = nogroup");

    [SkippableTheory]
    [InlineData(false)]   // nogroup as the primary group
    [InlineData(true)]    // nogroup as a supplementary group (primary: daemon, gid 1)
    public void MembersOfTheConfiguredGroupAreServed(bool supplementary)
    {
        uint gid = Mono.Unix.Native.Syscall.getgrnam("nogroup")!.gr_gid;
        string[] groups = supplementary ? ["--regid=1", $"--groups={gid}"] : [$"--regid={gid}", "--clear-groups"];
        using var s = new ServedPools(config: GroupConfig);
        s.Start();
        s.WaitFor("READY=1");
        var (code, output, err) = s.Cli(["--reuid=nobody", .. groups], "control-request",
            """{"verb":"snapshot-create","pool":"p0","name":"by-group"}""");
        Assert.True(code == 0, $"exit {code}; out: {output}; err: {err}");
        Assert.True(Directory.Exists(Path.Combine(s.MountPoint(0), ".snapshots", "by-group")));
        // The same user without the group is refused.
        (code, output, err) = s.Cli(["--reuid=nobody", "--regid=1", "--clear-groups"], "control-request",
            """{"verb":"snapshot-create","pool":"p0","name":"not-a-member"}""");
        Assert.Equal(1, code);
        Assert.Contains("\"EACCES\"", output);
        Assert.Contains("group 'nogroup'", output);
        Assert.False(Directory.Exists(Path.Combine(s.MountPoint(0), ".snapshots", "not-a-member")));
    }

    [SkippableFact]
    public void ASecondServiceOnTheSameSocketFailsAndMountsNothing()
    {
        using var first = new ServedPools();
        first.Start();
        first.WaitFor("READY=1");
        // A second configuration: another pool, the first one's socket.
        using var second = new ServedPools(config: sv => sv.DefaultConfig().Replace(sv.SocketPath, first.SocketPath));
        second.Start();
        Assert.Equal(1, second.WaitExit());
        Assert.Contains("is in use: another cow serve runs", second.Log);
        Assert.False(ServedPools.IsMounted(second.MountPoint(0)));
        Assert.True(File.Exists(first.SocketPath), "the failed service removed the running one's socket");
        using var c = ControlClient.TryConnect(first.SocketPath, out var why) ?? throw new Xunit.Sdk.XunitException(why);
        Assert.True((bool)c.Request(new System.Text.Json.Nodes.JsonObject { ["verb"] = "status" })["ok"]!);
    }

    [SkippableFact]
    public void ASocketPathThatIsAFileIsRefusedAndKept()
    {
        using var s = new ServedPools();
        File.WriteAllText(s.SocketPath, "precious");
        s.Start();
        Assert.Equal(1, s.WaitExit());
        Assert.Contains("exists and is not a socket", s.Log);
        Assert.Equal("precious", File.ReadAllText(s.SocketPath));
        Assert.False(ServedPools.IsMounted(s.MountPoint(0)));
    }
}
