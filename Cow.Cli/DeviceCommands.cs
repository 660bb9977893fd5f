using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Core;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Spectre.Console;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary>
/// <c>cow device add|remove|list</c>: devices joining and leaving a pool (<see cref="Pool.AddDevice(string, DeviceRole, long?, bool)"/>,
/// <see cref="Pool.RemoveDevice"/>), online or not. On a mounted pool the command runs in the process that mounted it,
/// through its control socket (<c>device-add</c>, <c>device-remove</c>, <c>device-list</c>); on an unmounted pool
/// here. Paths are made absolute here before they are sent (the server's working folder is not ours).
/// <c>remove</c> moves the device's data to the other devices first (refused, with the sizes, when it would not fit);
/// Ctrl-C (SIGINT, SIGTERM, SIGHUP) cancels it at the end of its batch as <c>cow clean</c> (through the socket:
/// <c>device-remove-cancel</c>): what moved is committed, the device stays marked removing and takes no new writes,
/// and <c>cow device remove</c> again, or the background cleaner of a mount, finishes it; a second Ctrl-C ends the
/// command at once. Exit codes: 0 done, 1 refused or not finished (the message says why), 2 bad usage.
/// Stateless: thread-safe.
/// </summary>
internal static class DeviceCommands
{
    /// <summary>Said the first time a pool's devices change (format.md 9, "Versions").</summary>
    internal const string FormatNote = "this change upgraded the pool to format version 3; cow builds before this one cannot open it";

    /// <summary>How often a removal's progress is written to standard error when stdout is not a terminal.</summary>
    private static readonly TimeSpan ProgressLineEvery = TimeSpan.FromSeconds(5);

    internal static Command Create()
    {
        var cmd = new Command("device", "add devices to a pool and remove them, online (through the process that mounts it) or not; list them");
        cmd.Subcommands.Add(Add());
        cmd.Subcommands.Add(Remove());
        cmd.Subcommands.Add(List());
        return cmd;
    }

    /// <summary>A device's state as <c>cow device list</c> shows it.</summary>
    internal static string StateName(DeviceState s) => s == DeviceState.Removing ? "removing" : "in service";

    /// <summary>One row of <c>cow device list --json</c> (and of the control socket's <c>device-list</c>).</summary>
    internal static JsonObject Row(PoolDevice d, DeviceUsage u, long blockSize) => new()
    {
        ["cookie"] = (long)d.Cookie, ["role"] = d.Role.ToString().ToLowerInvariant(), ["state"] = StateName(d.State), ["path"] = d.Path,
        ["size_bytes"] = d.SizeBytes, ["used_bytes"] = u.UsedBlocks * blockSize, ["free_bytes"] = u.FreeBlocks * blockSize,
        ["takes_new_writes"] = u.TakesNewWrites,
    };

    /// <summary><c>cow device list --json</c>: every device of the pool, by cookie (<see cref="Row"/>).</summary>
    internal static JsonArray ListDocument(Pool pool)
    {
        var usage = pool.DeviceUsage().ToDictionary(u => u.Cookie);
        long bs = pool.BlockSize;
        return new JsonArray(pool.Devices.Select(d => (JsonNode)Row(d, usage.GetValueOrDefault(d.Cookie), bs)).ToArray());
    }

    /// <summary>Adds the device at <paramref name="fullPath"/> (absolute) and answers with <c>cow device add --json</c>'s
    /// document: its row (<see cref="Row"/>), "created" (a new image file was made), "format_version" (the pool's, now 3)
    /// and "note" (<see cref="FormatNote"/> when this add upgraded the pool from version 1 or 2, else null). Throws <see cref="DeviceOperationException"/> when refused.</summary>
    internal static JsonObject AddDocument(Pool pool, string fullPath, DeviceRole role, long? size, bool force)
    {
        bool first = pool.FormatVersion < (int)FormatConstants.FormatVersion;
        bool created = !File.Exists(fullPath) && !Directory.Exists(fullPath) && !fullPath.StartsWith("/dev/", StringComparison.Ordinal);
        var d = pool.AddDevice(fullPath, role, size, force);
        var doc = Row(d, pool.DeviceUsage().FirstOrDefault(u => u.Cookie == d.Cookie), pool.BlockSize);
        doc["created"] = created;
        doc["format_version"] = pool.FormatVersion;
        doc["note"] = first ? FormatNote : null;
        return doc;
    }

