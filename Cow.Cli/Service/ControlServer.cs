using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Mono.Unix.Native;

namespace Cow.Cli.Service;

/// <summary>The control socket cannot be set up (path in use by a running service, directory missing, ...).</summary>
public sealed class ControlSocketException(string message) : Exception(message);

/// <summary>
/// The service's control socket: a Unix stream socket (path, group and mode from <c>[control]</c>; owner
/// root) speaking line-delimited JSON, one request object per line, one response object per line (see
/// <see cref="ControlProtocol"/>). Every request is checked against the caller's SO_PEERCRED: root and
/// members of the configured group (primary or supplementary group of the calling process, read from
/// /proc/PID/status at connect time) only; anyone else gets an EACCES response and nothing is done.
/// Malformed requests get an error response and the connection stays open.
/// Threading: one accept thread; each connection is served on its own task; requests go to
/// <see cref="PoolMounts"/>, which is thread-safe. Snapshot operations of one pool may run concurrently
/// (the kernel and the engine order them).
/// </summary>
public sealed class ControlServer(ServeConfig config, PoolMounts mounts, ILogger<ControlServer> log) : IHostedService, IDisposable
{
    private Socket? _listener;
    private Thread? _acceptThread;
    private uint _gid;
    private string _groupName = "root";
    private volatile bool _stopping;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var path = config.Control.Socket;
        (_gid, _groupName) = ResolveGroup(config.Control.Group);
        var dir = Path.GetDirectoryName(path)!;
        try { if (!Directory.Exists(dir)) { Directory.CreateDirectory(dir); Syscall.chmod(dir, (FilePermissions)Convert.ToInt32("755", 8)); } }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ControlSocketException($"cannot make the folder {dir} of the control socket: {e.Message}"); }
        if (Syscall.lstat(path, out var st) == 0)
        {
            if ((st.st_mode & FilePermissions.S_IFMT) != FilePermissions.S_IFSOCK)
                throw new ControlSocketException($"{path} exists and is not a socket: remove it or set [control] socket to another path");
            using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                try { probe.Connect(new UnixDomainSocketEndPoint(path)); throw new ControlSocketException($"the control socket {path} is in use: another cow serve runs (stop it, or set [control] socket to another path)"); }
                catch (SocketException) { /* stale: nobody listens */ }
            }
            File.Delete(path);
        }
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Bind(new UnixDomainSocketEndPoint(path));
            if (Syscall.chown(path, 0, _gid) != 0 || Syscall.chmod(path, (FilePermissions)config.Control.Mode) != 0)
                throw new ControlSocketException($"cannot set owner root:{_groupName} and mode {Convert.ToString(config.Control.Mode, 8)} on {path}: {Stdlib.GetLastError()}");
            s.Listen(16);
        }
        catch (SocketException e) { s.Dispose(); throw new ControlSocketException($"cannot listen on {path}: {e.Message}"); }
        catch { s.Dispose(); throw; }
        _listener = s;
        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "cow-control" };
        _acceptThread.Start();
        log.LogInformation("control socket {Path} (root:{Group}, mode {Mode})", path, _groupName, Convert.ToString(config.Control.Mode, 8).PadLeft(4, '0'));
        return Task.CompletedTask;
    }

    /// <summary>The configured group, else cow-admin when it exists, else root.</summary>
    private static (uint Gid, string Name) ResolveGroup(string? configured)
    {
        var g = Syscall.getgrnam(configured ?? ControlConfig.DefaultGroup);
        if (g != null) return (g.gr_gid, g.gr_name);
        if (configured != null) throw new ControlSocketException($"group '{configured}' of [control] does not exist");
        return (0, "root");
    }

    private void AcceptLoop()
    {
        while (!_stopping)
        {
            Socket c;
            try { c = _listener!.Accept(); }
            catch (SocketException) { if (_stopping) return; continue; }
            catch (ObjectDisposedException) { return; }
            _ = Task.Run(() => Serve(c));
        }
    }

    /// <summary>SO_PEERCRED of a connected Unix socket: pid, uid, gid.</summary>
    private static (int Pid, uint Uid, uint Gid) PeerCred(Socket c)
    {
        Span<byte> cred = stackalloc byte[12];
        int n = c.GetRawSocketOption(1 /* SOL_SOCKET */, 17 /* SO_PEERCRED */, cred);
        if (n != 12) throw new SocketException((int)SocketError.InvalidArgument);
        return (BitConverter.ToInt32(cred), BitConverter.ToUInt32(cred[4..]), BitConverter.ToUInt32(cred[8..]));
    }

    private bool Allowed(int pid, uint uid, uint gid)
    {
        if (uid == 0 || (gid == _gid && _gid != 0)) return true;
        if (_gid == 0) return false;
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("Groups:", StringComparison.Ordinal))
                    return line[7..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Any(x => uint.TryParse(x, out var g) && g == _gid);
        }
        catch (IOException) { }
        return false;
    }

    private void Serve(Socket c)
    {
        using var _ = c;
        (int pid, uint uid, uint gid) cred;
        try { cred = PeerCred(c); } catch (SocketException) { return; }
        bool allowed = Allowed(cred.pid, cred.uid, cred.gid);
        using var net = new NetworkStream(c, ownsSocket: false);
        // Reads through a buffer, writes straight to the socket (a BufferedStream cannot write while it holds
        // read-ahead of a stream that cannot seek).
        using var stream = new BufferedStream(net);
        try
        {
            while (ReadLine(stream, out var line) is var more && (more || line.Length > 0))
            {
                if (line.Length > ControlProtocol.MaxRequestBytes)
                {
                    // The rest of this line cannot be told from the next request: answer and hang up.
                    Write(net, ControlProtocol.Error("E2BIG", $"request longer than {ControlProtocol.MaxRequestBytes} bytes; the connection is closed"));
                    // Closing with unread input would reset the connection and could lose the answer: end our
                    // side, then drain what the client still sends (bounded in time) before closing.
                    c.Shutdown(SocketShutdown.Send);
                    c.ReceiveTimeout = 2000;
                    var sink = new byte[8192];
                    var until = DateTime.UtcNow.AddSeconds(2);
                    try { while (DateTime.UtcNow < until && stream.Read(sink) > 0) { } } catch (IOException) { }
                    return;
                }
                if (line.Trim().Length == 0) { if (!more) break; continue; }
                JsonObject response;
                if (!allowed)
                {
                    log.LogWarning("control socket: refused a request of uid {Uid} (pid {Pid}): not root nor in group {Group}", cred.uid, cred.pid, _groupName);
                    response = ControlProtocol.Error("EACCES", $"permission denied: only root and members of group '{_groupName}' may use the Cow control socket");
                }
                else response = Handle(line, cred.uid);
                Write(net, response);
                if (!more) break;
            }
        }
        catch (IOException) { /* the client went away */ }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug: log it with its stack; the connection ends, the service goes on.
            log.LogError(e, "control socket: request of uid {Uid} (pid {Pid}) failed", cred.uid, cred.pid);
        }
    }

    private static void Write(Stream s, JsonObject response)
    {
        s.Write(Encoding.UTF8.GetBytes(response.ToJsonString(ControlProtocol.Json) + "\n"));
        s.Flush();
    }

    /// <summary>Reads one line (without its newline), keeping at most <see cref="ControlProtocol.MaxRequestBytes"/>
    /// + 1 bytes of it: a longer line comes back longer than the limit and the reading stops there. False at the
    /// end of the stream (<paramref name="line"/> then holds what came before it).</summary>
    private static bool ReadLine(Stream s, out string line)
    {
        var buf = new MemoryStream();
        int b;
        while ((b = s.ReadByte()) >= 0 && b != '\n')
        {
            buf.WriteByte((byte)b);
            if (buf.Length > ControlProtocol.MaxRequestBytes) break;
        }
        line = Encoding.UTF8.GetString(buf.GetBuffer(), 0, (int)buf.Length).TrimEnd('\r');
        return b >= 0;
    }

    /// <summary>Answers one request line (already permission-checked).</summary>
    internal JsonObject Handle(string line, uint uid)
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
        if (verb == null) return ControlProtocol.Error("EINVAL", "the request has no \"verb\" (status, snapshot-create, snapshot-list, snapshot-delete, snapshot-hold, snapshot-release, snapshot-diff, snapshot-clone, snapshot-restore, snapshot-rollback)");
        switch (verb)
        {
            case "status": return Status();
            case "snapshot-create":
            case "snapshot-delete":
            case "snapshot-list":
            {
                var poolName = Str(req, "pool", out bad);
                if (bad != null) return bad;
                if (poolName == null) return ControlProtocol.Error("EINVAL", $"{verb} needs \"pool\" (a pool name, pool folder or mount point)");
                var p = mounts.Find(poolName);
                if (p == null || !p.Mounted) return ControlProtocol.Error("ENOENT", $"this service serves no mounted pool '{poolName}' (the status request lists them)");
                if (verb == "snapshot-list")
                {
                    var (err, names) = Program.ListSnapshotsOnMount(p.Config.MountPoint);
                    if (err != null) return ControlProtocol.Error("EIO", err);
                    var rows = mounts.WithPool(p.Config.Name, pool => SnapshotOpsCore.SnapshotRows(pool, includeLive: false));
                    if (rows == null) return NotServed(poolName);
                    return new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["mountpoint"] = p.Config.MountPoint, ["snapshots"] = new JsonArray(names!.Select(n => (JsonNode)JsonValue.Create(n)!).ToArray()), ["details"] = rows };
                }
                var name = Str(req, "name", out bad);
                if (bad != null) return bad;
                if (name == null) return ControlProtocol.Error("EINVAL", $"{verb} needs \"name\" (the snapshot name)");
                if (Core.Engine.Engine.SnapshotNameProblem(name) is { } problem) return ControlProtocol.Error("EINVAL", problem);
                if (verb == "snapshot-create" && req["properties"] is { } props)   // cow snapshot wrap: pre/post properties
                    return ServiceSnapshots.HandleCreateWithProperties(mounts, p.Config, name, props, uid, log);
                var (code, message) = Program.SnapshotOnMount(p.Config.MountPoint, name, create: verb == "snapshot-create");
                if (code == Mono.Unix.Native.Errno.EBUSY && verb == "snapshot-delete")
                    message = mounts.WithPool(p.Config.Name, pool => Program.HeldMessage(pool, name)) ?? message;   // name the holds
                if (code != 0) return ControlProtocol.Error(code.ToString(), message!);
                log.LogInformation("control socket: {Verb} {Name} on pool {Pool} (uid {Uid})", verb, name, p.Config.Name, uid);
                return new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["mountpoint"] = p.Config.MountPoint, ["snapshot"] = name };
            }
            case "snapshot-hold":
            case "snapshot-release":
            case "snapshot-diff":
            case "snapshot-clone":
            case "snapshot-rollback":
            case "snapshot-restore":
                return SnapshotOp(verb, req, uid);
            case "df":
            {
                var poolName = Str(req, "pool", out bad);
                if (bad != null) return bad;
                if (poolName == null) return ControlProtocol.Error("EINVAL", "df needs \"pool\" (a pool name, pool folder or mount point)");
                var p = mounts.Find(poolName);
                var doc = p == null ? null : mounts.WithPool(p.Config.Name, SnapshotOpsCore.DfDocument);
                if (doc == null) return NotServed(poolName);
                doc["ok"] = true; doc["pool"] = p!.Config.Name; doc["mountpoint"] = p.Config.MountPoint;
                return doc;
            }
            default:
                return ControlProtocol.Error("EINVAL", $"unknown verb '{verb}' (status, snapshot-create, snapshot-list, snapshot-delete, snapshot-hold, snapshot-release, snapshot-diff, snapshot-clone, snapshot-restore, snapshot-rollback)");
        }
    }

    private static JsonObject NotServed(string poolName) =>
        ControlProtocol.Error("ENOENT", $"this service serves no mounted pool '{poolName}' (the status request lists them)");

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
        if (Core.Engine.Engine.SnapshotNameProblem(name!) is { } problem) return ControlProtocol.Error("EINVAL", problem);
        var p = mounts.Find(poolName!);
        if (p == null || !p.Mounted) return NotServed(poolName!);
        var label = p.Config.Name;
        OpResult? r;
        switch (verb)
        {
            case "snapshot-hold":
            case "snapshot-release":
            {
                var tag = Need("tag", out bad); if (bad != null) return bad;
                r = mounts.WithPool(label, pool => verb == "snapshot-hold" ? SnapshotOpsCore.Hold(pool, label, name!, tag!) : SnapshotOpsCore.Release(pool, label, name!, tag!));
                break;
            }
            case "snapshot-diff":
            {
                var to = Str(req, "to", out bad); if (bad != null) return bad;
                r = mounts.WithPool(label, pool => SnapshotOpsCore.Diff(pool, label, name!, to));
                break;
            }
            case "snapshot-clone":
            {
                var dest = Need("destination", out bad); if (bad != null) return bad;
                var from = Str(req, "from", out bad) ?? "/"; if (bad != null) return bad;
                if ((SnapshotOpsCore.CloneDestinationProblem(dest!) ?? SnapshotOpsCore.PoolPathProblem(from, "from")) is { } dp) return ControlProtocol.Error("EINVAL", dp);
                r = mounts.WithPool(label, pool => SnapshotOpsCore.Clone(pool, label, name!, dest!, from));
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
                if (!dryRun && Program.SyncMount(p.Config.MountPoint, name!) is { } failed)
                    return ControlProtocol.Error(failed.Code.ToString(), $"snapshot restore {name}: syncfs of {p.Config.MountPoint} failed ({failed.Code}); nothing was restored");
                r = mounts.WithPool(label, pool => SnapshotRestoreOps.Restore(pool, label, name!, paths, dryRun));
                break;
            }
            default:
                r = mounts.WithPoolUnmounted(label, pool => SnapshotOpsCore.Rollback(pool, label, name!),
                    busy => OpResult.Failed(Mono.Unix.Native.Errno.EBUSY, $"snapshot rollback {name} refused: {busy}"),
                    (done, why) => OpResult.Failed(Mono.Unix.Native.Errno.EIO, (done.Code == 0 ? "rolled back, but " : done.Message + "; ") + why));
                break;
        }
        if (r == null) return NotServed(poolName!);
        if (r.Code != 0) return ControlProtocol.Error(r.Errno.ToString(), r.Message);
        log.LogInformation("control socket: {Verb} {Name} on pool {Pool} (uid {Uid})", verb, name, label, uid);
        var resp = new JsonObject { ["ok"] = true, ["pool"] = label, ["mountpoint"] = p.Config.MountPoint, ["snapshot"] = name, ["message"] = r.Message };
        if (r.Data != null) resp["changes"] = r.Data;
        return resp;
    }

    /// <summary>The byte offset of the first string or property name of <paramref name="line"/> that does not
    /// decode (an escaped lone surrogate), or null. Syntax errors are left to the parser.</summary>
    private static long? LoneSurrogateString(string line)
    {
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(line), new JsonReaderOptions { MaxDepth = 64 });
        try
        {
            while (reader.Read())
                if (reader.TokenType is JsonTokenType.String or JsonTokenType.PropertyName)
                {
                    try { reader.GetString(); }
                    catch (InvalidOperationException) { return reader.TokenStartIndex; }
                }
        }
        catch (JsonException) { }
        return null;
    }

    private static string? Str(JsonObject req, string key, out JsonObject? bad)
    {
        bad = null;
        if (!req.TryGetPropertyValue(key, out var v) || v == null) return null;
        if (v is JsonValue jv && jv.TryGetValue<string>(out var s)) return s;
        bad = ControlProtocol.Error("EINVAL", $"\"{key}\" must be a string");
        return null;
    }

    private JsonObject Status()
    {
        var pools = new JsonArray();
        foreach (var p in mounts.Status())
            pools.Add(new JsonObject
            {
                ["name"] = p.Config.Name, ["path"] = p.Config.Path, ["mountpoint"] = p.Config.MountPoint, ["mounted"] = p.Mounted,
                ["writebackCache"] = p.Config.WritebackCache, ["pageCache"] = p.Config.PageCache, ["showSnapshots"] = p.Config.ShowSnapshots,
                ["threads"] = p.Config.Threads, ["allowOther"] = p.Config.AllowOther, ["iomap"] = p.IomapMode ?? p.Config.Iomap.ToString().ToLowerInvariant(),
            });
        return new JsonObject
        {
            ["ok"] = true, ["pid"] = Environment.ProcessId, ["uptimeSeconds"] = (long)(DateTime.UtcNow - mounts.StartedUtc).TotalSeconds,
            ["socket"] = config.Control.Socket, ["pools"] = pools,
        };
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        if (_listener == null) return;
        _listener.Dispose();
        try { File.Delete(config.Control.Socket); } catch (IOException) { }
    }
}

