using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Core;
using Cow.Tests.Engine;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary><c>cow device add|remove|list</c>, the real program: on an unmounted pool, and through the control socket
/// of a <c>cow mount</c> while files are read through the mount (the log's data moves to the base devices and every
/// file reads back byte for byte); refusals (data that would not fit, a member, another pool's device, an unknown
/// cookie) exit 1 with a message naming the problem, bad usage exits 2; fsck is clean after each. Relative paths are
/// resolved by the client (the mount's server works in another folder). Root only.</summary>
[Trait("Tier", "mount")]
public sealed class DeviceCliTests(ITestOutputHelper output) : IDisposable
{
    private const int Mi = 1 << 20;
    private readonly MountScratch _scratch = new("cow-device-");
    private string PoolDir => _scratch.PoolDir;

    public void Dispose() => _scratch.Dispose();

    private (int Code, string Out, string Err) Cow(params string[] args) => _scratch.RunCow(output, args);

    private static string Ok((int Code, string Out, string Err) r) => MountScratch.Ok(r);

    private static JsonNode Json((int Code, string Out, string Err) r) => JsonNode.Parse(Ok(r))!;

    /// <summary>cow device list --json: the rows, each checked for its fields.</summary>
    private List<JsonObject> Devices(string poolOrMount)
    {
        var rows = ((JsonArray)Json(Cow("device", "list", poolOrMount, "--json"))).OfType<JsonObject>().ToList();
        foreach (var d in rows)
            Assert.Equal(["cookie", "free_bytes", "path", "role", "size_bytes", "state", "takes_new_writes", "used_bytes"], d.Select(kv => kv.Key).Order(StringComparer.Ordinal));
        return rows;
    }

    private static long[] Cookies(List<JsonObject> rows) => rows.Select(d => (long)d["cookie"]!).ToArray();

    /// <summary>The message a failed command printed: exit 1 and "cow: ..." on standard error.</summary>
    private static string Refused((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 1, $"exit {r.Code}, 1 expected: {r.Out}{r.Err}");
        Assert.StartsWith("cow: ", r.Err);
        return r.Err;
    }

    private static byte[] Random(int seed, int bytes)
    {
        var b = new byte[bytes];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static void Write(string path, byte[] data)
    {
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write);
        f.Write(data);
        f.Flush(flushToDisk: true);
    }

    [SkippableFact]
    public void OnAnUnmountedPoolALogIsAddedListedAndRemovedAgain()
    {
        _scratch.MakePool("32M");
        _scratch.WorkingDirectory = _scratch.Root;   // "newimg" is a path relative to the command's folder
        Assert.Equal([1L, 2L], Cookies(Devices(PoolDir)));

        var added = Ok(Cow("device", "add", PoolDir, "newimg", "--role", "log", "--size", "64M"));
        Assert.Contains("added device 3 (log, 64.00 MiB): " + Path.Combine(_scratch.Root, "newimg") + " (a new image file)", added);
        Assert.DoesNotContain("format version", added);   // mkfs makes the newest version: no upgrade note
        Assert.Equal(64L * Mi, new FileInfo(Path.Combine(_scratch.Root, "newimg")).Length);

        var rows = Devices(PoolDir);
        Assert.Equal([1L, 2L, 3L], Cookies(rows));
        var log = rows[2];
        Assert.Equal(("log", "in service", Path.Combine(_scratch.Root, "newimg"), 64L * Mi, true),
            ((string?)log["role"], (string?)log["state"], (string?)log["path"], (long)log["size_bytes"]!, (bool)log["takes_new_writes"]!));
        Assert.Equal(0L, (long)log["used_bytes"]!);
        Assert.True((long)log["free_bytes"]! > 60L * Mi);
        var text = Ok(Cow("device", "list", PoolDir));
        Assert.Contains("in service", text);
        Assert.Contains(Path.Combine(_scratch.Root, "newimg"), text);
        Assert.Contains("64.00 MiB", text);
        // cow df sees the same devices.
        Assert.Equal(3, ((JsonArray)Json(Cow("df", PoolDir, "--json"))["devices"]!).Count);

        var removed = (JsonObject)Json(Cow("device", "remove", PoolDir, "3", "--json"));
        Assert.Equal(("removed", true, 0L, 3L), ((string?)removed["stop"], (bool)removed["removed"]!, (long)removed["blocks_left"]!, (long)removed["cookie"]!));
        Assert.Equal([1L, 2L], Cookies(Devices(PoolDir)));
        // Its superblock is wiped: added again, it needs no --force; a second add says nothing about the format.
        var again = Ok(Cow("device", "add", PoolDir, Path.Combine(_scratch.Root, "newimg"), "--role", "base", "--size", "1G"));
        Assert.Contains("added device 3 (base, 64.00 MiB)", again);
        Assert.Contains("--size applies to new image files only", again);
        Assert.Contains("removed device 3", Ok(Cow("device", "remove", PoolDir, "newimg")));   // by its (relative) path
        Assert.Equal([1L, 2L], Cookies(Devices(PoolDir)));
        Assert.Equal(0, Cow("fsck", PoolDir).Code);
    }