    /// <summary><c>cow device remove --json</c>'s document of a removal.</summary>
    internal static JsonObject RemovalDocument(DeviceRemoval r, long blockSize) => new()
    {
        ["cookie"] = (long)r.Device.Cookie, ["role"] = r.Device.Role.ToString().ToLowerInvariant(), ["path"] = r.Device.Path,
        ["size_bytes"] = r.Device.SizeBytes, ["stop"] = r.Stop, ["removed"] = r.Stop == "removed",
        ["blocks_moved"] = r.BlocksMoved, ["bytes_moved"] = r.BlocksMoved * blockSize, ["blocks_left"] = r.BlocksLeft,
        ["bytes_left"] = r.BlocksLeft * blockSize, ["seconds"] = Math.Round(r.Seconds, 3), ["block_size"] = blockSize,
    };

    /// <summary>The device argument of <c>remove</c> as it is sent: a cookie as given, a path made absolute.</summary>
    internal static string DeviceArgument(string arg) => uint.TryParse(arg, out _) ? arg : Path.GetFullPath(arg);

    /// <summary>The role named by --role, or null.</summary>
    internal static DeviceRole? RoleOf(string? text) => text switch
    {
        "log" => DeviceRole.Log,
        "base" => DeviceRole.Base,
        _ => null,
    };

    /// <summary>Runs a command body, turning a refused device operation into its message and exit code 1.</summary>
    private static int GuardDevice(Func<int> body) => Guard(() =>
    {
        try { return body(); }
        catch (DeviceOperationException e) { return Fail(e.Message); }
    });

    /// <summary>The answer of a control-socket request: "cow: MESSAGE (ERRNO)" and exit 1 when it is an error.</summary>
    private static int Answer(JsonObject resp, Func<JsonObject, int> ok)
    {
        if (resp["ok"]?.GetValue<bool>() == true) return ok(resp);
        return Fail($"{(string?)resp["message"]} ({(string?)resp["error"]})");
    }

    private static void PrintJson(JsonNode doc) => Console.WriteLine(doc.ToJsonString(JsonOut));

    private static Command Add()
    {
        var path = new Argument<string>("path") { Description = "block device or image file to add (an image file is made when it does not exist and --size is given)" };
        var role = new Option<string?>("--role") { Description = "log (takes new writes first) or base (takes what the cleaner moves off the logs, and new writes when no log has room)" };
        var size = new Option<string?>("--size") { Description = "size of a new image file (e.g. 512M, 4G); an existing file or block device is used whole" };
        var force = new Option<bool>("--force") { Description = "add a device that holds another Cow pool's device (destroys that pool's device)" };
        var json = new Option<bool>("--json") { Description = "one JSON object {cookie, role, state, path, size_bytes, used_bytes, free_bytes, takes_new_writes, created, format_version, note}" };
        var cmd = new Command("add", "add a device to the pool (online or not): it takes data at once; the pool becomes format version 2") { PoolArg, path, role, size, force, json };
        cmd.SetAction(r => GuardDevice(() =>
        {
            var roleText = r.GetValue(role);
            if (roleText == null) return Usage("cow device add needs --role log or --role base");
            if (RoleOf(roleText) is not { } devRole) return Usage($"--role must be log or base, not '{roleText}'");
            long? bytes = null;
            if (r.GetValue(size) is { } sizeText)
            {
                try { bytes = PoolCommands.ParseSize(sizeText); }
                catch (FormatException e) { return Usage($"--size: {e.Message}"); }
            }
            var full = Path.GetFullPath(r.GetValue(path)!);
            bool asJson = r.GetValue(json);
            int Print(JsonObject doc, string? via)
            {
                if (asJson)
                {
                    foreach (var k in new[] { "ok", "pool", "mountpoint" }) doc.Remove(k);
                    PrintJson(doc);
                    return 0;
                }
                long cookie = (long)doc["cookie"]!;
                var roleName = (string?)doc["role"];
                Console.WriteLine($"added device {cookie} ({roleName}, {Bytes((long)doc["size_bytes"]!)}): {(string?)doc["path"]}"
                                  + ((bool?)doc["created"] == true ? " (a new image file)" : ""));
                Console.WriteLine(roleName == "log"
                    ? "it takes new writes from now on, beside the other logs"
                    : "it takes what the cleaner moves off the logs from now on, and new writes when no log has room");
                if ((bool?)doc["created"] != true && bytes != null) Console.WriteLine($"(--size applies to new image files only: {(string?)doc["path"]} existed and is used whole)");
                if ((string?)doc["note"] is { } note) Console.WriteLine(note);
                if (via != null) Console.WriteLine($"(through {via})");
                return 0;
            }

            var poolArg = PoolOf(r);
            var viaService = ViaService(poolArg, (c, p) =>
            {
                var req = new JsonObject { ["verb"] = "device-add", ["pool"] = (string?)p["name"], ["path"] = full, ["role"] = roleText, ["force"] = r.GetValue(force) };
                if (bytes != null) req["size"] = bytes;
                return Answer(Busy($"adding {full} through {(string?)p["via"]}", () => c.Request(req)), resp => Print(resp, (string?)p["via"]));
            });
            if (viaService is int rc) return rc;
            using var pool = OpenUnmounted(poolArg, "cow device add", "the process that mounts it has to add the device", viaService: true);
            return Print(Busy($"adding {full}", () => AddDocument(pool, full, devRole, bytes, r.GetValue(force))), null);
        }));
        return cmd;
    }