/// <summary>The control socket's wire format: UTF-8 JSON objects, one per line. Requests
/// <c>{"verb":"status"}</c>, <c>{"verb":"snapshot-create"|"snapshot-delete","pool":P,"name":N}</c> (snapshot-create
/// may add <c>"properties":{K:V,...}</c>, string values, recorded in the snapshot),
/// <c>{"verb":"snapshot-list","pool":P}</c> (names in "snapshots", rows with space, holds and properties in
/// "details"), <c>{"verb":"snapshot-hold"|"snapshot-release","pool":P,"name":N,"tag":T}</c>,
/// <c>{"verb":"snapshot-diff","pool":P,"name":N,"to":M?}</c> (rows in "changes"),
/// <c>{"verb":"snapshot-clone","pool":P,"name":N,"destination":D,"from":F?}</c>,
/// <c>{"verb":"snapshot-restore","pool":P,"name":N,"paths":[...],"dryRun":B?}</c> (rows {path, action} in "changes"),
/// <c>{"verb":"snapshot-rollback","pool":P,"name":N}</c> (the pool is unmounted, rolled back and mounted again;
/// EBUSY while the mount is in use), <c>{"verb":"df","pool":P}</c>
/// (P: pool name, pool folder or mount point). Responses have
/// <c>"ok":true</c> and the result, or <c>"ok":false</c> with <c>"error"</c> (an errno name) and
/// <c>"message"</c>. Stateless: thread-safe.</summary>
public static class ControlProtocol
{
    public const int MaxRequestBytes = 64 * 1024;

    /// <summary>Serializer options of every line: readable text (quotes in messages stay quotes).</summary>
    public static readonly System.Text.Json.JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static JsonObject Error(string errno, string message) => new() { ["ok"] = false, ["error"] = errno, ["message"] = message };
}
