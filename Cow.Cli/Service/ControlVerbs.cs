using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Mono.Unix.Native;

namespace Cow.Cli.Service;

/// <summary>The verbs of the control socket (<see cref="ControlProtocol"/>), the same for <c>cow serve</c> and for
/// <c>cow mount</c>: <see cref="Verbs"/> maps each verb to its handler, the one place to add a verb. Handlers
/// run on the connection's thread; they reach pools only through <see cref="PoolMounts"/> (thread-safe).</summary>
public sealed partial class ControlServer
{
    /// <summary>One verb: the request (a JSON object, "verb" already read), the caller's uid and the connection
    /// (null when not on a socket: tests) to the response.</summary>
    internal delegate JsonObject VerbHandler(ControlServer server, JsonObject request, uint uid, Socket? peer);

    /// <summary>Every verb, in the order the error messages list them.</summary>
    internal static readonly IReadOnlyList<KeyValuePair<string, VerbHandler>> Verbs =
    [
        new("status", (s, _, _, _) => s.Status()),
        new("snapshot-create", (s, r, u, _) => s.CreateDeleteOrList("snapshot-create", r, u)),
        new("snapshot-list", (s, r, u, _) => s.CreateDeleteOrList("snapshot-list", r, u)),
        new("snapshot-delete", (s, r, u, _) => s.CreateDeleteOrList("snapshot-delete", r, u)),
        new("snapshot-hold", (s, r, u, _) => s.SnapshotOp("snapshot-hold", r, u)),
        new("snapshot-release", (s, r, u, _) => s.SnapshotOp("snapshot-release", r, u)),
        new("snapshot-diff", (s, r, u, _) => s.SnapshotOp("snapshot-diff", r, u)),
        new("snapshot-clone", (s, r, u, _) => s.SnapshotOp("snapshot-clone", r, u)),
        new("snapshot-restore", (s, r, u, _) => s.SnapshotOp("snapshot-restore", r, u)),
        new("snapshot-rollback", (s, r, u, _) => s.SnapshotOp("snapshot-rollback", r, u)),
        new("df", (s, r, _, _) => s.Df(r)),
        new("clean", (s, r, u, peer) => s.Clean(r, u, peer)),
        new("clean-cancel", (s, r, u, _) => s.CleanCancel(r, u)),
        new("scrub", (s, r, u, peer) => s.Scrub(r, u, peer)),
        new("scrub-cancel", (s, r, _, _) => s.ScrubCancel(r)),
        new("device-add", (s, r, u, _) => s.DeviceAdd(r, u)),
        new("device-remove", (s, r, u, peer) => s.DeviceRemove(r, u, peer)),
        new("device-remove-cancel", (s, r, u, _) => s.DeviceRemoveCancel(r, u)),
        new("device-list", (s, r, _, _) => s.DeviceList(r)),
        new("send", (s, r, u, _) => s.SendVerb(r, u)),
        new("receive", (s, r, u, _) => s.ReceiveVerb(r, u)),
        new("receive-finish", (s, r, u, _) => s.PendingReceiveVerb("receive-finish", r, u)),
        new("receive-token", (s, r, u, _) => s.PendingReceiveVerb("receive-token", r, u)),
        new("receive-abort", (s, r, u, _) => s.PendingReceiveVerb("receive-abort", r, u)),
    ];

    private static readonly string VerbList = string.Join(", ", Verbs.Select(v => v.Key));