    private static Command Remove()
    {
        var device = new Argument<string>("device") { Description = "the device's cookie (cow device list shows them) or its path" };
        var json = new Option<bool>("--json") { Description = "one JSON object {cookie, role, path, size_bytes, stop, removed, blocks_moved, bytes_moved, blocks_left, bytes_left, seconds, block_size}" };
        var cmd = new Command("remove", "remove a device from the pool (online or not): its data is moved to the other devices first (refused when it would not fit); "
            + "Ctrl-C stops at the end of a batch, and the removal is carried on by cow device remove again or by a mount's background cleaner") { PoolArg, device, json };
        cmd.SetAction(r => GuardDevice(() =>
        {
            var arg = r.GetValue(device)!;
            if (arg.Length == 0) return Usage("the device to remove is a cookie (cow device list shows them) or a path, not ''");
            var dev = DeviceArgument(arg);
            bool asJson = r.GetValue(json);
            var poolText = r.GetValue(PoolArg)!;
            int Print(JsonObject doc, string? via, bool? backgroundCleaner)
            {
                if (asJson)
                {
                    foreach (var k in new[] { "ok", "pool", "mountpoint", "background_cleaner" }) doc.Remove(k);
                    PrintJson(doc);
                }
                else
                {
                    foreach (var line in RemovalLines(doc, poolText, backgroundCleaner)) Console.WriteLine(line);
                    if (via != null) Console.WriteLine($"(through {via})");
                }
                var stop = (string?)doc["stop"];
                return stop == "removed" ? 0 : Fail($"the removal of device {(long)doc["cookie"]!} did not finish: {stop}");
            }

            var poolArg = PoolOf(r);
            var viaService = ViaService(poolArg, (c, p) =>
            {
                var name = (string?)p["name"];
                var resp = Busy($"removing device {arg}", report =>
                {
                    using var watch = new RemovalWatch(c.SocketFile, name, dev, report);
                    return RequestCancellable(c, new JsonObject { ["verb"] = "device-remove", ["pool"] = name, ["device"] = dev }, "device-remove-cancel", name,
                        "cancelling the removal at the end of its batch");
                }, ProgressLineEvery);
                return Answer(resp, doc => Print(doc, (string?)p["via"], (bool?)doc["background_cleaner"]));
            });
            if (viaService is int rc) return rc;

            using var pool = OpenUnmounted(poolArg, "cow device remove", "the process that mounts it has to remove the device", viaService: true);
            using var cts = new CancellationTokenSource();
            using var signals = CancelOnFirstSignal(cts);
            long bs = pool.BlockSize;
            var removal = Busy($"removing device {arg}",
                report => pool.RemoveDevice(dev, 1, pr => report($"{Bytes(pr.BlocksMoved * bs)} moved, {Bytes(pr.BlocksLeft * bs)} left"), cts.Token),
                ProgressLineEvery);
            return Print(RemovalDocument(removal, bs), null, null);
        }));
        return cmd;
    }

    /// <summary>The report of a removal for a reader, from its document (<see cref="RemovalDocument"/>).
    /// <paramref name="backgroundCleaner"/>: whether the mount that ran it has a background cleaner (null: it ran on
    /// an unmounted pool).</summary>
    internal static IEnumerable<string> RemovalLines(JsonObject doc, string poolArg, bool? backgroundCleaner)
    {
        long cookie = (long)doc["cookie"]!, moved = (long)doc["blocks_moved"]!, left = (long)doc["blocks_left"]!;
        long movedBytes = (long)doc["bytes_moved"]!, leftBytes = (long)doc["bytes_left"]!;
        double seconds = (double)doc["seconds"]!;
        var stop = (string?)doc["stop"];
        var what = $"device {cookie} ({(string?)doc["role"]}, {Bytes((long)doc["size_bytes"]!)}, {(string?)doc["path"]})";
        var movedText = $"moved {Bytes(movedBytes)} ({moved:N0} blocks) to the other devices in {seconds:0.0} s";
        if (stop == "removed")
        {
            yield return $"removed {what} from the pool: {movedText}";
            yield return "its Cow superblock is wiped; the file or block device itself is left as it is";
            yield break;
        }
        yield return $"the removal of {what} stopped: {StopText(stop)}";
        yield return $"{movedText}; {Bytes(leftBytes)} ({left:N0} blocks) still on it";
        yield return "it stays marked removing and takes no new writes; what moved is committed";
        var again = $"'cow device remove {poolArg} {cookie}'";
        yield return stop switch
        {
            "no room" => $"free space or add a device (cow device add), then {again} carries the removal on",
            "frozen" => $"thaw the pool (fsfreeze -u), then {again} carries the removal on",
            _ => backgroundCleaner switch
            {
                true => $"the mount's background cleaner carries the removal on at its share of the time; {again} finishes it at full speed",
                false => $"{again} finishes it (the mount's background cleaner is off)",
                null => $"{again} finishes it, and so does the background cleaner of a mount of the pool",
            },
        };
    }

