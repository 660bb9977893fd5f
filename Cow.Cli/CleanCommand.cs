using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary><c>cow clean POOL|MNT [--until PERCENT] [--json]</c>: one pass of the log cleaner now, at full speed (the
/// background cleaner of a mount moves data only when the log runs low, and at a share of the time). On a mounted pool
/// the pass runs in the process that mounted it, through its control socket (<c>clean</c>); on an unmounted pool here.
/// Ctrl-C (SIGINT, SIGTERM, SIGHUP) cancels the pass at the end of its batch: what moved is committed and reported; a
/// second Ctrl-C ends the command at once (the pass is then cancelled as the connection closes; on an unmounted pool
/// a batch not yet committed is simply not there after the next open). Exit codes: 0 the pass reached its target or
/// found nothing more to move, 1 it stopped short (base device full, cancelled, frozen, failed) or could not run,
/// 2 bad usage. Stateless: thread-safe.</summary>
internal static class CleanCommand
{
    internal static Command Create()
    {
        var until = new Option<string?>("--until")
        {
            Description = "stop once this percentage of the log device is free (0..100; default 100: move everything that frees log space)",
        };
        var json = new Option<bool>("--json") { Description = "one JSON object {until_percent, stop, blocks_moved, bytes_moved, segments_cleaned, batches, seconds, block_size, log_data_blocks, log_free_blocks_before, log_free_blocks_after, log_free_bytes_before, log_free_bytes_after, log_free_percent_before, log_free_percent_after}" };
        var cmd = new Command("clean", "run the log cleaner now: move live data off the log device onto the base device until --until percent of the log is free, "
            + "or nothing more can be moved; reports what moved (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, json, until };
        cmd.SetAction(r => Guard(() =>
        {
            double target = 100;
            if (r.GetValue(until) is { } text)
            {
                if (CleanerOptions.Percent(text, "--until", out var problem) is not { } t) return Usage(problem!);
                target = t;
            }
            bool asJson = r.GetValue(json);
            int Print(JsonObject doc, string? via)
            {
                var stop = (string?)doc["stop"] ?? "";
                if (asJson)
                {
                    foreach (var k in new[] { "ok", "pool", "mountpoint" }) doc.Remove(k);
                    Console.WriteLine(doc.ToJsonString(JsonOut));
                }
                else
                {
                    foreach (var line in CleanerReport.CleanLines(doc)) Console.WriteLine(line);
                    if (via != null) Console.WriteLine($"(through {via})");
                }
                return CleanerReport.Succeeded(stop) ? 0 : Fail($"the cleaning pass stopped short: {CleanerReport.StopText(stop)}");
            }

            var poolArg = PoolOf(r);
            var viaService = ViaService(poolArg, (c, p) =>
            {
                var name = (string?)p["name"];
                var resp = RequestCancellable(c, new JsonObject { ["verb"] = "clean", ["pool"] = name, ["until"] = target }, "clean-cancel", name, "cancelling the cleaning pass at the end of its batch");
                if (resp["ok"]?.GetValue<bool>() != true)
                {
                    Console.Error.WriteLine($"cow: {(string?)resp["message"]} ({(string?)resp["error"]})");
                    return (string?)resp["error"] == "EINVAL" ? 2 : 1;
                }
                return Print(resp, (string?)p["via"]);
            });
            if (viaService is int rc) return rc;

            using var pool = OpenUnmounted(poolArg, "cow clean", "the process that mounts it runs the background cleaner", viaService: true);
            using var cts = new CancellationTokenSource();
            using var signals = CancelOnFirstSignal(cts);
            var before = pool.CleanerStatus();
            var pass = Busy("cleaning the log", () => pool.CleanLog(target, cts.Token));
            return Print(CleanerReport.CleanDocument(target, before, pass, pool.BlockSize), null);
        }));
        return cmd;
    }
}
