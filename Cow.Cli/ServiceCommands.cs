using System.CommandLine;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Fuse.Mounting;
using Spectre.Console;

namespace Cow.Cli;

public static partial class Program
{
    /// <summary>
    /// Runs <paramref name="body"/> through the control socket of the process that mounts
    /// <paramref name="poolOrMountPoint"/> (pool folder or mount point): a running <c>cow serve</c> that serves it
    /// (found by name, pool folder or mount point in its status), else the <c>cow mount</c> process holding the
    /// pool (<see cref="ViaMount"/>). <paramref name="body"/> gets the connection and the pool's row of the status,
    /// with "via" naming the process for messages. Null when neither serves it (unmounted, or mounted by a process
    /// without a control socket): the caller does what it does on an unmounted pool. A mount whose server died or
    /// whose control socket does not answer fails here with a message saying so (exit 1).
    /// </summary>
    private static int? ViaService(string poolOrMountPoint, Func<ControlClient, JsonObject, int> body)
    {
        using (var c = ControlClient.TryConnect(ControlClient.SocketPath, out _))
        {
            JsonObject? status = null;
            if (c != null) try { status = c.Request(new JsonObject { ["verb"] = "status" }); } catch (IOException) { }
            if (status?["ok"]?.GetValue<bool>() == true && ControlClient.FindServedPool(status, poolOrMountPoint) is { } pool)
            {
                pool["via"] = "the Cow service";
                return body(c!, pool);
            }
        }
        return ViaMount(poolOrMountPoint, body);
    }

    /// <summary>The <c>cow mount</c> part of <see cref="ViaService"/>: the mount point of the pool, the pid holding
    /// the pool's lock, and that process's control socket (<see cref="MountControl.SocketPath"/>).</summary>
    private static int? ViaMount(string poolOrMountPoint, Func<ControlClient, JsonObject, int> body)
    {
        if (MountedAt(poolOrMountPoint) is not { } mp || MountTable.Find(mp) is not { } entry) return null;
        var folder = entry.Source;
        var pid = LockHolder(Path.Combine(folder, Core.Pool.LockFile));
        if (pid == null && Mounter.IsDisconnected(mp))
            return Fail($"pool {folder} is mounted at {mp}, but no process serves it any more (its server died): 'cow umount {mp}' clears the mount; then 'cow fsck {folder}'");
        if (pid is null or < 0 || MountControl.ProcessUid(pid.Value) is not { } uid) return null;
        var socket = MountControl.SocketPath(pid.Value, uid);
        // No socket: not a cow mount with a control socket (e.g. a mount made in-process). One that is not the
        // server's own (another user's socket in its place) is not talked to either.
        if (Mono.Unix.Native.Syscall.lstat(socket, out var st) != 0) return null;
        if ((st.st_mode & Mono.Unix.Native.FilePermissions.S_IFMT) != Mono.Unix.Native.FilePermissions.S_IFSOCK || (st.st_uid != uid && st.st_uid != 0))
            return Fail($"pool {folder} is mounted at {mp} by process {pid}, but {socket} is not that process's control socket (owner uid {st.st_uid}); remove it, then mount the pool again");
        using var c = ControlClient.TryConnect(socket, out var why);
        if (c == null)
            return Fail($"pool {folder} is mounted at {mp} by process {pid}, but its control socket does not answer ({why}); if that process is stuck, 'cow umount {mp}' unmounts it");
        JsonObject status;
        try { status = c.Request(new JsonObject { ["verb"] = "status" }); }
        catch (IOException e) { return Fail($"pool {folder} is mounted at {mp} by process {pid}, but its control socket {socket} failed: {e.Message}"); }
        if (status["ok"]?.GetValue<bool>() != true) return Fail($"{(string?)status["message"]} ({(string?)status["error"]}; control socket {socket} of the cow mount of {mp})");
        if ((status["pools"] as JsonArray)?.OfType<JsonObject>().FirstOrDefault(p => p["mounted"]?.GetValue<bool>() == true) is not { } pool)
            return Fail($"pool {folder}: the cow mount process {pid} no longer serves {mp} (it is stopping)");
        pool["via"] = $"the cow mount process {pid}";
        return body(c, pool);
    }

