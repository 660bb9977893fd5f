using System.Diagnostics;
using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Tests.Engine;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary><c>cow scrub</c>, the real program: on an unmounted pool and, through the control socket of a <c>cow
/// mount</c>, on a mounted one; a block corrupted in the pool's image file (a plain write at its offset) is found and
/// named by path in the live tree and the snapshot, exit 1; a clean pool exits 0; the --json document has the same shape
/// both ways; bad usage exits 2. Root only.</summary>
[Trait("Tier", "mount")]
public sealed class ScrubCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-scrub-");
    private string PoolDir => _scratch.PoolDir;

    public void Dispose() => _scratch.Dispose();

    private (int Code, string Out, string Err) Cow(params string[] args) => _scratch.RunCow(output, args);

    /// <summary>The names of every field, nested objects' fields as parent.child: the shape of a document.</summary>
    private static string[] Shape(JsonNode? n, string prefix = "") => n switch
    {
        JsonObject o => o.SelectMany(kv => new[] { prefix + kv.Key }.Concat(Shape(kv.Value, prefix + kv.Key + "."))).Order(StringComparer.Ordinal).ToArray(),
        JsonArray a => a.Count == 0 ? [] : Shape(a[0], prefix),
        _ => [],
    };

    /// <summary>Makes the pool (image files) with /docs/report.txt (3 blocks, shared with snapshot monday) and /other;
    /// returns the image file and byte offset of report.txt's second block, and report.txt's inode.</summary>
    private (string Image, long Offset, long Ino) MakePool()
    {
        MountedPool.RequireRootAndFuse();
        using var p = Pool.Create(PoolDir, new PoolCreateOptions { BaseSize = 32L << 20, LogSize = 64L << 20 });
        var fs = p.Live;
        Assert.Equal(0, (int)fs.Mkdir(1, "docs", 0x1ED, 0, 0, out _));
        long f = MemoryPool.CreateFile(fs, "/docs/report.txt");
        MemoryPool.WriteAt(fs, f, 0, MemoryPool.Pattern(3 * 4096, 1));
        MemoryPool.WriteAt(fs, MemoryPool.CreateFile(fs, "/other"), 0, MemoryPool.Pattern(2 * 4096, 2));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("monday", out _));
        Assert.Equal(0, (int)fs.IomapBegin(f, 4096, 4096, IomapOp.None, out var m));
        Assert.Equal(MappingType.Mapped, m.Read.Type);
        var image = p.Devices.Single(d => d.Cookie == m.Read.Device).Path;
        return (image, (long)m.Read.Address, f);
    }

    /// <summary>Flips a byte of the block at <paramref name="offset"/> of the image file, with a plain write.</summary>
    private static void Corrupt(string image, long offset)
    {
        using var f = new FileStream(image, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        f.Position = offset + 100;
        int b = f.ReadByte();
        f.Position = offset + 100;
        f.WriteByte((byte)(b ^ 0xA5));
        f.Flush(flushToDisk: true);
    }

    /// <summary>The fields of a --json document with a damaged block.</summary>
    private static readonly string[] DamagedShape = new[]
    {
        "blocks_checked", "bytes_checked", "seconds", "stop", "complete", "damaged_blocks", "note", "damaged", "damaged.device", "damaged.block",
        "damaged.ino", "damaged.offset", "damaged.problem", "damaged.paths", "damaged.paths.snapshot", "damaged.paths.path", "damaged.paths_text",
    }.Order(StringComparer.Ordinal).ToArray();

    private static JsonObject Damage(JsonNode doc) => Assert.IsType<JsonObject>(Assert.Single(((JsonArray)doc["damaged"]!)));

    [SkippableFact]
    public void AnUnmountedPoolIsScrubbedHereCleanThenDamagedByPath()
    {
        var (image, offset, ino) = MakePool();
        var (code, stdout, err) = Cow("scrub", PoolDir);
        Assert.True(code == 0, err);
        Assert.Contains("scrub complete: 5 blocks", stdout);
        Assert.Contains("no damaged block found", stdout);
        var clean = JsonNode.Parse(Cow("scrub", PoolDir, "--json", "--rate", "0").Out)!;
        Assert.Equal(5, (long)clean["blocks_checked"]!);
        Assert.Equal(5 * 4096, (long)clean["bytes_checked"]!);
        Assert.Equal("complete", (string?)clean["stop"]);
        Assert.Empty((JsonArray)clean["damaged"]!);

        Corrupt(image, offset);
        (code, stdout, _) = Cow("scrub", PoolDir, "--rate", "0.5");
        Assert.Equal(1, code);
        Assert.Contains("1 damaged block:", stdout);
        Assert.Contains($"block {offset / 4096}: inode {ino} offset 4096: checksum mismatch (/docs/report.txt; snapshot monday: /docs/report.txt)", stdout);
        Assert.Contains(ScrubReport.NoRepair, stdout);
        (code, stdout, _) = Cow("scrub", PoolDir, "--json");
        Assert.Equal(1, code);
        var doc = JsonNode.Parse(stdout)!;
        Assert.Equal(1, (long)doc["damaged_blocks"]!);
        var d = Damage(doc);
        Assert.Equal((offset / 4096, 4096L), ((long)d["block"]!, (long)d["offset"]!));
        Assert.Equal("""[{"snapshot":null,"path":"/docs/report.txt"},{"snapshot":"monday","path":"/docs/report.txt"}]""", d["paths"]!.ToJsonString());
        Assert.Equal(ScrubReport.NoRepair, (string?)doc["note"]);
        Assert.Equal(DamagedShape, Shape(doc));
    }

    [SkippableFact]
    public void BadUsageExitsTwo()
    {
        MakePool();
        foreach (var bad in new[] { "-1", "fast", "NaN", "9999999" })
        {
            var (code, _, err) = Cow("scrub", PoolDir, "--rate", bad);
            Assert.Equal(2, code);
            Assert.Contains("--rate must be a number of MiB per second", err);
        }
        Assert.Equal(2, Cow("scrub").Code);
    }

    [SkippableFact]
    public void AMountedPoolIsScrubbedThroughItsControlSocket()
    {
        var (image, offset, ino) = MakePool();
        var unmounted = JsonNode.Parse(Cow("scrub", PoolDir, "--json").Out)!;
        var mp = _scratch.NewMountPoint();
        var mount = Cow("mount", PoolDir, mp);
        Assert.True(mount.Code == 0, mount.Err);
        // Data written through the mount and synced is checked too.
        File.WriteAllBytes(Path.Combine(mp, "new.bin"), MemoryPool.Pattern(4 * 4096, 3));
        using (var h = File.OpenHandle(Path.Combine(mp, "new.bin"), FileMode.Open, FileAccess.ReadWrite)) RandomAccess.FlushToDisk(h);

        var (code, stdout, err) = Cow("scrub", mp);
        Assert.True(code == 0, err);
        Assert.Contains("scrub complete: 9 blocks", stdout);
        Assert.Contains("through the cow mount process", stdout);
        (code, stdout, _) = Cow("scrub", mp, "--json", "--rate", "0");
        Assert.Equal(0, code);
        var clean = JsonNode.Parse(stdout)!;
        Assert.Equal(9, (long)clean["blocks_checked"]!);
        Assert.Null(clean["ok"]);
        Assert.Null(clean["mountpoint"]);

        Corrupt(image, offset);
        (code, stdout, _) = Cow("scrub", PoolDir);   // the pool folder: routed to the mount
        Assert.Equal(1, code);
        Assert.Contains("checksum mismatch (/docs/report.txt; snapshot monday: /docs/report.txt)", stdout);
        Assert.Contains(ScrubReport.NoRepair, stdout);
        (code, stdout, _) = Cow("scrub", mp, "--json");
        Assert.Equal(1, code);
        var doc = JsonNode.Parse(stdout)!;
        var d = Damage(doc);
        Assert.Equal((offset / 4096, ino, 4096L), ((long)d["block"]!, (long)d["ino"]!, (long)d["offset"]!));
        Assert.Equal("/docs/report.txt", (string?)d["paths"]![0]!["path"]);
        Assert.Equal(DamagedShape, Shape(doc));   // as on an unmounted pool
        Assert.Equal(Shape(unmounted), Shape(clean));
        var log = File.ReadAllText(Path.Combine(PoolDir, "mount.log"));
        Assert.Contains("damaged: device", log);

        var umount = Cow("umount", mp);
        Assert.True(umount.Code == 0, umount.Err);
        Assert.Equal(1, Cow("scrub", PoolDir).Code);   // unmounted again: the damage stays (nothing repairs it)
    }

    [SkippableFact]
    public void CtrlCCancelsAScrubThroughTheSocketAndReportsWhatItChecked()
    {
        MakePool();
        var mp = _scratch.NewMountPoint();
        var mount = Cow("mount", PoolDir, mp);
        Assert.True(mount.Code == 0, mount.Err);
        File.WriteAllBytes(Path.Combine(mp, "big"), MemoryPool.Pattern(12 << 20, 4));
        using (var h = File.OpenHandle(Path.Combine(mp, "big"), FileMode.Open, FileAccess.ReadWrite)) RandomAccess.FlushToDisk(h);
        // With SIGINT at its default disposition: a runner started in the background ignores SIGINT, and its children would
        // inherit that (then the Ctrl-C below never reaches cow), as in CleanCliTests.
        var psi = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])["--default-signal=INT", "dotnet", CowProgram.Dll, "scrub", mp, "--rate", "1"]) psi.ArgumentList.Add(a);   // 12 MiB at 1 MiB/s: 12 s
        psi.Environment["COW_SOCKET"] = Path.Combine(_scratch.Root, "no-service.sock");
        psi.Environment["COW_CONFIG"] = Path.Combine(_scratch.Root, "no-such.conf");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Thread.Sleep(3000);   // started, connected and scrubbing (its first segment, then a 4 s pause)
        var clock = Stopwatch.StartNew();
        Assert.Equal(0, Mono.Unix.Native.Syscall.kill(p.Id, Mono.Unix.Native.Signum.SIGINT));
        Assert.True(p.WaitForExit(30_000), "cow scrub did not end after Ctrl-C");
        output.WriteLine($"{stdout.Result}{stderr.Result}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(8), $"ended {clock.Elapsed} after Ctrl-C");
        Assert.Equal(1, p.ExitCode);
        Assert.Contains("scrub stopped early (cancelled)", stdout.Result);
        Assert.Contains("cancelling the scrub", stderr.Result);
        Assert.Contains("the scrub did not finish (cancelled)", stderr.Result);
        // The mount serves on, and a new scrub runs to its end.
        Assert.Equal(0, Cow("scrub", mp, "--rate", "0").Code);

        // A client that goes away (killed) cancels its scrub in the server: the next one is not refused as busy.
        using var killed = Process.Start(psi)!;
        Thread.Sleep(3000);
        killed.Kill();
        Assert.True(killed.WaitForExit(30_000));
        var again = Cow("scrub", mp, "--rate", "0");
        Assert.True(again.Code == 0, again.Err);
        var log = File.ReadAllText(Path.Combine(PoolDir, "mount.log"));
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Count(log, @"scrub through the control socket \(uid 0\) stopped early \(cancelled\)"));
    }
}