    private static string StopText(string? stop) => stop switch
    {
        "cancelled" => "cancelled",
        "no room" => "no room: the other devices filled up meanwhile",
        "frozen" => "the pool is frozen (fsfreeze)",
        _ => stop ?? "",
    };

    private static Command List()
    {
        var json = new Option<bool>("--json") { Description = "a JSON array [{cookie, role, state, path, size_bytes, used_bytes, free_bytes, takes_new_writes}]" };
        var cmd = new Command("list", "the pool's devices: cookie, role, state (in service, removing), size, used and free space, path "
            + "(on a mounted pool through the process that mounted it)") { PoolArg, json };
        cmd.SetAction(r => GuardDevice(() =>
        {
            int Print(JsonArray devices, string? via)
            {
                if (r.GetValue(json))
                {
                    PrintJson(devices);
                    return 0;
                }
                var table = new Table().AddColumn("device").AddColumn("role").AddColumn("state")
                    .AddColumn(new TableColumn("size").RightAligned()).AddColumn(new TableColumn("used").RightAligned())
                    .AddColumn(new TableColumn("free").RightAligned()).AddColumn("path");
                foreach (var d in devices.OfType<JsonObject>())
                    table.AddRow(((long)d["cookie"]!).ToString(), Markup.Escape((string?)d["role"] ?? ""), Markup.Escape((string?)d["state"] ?? ""),
                        Bytes((long)d["size_bytes"]!), Bytes((long)d["used_bytes"]!), Bytes((long)d["free_bytes"]!), Markup.Escape((string?)d["path"] ?? ""));
                AnsiConsole.Write(table);
                if (devices.OfType<JsonObject>().Any(d => (string?)d["state"] == "removing"))
                    Console.WriteLine("a device being removed takes no new writes; cow device remove, or the background cleaner of a mount, moves the rest of its data");
                if (via != null) Console.WriteLine($"(through {via})");
                return 0;
            }
            var poolArg = PoolOf(r);
            var viaService = ViaService(poolArg, (c, p) =>
                Answer(c.Request(new JsonObject { ["verb"] = "device-list", ["pool"] = (string?)p["name"] }), resp =>
                    Print((JsonArray?)resp["devices"]?.DeepClone() ?? [], (string?)p["via"])));
            if (viaService is int rc) return rc;
            using var pool = OpenUnmounted(poolArg, "cow device list", "cow df MP lists the devices too", viaService: true);
            return Print(ListDocument(pool), null);
        }));
        return cmd;
    }

    /// <summary>Shows how a removal running in a server goes: asks for <c>device-list</c> every second, on a
    /// connection of its own made for that request (an open connection holds a thread of the server), and reports
    /// what is left on the device (the answer to <c>device-remove</c> comes only at its end). Ends when disposed.</summary>
    private sealed class RemovalWatch : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Thread _thread;

        public RemovalWatch(string socket, string? pool, string device, Action<string> report)
        {
            _thread = new Thread(() =>
            {
                try
                {
                    long? first = null;
                    while (!_stop.Token.WaitHandle.WaitOne(TimeSpan.FromSeconds(1)))
                    {
                        using var c = ControlClient.TryConnect(socket, out _);
                        if (c == null) return;
                        var resp = c.Request(new JsonObject { ["verb"] = "device-list", ["pool"] = pool });
                        var row = (resp["devices"] as JsonArray)?.OfType<JsonObject>()
                            .FirstOrDefault(d => device == ((long?)d["cookie"])?.ToString() || device == (string?)d["path"]);
                        if (row == null) return;
                        long used = (long)row["used_bytes"]!;
                        first ??= used;
                        report($"{Bytes(Math.Max(0, first.Value - used))} moved, {Bytes(used)} left");
                    }
                }
                catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException) { }
            })
            { IsBackground = true, Name = "cow-device-remove-watch" };
            _thread.Start();
        }

        public void Dispose()
        {
            _stop.Cancel();
            _thread.Join(TimeSpan.FromSeconds(2));
        }
    }
}