    /// <summary>Answers one request line (already permission-checked).</summary>
    internal JsonObject Handle(string line, uint uid, Socket? peer = null)
    {
        JsonObject req;
        try
        {
            // Duplicate names and strings that are not valid UTF-16 (escaped lone surrogates) are refused here:
            // JsonObject and JsonValue would otherwise throw on first use, deep inside a verb.
            if (LoneSurrogateString(line) is { } where)
                return ControlProtocol.Error("EINVAL", $"malformed JSON request: the string at byte {where} is not valid Unicode (an escaped lone surrogate)");
            var node = JsonNode.Parse(line, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
            if (node is not JsonObject o) return ControlProtocol.Error("EINVAL", "a request must be a JSON object such as {\"verb\":\"status\"}");
            req = o;
        }
        catch (JsonException e) { return ControlProtocol.Error("EINVAL", $"malformed JSON request: {e.Message}"); }
        string? verb = Str(req, "verb", out var bad);
        if (bad != null) return bad;
        if (verb == null) return ControlProtocol.Error("EINVAL", $"the request has no \"verb\" ({VerbList})");
        foreach (var (name, handler) in Verbs)
            if (name == verb) return handler(this, req, uid, peer);
        return ControlProtocol.Error("EINVAL", $"unknown verb '{verb}' ({VerbList})");
    }

    /// <summary>The mounted pool a request names in "pool" (name, pool folder or mount point), or the error response.</summary>
    private ServedPool? RequestedPool(string verb, JsonObject req, out JsonObject? error)
    {
        var poolName = Str(req, "pool", out error);
        if (error != null) return null;
        if (poolName == null) { error = ControlProtocol.Error("EINVAL", $"{verb} needs \"pool\" (a pool name, pool folder or mount point)"); return null; }
        var p = _mounts.Find(poolName);
        if (p == null || !p.Mounted) { error = NotServed(poolName); return null; }
        return p;
    }

    private JsonObject CreateDeleteOrList(string verb, JsonObject req, uint uid)
    {
        var p = RequestedPool(verb, req, out var bad);
        if (p == null) return bad!;
        if (verb == "snapshot-list")
        {
            var rows = _mounts.WithPool(p.Config.Name, pool => SnapshotOpsCore.SnapshotRows(pool, includeLive: false));
            if (rows == null) return NotServed(p.Config.Name);
            var names = rows.OfType<JsonObject>().Select(r => (JsonNode)JsonValue.Create((string)r["name"]!)!).ToArray();
            return new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["mountpoint"] = p.Config.MountPoint, ["snapshots"] = new JsonArray(names), ["details"] = rows };
        }
        var name = Str(req, "name", out bad);
        if (bad != null) return bad;
        if (name == null) return ControlProtocol.Error("EINVAL", $"{verb} needs \"name\" (the snapshot name)");
        if (Core.PoolSnapshots.NameProblem(name) is { } problem) return ControlProtocol.Error("EINVAL", problem);
        if (verb == "snapshot-create" && req["properties"] is { } props)   // cow snapshot wrap: pre/post properties
            return ServiceSnapshots.HandleCreateWithProperties(_mounts, p.Config, name, props, uid, _log);
        Errno code;
        string? message;
        if (p.Snapshot != null)
        {
            // A read-only snapshot mount has no .snapshots to mkdir in, and nothing unflushed to sync: the engine.
            (code, message) = (Errno.ENOENT, NotServed(p.Config.Name)["message"]!.ToString());
            if (verb == "snapshot-delete" && name == p.Snapshot)
                return ControlProtocol.Error("EBUSY", $"snapshot '{name}' is what {p.Config.MountPoint} shows (mounted read-only): unmount it first");
            _mounts.Use(p.Config.Name, (pool, _) => (code, message) = EngineCreateOrDelete(pool, verb == "snapshot-create", name));
        }
        else (code, message) = MountedSnapshots.SnapshotOnMount(p.Config.MountPoint, name, create: verb == "snapshot-create");
        if (code == Errno.EBUSY && verb == "snapshot-delete")
            message = _mounts.WithPool(p.Config.Name, pool => SnapshotCommands.HeldMessage(pool, name)) ?? message;   // name the holds
        if (code != 0) return ControlProtocol.Error(code.ToString(), message!);
        _log.LogInformation("control socket: {Verb} {Name} on pool {Pool} (uid {Uid})", verb, name, p.Config.Name, uid);
        var ok = new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["mountpoint"] = p.Config.MountPoint, ["snapshot"] = name };
        if (verb == "snapshot-delete" && req["wait"] is JsonValue w && w.TryGetValue<bool>(out bool waitForPurge) && waitForPurge)
        {
            // The mount purges in the background; the pool is looked up under its use lock but waited on outside it, so
            // that the pool's other verbs go on meanwhile. A close ends the wait (the purge stays pending).
            var pool = _mounts.WithPool(p.Config.Name, pool => pool);
            if (pool != null && !pool.WaitForPurges(Timeout.InfiniteTimeSpan))
                return ControlProtocol.Error("EIO", $"snapshot '{name}' was deleted, but its space was not freed: the pool failed or was closed while its records were purged ({pool.PendingPurges} purge(s) left; the next mount finishes them)");
        }
        return ok;
    }

    private static (Errno, string?) EngineCreateOrDelete(Core.Pool pool, bool create, string name)
    {
        if (create)
        {
            var c = ServiceSnapshots.Create(pool, null, name, new Dictionary<string, string>(), suffixOnCollision: false);
            return (c.Code, c.Message);
        }
        var e = pool.Snapshots.Delete(name);
        return e switch
        {
            0 => (0, null),
            Errno.ENOENT => (e, $"no snapshot named '{name}'"),
            _ => (e, $"snapshot delete {name}: {e} ({Syscall.strerror(e)})"),
        };
    }

    private JsonObject Df(JsonObject req)
    {
        var p = RequestedPool("df", req, out var bad);
        if (p == null) return bad!;
        var doc = _mounts.WithPool(p.Config.Name, SnapshotOpsCore.DfDocument);
        if (doc == null) return NotServed(p.Config.Name);
        doc["ok"] = true; doc["pool"] = p.Config.Name; doc["mountpoint"] = p.Config.MountPoint;
        return doc;
    }

    /// <summary><c>clean</c>: a cleaning pass now on the mounted pool (<see cref="PoolMounts.Clean"/>), until
    /// "until" percent of the log is free (a number from 0 to 100, default 100). It ends early when the client
    /// closes its connection or a <c>clean-cancel</c> request names the pool (it then reports "cancelled").
    /// The answer is cow clean's document (<see cref="CleanerReport.CleanDocument"/>).</summary>
    private JsonObject Clean(JsonObject req, uint uid, Socket? peer)
    {
        var p = RequestedPool("clean", req, out var bad);
        if (p == null) return bad!;
        double until = 100;
        if (req["until"] is { } un && !(un is JsonValue uv && uv.TryGetValue(out until) && double.IsFinite(until) && until is >= 0 and <= 100))
            return ControlProtocol.Error("EINVAL", "\"until\" must be a number from 0 to 100 (the percentage of the log to be free)");
        using var hangUp = new HangUpWatch(peer);
        var r = _mounts.Clean(p.Config.Name, until, hangUp.Token);
        if (r is not { } done) return NotServed(p.Config.Name);
        _log.LogInformation("control socket: clean on pool {Pool} (uid {Uid}): {Blocks} blocks moved, {Segments} segments cleaned in {Seconds:0.0} s; stopped: {Stop}",
            p.Config.Name, uid, done.Pass.BlocksMoved, done.Pass.SegmentsCleaned, done.Pass.Seconds, done.Pass.Stop);
        var doc = CleanerReport.CleanDocument(until, done.Before, done.Pass, done.BlockSize);
        doc["ok"] = true; doc["pool"] = p.Config.Name; doc["mountpoint"] = p.Config.MountPoint;
        return doc;
    }

    /// <summary><c>clean-cancel</c>: cancels the <c>clean</c> passes running on the pool ("cancelled": how many).</summary>
    private JsonObject CleanCancel(JsonObject req, uint uid)
    {
        var p = RequestedPool("clean-cancel", req, out var bad);
        if (p == null) return bad!;
        int n = _mounts.CancelCleans(p.Config.Name);
        if (n > 0) _log.LogInformation("control socket: clean-cancel on pool {Pool} (uid {Uid}): {Count} pass(es) cancelled", p.Config.Name, uid, n);
        return new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["mountpoint"] = p.Config.MountPoint, ["cancelled"] = n };
    }

    /// <summary>A token cancelled when the client of a connection hangs up (closes it, or its process ends) while a
    /// long request runs: a thread polls the socket for POLLHUP every 100 ms until disposed. A client that only
    /// ends its sending side (shutdown) is not taken for gone: it still reads the answer.</summary>
    private sealed class HangUpWatch : IDisposable
    {
        private readonly CancellationTokenSource _cts = new();
        private volatile bool _done;

        public CancellationToken Token => _cts.Token;

        public HangUpWatch(Socket? peer)
        {
            if (peer == null) return;
            int fd = (int)peer.Handle;
            new Thread(() =>
            {
                var fds = new[] { new Pollfd { fd = fd, events = 0 } };
                while (!_done)
                {
                    if (Syscall.poll(fds, 100) > 0 && (fds[0].revents & (PollEvents.POLLHUP | PollEvents.POLLERR | PollEvents.POLLNVAL)) != 0)
                    {
                        if (!_done) _cts.Cancel();
                        return;
                    }
                }
            })
            { IsBackground = true, Name = "cow-control-hangup" }.Start();
        }

        /// <summary>Ends the watch (its thread stops within 100 ms; the token is left to the collector, since the
        /// thread may still be looking at it).</summary>
        public void Dispose() => _done = true;
    }

    private JsonObject NotServed(string poolName) => ControlProtocol.Error("ENOENT", _endpoint.Server == "mount"
        ? $"this cow mount serves no mounted pool '{poolName}' (the status request names its pool)"
        : $"this service serves no mounted pool '{poolName}' (the status request lists them)");

    /// <summary>hold/release/diff/clone/restore on the mounted pool's engine; rollback with the pool unmounted for the
    /// time of it (<see cref="PoolMounts.WithPoolUnmounted{T}"/>).</summary>
    private JsonObject SnapshotOp(string verb, JsonObject req, uint uid)
    {
        string? Need(string key, out JsonObject? err)
        {
            var v = Str(req, key, out err);
            if (err == null && v == null) err = ControlProtocol.Error("EINVAL", $"{verb} needs \"{key}\"");
            return v;
        }
        var poolName = Need("pool", out var bad); if (bad != null) return bad;
        var name = Need("name", out bad); if (bad != null) return bad;
        if (Core.PoolSnapshots.NameProblem(name!) is { } problem) return ControlProtocol.Error("EINVAL", problem);
        var p = _mounts.Find(poolName!);
        if (p == null || !p.Mounted) return NotServed(poolName!);
        var label = p.Config.Name;
        OpResult? r;
        switch (verb)
        {
            case "snapshot-hold":
            case "snapshot-release":
            {
                var tag = Need("tag", out bad); if (bad != null) return bad;
                r = _mounts.WithPool(label, pool => verb == "snapshot-hold" ? SnapshotOpsCore.Hold(pool, label, name!, tag!) : SnapshotOpsCore.Release(pool, label, name!, tag!));
                break;
            }
            case "snapshot-diff":
            {
                var to = Str(req, "to", out bad); if (bad != null) return bad;
                bool ranges = false;
                if (req["ranges"] is { } rn && !(rn is JsonValue rv && rv.TryGetValue(out ranges)))
                    return ControlProtocol.Error("EINVAL", "\"ranges\" must be true or false");
                r = _mounts.WithPool(label, pool => SnapshotOpsCore.Diff(pool, label, name!, to, ranges));
                break;
            }
            case "snapshot-clone":
            {
                var dest = Need("destination", out bad); if (bad != null) return bad;
                var from = Str(req, "from", out bad) ?? "/"; if (bad != null) return bad;
                if ((SnapshotOpsCore.CloneDestinationProblem(dest!) ?? SnapshotOpsCore.PoolPathProblem(from, "from")) is { } dp) return ControlProtocol.Error("EINVAL", dp);
                r = _mounts.WithPool(label, pool => SnapshotOpsCore.Clone(pool, label, name!, dest!, from));
                break;
            }
            case "snapshot-restore":
            {
                // Restored entries and inodes reach the kernel as FUSE notifications (the mount's TreeChangeNotifier).
                if (!req.TryGetPropertyValue("paths", out var pn) || pn is not JsonArray arr || arr.Any(x => x is not JsonValue v || !v.TryGetValue<string>(out _)))
                    return ControlProtocol.Error("EINVAL", "snapshot-restore needs \"paths\": an array of paths in the pool");
                var paths = arr.Select(x => x!.GetValue<string>()).ToList();
                bool dryRun = false;
                if (req["dryRun"] is { } dn && !(dn is JsonValue dv && dv.TryGetValue(out dryRun)))
                    return ControlProtocol.Error("EINVAL", "\"dryRun\" must be true or false");
                if (SnapshotRestoreOps.PathsProblem(paths) is { } pp) return ControlProtocol.Error("EINVAL", pp);
                // Dirty pages the kernel holds (writeback cache) would be written back over the restored files when
                // it drops them: push them to the pool first, as a snapshot does.
                if (!dryRun && MountedSnapshots.SyncMount(p.Config.MountPoint, name!) is { } failed)
                    return ControlProtocol.Error(failed.Code.ToString(), $"snapshot restore {name}: syncfs of {p.Config.MountPoint} failed ({failed.Code}); nothing was restored");
                r = _mounts.WithPool(label, pool => SnapshotRestoreOps.Restore(pool, label, name!, paths, dryRun));
                break;
            }
            default:
                r = _mounts.WithPoolUnmounted(label, pool => SnapshotOpsCore.Rollback(pool, label, name!),
                    busy => OpResult.Failed(Errno.EBUSY, $"snapshot rollback {name} refused: {busy}"),
                    (done, why) => OpResult.Failed(Errno.EIO, (done.Code == 0 ? "rolled back, but " : done.Message + "; ") + why));
                break;
        }
        if (r == null) return NotServed(poolName!);
        if (r.Code != 0) return ControlProtocol.Error(r.Errno.ToString(), r.Message);
        _log.LogInformation("control socket: {Verb} {Name} on pool {Pool} (uid {Uid})", verb, name, label, uid);
        var resp = new JsonObject { ["ok"] = true, ["pool"] = label, ["mountpoint"] = p.Config.MountPoint, ["snapshot"] = name, ["message"] = r.Message };
        if (r.Data != null) resp["changes"] = r.Data;
        return resp;
    }

    /// <summary>The <c>cleaner</c> of a pool's status row: <see cref="CleanerReport.StatusObject"/> with the configured
    /// "settings" (null: off); null when the pool is not mounted.</summary>
    private static JsonObject? CleanerObject(ServedPool p)
    {
        if (p.Cleaner is not { } c) return null;
        var o = CleanerReport.StatusObject(c, p.BlockSize);
        o["settings"] = CleanerReport.SettingsObject(p.Config.Cleaner);
        return o;
    }

    /// <summary><c>status</c>: the server ("serve" or "mount"), its pid, uptime and socket, and every pool with its
    /// mount options.</summary>
    private JsonObject Status()
    {
        var pools = new JsonArray();
        foreach (var p in _mounts.Status(cleaner: true))
            pools.Add((JsonNode)new JsonObject
            {
                ["name"] = p.Config.Name, ["path"] = p.Config.Path, ["mountpoint"] = p.Config.MountPoint, ["mounted"] = p.Mounted,
                ["writebackCache"] = p.Config.WritebackCache, ["pageCache"] = p.Config.PageCache, ["showSnapshots"] = p.Config.ShowSnapshots,
                ["threads"] = p.Config.Threads, ["allowOther"] = p.Config.AllowOther, ["iomap"] = p.IomapMode ?? p.Config.Iomap.ToString().ToLowerInvariant(),
                ["snapshot"] = p.Snapshot,
                ["cleaner"] = CleanerObject(p),
                ["purgesPending"] = p.PendingPurges,
            });
        return new JsonObject
        {
            ["ok"] = true, ["server"] = _endpoint.Server, ["pid"] = Environment.ProcessId, ["uptimeSeconds"] = (long)(DateTime.UtcNow - _mounts.StartedUtc).TotalSeconds,
            ["socket"] = _endpoint.Socket, ["pools"] = pools,
        };
    }
}