    [SkippableFact]
    public void OnAMountedPoolTheLogIsRemovedWhileFilesAreReadAndEverythingReadsBack()
    {
        _scratch.MakePool("32M");
        var mp = _scratch.NewMountPoint();
        Ok(Cow("mount", PoolDir, mp));
        var expected = new Dictionary<string, byte[]>();
        for (int i = 0; i < 10; i++)
        {
            expected[$"f{i}"] = Random(10 + i, 2 * Mi + 1000 * i);
            Write(Path.Combine(mp, $"f{i}"), expected[$"f{i}"]);
        }
        long onLog = Devices(mp).Single(d => (long)d["cookie"]! == 2)["used_bytes"]!.GetValue<long>();
        Assert.True(onLog >= 20L * Mi, $"the log holds only {onLog} bytes");

        // A relative path is the client's: the mount's server works in another folder.
        _scratch.WorkingDirectory = _scratch.Root;
        var added = Ok(Cow("device", "add", mp, "img", "--role", "base", "--size", "128M"));
        Assert.Contains("added device 3 (base, 128.00 MiB): " + Path.Combine(_scratch.Root, "img"), added);
        Assert.Contains("through the cow mount process", added);
        Assert.True(File.Exists(Path.Combine(_scratch.Root, "img")));
        // Refusals through the socket name the problem.
        Assert.Contains("is already a device of this pool", Refused(Cow("device", "add", PoolDir, "img", "--role", "log")));
        Assert.Contains("no device with cookie 7", Refused(Cow("device", "remove", mp, "7")));

        // Readers go on while the log's data moves to the base devices (O_DIRECT: every read reaches the server).
        var failures = new ConcurrentQueue<string>();
        long reads = 0;
        bool stop = false;
        var reader = new Thread(() =>
        {
            try
            {
                while (!Volatile.Read(ref stop))
                    foreach (var (name, bytes) in expected)
                    {
                        using var fd = Fd.Open(Path.Combine(mp, name), Native.O_RDONLY | 0x4000 /* O_DIRECT */);
                        if (!fd.ReadAt(0, bytes.Length + 4096).AsSpan().SequenceEqual(bytes)) failures.Enqueue($"{name} read back differently during the removal");
                        Interlocked.Increment(ref reads);
                    }
            }
            catch (Exception e) { failures.Enqueue($"reader: {e.Message}"); }
        });
        reader.Start();
        var removal = (JsonObject)Json(Cow("device", "remove", mp, "2", "--json"));
        Volatile.Write(ref stop, true);
        Assert.True(reader.Join(60_000), "the reader hung");
        Assert.True(failures.IsEmpty, string.Join("; ", failures));
        output.WriteLine($"{reads} files read during the removal");
        Assert.Equal("removed", (string?)removal["stop"]);
        Assert.True((long)removal["bytes_moved"]! >= 20L * Mi, $"{(long)removal["bytes_moved"]!} bytes moved");
        Assert.Equal(0L, (long)removal["blocks_left"]!);
        Assert.Equal((long)removal["blocks_moved"]! * (long)removal["block_size"]!, (long)removal["bytes_moved"]!);

        foreach (var (name, bytes) in expected)
            Assert.True(bytes.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(mp, name))), $"{name} does not read back as written");
        var rows = Devices(mp);
        Assert.Equal([1L, 3L], Cookies(rows));
        Assert.True(rows.Sum(d => (long)d["used_bytes"]!) >= (long)removal["bytes_moved"]!, "the data moved is on the base devices");
        var text = Ok(Cow("device", "list", PoolDir));
        Assert.DoesNotContain("log.img", text);
        Assert.Contains("through the cow mount process", text);
        // Writes go on, to the base devices.
        expected["after"] = Random(99, 3 * Mi);
        Write(Path.Combine(mp, "after"), expected["after"]);
        Assert.True(expected["after"].AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(mp, "after"))));
        Assert.Contains("device-remove 2 on pool", File.ReadAllText(Path.Combine(PoolDir, "mount.log")));

        Ok(Cow("umount", mp));
        Assert.Equal(0, Cow("fsck", PoolDir).Code);
        Assert.Equal([1L, 3L], Cookies(Devices(PoolDir)));
        Ok(Cow("mount", PoolDir, mp));
        foreach (var (name, bytes) in expected)
            Assert.True(bytes.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(mp, name))), $"{name} does not read back after a remount");
        Ok(Cow("umount", mp));
    }

    [SkippableFact]
    public void RefusalsNameTheProblemAndChangeNothingAndBadUsageExits2()
    {
        MountedPool.RequireRootAndFuse();
        // 24 MiB of data on a 64 MiB log, and a 16 MiB base device: the log's data would not fit there.
        using (var p = Pool.Create(PoolDir, new PoolCreateOptions { BaseSize = 16L * Mi, LogSize = 64L * Mi }))
            for (int i = 0; i < 3; i++)
                MemoryPool.WriteAt(p.Live, MemoryPool.CreateFile(p.Live, $"/f{i}"), 0, MemoryPool.Pattern(8 * Mi, i));
        var noRoom = Refused(Cow("device", "remove", PoolDir, "2"));
        Assert.Contains("device 2 holds 24 MiB of data", noRoom);
        Assert.Contains("MiB free", noRoom);
        Assert.All(Devices(PoolDir), d => Assert.Equal("in service", (string?)d["state"]));

        // A device of the pool, by the path the pool names it with or by a symlink to it (its superblock tells).
        Assert.Contains("is already a device of this pool", Refused(Cow("device", "add", PoolDir, Path.Combine(PoolDir, "log.img"), "--role", "log")));
        File.CreateSymbolicLink(Path.Combine(_scratch.Root, "link.img"), Path.Combine(PoolDir, "base.img"));
        Assert.Contains("is already a device of this pool", Refused(Cow("device", "add", PoolDir, Path.Combine(_scratch.Root, "link.img"), "--role", "base")));
        // Another pool's device: refused without --force.
        var other = Path.Combine(_scratch.Root, "other");
        Ok(Cow("mkfs", other, "--base-size", "16M", "--log-size", "16M"));
        var foreign = Refused(Cow("device", "add", PoolDir, Path.Combine(other, "log.img"), "--role", "base"));
        Assert.Contains("already holds a Cow device of pool", foreign);
        Assert.Contains("--force", foreign);
        // Unknown devices, a missing file without --size, a directory.
        Assert.Contains("no device with cookie 9 (it has 1, 2)", Refused(Cow("device", "remove", PoolDir, "9")));
        Assert.Contains("is not a device of this pool", Refused(Cow("device", "remove", PoolDir, Path.Combine(other, "base.img"))));
        Assert.Contains("give --size", Refused(Cow("device", "add", PoolDir, Path.Combine(_scratch.Root, "missing.img"), "--role", "base")));
        Assert.Contains("is a directory", Refused(Cow("device", "add", PoolDir, other, "--role", "base")));
        Assert.Equal([1L, 2L], Cookies(Devices(PoolDir)));

        // Bad usage: exit 2, nothing changed.
        foreach (var args in new[]
                 {
                     new[] { "device", "add", PoolDir, Path.Combine(_scratch.Root, "x.img"), "--size", "64M" },
                     ["device", "add", PoolDir, Path.Combine(_scratch.Root, "x.img"), "--role", "extra", "--size", "64M"],
                     ["device", "add", PoolDir, Path.Combine(_scratch.Root, "x.img"), "--role", "log", "--size", "lots"],
                     ["device", "add", PoolDir, "--role", "log"],
                     ["device", "remove", PoolDir],
                     ["device", "frob", PoolDir],
                     ["device"],
                 })
        {
            var r = Cow(args);
            Assert.True(r.Code == 2, $"cow {string.Join(' ', args)}: exit {r.Code}, 2 expected");
        }
        Assert.Contains("--role log or --role base", Cow("device", "add", PoolDir, "x.img", "--size", "64M").Err);
        Assert.Contains("--role must be log or base, not 'extra'", Cow("device", "add", PoolDir, "x.img", "--role", "extra").Err);
        Assert.False(File.Exists(Path.Combine(_scratch.Root, "x.img")));
        Assert.Equal(0, Cow("fsck", PoolDir).Code);

        // With a base device added the data fits: the removal goes through; --force takes the other pool's device.
        Ok(Cow("device", "add", PoolDir, Path.Combine(_scratch.Root, "base2.img"), "--role", "base", "--size", "48M"));
        Assert.Contains("removed device 2", Ok(Cow("device", "remove", PoolDir, "2")));
        Assert.Contains("added device 4 (log, 16.00 MiB)", Ok(Cow("device", "add", PoolDir, Path.Combine(other, "log.img"), "--role", "log", "--force")));
        Assert.Equal(0, Cow("fsck", PoolDir).Code);
    }

    [SkippableFact]
    public void CtrlCCancelsARemovalThroughTheSocketAndItIsCarriedOnLater()
    {
        MountedPool.RequireRootAndFuse();
        Ok(Cow("mkfs", PoolDir, "--base-size", "64M", "--log-size", "1G"));
        var mp = _scratch.NewMountPoint();
        Ok(Cow("mount", PoolDir, mp, "--cleaner", "off"));   // no background cleaner to carry the removal on by itself
        Ok(Cow("device", "add", mp, Path.Combine(_scratch.Root, "base2.img"), "--role", "base", "--size", "1G"));
        var data = Random(7, Mi);
        const int mib = 256;   // 16 batches of moves
        using (var f = new FileStream(Path.Combine(mp, "big"), FileMode.Create))
        {
            for (int i = 0; i < mib; i++) f.Write(data);
            f.Flush(flushToDisk: true);
        }
        // SIGINT with default dispositions (a runner may ignore SIGINT, which the child would inherit) once the
        // removal runs: the mount's control socket answers device-list while it does, and shows the log "removing"
        // (asked here directly: starting cow for each look would take longer than the removal).
        int server = Pool.LockHolderPid(Path.Combine(PoolDir, Pool.LockFile)) ?? throw new InvalidOperationException("nobody holds the pool's lock");
        using var control = ControlClient.TryConnect(MountControl.SocketPath(server, 0), out var why) ?? throw new InvalidOperationException(why);
        bool Removing() => ((JsonArray)control.Request(new JsonObject { ["verb"] = "device-list", ["pool"] = mp })["devices"]!)
            .OfType<JsonObject>().Any(d => (long)d["cookie"]! == 2 && (string?)d["state"] == "removing");
        var psi = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])["--default-signal=INT", "dotnet", CowProgram.Dll, "device", "remove", mp, "2", "--json"]) psi.ArgumentList.Add(a);
        psi.Environment["COW_SOCKET"] = Path.Combine(_scratch.Root, "no-service.sock");
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var until = DateTime.UtcNow.AddSeconds(60);
        while (!p.HasExited && DateTime.UtcNow < until && !Removing()) Thread.Sleep(5);
        Mono.Unix.Native.Syscall.kill(p.Id, Mono.Unix.Native.Signum.SIGINT);
        Assert.True(p.WaitForExit(60_000), "cow device remove did not end after SIGINT");
        output.WriteLine($"exit {p.ExitCode}\n{stdout.Result}{err.Result}");
        var doc = (JsonObject)JsonNode.Parse(stdout.Result)!;
        if ((string?)doc["stop"] == "removed")
        {
            // The removal was over before the signal came (a fast machine): nothing to cancel, and it reported so.
            Assert.Equal(0, p.ExitCode);
            output.WriteLine("the removal ended before SIGINT: the cancellation was not exercised");
        }
        else
        {
            Assert.Equal("cancelled", (string?)doc["stop"]);
            Assert.Equal(1, p.ExitCode);
            Assert.Contains("did not finish: cancelled", err.Result);
            Assert.True((long)doc["blocks_left"]! > 0);
            Assert.Contains("device-remove-cancel on pool", File.ReadAllText(Path.Combine(PoolDir, "mount.log")));
            var log = Devices(mp).Single(d => (long)d["cookie"]! == 2);
            Assert.Equal(("removing", false), ((string?)log["state"], (bool)log["takes_new_writes"]!));
            // What moved is committed; cow device remove again moves the rest.
            var text = Ok(Cow("device", "remove", mp, "2"));
            Assert.Contains("removed device 2 (log, 1.00 GiB", text);
        }
        Assert.DoesNotContain(2L, Cookies(Devices(mp)));
        using (var f = File.OpenRead(Path.Combine(mp, "big")))
        {
            var buf = new byte[data.Length];
            for (int i = 0; i < mib; i++)
            {
                f.ReadExactly(buf);
                Assert.True(buf.AsSpan().SequenceEqual(data), $"MiB {i} of big does not read back");
            }
        }
        Ok(Cow("umount", mp));
        Assert.Equal(0, Cow("fsck", PoolDir, "--no-data").Code);
    }

    [SkippableFact]
    public void OnlyRootAndTheServersOwnerMayAddADeviceThroughTheSocket()
    {
        // device-add makes the server open, create or overwrite a path with its own privileges: the members of the
        // socket's group, who may clean and remove devices, may not ask for it from a service run by root.
        var config = ServeConfig.Parse($"[pool p0]\npath = {PoolDir}\nmountpoint = {_scratch.Root}/mnt\n", "f", out _)!;
        using var server = new ControlServer(config, new PoolMounts(config, NullLogger<PoolMounts>.Instance), NullLogger<ControlServer>.Instance);
        var add = $$"""{"verb":"device-add","pool":"p0","path":"{{_scratch.Root}}/x.img","role":"base","size":67108864}""";
        var refused = server.Handle(add, 1000);
        Assert.Equal("EACCES", (string?)refused["error"]);
        Assert.Contains("only root", (string?)refused["message"]);
        Assert.False(File.Exists(Path.Combine(_scratch.Root, "x.img")));
        Assert.Equal("ENOENT", (string?)server.Handle(add, 0)["error"]);   // root gets as far as the pool (not mounted here)
        foreach (var verb in new[] { "device-remove", "device-list", "device-remove-cancel" })
            Assert.Equal("ENOENT", (string?)server.Handle($$"""{"verb":"{{verb}}","pool":"p0","device":"2"}""", 1000)["error"]);
        // Malformed requests are refused before anything is done.
        Assert.Equal("EINVAL", (string?)server.Handle("""{"verb":"device-add"}""", 0)["error"]);
        Assert.Equal("EINVAL", (string?)server.Handle("""{"verb":"device-remove"}""", 0)["error"]);
    }
}
