using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Core.FileSystem;
using Spectre.Console;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary><c>cow scrub POOL|MNT [--rate MIB_PER_S] [--json]</c>: reads every block the pool references and compares it
/// with its checksum, at a bounded rate, while the pool stays in use (<see cref="Core.Pool.Scrub"/>). On a mounted pool
/// the scrub runs in the process that mounted it, through its control socket (<c>scrub</c>); on an unmounted pool here.
/// Damaged blocks are listed with the file's paths in the live tree and in each snapshot that sees them; nothing is
/// repaired (Cow keeps no second copy). Ctrl-C (SIGINT, SIGTERM, SIGHUP) cancels it (through the socket:
/// <c>scrub-cancel</c>) and what was found so far is reported; a second Ctrl-C ends the command at once (which, closing
/// the connection, cancels a scrub running in the server too). Exit codes:
/// 0 every block checked and none damaged, 1 damage found, or the scrub did not finish (cancelled, another scrub
/// running) or could not run, 2 bad usage. Stateless: thread-safe.</summary>
internal static class ScrubCommand
{
    /// <summary>The rate --rate means when not given, in MiB/s.</summary>
    private const double DefaultRateMib = ScrubSettings.DefaultRateBytesPerSecond / (double)(1 << 20);

    internal static Command Create()
    {
        var rate = new Option<string?>("--rate") { Description = $"read at most this many MiB per second, on average (default {DefaultRateMib:0}; 0: as fast as the devices go)" };
        var json = new Option<bool>("--json") { Description = "one JSON object {blocks_checked, bytes_checked, seconds, stop, complete, damaged_blocks, damaged: [{device, block, ino, offset, problem, paths: [{snapshot (null: the live tree), path}], paths_text}], note}" };
        var cmd = new Command("scrub", "read every block the pool references and verify its checksum, at a bounded rate, while the pool is in use "
            + "(on a mounted pool through the process that mounted it: cow mount or cow serve); damaged files are named by path in the live tree and in each snapshot. "
            + "Nothing is repaired: Cow keeps no second copy. Exit 0 if clean, 1 if damage was found or the scrub did not finish") { PoolArg, rate, json };
        cmd.SetAction(r => Guard(() =>
        {
            long bytesPerSecond = ScrubSettings.DefaultRateBytesPerSecond;
            if (r.GetValue(rate) is { } text)
            {
                if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double mib) || !double.IsFinite(mib) || mib < 0 || mib > 1 << 20)
                    return Usage($"--rate must be a number of MiB per second from 0 (unlimited) to {1 << 20}, not '{text}'");
                bytesPerSecond = (long)Math.Round(mib * (1 << 20));
                if (mib > 0 && bytesPerSecond == 0) bytesPerSecond = 1;
            }
            bool asJson = r.GetValue(json);
            int Print(JsonObject doc, string? via)
            {
                if (asJson)
                {
                    foreach (var k in new[] { "ok", "pool", "mountpoint" }) doc.Remove(k);
                    Console.WriteLine(doc.ToJsonString(JsonOut));
                }
                else
                {
                    foreach (var line in Lines(doc)) Console.WriteLine(line);
                    if (via != null) Console.WriteLine($"(through {via})");
                }
                var stop = (string?)doc["stop"];
                if (stop != "complete") return Fail(stop == "busy" ? "another scrub of this pool is running; nothing was checked" : $"the scrub did not finish ({stop}): blocks it did not reach were not checked");
                return (long?)doc["damaged_blocks"] > 0 ? 1 : 0;
            }

            var poolArg = PoolOf(r);
            var viaService = ViaService(poolArg, (c, p) =>
            {
                var name = (string?)p["name"];
                var resp = RequestCancellable(c, new JsonObject { ["verb"] = "scrub", ["pool"] = name, ["rate"] = bytesPerSecond }, "scrub-cancel", name, "cancelling the scrub");
                if (resp["ok"]?.GetValue<bool>() != true)
                {
                    Console.Error.WriteLine($"cow: {(string?)resp["message"]} ({(string?)resp["error"]})");
                    return (string?)resp["error"] == "EINVAL" ? 2 : 1;
                }
                return Print(resp, (string?)p["via"]);
            });
            if (viaService is int rc) return rc;

            using var pool = OpenUnmounted(poolArg, "cow scrub", "scrub MP instead (the process that mounts it runs the scrub)", viaService: true);
            using var cts = new CancellationTokenSource();
            using var signals = CancelOnFirstSignal(cts);
            var settings = new ScrubSettings { RateBytesPerSecond = bytesPerSecond };
            ScrubReport report = null!;
            if (Interactive && !asJson)
                AnsiConsole.Progress().AutoClear(true).Start(ctx =>
                {
                    var task = ctx.AddTask("scrub: verifying data blocks", maxValue: 1);
                    report = pool.Scrub(settings, s => { task.MaxValue = Math.Max(1, s.BlocksToCheck); task.Value = s.BlocksChecked; }, cts.Token);
                    task.Value = task.MaxValue;
                });
            else report = pool.Scrub(settings, null, cts.Token);
            return Print(Document(report), null);
        }));
        return cmd;
    }

    /// <summary>A scrub's report as <c>cow scrub --json</c> writes it (and the control socket's <c>scrub</c> answers).</summary>
    internal static JsonObject Document(ScrubReport r)
    {
        var damaged = new JsonArray();
        foreach (var d in r.Damaged)
        {
            var paths = new JsonArray();
            foreach (var p in d.Paths) paths.Add((JsonNode)new JsonObject { ["snapshot"] = p.Snapshot, ["path"] = p.Path });
            damaged.Add((JsonNode)new JsonObject
            {
                ["device"] = (long)d.Device, ["block"] = d.Block, ["ino"] = d.Ino, ["offset"] = d.Offset, ["problem"] = d.Problem,
                ["paths"] = paths, ["paths_text"] = d.PathsText,
            });
        }
        return new JsonObject
        {
            ["blocks_checked"] = r.BlocksChecked, ["bytes_checked"] = r.BytesChecked, ["seconds"] = Math.Round(r.Seconds, 3),
            ["stop"] = r.Stop, ["complete"] = r.Complete, ["damaged_blocks"] = r.DamagedBlocks, ["damaged"] = damaged,
            ["note"] = r.DamagedBlocks > 0 ? ScrubReport.NoRepair : null,
        };
    }

    /// <summary>The report for a reader, from its document (<see cref="Document"/>).</summary>
    internal static IEnumerable<string> Lines(JsonObject doc)
    {
        long blocks = (long)doc["blocks_checked"]!, bytes = (long)doc["bytes_checked"]!, damagedBlocks = (long)doc["damaged_blocks"]!;
        double seconds = (double)doc["seconds"]!;
        var stop = (string?)doc["stop"];
        string state = stop switch { "complete" => "complete", "busy" => "not run (another scrub of this pool is running)", _ => $"stopped early ({stop})" };
        yield return $"scrub {state}: {blocks:N0} blocks ({Bytes(bytes)}) checked in {seconds:0.0} s"
                     + (seconds > 0 && bytes > 0 ? $", {Bytes((long)(bytes / seconds))}/s" : "");
        if (damagedBlocks == 0) { if (stop != "busy") yield return "no damaged block found"; yield break; }
        yield return $"{damagedBlocks:N0} damaged block{(damagedBlocks == 1 ? "" : "s")}:";
        var listed = (JsonArray)doc["damaged"]!;
        foreach (var d in listed.OfType<JsonObject>())
            yield return $"  device {(long)d["device"]!} block {(long)d["block"]!}: inode {(long)d["ino"]!} offset {(long)d["offset"]!}: {(string?)d["problem"]} ({(string?)d["paths_text"]})";
        if (listed.Count == ScrubReport.MaxListed) yield return $"  (the first {ScrubReport.MaxListed:N0} damaged mappings are listed)";
        yield return ScrubReport.NoRepair;
        yield return ScrubReport.NotChecked;
    }
}
