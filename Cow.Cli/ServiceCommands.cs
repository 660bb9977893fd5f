using System.CommandLine;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Fuse.Mounting;
using Spectre.Console;
using static Cow.Cli.CliCommon;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary><c>cow status</c> and <c>cow control-request</c>: the running Cow service as its control socket reports
/// it (<c>cow serve</c> itself is <see cref="ServeCommand"/>). Stateless: thread-safe.</summary>
internal static class ServiceCommands
{
    /// <summary><c>cow control-request JSON...</c>: sends each argument as one raw request line to the service's
    /// control socket and prints each response line (scripts, debugging, tests). Exit 0 when every response
    /// has "ok":true, 1 otherwise.</summary>
    internal static Command ControlRequest()
    {
        var lines = new Argument<string[]>("request") { Description = "JSON request objects, e.g. '{\"verb\":\"status\"}'", Arity = ArgumentArity.OneOrMore };
        var cmd = new Command("control-request", "send raw JSON requests to the Cow service's control socket ($COW_SOCKET or /run/cow/cow.sock) and print the responses") { lines };
        cmd.SetAction(r => Guard(() =>
        {
            using var c = ControlClient.TryConnect(ControlClient.SocketPath, out var why);
            if (c == null) return Fail(why!);
            bool allOk = true;
            foreach (var line in r.GetValue(lines)!)
            {
                var resp = c.Raw(line);
                allOk &= resp["ok"]?.GetValue<bool>() == true;
                Console.WriteLine(resp.ToJsonString(ControlProtocol.Json));
            }
            return allOk ? 0 : 1;
        }));
        return cmd;
    }

    /// <summary>The cleaner object and pending purges of the <c>cow mount</c> process serving <paramref name="mountPoint"/>
    /// (its status row); null and 0 when no such process answers.</summary>
    private static (JsonObject? Cleaner, int Purges) MountRow(string mountPoint)
    {
        JsonObject? cleaner = null;
        int purges = 0;
        ViaService(mountPoint, (_, p) => { cleaner = p["cleaner"]?.DeepClone() as JsonObject; purges = (int?)p["purgesPending"] ?? 0; return 0; });
        return (cleaner, purges);
    }

    internal static Command Status()
    {
        var json = new Option<bool>("--json") { Description = "one JSON object: {service: true, pid, uptimeSeconds, socket, pools: [{name, path, mountpoint, mounted, ..., cleaner}]} or {service: false, reason, mounts: [{pool, mountpoint, cleaner}]}" };
        var cmd = new Command("status", "show the running Cow service (pools, mount points, mount options, what the log cleaner does, pid, uptime) through its control socket ($COW_SOCKET or /run/cow/cow.sock); without a service, the Cow mounts of this machine and their cleaners") { json };
        cmd.SetAction(pr => Guard(() =>
        {
            bool j = pr.GetValue(json);
            using var c = ControlClient.TryConnect(ControlClient.SocketPath, out var why);
            if (c == null)
            {
                // Each cow mount answers for its pool on its own control socket: its cleaner (null when it has none).
                var rows = MountTable.Read().Where(m => m.IsCow).Select(m => (m.Source, m.MountPoint, Row: MountRow(m.MountPoint)))
                    .Select(m => (m.Source, m.MountPoint, m.Row.Cleaner, m.Row.Purges)).ToList();
                if (j)
                {
                    var mounts = new JsonArray(rows.Select(m => (JsonNode)new JsonObject { ["pool"] = m.Source, ["mountpoint"] = m.MountPoint, ["cleaner"] = m.Cleaner, ["purgesPending"] = m.Purges }).ToArray());
                    Console.WriteLine(new JsonObject { ["service"] = false, ["reason"] = why, ["mounts"] = mounts }.ToJsonString(JsonOut));
                    return 0;
                }
                Console.WriteLine($"no Cow service ({why})");
                var t = new Table().AddColumn("pool").AddColumn("mount point").AddColumn("cleaner");
                foreach (var m in rows) t.AddRow(Markup.Escape(m.Source), Markup.Escape(m.MountPoint), Markup.Escape(CleanerReport.Cell(m.Cleaner)));
                AnsiConsole.Write(t);
                foreach (var m in rows.Where(m => m.Cleaner != null))
                    foreach (var line in CleanerReport.StatusLines(m.Cleaner!)) Console.WriteLine($"{m.MountPoint}: {line}");
                foreach (var m in rows.Where(m => m.Purges > 0))
                    Console.WriteLine($"{m.MountPoint}: {m.Purges} deleted snapshot(s) being purged (their space is freed when it ends; cow snapshot delete --wait waits for it)");
                return 0;
            }
            return ServiceResult(c.Request(new JsonObject { ["verb"] = "status" }), r =>
            {
                if (j)
                {
                    var doc = new JsonObject { ["service"] = true };
                    foreach (var (k, v) in r.ToList()) if (k != "ok") { r.Remove(k); doc[k] = v; }
                    Console.WriteLine(doc.ToJsonString(JsonOut));
                    return 0;
                }
                Console.WriteLine($"Cow service pid {(int?)r["pid"]}, up {TimeSpan.FromSeconds((long?)r["uptimeSeconds"] ?? 0)}, control socket {(string?)r["socket"]}");
                var t = new Table().AddColumn("pool").AddColumn("path").AddColumn("mount point").AddColumn("mounted").AddColumn("options").AddColumn("cleaner");
                var pools = ((JsonArray)r["pools"]!).OfType<JsonObject>().ToList();
                foreach (var p in pools)
                {
                    var cleaner = p["cleaner"] as JsonObject;
                    var opts = $"threads={(int?)p["threads"]} iomap={(string?)p["iomap"]}"
                        + ((bool?)p["writebackCache"] == true ? " writeback-cache" : "") + ((bool?)p["pageCache"] == true ? " page-cache" : "")
                        + ((bool?)p["showSnapshots"] == true ? " show-snapshots" : "") + (p["allowOther"] is { } ao ? $" allow-other={((bool)ao ? "yes" : "no")}" : "")
                        + (cleaner == null ? "" : cleaner["settings"] is JsonObject cs
                            ? $" cleaner={CleanerOptions.Num((double?)cs["start_percent"] ?? 0)}..{CleanerOptions.Num((double?)cs["stop_percent"] ?? 0)}%/{CleanerOptions.Num((double?)cs["share"] ?? 0)}"
                            : " cleaner=off");
                    t.AddRow(Markup.Escape((string?)p["name"] ?? ""), Markup.Escape((string?)p["path"] ?? ""), Markup.Escape((string?)p["mountpoint"] ?? ""),
                        (bool?)p["mounted"] == true ? "yes" : "no", Markup.Escape(opts), Markup.Escape(CleanerReport.Cell(cleaner)));
                }
                AnsiConsole.Write(t);
                foreach (var p in pools.Where(p => p["cleaner"] is JsonObject))
                    foreach (var line in CleanerReport.StatusLines((JsonObject)p["cleaner"]!)) Console.WriteLine($"{(string?)p["name"]}: {line}");
                foreach (var p in pools.Where(p => (int?)p["purgesPending"] > 0))
                    Console.WriteLine($"{(string?)p["name"]}: {(int?)p["purgesPending"]} deleted snapshot(s) being purged (their space is freed when it ends; cow snapshot delete --wait waits for it)");
                return 0;
            });
        }));
        return cmd;
    }
}