    /// <summary>The configuration file that names the service's pools: <c>$COW_CONFIG</c>, else /etc/cow/cow.conf.</summary>
    internal static string ConfigFile => Environment.GetEnvironmentVariable("COW_CONFIG") is { Length: > 0 } f ? f : ServeCommand.DefaultConfig;

    /// <summary>The POOL argument of a command: a path (pool folder or mount point) as given; a bare word that is no
    /// folder here is looked up as a pool name of the running service, then of the configuration file
    /// (<see cref="ConfigFile"/>), and becomes that pool's folder. A name found in neither is refused with a
    /// message saying where it was looked for.</summary>
    private static string PoolOf(System.CommandLine.ParseResult r) => ResolvePool(r.GetValue(PoolArg)!);

    internal static string ResolvePool(string arg)
    {
        if (arg.Length == 0 || arg.Contains('/') || arg is "." or ".." || Directory.Exists(arg) || File.Exists(arg)) return arg;
        using (var c = ControlClient.TryConnect(ControlClient.SocketPath, out _))
        {
            JsonObject? status = null;
            if (c != null) try { status = c.Request(new JsonObject { ["verb"] = "status" }); } catch (IOException) { }
            if ((status?["pools"] as JsonArray)?.OfType<JsonObject>().FirstOrDefault(p => (string?)p["name"] == arg) is { } served && (string?)served["path"] is { } path)
                return path;
        }
        var file = ConfigFile;
        if (!File.Exists(file))
            throw new Core.PoolException($"'{arg}' is neither a pool folder nor the name of a pool: there is no folder {Path.GetFullPath(arg)}, no running Cow service names it, and there is no configuration file {file} ($COW_CONFIG)");
        var config = ServeConfig.Load(file, out var errors);
        if (config?.Pools.FirstOrDefault(p => p.Name == arg) is { } pc) return pc.Path;
        if (config == null)
            throw new Core.PoolException($"'{arg}' is not a pool folder, and the configuration file {file} that names pools has {errors.Count} error(s) (cow serve --check --config {file})");
        throw new Core.PoolException($"'{arg}' is neither a pool folder nor the name of a pool: there is no folder {Path.GetFullPath(arg)}, and neither the running Cow service nor {file} has a pool named '{arg}'"
                                     + (config.Pools.Count > 0 ? $" (its pools: {string.Join(", ", config.Pools.Select(p => p.Name))})" : ""));
    }

    private static int ServiceResult(JsonObject r, Func<JsonObject, int> ok)
        => r["ok"]?.GetValue<bool>() == true ? ok(r) : Fail($"{(string?)r["message"]} ({(string?)r["error"]})");

    private static int? SnapshotViaService(string poolOrMountPoint, string name, bool create) => ViaService(poolOrMountPoint, (c, p) =>
        ServiceResult(c.Request(new JsonObject { ["verb"] = create ? "snapshot-create" : "snapshot-delete", ["pool"] = (string?)p["name"], ["name"] = name }), r =>
        {
            if (create) Console.WriteLine($"snapshot '{name}' of {(string?)r["mountpoint"]} (through {(string?)p["via"]})");
            return 0;
        }));

    private static int? ListViaService(string poolOrMountPoint, bool json) => ViaService(poolOrMountPoint, (c, p) =>
        ServiceResult(c.Request(new JsonObject { ["verb"] = "snapshot-list", ["pool"] = (string?)p["name"] }), r =>
        {
            PrintSnapshotRows((JsonArray)r["details"]!.DeepClone(), json);
            if (json) return 0;
            Console.WriteLine($"(pool {(string?)p["name"]} served by {(string?)p["via"]} on {(string?)r["mountpoint"]})");
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
