using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>End to end with the real <c>cow</c> binary and a real <c>cow serve</c>: every snapshot verb on a
/// mounted pool goes through the service, --json documents parse, and bad input is refused with a message
/// and exit code. The fixture stops the service and unmounts even when an assertion fails.</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ServedSnapshotOpsTests
{
    private static JsonArray JsonArrayOf((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 0, r.Err);
        return (JsonArray)JsonNode.Parse(r.Out)!;   // one document, nothing else on stdout
    }

    private static JsonObject JsonObjectOf((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 0, r.Err);
        return (JsonObject)JsonNode.Parse(r.Out)!;
    }

    private static void Ok((int Code, string Out, string Err) r, string? stdoutHas = null)
    {
        Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");
        if (stdoutHas != null) Assert.Contains(stdoutHas, r.Out);
    }

    private static long LiveReferenced(JsonObject df) =>
        (long)((JsonArray)df["views"]!).OfType<JsonObject>().Single(v => (string?)v["name"] == "")["referenced_bytes"]!;

    [SkippableFact]
    public void EverySnapshotVerbOnAServedPoolWhileAWriterRuns()
    {
        using var s = new ServedPools(makePools: false);
        string pool = s.PoolDir(0), mnt = s.MountPoint(0);
        Ok(s.Cli(null, "mkfs", pool, "--base-size", "32M", "--log-size", "512M"));
        s.Start();
        s.WaitFor("READY=1");

        File.WriteAllText(Path.Combine(mnt, "keep.txt"), "hello");
        Directory.CreateDirectory(Path.Combine(mnt, "w"));
        int written = 0;
        Exception? writerError = null;
        using var stop = new CancellationTokenSource();
        var writer = new Thread(() =>
        {
            try
            {
                for (int i = 0; !stop.IsCancellationRequested && i < 5000; i++)
                {
                    using (var f = new FileStream(Path.Combine(mnt, "w", $"f{i}"), FileMode.Create))
                    {
                        f.Write(Encoding.UTF8.GetBytes(new string((char)('a' + i % 26), 5000)));
                        f.Flush(flushToDisk: true);
                    }
                    Interlocked.Increment(ref written);
                }
            }
            catch (Exception e) { writerError = e; }
        });
        writer.Start();
        try
        {
            while (Volatile.Read(ref written) < 5) Thread.Sleep(10);
            Ok(s.Cli(null, "snapshot", "create", mnt, "s1"), "through the Cow service");
            int atSnapshot = Volatile.Read(ref written);
            while (Volatile.Read(ref written) < atSnapshot + 5 && writer.IsAlive) Thread.Sleep(10);
        }
        finally { stop.Cancel(); writer.Join(); }
        Assert.Null(writerError);

        // list --json: through the service (by pool folder), with holds and properties.
        var list = JsonArrayOf(s.Cli(null, "snapshot", "list", pool, "--json"));
        var s1 = (JsonObject)Assert.Single(list)!;
        Assert.Equal("s1", (string?)s1["name"]);
        Assert.Empty((JsonArray)s1["holds"]!);
        Assert.NotNull(s1["properties"] as JsonObject);
        Assert.True((long)s1["referenced_bytes"]! > 0);

        // diff --json: the files written after the snapshot are added.
        var diff = JsonArrayOf(s.Cli(null, "snapshot", "diff", mnt, "s1", "--json"));
        Assert.Contains(diff.OfType<JsonObject>(), x => (string?)x["kind"] == "added" && ((string)x["path"]!).StartsWith("/w/f"));
        var snapFiles = Directory.GetFiles(Path.Combine(mnt, ".snapshots", "s1", "w")).Length;
        Assert.Equal(Directory.GetFiles(Path.Combine(mnt, "w")).Length - snapFiles,
            diff.OfType<JsonObject>().Count(x => (string?)x["kind"] == "added" && ((string)x["path"]!).StartsWith("/w/f")));

        // hold; delete refused naming the hold; release.
        Ok(s.Cli(null, "snapshot", "hold", mnt, "s1", "backup"));
        Assert.Equal(["backup"], ((JsonArray)((JsonObject)JsonArrayOf(s.Cli(null, "snapshot", "list", mnt, "--json"))[0]!)["holds"]!).Select(h => (string)h!));
        var held = s.Cli(null, "snapshot", "delete", mnt, "s1");
        Assert.Equal(1, held.Code);
        Assert.Contains("held by 'backup'", held.Err);
        var twice = s.Cli(null, "snapshot", "hold", mnt, "s1", "backup");
        Assert.Equal(1, twice.Code);
        Assert.Contains("already held by 'backup'", twice.Err);
        Ok(s.Cli(null, "snapshot", "release", mnt, "s1", "backup"));

        // clone into the live tree: readable through the mount at once, no new data blocks.
        var before = JsonObjectOf(s.Cli(null, "df", mnt, "--json"));
        Assert.Equal(["base", "log"], ((JsonArray)before["devices"]!).OfType<JsonObject>().Select(d => (string)d["role"]!));
        Ok(s.Cli(null, "df", mnt), "new writes");   // the table, through the service
        Assert.False(Directory.Exists(Path.Combine(mnt, "restored")));   // a lookup the kernel could remember
        Ok(s.Cli(null, "snapshot", "clone", mnt, "s1", "/restored"), "cloned to /restored");
        Assert.Equal("hello", File.ReadAllText(Path.Combine(mnt, "restored", "keep.txt")));
        Assert.Equal(snapFiles, Directory.GetFiles(Path.Combine(mnt, "restored", "w")).Length);
        Assert.Equal(new string('a', 5000), File.ReadAllText(Path.Combine(mnt, "restored", "w", "f0")));
        var after = JsonObjectOf(s.Cli(null, "df", mnt, "--json"));
        Assert.Equal((long)before["free_blocks"]!, (long)after["free_blocks"]!);
        Assert.Equal(LiveReferenced(before), LiveReferenced(after));   // shared blocks count once
        var again = s.Cli(null, "snapshot", "clone", mnt, "s1", "/restored");
        Assert.Equal(1, again.Code);
        Assert.Contains("already exists", again.Err);

        // rollback: refused while a file is open on the mount (nothing changes), then done; the mount comes back.
        using (File.OpenRead(Path.Combine(mnt, "keep.txt")))
        {
            var busy = s.Cli(null, "snapshot", "rollback", mnt, "s1");
            Assert.Equal(1, busy.Code);
            Assert.Contains("busy", busy.Err);
            Assert.True(ServedPools.IsMounted(mnt));
        }
        Assert.True(Directory.Exists(Path.Combine(mnt, "restored")));
        Ok(s.Cli(null, "snapshot", "rollback", mnt, "s1"), "rolled back to snapshot 's1'");
        Assert.True(ServedPools.IsMounted(mnt));
        Assert.False(Directory.Exists(Path.Combine(mnt, "restored")));
        Assert.Equal("hello", File.ReadAllText(Path.Combine(mnt, "keep.txt")));
        Assert.Equal(Directory.GetFiles(Path.Combine(mnt, ".snapshots", "s1", "w")).Select(Path.GetFileName).Order(),
            Directory.GetFiles(Path.Combine(mnt, "w")).Select(Path.GetFileName).Order());
        Assert.Empty(JsonArrayOf(s.Cli(null, "snapshot", "diff", mnt, "s1", "--json")));
        var status = JsonObjectOf(s.Cli(null, "status", "--json"));
        Assert.True((bool)status["service"]!);
        Assert.True((bool)((JsonObject)((JsonArray)status["pools"]!)[0]!)["mounted"]!);
        // The remounted pool serves writes, and the service still watches it.
        File.WriteAllText(Path.Combine(mnt, "after.txt"), "x");

        Ok(s.Cli(null, "snapshot", "delete", mnt, "s1"));
        Assert.Empty(JsonArrayOf(s.Cli(null, "snapshot", "list", mnt, "--json")));

        // Stopped service: the pool folder is used directly (ls, fsck).
        s.Terminate();
        Assert.Equal(0, s.WaitExit());
        var ls = JsonArrayOf(s.Cli(null, "ls", pool, "/", "--json"));
        Assert.Equal(["after.txt", "keep.txt", "w"], ls.OfType<JsonObject>().Select(e => (string)e["name"]!).Order(StringComparer.Ordinal));
        Ok(s.Cli(null, "fsck", pool));
    }

    [SkippableFact]
    public void BadInputThroughTheCliIsRefusedAndChangesNothing()
    {
        using var s = new ServedPools(pools: 2);
        s.Start();
        s.WaitFor("READY=1");
        string mnt = s.MountPoint(0);
        Ok(s.Cli(null, "snapshot", "create", mnt, "s1"));

        var missing = Path.Combine(s.Root, "no-such-pool");
        var r = s.Cli(null, "snapshot", "hold", missing, "s1", "t");
        Assert.Equal(1, r.Code);
        Assert.Contains(missing, r.Err);
        Assert.False(Directory.Exists(missing));

        // A mount point in use: refused, the served mount stays.
        r = s.Cli(null, "mount", "-f", s.PoolDir(1), mnt);
        Assert.NotEqual(0, r.Code);
        Assert.Contains(mnt, r.Err);
        Assert.True(File.Exists(Path.Combine(mnt, ".snapshots", "s1")) || Directory.Exists(Path.Combine(mnt, ".snapshots", "s1")));

        foreach (var args in new[] { new[] { "snapshot", "create", mnt, "a/b" }, ["snapshot", "hold", mnt, "a/b", "t"], ["snapshot", "rollback", mnt, "a/b"] })
        {
            r = s.Cli(null, args);
            Assert.True(r.Code == 2, $"{string.Join(' ', args)}: exit {r.Code}");
            Assert.Contains("'/'", r.Err);
        }

        foreach (var args in new[] { new[] { "snapshot", "hold", mnt, "nosuch", "t" }, ["snapshot", "release", mnt, "nosuch", "t"],
                     ["snapshot", "diff", mnt, "nosuch"], ["snapshot", "clone", mnt, "nosuch", "/x"], ["snapshot", "rollback", mnt, "nosuch"],
                     ["snapshot", "delete", mnt, "nosuch"] })
        {
            r = s.Cli(null, args);
            Assert.True(r.Code == 1, $"{string.Join(' ', args)}: exit {r.Code} {r.Err}");
            Assert.Contains("'nosuch'", r.Err);
        }
        r = s.Cli(null, "snapshot", "release", mnt, "s1", "nohold");
        Assert.Equal(1, r.Code);
        Assert.Contains("no hold 'nohold'", r.Err);
        Assert.True(ServedPools.IsMounted(mnt));
        Assert.False(Directory.Exists(Path.Combine(mnt, "x")));
        var list = JsonArrayOf(s.Cli(null, "snapshot", "list", mnt, "--json"));
        Assert.Equal(["s1"], list.OfType<JsonObject>().Select(x => (string)x["name"]!));
    }
}
