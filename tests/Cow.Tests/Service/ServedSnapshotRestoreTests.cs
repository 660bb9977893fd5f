using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Tests.Engine;
using Cow.Tests.Mount;
using Xunit;

namespace Cow.Tests.Service;

/// <summary><c>cow snapshot restore</c> with the real binary: on an unmounted pool folder, and on a pool mounted by
/// <c>cow serve</c> (through the control socket), where reading through the mount right after the command shows
/// the restored contents (no stale page cache, attributes or dentries).</summary>
[Collection("serve")]
[Trait("Tier", "mount")]
public class ServedSnapshotRestoreTests
{
    private static void Ok((int Code, string Out, string Err) r, string? stdoutHas = null)
    {
        Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");
        if (stdoutHas != null) Assert.Contains(stdoutHas, r.Out);
    }

    private static List<string> Rows((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");
        return ((JsonArray)JsonNode.Parse(r.Out)!).Select(x => $"{(string?)x!["action"]} {(string?)x["path"]}").ToList();
    }

    private static byte[] Random(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [SkippableFact]
    public void RestoreOnAnUnmountedPool()
    {
        var dir = Path.Combine(Path.GetTempPath(), "cow-restore-" + Guid.NewGuid().ToString("N")[..12], "pool");
        try
        {
            using (var p = Pool.Create(dir, new PoolCreateOptions { BaseSize = 16L << 20, LogSize = 128L << 20 }))
            {
                var f = MemoryPool.CreateFile(p.Live, "/a");
                MemoryPool.WriteAt(p.Live, f, 0, Random(3 << 20, 1));
                Assert.Equal(0, (int)p.Engine.CreateSnapshot("s1", out _));
                MemoryPool.WriteAt(p.Live, f, 0, Random(1 << 20, 2));
                MemoryPool.CreateFile(p.Live, "/b");
            }
            var cow = CowProgram.Run;
            Assert.Equal(["replaced /a", "removed /b"], Rows(cow(["snapshot", "restore", dir, "s1", "/a", "/b", "--dry-run", "--json"])));
            Assert.Equal(["replaced /a", "removed /b"], Rows(cow(["snapshot", "restore", dir, "s1", "/a", "/b", "--dry-run", "--json"]))); // nothing changed
            Ok(cow(["snapshot", "restore", dir, "s1", "/a", "/b"]), "2 path(s) changed");
            Assert.Equal(["unchanged /a"], Rows(cow(["snapshot", "restore", dir, "s1", "/a", "--json"])));
            var (code, _, err) = cow(["snapshot", "restore", dir, "s1", "a"]);
            Assert.Equal(2, code);
            Assert.Contains("start it with /", err);
            (code, _, err) = cow(["snapshot", "restore", dir, "s1", "/x/y"]);
            Assert.Equal(1, code);
            Assert.Contains("/x/y exists neither in snapshot 's1' nor in the live tree", err);
            (code, _, err) = cow(["snapshot", "restore", dir, "nope", "/a"]);
            Assert.Equal(1, code);
            Assert.Contains("no snapshot named 'nope'", err);
            Ok(cow(["snapshot", "delete", dir, "s1"]));
            Ok(cow(["fsck", dir]), "clean");
            using var q = Pool.Open(dir);
            Assert.Equal(Random(3 << 20, 1), MemoryPool.ReadAll(q.Live, MemoryPool.Ino(q.Live, "/a")));
            Assert.NotEqual(0, (int)q.Live.Resolve("/b", out _));
        }
        finally { try { Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true); } catch (IOException) { } }
    }

    [SkippableFact]
    public void RestoreThroughTheServiceIsSeenAtOnceThroughTheMount()
    {
        using var s = new ServedPools(makePools: false);
        string pool = s.PoolDir(0), mnt = s.MountPoint(0);
        Ok(s.Cli(null, "mkfs", pool, "--base-size", "32M", "--log-size", "512M"));
        s.Start();
        s.WaitFor("READY=1");

        var v1 = Random(8 << 20, 5);
        File.WriteAllBytes(Path.Combine(mnt, "vm.img"), v1);
        Directory.CreateDirectory(Path.Combine(mnt, "etc"));
        File.WriteAllText(Path.Combine(mnt, "etc", "fstab"), "old fstab\n");
        Ok(s.Cli(null, "snapshot", "create", mnt, "monday"));
        var v2 = Random(9 << 20, 6);
        using (var f = new FileStream(Path.Combine(mnt, "vm.img"), FileMode.Open, FileAccess.Write)) { f.Write(v2); f.Flush(true); }
        File.Delete(Path.Combine(mnt, "etc", "fstab"));
        File.WriteAllText(Path.Combine(mnt, "etc", "new.conf"), "x");
        var df0 = (JsonObject)JsonNode.Parse(s.Cli(null, "df", mnt, "--json").Out)!;

        Assert.Equal(["attributes /etc", "created /etc/fstab", "removed /etc/new.conf", "replaced /vm.img"],
            Rows(s.Cli(null, "snapshot", "restore", mnt, "monday", "/vm.img", "/etc", "--dry-run", "--json")));
        // Cache the changed state in the kernel, then restore through the service and read at once.
        Assert.Equal(SHA256.HashData(v2), SHA256.HashData(File.ReadAllBytes(Path.Combine(mnt, "vm.img"))));
        Assert.False(File.Exists(Path.Combine(mnt, "etc", "fstab")));
        Ok(s.Cli(null, "snapshot", "restore", mnt, "monday", "/vm.img", "/etc"), "through the Cow service");
        Assert.Equal(v1.Length, new FileInfo(Path.Combine(mnt, "vm.img")).Length);
        Assert.Equal(SHA256.HashData(v1), SHA256.HashData(File.ReadAllBytes(Path.Combine(mnt, "vm.img"))));
        Assert.Equal("old fstab\n", File.ReadAllText(Path.Combine(mnt, "etc", "fstab")));
        Assert.False(File.Exists(Path.Combine(mnt, "etc", "new.conf")));

        // No data was written: the pool uses no more than before (the rewritten 8 MiB are freed).
        var df1 = (JsonObject)JsonNode.Parse(s.Cli(null, "df", mnt, "--json").Out)!;
        Assert.True((long)df1["free_bytes"]! >= (long)df0["free_bytes"]!, $"free {df0["free_bytes"]} -> {df1["free_bytes"]}");
        var (code, _, err) = s.Cli(null, "snapshot", "restore", mnt, "monday", "/.snapshots/monday");
        Assert.Equal(2, code);
        Assert.Contains("inside .snapshots", err);

        // Malformed requests on the socket: refused, nothing done.
        using (var c = Cow.Cli.Service.ControlClient.TryConnect(s.SocketPath, out var why) ?? throw new Xunit.Sdk.XunitException($"connect: {why}"))
        {
            foreach (var bad in new[]
            {
                new JsonObject { ["verb"] = "snapshot-restore", ["pool"] = "p0", ["name"] = "monday" },
                new JsonObject { ["verb"] = "snapshot-restore", ["pool"] = "p0", ["name"] = "monday", ["paths"] = "/vm.img" },
                new JsonObject { ["verb"] = "snapshot-restore", ["pool"] = "p0", ["name"] = "monday", ["paths"] = new JsonArray(1) },
                new JsonObject { ["verb"] = "snapshot-restore", ["pool"] = "p0", ["name"] = "monday", ["paths"] = new JsonArray("/vm.img"), ["dryRun"] = "yes" },
                new JsonObject { ["verb"] = "snapshot-restore", ["pool"] = "p0", ["name"] = "monday", ["paths"] = new JsonArray("vm.img") },
            })
            {
                var r = c.Request(bad);
                Assert.False((bool)r["ok"]!, bad.ToJsonString());
                Assert.Equal("EINVAL", (string?)r["error"]);
            }
            var dry = c.Request(new JsonObject { ["verb"] = "snapshot-restore", ["pool"] = "p0", ["name"] = "monday", ["paths"] = new JsonArray("/vm.img"), ["dryRun"] = true });
            Assert.True((bool)dry["ok"]!, dry.ToJsonString());
            Assert.Equal("unchanged", (string?)dry["changes"]![0]!["action"]);
        }

        Ok(s.Cli(null, "snapshot", "delete", mnt, "monday"));
        s.Terminate();
        Assert.Equal(0, s.WaitExit());
        Ok(s.Cli(null, "fsck", pool), "clean");
    }
}
