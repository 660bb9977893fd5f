using System.CommandLine;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Fuse.Mounting;
using Spectre.Console;

namespace Cow.Cli;

public static partial class Program
{
    /// <summary>
    /// Runs <paramref name="body"/> through the control socket of a running <c>cow serve</c> when that service
    /// mounts <paramref name="poolOrMountPoint"/> (found by pool folder or mount point in its status). Null
    /// when no service serves it (no socket, not allowed, not one of its pools): the caller does what it
    /// does without a service.
    /// </summary>
    private static int? ViaService(string poolOrMountPoint, Func<ControlClient, JsonObject, int> body)
    {
        using var c = ControlClient.TryConnect(ControlClient.SocketPath, out _);
        if (c == null) return null;
        JsonObject status;
        try { status = c.Request(new JsonObject { ["verb"] = "status" }); }
        catch (IOException) { return null; }
        if (status["ok"]?.GetValue<bool>() != true) return null;
        var pool = ControlClient.FindServedPool(status, poolOrMountPoint);
        return pool == null ? null : body(c, pool);
    }

    private static int ServiceResult(JsonObject r, Func<JsonObject, int> ok)
        => r["ok"]?.GetValue<bool>() == true ? ok(r) : Fail($"{(string?)r["message"]} ({(string?)r["error"]})");

    private static int? SnapshotViaService(string poolOrMountPoint, string name, bool create) => ViaService(poolOrMountPoint, (c, p) =>
        ServiceResult(c.Request(new JsonObject { ["verb"] = create ? "snapshot-create" : "snapshot-delete", ["pool"] = (string?)p["name"], ["name"] = name }), r =>
        {
            if (create) Console.WriteLine($"snapshot '{name}' of {(string?)r["mountpoint"]} (through the Cow service)");
            return 0;
        }));

    private static int? ListViaService(string poolOrMountPoint, bool json) => ViaService(poolOrMountPoint, (c, p) =>
        ServiceResult(c.Request(new JsonObject { ["verb"] = "snapshot-list", ["pool"] = (string?)p["name"] }), r =>
        {
            PrintSnapshotRows((JsonArray)r["details"]!.DeepClone(), json);
            if (json) return 0;
            Console.WriteLine($"(pool {(string?)p["name"]} served by the Cow service on {(string?)r["mountpoint"]})");
            return 0;
        }));

    /// <summary><c>cow control-request JSON...</c>: sends each argument as one raw request line to the service's
    /// control socket and prints each response line (scripts, debugging, tests). Exit 0 when every response
    /// has "ok":true, 1 otherwise.</summary>
    private static Command ControlRequestCommand()
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

    private static Command StatusCommand()
    {
        var json = new Option<bool>("--json") { Description = "one JSON object: {service: true, pid, uptimeSeconds, socket, pools: [...]} or {service: false, reason, mounts: [{pool, mountpoint}]}" };
        var cmd = new Command("status", "show the running Cow service (pools, mount points, mount options, pid, uptime) through its control socket ($COW_SOCKET or /run/cow/cow.sock); without a service, the Cow mounts of this machine") { json };
        cmd.SetAction(pr => Guard(() =>
        {
            bool j = pr.GetValue(json);
            using var c = ControlClient.TryConnect(ControlClient.SocketPath, out var why);
            if (c == null && j)
            {
                var mounts = new JsonArray(MountTable.Read().Where(m => m.IsCow).Select(m => (JsonNode)new JsonObject { ["pool"] = m.Source, ["mountpoint"] = m.MountPoint }).ToArray());
                Console.WriteLine(new JsonObject { ["service"] = false, ["reason"] = why, ["mounts"] = mounts }.ToJsonString(JsonOut));
                return 0;
            }
            if (c == null)
            {
                Console.WriteLine($"no Cow service ({why})");
                var t = new Table().AddColumn("pool").AddColumn("mount point");
                foreach (var m in MountTable.Read().Where(m => m.IsCow)) t.AddRow(Markup.Escape(m.Source), Markup.Escape(m.MountPoint));
                AnsiConsole.Write(t);
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
                var t = new Table().AddColumn("pool").AddColumn("path").AddColumn("mount point").AddColumn("mounted").AddColumn("options");
                foreach (var p in ((JsonArray)r["pools"]!).OfType<JsonObject>())
                {
                    var opts = $"threads={(int?)p["threads"]} iomap={(string?)p["iomap"]}"
                        + ((bool?)p["writebackCache"] == true ? " writeback-cache" : "") + ((bool?)p["pageCache"] == true ? " page-cache" : "")
                        + ((bool?)p["showSnapshots"] == true ? " show-snapshots" : "") + (p["allowOther"] is { } ao ? $" allow-other={((bool)ao ? "yes" : "no")}" : "");
                    t.AddRow(Markup.Escape((string?)p["name"] ?? ""), Markup.Escape((string?)p["path"] ?? ""), Markup.Escape((string?)p["mountpoint"] ?? ""),
                        (bool?)p["mounted"] == true ? "yes" : "no", Markup.Escape(opts));
                }
                AnsiConsole.Write(t);
                return 0;
            });
        }));
        return cmd;
    }
}
