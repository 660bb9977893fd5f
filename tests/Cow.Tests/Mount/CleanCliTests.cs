using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Cow.Fuse.Mounting;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary><c>cow clean</c> on an unmounted pool and on a pool mounted by <c>cow mount</c> (through its control
/// socket), its --json document and exit codes, the cleaner in <c>cow df</c> and <c>cow status</c>, and the background
/// cleaner of a mount moving data on its own. Every file and snapshot reads back as written after the data moved, and
/// fsck is clean. The real program, real mounts; root only.</summary>
[Trait("Tier", "mount")]
public sealed class CleanCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-clean-");
    private string PoolDir => _scratch.PoolDir;

    public void Dispose() => _scratch.Dispose();

    /// <summary>Runs cow with no service reachable (COW_SOCKET and COW_CONFIG name nothing).</summary>
    private (int Code, string Out, string Err) Cow(params string[] args) => _scratch.RunCow(output, args);

    private static string Ok((int Code, string Out, string Err) r) => MountScratch.Ok(r);

    private static JsonObject Json((int Code, string Out, string Err) r) => (JsonObject)JsonNode.Parse(Ok(r))!;

    private string Mount(params string[] extra)
    {
        var mp = _scratch.NewMountPoint();
        Ok(Cow(["mount", PoolDir, mp, .. extra]));
        return mp;
    }

    private static byte[] Random(int seed, int bytes)
    {
        var b = new byte[bytes];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static void Write(string path, byte[] data, long offset = 0, bool truncate = true)
    {
        using var f = new FileStream(path, truncate ? FileMode.Create : FileMode.Open, FileAccess.Write);
        f.Position = offset;
        f.Write(data);
        f.Flush(flushToDisk: true);
    }

    /// <summary>Files, a snapshot of them, then overwrites in place and a new file: the log holds data of the live tree
    /// and data only the snapshot still maps. Returns the expected contents by path in the mount (the snapshot's under
    /// .snapshots/s1).</summary>
    private Dictionary<string, byte[]> WriteSnapshotAndOverwrite(string mp)
    {
        var a = Random(1, 8 << 20);
        var b = Random(2, 3 << 20);
        var c = "a small file\n"u8.ToArray();
        Write(Path.Combine(mp, "a"), a);
        Write(Path.Combine(mp, "b"), b);
        Write(Path.Combine(mp, "c"), c);
        Ok(Cow("snapshot", "create", mp, "s1"));
        var expected = new Dictionary<string, byte[]>
        {
            [".snapshots/s1/a"] = (byte[])a.Clone(), [".snapshots/s1/b"] = b, [".snapshots/s1/c"] = c, ["b"] = b, ["c"] = c,
        };
        var head = Random(3, 2 << 20);
        var middle = Random(4, 1 << 20);
        Write(Path.Combine(mp, "a"), head, 0, truncate: false);
        Write(Path.Combine(mp, "a"), middle, 5 << 20, truncate: false);
        head.CopyTo(a, 0);
        middle.CopyTo(a, 5 << 20);
        expected["a"] = a;
        expected["d"] = Random(5, 2 << 20);
        Write(Path.Combine(mp, "d"), expected["d"]);
        return expected;
    }

    private static void ReadBack(string mp, Dictionary<string, byte[]> expected)
    {
        foreach (var (path, bytes) in expected)
            Assert.True(bytes.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(mp, path))), $"{path} does not read back as written");
    }

    private static readonly string[] CleanFields =
    [
        "batches", "block_size", "blocks_moved", "bytes_moved", "log_data_blocks", "log_free_blocks_after", "log_free_blocks_before",
        "log_free_bytes_after", "log_free_bytes_before", "log_free_percent_after", "log_free_percent_before", "seconds", "segments_cleaned",
        "stop", "until_percent",
    ];

    /// <summary>cow clean --json: exactly its fields, counts and bytes as JSON integers, figures that agree.</summary>
    private static void CheckCleanDocument(JsonObject doc)
    {
        Assert.Equal(CleanFields, doc.Select(kv => kv.Key).Order(StringComparer.Ordinal));
        foreach (var k in CleanFields.Where(k => k.Contains("blocks") || k.Contains("bytes") || k is "batches" or "block_size" or "segments_cleaned"))
        {
            Assert.Equal(JsonValueKind.Number, doc[k]!.GetValueKind());
            Assert.True(long.TryParse(doc[k]!.ToJsonString(), out _), $"{k} is not an integer: {doc[k]!.ToJsonString()}");
        }
        long bs = (long)doc["block_size"]!;
        Assert.Equal((long)doc["blocks_moved"]! * bs, (long)doc["bytes_moved"]!);
        Assert.Equal((long)doc["log_free_blocks_before"]! * bs, (long)doc["log_free_bytes_before"]!);
        Assert.Equal((long)doc["log_free_blocks_after"]! * bs, (long)doc["log_free_bytes_after"]!);
    }

    private static JsonObject Cleaner(JsonObject df) => (JsonObject)df["cleaner"]!;

    [SkippableFact]
    public void CleanOnAnUnmountedPoolMovesDataAndEveryFileAndSnapshotReadsBack()
    {
        _scratch.MakePool("64M");
        var mp = Mount("--cleaner", "off");
        var expected = WriteSnapshotAndOverwrite(mp);
        Ok(Cow("umount", mp));
        var dfBefore = Json(Cow("df", PoolDir, "--json"));
        Assert.False((bool)Cleaner(dfBefore)["background"]!);
        Assert.Null(Cleaner(dfBefore)["last_pass"]);

        var doc = Json(Cow("clean", PoolDir, "--json"));
        CheckCleanDocument(doc);
        Assert.Equal("nothing to move", (string?)doc["stop"]);
        Assert.Equal(100.0, (double)doc["until_percent"]!);
        Assert.True((long)doc["bytes_moved"]! > 0, "nothing moved off the log");
        Assert.True((long)doc["segments_cleaned"]! > 0);
        Assert.Equal((long)Cleaner(dfBefore)["log_free_blocks"]!, (long)doc["log_free_blocks_before"]!);
        Assert.True((long)doc["log_free_blocks_after"]! > (long)doc["log_free_blocks_before"]!);
        Assert.True((double)doc["log_free_percent_after"]! > (double)doc["log_free_percent_before"]!);
        // What moved is on the base device now.
        var dfAfter = Json(Cow("df", PoolDir, "--json"));
        var baseDevice = ((JsonArray)dfAfter["devices"]!).OfType<JsonObject>().Single(d => (string?)d["role"] == "base");
        Assert.Equal((long)doc["bytes_moved"]!, (long)baseDevice["used_bytes"]!);

        // Again, as text: nothing more to move, exit 0.
        var again = Ok(Cow("clean", PoolDir));
        Assert.Contains("moved 0 B (0 blocks) off the log", again);
        Assert.Contains("stopped: nothing more to move", again);
        Assert.Contains("log free:", again);
        Assert.Equal(0, Cow("fsck", PoolDir).Code);

        mp = Mount("--cleaner", "off");
        ReadBack(mp, expected);
        Ok(Cow("umount", mp));
    }

    [SkippableFact]
    public void CleanOnAMountedPoolRunsInTheMountProcessAndTheCleanerShowsInDfAndStatus()
    {
        _scratch.MakePool("64M");
        var mp = Mount("--cleaner", "off");
        var expected = WriteSnapshotAndOverwrite(mp);
        var df0 = Cleaner(Json(Cow("df", mp, "--json")));
        Assert.False((bool)df0["background"]!);   // --cleaner off
        Assert.Equal("idle", (string?)df0["state"]);
        Assert.Equal(0L, (long)df0["passes"]!);

        // Bad --until is bad usage, mounted or not.
        Assert.Equal(2, Cow("clean", mp, "--until", "150").Code);
        Assert.Equal(2, Cow("clean", PoolDir, "--until", "-").Code);

        var doc = Json(Cow("clean", mp, "--json"));
        CheckCleanDocument(doc);
        Assert.Equal("nothing to move", (string?)doc["stop"]);
        Assert.True((long)doc["bytes_moved"]! > 0, "nothing moved off the log");
        Assert.Equal((long)df0["log_free_blocks"]!, (long)doc["log_free_blocks_before"]!);
        ReadBack(mp, expected);

        // The pool folder finds the same process; a target already reached moves nothing.
        var text = Ok(Cow("clean", PoolDir, "--until", "10"));
        Assert.Contains("stopped: reached: 10 % of the log is free", text);
        Assert.Contains("through the cow mount process", text);
        var reached = Json(Cow("clean", PoolDir, "--until", "0", "--json"));
        Assert.Equal(("reached", 0L), ((string?)reached["stop"], (long)reached["blocks_moved"]!));

        // cow df shows the totals since the mount and the last pass; text and JSON.
        var df = Json(Cow("df", PoolDir, "--json"));
        var c = Cleaner(df);
        Assert.Equal((long)doc["blocks_moved"]!, (long)c["blocks_moved"]!);
        Assert.Equal((long)doc["bytes_moved"]!, (long)c["bytes_moved"]!);
        Assert.Equal(3L, (long)c["passes"]!);
        Assert.Equal("reached", (string?)c["last_pass"]!["stop"]);
        Assert.Equal((long)doc["log_free_blocks_after"]!, (long)c["log_free_blocks"]!);
        var dfText = Ok(Cow("df", mp));
        Assert.Contains("cleaner: no background cleaner, idle", dfText);
        Assert.Contains("cleaner's last pass:", dfText);
        // cow status without a service asks each cow mount for its cleaner.
        var status = Json(Cow("status", "--json"));
        Assert.False((bool)status["service"]!);
        var row = ((JsonArray)status["mounts"]!).OfType<JsonObject>().Single(m => (string?)m["mountpoint"] == mp);
        Assert.Equal((long)doc["blocks_moved"]!, (long)row["cleaner"]!["blocks_moved"]!);
        Assert.Null(row["cleaner"]!["settings"]);   // off
        Assert.Contains(mp, Ok(Cow("status")));

        Ok(Cow("umount", mp));
        Assert.Equal(0, Cow("fsck", PoolDir).Code);
        mp = Mount("--cleaner", "off");
        ReadBack(mp, expected);
        Ok(Cow("umount", mp));
    }

    [SkippableFact]
    public void TheBackgroundCleanerOfAMountMovesDataOnItsOwnWhileFilesAreWritten()
    {
        _scratch.MakePool("64M");
        var mp = Mount("--cleaner-start", "99", "--cleaner-share", "0.5");
        Assert.Contains("cleaner on (starts below 99 % free log, stops at 99 %, share 0.5)", File.ReadAllText(Path.Combine(PoolDir, "mount.log")));
        var expected = new Dictionary<string, byte[]>();
        JsonObject? cleaner = null;
        var until = DateTime.UtcNow.AddSeconds(30);
        for (int i = 0; DateTime.UtcNow < until; i++)
        {
            if (i < 40)
            {
                expected[$"f{i}"] = Random(100 + i, 1 << 20);
                Write(Path.Combine(mp, $"f{i}"), expected[$"f{i}"]);
            }
            else Thread.Sleep(500);
            if (i % 4 != 3) continue;
            cleaner = Cleaner(Json(Cow("df", mp, "--json")));
            if ((long)cleaner["blocks_moved"]! > 0) break;
        }
        Assert.NotNull(cleaner);
        Assert.True((long)cleaner!["blocks_moved"]! > 0, $"the background cleaner moved nothing in 30 s: {cleaner.ToJsonString()}");
        Assert.True((bool)cleaner["background"]!);
        Assert.True((long)cleaner["passes"]! > 0 || (string?)cleaner["state"] == "cleaning");   // passes counts those that ended
        // Its settings in cow status.
        var row = ((JsonArray)Json(Cow("status", "--json"))["mounts"]!).OfType<JsonObject>().Single(m => (string?)m["mountpoint"] == mp);
        Assert.Equal(99.0, (double)row["cleaner"]!["settings"]!["start_percent"]!);
        Assert.Equal(0.5, (double)row["cleaner"]!["settings"]!["share"]!);
        ReadBack(mp, expected);
        Ok(Cow("umount", mp));
        Assert.False(MountTable.Find(mp) is { IsCow: true });
        Assert.Equal(0, Cow("fsck", PoolDir).Code);
        mp = Mount("--cleaner", "off");
        ReadBack(mp, expected);
        Ok(Cow("umount", mp));
    }

    [SkippableFact]
    public void CtrlCCancelsAPassThroughTheSocketAndReportsWhatMoved()
    {
        MountedPool.RequireRootAndFuse();
        Ok(Cow("mkfs", PoolDir, "--base-size", "2G", "--log-size", "1G"));
        var mp = Mount("--cleaner", "off");
        var data = Random(7, 1 << 20);
        const int mib = 900;
        using (var f = new FileStream(Path.Combine(mp, "big"), FileMode.Create))
        {
            for (int i = 0; i < mib; i++) f.Write(data);
            f.Flush(flushToDisk: true);
        }
        // SIGINT with default dispositions (a runner may ignore SIGINT, which the child would inherit) once the pass
        // runs: cow df answers while it does, and says "cleaning".
        var psi = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])["--default-signal=INT", "dotnet", CowProgram.Dll, "clean", mp, "--json"]) psi.ArgumentList.Add(a);
        psi.Environment["COW_SOCKET"] = Path.Combine(_scratch.Root, "no-service.sock");
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var until = DateTime.UtcNow.AddSeconds(60);
        while (!p.HasExited && DateTime.UtcNow < until && (string?)Cleaner(Json(Cow("df", mp, "--json")))["state"] != "cleaning") { }
        Mono.Unix.Native.Syscall.kill(p.Id, Mono.Unix.Native.Signum.SIGINT);
        Assert.True(p.WaitForExit(60_000), "cow clean did not end after SIGINT");
        output.WriteLine($"exit {p.ExitCode}\n{stdout.Result}{err.Result}");
        var doc = (JsonObject)JsonNode.Parse(stdout.Result)!;
        CheckCleanDocument(doc);
        if ((string?)doc["stop"] == "nothing to move")
        {
            // The pass was over before the signal came (a fast machine): nothing to cancel, and it reported so.
            Assert.Equal(0, p.ExitCode);
            output.WriteLine("the pass ended before SIGINT: the cancellation was not exercised");
        }
        else
        {
            Assert.Equal("cancelled", (string?)doc["stop"]);
            Assert.Equal(1, p.ExitCode);
            Assert.Contains("stopped short: cancelled", err.Result);
            Assert.Contains("clean-cancel on pool", File.ReadAllText(Path.Combine(PoolDir, "mount.log")));
            // What moved is committed; the rest moves with the next pass.
            var rest = Json(Cow("clean", mp, "--json"));
            Assert.Equal("nothing to move", (string?)rest["stop"]);
            Assert.True((long)rest["blocks_moved"]! > 0);
        }
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
}
