using System.Diagnostics;
using System.Text.Json.Nodes;
using Cow.Fuse.Mounting;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>Every snapshot verb and <c>cow df</c> on a pool mounted by a plain <c>cow mount</c> (no service): the
/// CLI sends them to the mount process's control socket, which answers them as <c>cow serve</c> does, with the
/// same JSON as on the unmounted pool. Also: pool names from the service's configuration, a mount whose server
/// died, a busy rollback. The real program, real mounts; root only.</summary>
[Trait("Tier", "slow")]
public sealed class MountControlTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-mc-");
    private string PoolDir => _scratch.PoolDir;

    /// <summary>Runs cow with no service reachable (COW_SOCKET names nothing) and the given extra environment.</summary>
    private (int Code, string Out, string Err) Cow(string[] args, params (string Key, string Value)[] env) => _scratch.RunCow(output, args, env);

    private (int Code, string Out, string Err) Cow(params string[] args) => Cow(args, []);

    private void Ok((int Code, string Out, string Err) r) => Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");

    private static JsonArray Rows(string json) => (JsonArray)JsonNode.Parse(json)!;

    /// <summary>The names of every field, nested objects' fields as parent.child: the shape of a document.</summary>
    private static string[] Shape(JsonNode? n, string prefix = "") => n switch
    {
        JsonObject o => o.SelectMany(kv => new[] { prefix + kv.Key }.Concat(Shape(kv.Value, prefix + kv.Key + ".")
            .Where(_ => kv.Key is not "properties"))).Order(StringComparer.Ordinal).ToArray(),
        JsonArray a => a.Count == 0 ? [] : Shape(a[0], prefix),
        _ => [],
    };

    private string Mount(params string[] extra)
    {
        var mp = _scratch.NewMountPoint();
        Ok(Cow(["mount", PoolDir, mp, .. extra]));
        return mp;
    }

    [SkippableFact]
    public void AMountPurgesADeletedSnapshotInTheBackgroundAndDeleteWaitWaitsForTheSpace()
    {
        _scratch.MakePool("256M");
        var mp = Mount();
        long Used() => (long)JsonNode.Parse(Cow("df", mp, "--json").Out)!["used_bytes"]!;
        long empty = Used();
        for (int i = 0; i < 200; i++) File.WriteAllBytes(Path.Combine(mp, $"f{i}"), new byte[64 << 10]);
        Ok(Cow("snapshot", "create", mp, "s1"));
        for (int i = 0; i < 200; i++) File.Delete(Path.Combine(mp, $"f{i}"));
        Ok(Cow("snapshot", "create", mp, "s2"));
        Assert.True(Used() >= empty + 200 * (64 << 10), "s1 holds the files");

        // Without --wait the delete returns once the snapshot is gone; the space follows.
        Ok(Cow("snapshot", "delete", mp, "s2"));
        Assert.DoesNotContain("s2", Directory.EnumerateDirectories(Path.Combine(mp, ".snapshots")).Select(Path.GetFileName));
        var wait = Cow("snapshot", "delete", mp, "s1", "--wait");
        Ok(wait);
        Assert.True(Used() < empty + (1 << 20), $"used {Used()} bytes after the purge (empty pool: {empty})");
        var status = JsonNode.Parse(Cow("status", "--json").Out)!;
        var row = ((JsonArray)status["mounts"]!).OfType<JsonObject>().Single(m => (string)m["mountpoint"]! == mp);
        Assert.Equal(0, (int)row["purgesPending"]!);
        Assert.Contains("deleted through .snapshots", File.ReadAllText(Path.Combine(PoolDir, "mount.log")));
        Ok(Cow("umount", mp));
        Assert.Equal(0, Cow("fsck", PoolDir).Code);
        Assert.Contains("no snapshot named 'nosuch'", Cow("snapshot", "delete", PoolDir, "nosuch", "--wait").Err);   // offline: as ever
    }

    [SkippableFact]
    public void EverySnapshotVerbAndDfWorkOnAPlainMountWithTheSameJsonAsUnmounted()
    {
        _scratch.MakePool("256M");
        // The unmounted pool's documents, for their shape.
        Ok(Cow("snapshot", "create", PoolDir, "first"));
        Ok(Cow("snapshot", "hold", PoolDir, "first", "keep"));
        var unmountedList = Rows(Cow("snapshot", "list", PoolDir, "--json").Out);
        var unmountedDf = JsonNode.Parse(Cow("df", PoolDir, "--json").Out);
        Ok(Cow("snapshot", "release", PoolDir, "first", "keep"));

        var mp = Mount();
        var log = File.ReadAllText(Path.Combine(PoolDir, "mount.log"));
        var socket = System.Text.RegularExpressions.Regex.Match(log, @"control socket (/run/cow/mounts/\d+\.sock)$", System.Text.RegularExpressions.RegexOptions.Multiline).Groups[1].Value;
        Assert.True(File.Exists(socket), $"no control socket named in the mount log:\n{log}");
        File.WriteAllText(Path.Combine(mp, "a"), "version one");
        var create = Cow("snapshot", "create", PoolDir, "s1");
        Ok(create);
        Assert.Contains("through the cow mount process", create.Out);
        File.WriteAllText(Path.Combine(mp, "a"), "VERSION TWO");
        File.WriteAllText(Path.Combine(mp, "b"), "new");

        // hold (by mount point), list with every field, a held snapshot is not deleted, release.
        Ok(Cow("snapshot", "hold", mp, "s1", "backup"));
        var list = Rows(Cow("snapshot", "list", mp, "--json").Out);
        Assert.Equal(Shape(unmountedList), Shape(list));
        var s1 = list.OfType<JsonObject>().Single(x => (string)x["name"]! == "s1");
        Assert.Equal(["backup"], ((JsonArray)s1["holds"]!).Select(h => (string)h!));
        Assert.True((long)s1["generation"]! > 0);
        Assert.NotNull((string?)s1["created_utc"]);
        Assert.True((long)s1["referenced_bytes"]! > 0);
        var held = Cow("snapshot", "delete", PoolDir, "s1");
        Assert.Equal(1, held.Code);
        Assert.Contains("'backup'", held.Err);
        var noHold = Cow("snapshot", "release", PoolDir, "s1", "nohold");
        Assert.Equal(1, noHold.Code);
        Assert.Contains("no hold 'nohold'", noHold.Err);
        Ok(Cow("snapshot", "release", PoolDir, "s1", "backup"));
        Assert.Empty((JsonArray)Rows(Cow("snapshot", "list", PoolDir, "--json").Out).OfType<JsonObject>().Single(x => (string)x["name"]! == "s1")["holds"]!);

        // diff, clone, df.
        var diff = Rows(Cow("snapshot", "diff", PoolDir, "s1", "--json").Out).OfType<JsonObject>().ToDictionary(x => (string)x["path"]!, x => (string)x["kind"]!);
        Assert.Equal("added", diff["/b"]);
        Assert.Equal("modified_data", diff["/a"]);
        Ok(Cow("snapshot", "clone", mp, "s1", "/restored"));
        Assert.Equal("version one", File.ReadAllText(Path.Combine(mp, "restored", "a")));
        var clash = Cow("snapshot", "clone", mp, "s1", "/restored");
        Assert.Equal(1, clash.Code);
        Assert.Contains("already exists", clash.Err);

        // restore through the mount's socket: the kernel sees the restored bytes at once (same length, cached pages dropped).
        Assert.Equal("VERSION TWO", File.ReadAllText(Path.Combine(mp, "a")));
        var dry = Rows(Cow("snapshot", "restore", mp, "s1", "/a", "/b", "--dry-run", "--json").Out).OfType<JsonObject>().ToDictionary(x => (string)x["path"]!, x => (string)x["action"]!);
        Assert.Equal(("replaced", "removed"), (dry["/a"], dry["/b"]));
        Assert.Equal("VERSION TWO", File.ReadAllText(Path.Combine(mp, "a")));
        var restore = Cow("snapshot", "restore", PoolDir, "s1", "/a", "/b");
        Ok(restore);
        Assert.Contains("through the cow mount process", restore.Out + restore.Err);
        Assert.Equal("version one", File.ReadAllText(Path.Combine(mp, "a")));
        Assert.False(File.Exists(Path.Combine(mp, "b")));
        File.WriteAllText(Path.Combine(mp, "b"), "new");
        var df = JsonNode.Parse(Cow("df", PoolDir, "--json").Out);
        Assert.Equal(Shape(unmountedDf), Shape(df));
        Assert.Contains(((JsonArray)df!["views"]!).OfType<JsonObject>(), v => (string)v["name"]! == "s1");
        Assert.Contains("referenced", Cow("df", mp).Out);

        // wrap records its properties through the mount.
        Ok(Cow("snapshot", "wrap", "--name", "w", PoolDir, "--", "true"));
        var wraps = Rows(Cow("snapshot", "list", PoolDir, "--json").Out).OfType<JsonObject>().Where(x => ((string)x["name"]!).StartsWith("w-")).ToArray();
        Assert.Equal(["pre", "post"], wraps.Select(x => (string)x["properties"]!["kind"]!));

        // rollback: the mount process unmounts, rolls back and mounts again with the same options.
        var rb = Cow("snapshot", "rollback", mp, "s1");
        Ok(rb);
        Assert.Contains("rolled back to snapshot 's1'", rb.Out);
        Assert.True(MountTable.Find(mp) is { IsCow: true });
        Assert.Equal("version one", File.ReadAllText(Path.Combine(mp, "a")));
        Assert.False(File.Exists(Path.Combine(mp, "b")));
        Assert.False(Directory.Exists(Path.Combine(mp, "restored")));
        File.WriteAllText(Path.Combine(mp, "after"), "written after the rollback");

        // Errors come back as on the unmounted pool: no such snapshot, bad name.
        var missing = Cow("snapshot", "hold", PoolDir, "nosuch", "t");
        Assert.Equal(1, missing.Code);
        Assert.Contains("'nosuch'", missing.Err);
        Assert.Equal(2, Cow("snapshot", "rollback", mp, "a/b").Code);

        Ok(Cow("snapshot", "delete", mp, "s1"));
        Ok(Cow("umount", mp));
        Assert.Equal("written after the rollback", Cow("cat", PoolDir, "/after").Out);
        Assert.DoesNotContain("s1", Rows(Cow("snapshot", "list", PoolDir, "--json").Out).OfType<JsonObject>().Select(x => (string)x["name"]!));
        Assert.Equal(0, Cow("fsck", PoolDir).Code);
        Assert.False(File.Exists(socket), $"{socket} was not removed when the mount process ended");
    }

    [SkippableFact]
    public void RollbackOfABusyMountIsRefusedNamingFuserAndTheMountStays()
    {
        _scratch.MakePool("256M");
        var mp = Mount();
        File.WriteAllText(Path.Combine(mp, "a"), "one");
        Ok(Cow("snapshot", "create", mp, "s1"));
        File.WriteAllText(Path.Combine(mp, "a"), "two");
        using (var open = File.OpenRead(Path.Combine(mp, "a")))
        {
            var r = Cow("snapshot", "rollback", mp, "s1");
            Assert.Equal(1, r.Code);
            Assert.Contains($"fuser -vm {mp}", r.Err);
            Assert.DoesNotContain("--lazy", r.Err);   // rollback has no such option
            Assert.Contains("(EBUSY)", r.Err);
        }
        Assert.True(MountTable.Find(mp) is { IsCow: true });
        Assert.Equal("two", File.ReadAllText(Path.Combine(mp, "a")));
        // cow umount of a busy mount names the option it does have.
        using (var open = File.OpenRead(Path.Combine(mp, "a")))
        {
            var u = Cow("umount", mp);
            Assert.Equal(1, u.Code);
            Assert.Contains($"cow umount --lazy {mp}", u.Err);
            Assert.Contains($"fuser -vm {mp}", u.Err);
        }
        Ok(Cow("snapshot", "rollback", mp, "s1"));
        Assert.Equal("one", File.ReadAllText(Path.Combine(mp, "a")));
    }

    [SkippableFact]
    public void APoolNameOfTheServiceConfigurationResolvesInEveryVerb()
    {
        _scratch.MakePool("256M");
        var conf = Path.Combine(_scratch.Root, "cow.conf");
        var mpConf = _scratch.NewMountPoint();
        File.WriteAllText(conf, $"[pool svc]\npath = {PoolDir}\nmountpoint = {mpConf}\n");
        var env = ("COW_CONFIG", conf);
        // Unmounted.
        Ok(Cow(["snapshot", "create", "svc", "n1"], env));
        Assert.Equal(["n1"], Rows(Cow(["snapshot", "list", "svc", "--json"], env).Out).OfType<JsonObject>().Select(x => (string)x["name"]!));
        Ok(Cow(["df", "svc"], env));
        Ok(Cow(["fsck", "svc", "--no-data"], env));
        // Mounted by cow mount (on another mount point than the configuration's).
        var mp = _scratch.NewMountPoint();
        Ok(Cow(["mount", "svc", mp], env));
        Ok(Cow(["snapshot", "hold", "svc", "n1", "t"], env));
        Assert.Equal(["t"], ((JsonArray)Rows(Cow(["snapshot", "list", "svc", "--json"], env).Out)[0]!["holds"]!).Select(h => (string)h!));
        Ok(Cow(["snapshot", "release", "svc", "n1", "t"], env));
        Ok(Cow(["snapshot", "diff", "svc", "n1"], env));
        Ok(Cow(["df", "svc", "--json"], env));
        Ok(Cow(["umount", "svc"], env));   // the pool's name finds its mount
        Assert.Null(MountTable.Find(mp));
        // A name that is neither a folder nor configured: said so, with the configured names.
        var unknown = Cow(["snapshot", "list", "nosuch"], env);
        Assert.Equal(1, unknown.Code);
        Assert.Contains("'nosuch' is neither a pool folder nor the name of a pool", unknown.Err);
        Assert.Contains(conf, unknown.Err);
        Assert.Contains("its pools: svc", unknown.Err);
        var noConf = Cow("df", "nosuch");
        Assert.Equal(1, noConf.Code);
        Assert.Contains("no configuration file", noConf.Err);
    }

    [SkippableFact]
    public void ASnapshotMountedReadOnlyTakesSnapshotsButDoesNotDeleteTheOneItShows()
    {
        _scratch.MakePool("256M");
        Ok(Cow("snapshot", "create", PoolDir, "s1"));
        var mp = Mount("--snapshot", "s1");
        Ok(Cow("snapshot", "create", mp, "s2"));
        Assert.Equal(["s1", "s2"], Rows(Cow("snapshot", "list", mp, "--json").Out).OfType<JsonObject>().Select(x => (string)x["name"]!));
        var busy = Cow("snapshot", "delete", mp, "s1");
        Assert.Equal(1, busy.Code);
        Assert.Contains("mounted read-only", busy.Err);
        Ok(Cow("snapshot", "delete", mp, "s2"));
        Assert.Equal(["s1"], Rows(Cow("snapshot", "list", mp, "--json").Out).OfType<JsonObject>().Select(x => (string)x["name"]!));
        Ok(Cow("umount", mp));
    }

    [SkippableFact]
    public void AMountWhoseServerDiedGetsAClearErrorNotAHang()
    {
        _scratch.MakePool("256M");
        var mp = Mount();
        Ok(Cow("snapshot", "create", mp, "s1"));
        var pid = Core.Pool.LockHolderPid(Path.Combine(PoolDir, Core.Pool.LockFile));
        Assert.NotNull(pid);
        Assert.Equal(0, Syscall.kill(pid!.Value, Signum.SIGKILL));
        // Dead once its last thread is gone: the pool's lock is free and the FUSE connection aborted (the thread
        // group leader shows as a zombie before that).
        var until = DateTime.UtcNow.AddSeconds(30);
        while (LockHeld(Path.Combine(PoolDir, Core.Pool.LockFile)) || !Mounter.IsDisconnected(mp))
        {
            Assert.True(DateTime.UtcNow < until, $"process {pid} still holds the pool 30 s after SIGKILL");
            Thread.Sleep(20);
        }
        foreach (var args in new[] { new[] { "snapshot", "hold", mp, "s1", "t" }, ["snapshot", "list", PoolDir, "--json"], ["df", mp] })
        {
            var r = Cow(args);
            Assert.True(r.Code == 1, $"cow {string.Join(' ', args)}: exit {r.Code}");
            Assert.Contains("its server died", r.Err);
            Assert.Contains($"cow umount {mp}", r.Err);
        }
        Ok(Cow("umount", mp));
    }

    private static bool LockHeld(string lockPath)
    {
        try { using var f = new FileStream(lockPath, FileMode.Open, FileAccess.ReadWrite, FileShare.None); return false; }
        catch (IOException) { return true; }
    }

    public void Dispose() => _scratch.Dispose();
}
