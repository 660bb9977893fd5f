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

/// <summary>Where and for whom a <see cref="ControlServer"/> listens. <see cref="Socket"/>: the socket path;
/// <see cref="Group"/>: group allowed besides root and <see cref="OwnerUid"/> (null: cow-admin when it exists,
/// else nobody more); <see cref="Mode"/>: permission bits of the socket file; <see cref="OwnerUid"/>: owner of
/// the socket file, always allowed (root for the service, the mounting user for a <c>cow mount</c>);
/// <see cref="Server"/>: "serve" or "mount", reported by <c>status</c>; <see cref="RestartHint"/>: what to do
/// when a pool could not be mounted again after a rollback.</summary>
public sealed record ControlEndpoint(string Socket, string? Group, int Mode, uint OwnerUid, string Server, string RestartHint)
{
    public static ControlEndpoint ForService(ControlConfig c) => new(c.Socket, c.Group, c.Mode, 0, "serve", "restart the service (systemctl restart cow)");
}

/// <summary>
/// A control socket: a Unix stream socket (path, group and mode from the <see cref="ControlEndpoint"/>) speaking
/// line-delimited JSON, one request object per line, one response object per line (see
/// <see cref="ControlProtocol"/>), answered for the pools of one <see cref="PoolMounts"/>. <c>cow serve</c>
/// runs one for all its pools (<c>[control]</c>, owner root); every <c>cow mount</c> runs one for its pool
/// (<see cref="MountControl"/>): the same verbs, the same code. Every request is checked against the caller's
/// SO_PEERCRED: root, the socket's owner and members of the allowed group (primary or supplementary group of
/// the calling process, read from /proc/PID/status at connect time) only; anyone else gets an EACCES response
/// and nothing is done. Malformed requests get an error response and the connection stays open.
/// Threading: one accept thread; each connection is served on a thread of its own; requests go to
/// <see cref="PoolMounts"/>, which is thread-safe. Snapshot operations of one pool may run concurrently
/// (the kernel and the engine order them).
/// </summary>
public sealed partial class ControlServer : IHostedService, IDisposable
{
    private readonly ControlEndpoint _endpoint;
    private readonly PoolMounts _mounts;
    private readonly ILogger _log;
    private Socket? _listener;
    private Thread? _acceptThread;
    private uint _gid;
    private string _groupName = "root";
    private volatile bool _stopping;

    /// <summary>The service's control socket, as <c>[control]</c> says.</summary>
    public ControlServer(ServeConfig config, PoolMounts mounts, ILogger<ControlServer> log)
        : this(ControlEndpoint.ForService(config.Control), mounts, log) { }

    public ControlServer(ControlEndpoint endpoint, PoolMounts mounts, ILogger log)
    {
        _endpoint = endpoint;
        _mounts = mounts;
        _log = log;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var path = _endpoint.Socket;
        // A socket owned by another user than root allows that user and root only: it cannot be given a group
        // its owner is not in.
        (_gid, _groupName) = _endpoint.OwnerUid == 0 ? ResolveGroup(_endpoint.Group) : (0u, "root");
        uint fileGid = _endpoint.OwnerUid == 0 ? _gid : Syscall.getegid();
        var dir = Path.GetDirectoryName(path)!;
        try { if (!Directory.Exists(dir)) { Directory.CreateDirectory(dir); Syscall.chmod(dir, (FilePermissions)Convert.ToInt32(_endpoint.OwnerUid == 0 ? "755" : "700", 8)); } }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ControlSocketException($"cannot make the folder {dir} of the control socket: {e.Message}"); }
        // A mount's socket folder may be under /tmp: it must be its owner's (or root's) and writable by no one else,
        // or another user could put their own socket in its place.
        if (_endpoint.Server == "mount" && (Syscall.lstat(dir, out var dst) != 0 || (dst.st_mode & FilePermissions.S_IFMT) != FilePermissions.S_IFDIR
                                            || (dst.st_uid != _endpoint.OwnerUid && dst.st_uid != 0) || (dst.st_mode & (FilePermissions.S_IWGRP | FilePermissions.S_IWOTH)) != 0))
            throw new ControlSocketException($"{dir} is not a folder of uid {_endpoint.OwnerUid} (or root) that only its owner may write to");
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
            if (Syscall.chown(path, _endpoint.OwnerUid, fileGid) != 0 || Syscall.chmod(path, (FilePermissions)_endpoint.Mode) != 0)
                throw new ControlSocketException($"cannot set owner {_endpoint.OwnerUid}:{fileGid} and mode {Convert.ToString(_endpoint.Mode, 8)} on {path}: {Stdlib.GetLastError()}");
            s.Listen(16);
        }
        catch (SocketException e) { s.Dispose(); throw new ControlSocketException($"cannot listen on {path}: {e.Message}"); }
        catch { s.Dispose(); throw; }
        _listener = s;
        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "cow-control" };
        _acceptThread.Start();
        _log.LogInformation("control socket {Path} (uid {Owner}, group {Group}, mode {Mode})", path, _endpoint.OwnerUid, _groupName, Convert.ToString(_endpoint.Mode, 8).PadLeft(4, '0'));
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
            // A thread of its own, not the thread pool's: a connection blocks its thread while it waits for the
            // next request or runs a long one (clean, scrub, device-remove), and a few of them must not make a
            // cancel request wait for the pool to grow (seen on a 2-CPU machine: a clean-cancel or
            // device-remove-cancel arrived after the work it was to cancel had ended).
            new Thread(() => Serve(c)) { IsBackground = true, Name = "cow-control-connection" }.Start();
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
        if (uid == 0 || uid == _endpoint.OwnerUid || (gid == _gid && _gid != 0)) return true;
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
                    _log.LogWarning("control socket: refused a request of uid {Uid} (pid {Pid}): not root nor in group {Group}", cred.uid, cred.pid, _groupName);
                    response = ControlProtocol.Error("EACCES", _endpoint.OwnerUid == 0
                        ? $"permission denied: only root and members of group '{_groupName}' may use the Cow control socket"
                        : $"permission denied: only root and the user who mounted the pool (uid {_endpoint.OwnerUid}) may use this control socket");
                }
                else
                {
                    t_connection = (stream, net);   // the stream verbs read and write raw chunks after the request line
                    try { response = Handle(line, cred.uid, c); }
                    finally { t_connection = null; }
                }
                Write(net, response);
                if (!more) break;
            }
        }
        catch (IOException) { /* the client went away */ }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug: log it with its stack; the connection ends, the service goes on.
            _log.LogError(e, "control socket: request of uid {Uid} (pid {Pid}) failed", cred.uid, cred.pid);
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
        try { File.Delete(_endpoint.Socket); } catch (IOException) { }
    }
}

/// <summary>The control socket's wire format (the same on <c>cow serve</c>'s socket and on a <c>cow mount</c>'s):
/// UTF-8 JSON objects, one per line. Requests <c>{"verb":"status"}</c> (<c>"server"</c>: "serve" or "mount",
/// pid, uptime, socket, and the pools with their mount options), <c>{"verb":"snapshot-create"|"snapshot-delete","pool":P,"name":N}</c> (snapshot-create
/// may add <c>"properties":{K:V,...}</c>, string values, recorded in the snapshot),
/// <c>{"verb":"snapshot-list","pool":P}</c> (names in "snapshots", rows with space, holds and properties in
/// "details"), <c>{"verb":"snapshot-hold"|"snapshot-release","pool":P,"name":N,"tag":T}</c>,
/// <c>{"verb":"snapshot-diff","pool":P,"name":N,"to":M?,"ranges":B?}</c> (rows in "changes"; with ranges, each also
/// has size_before, size_after and ranges, as <c>cow snapshot diff --ranges --json</c>),
/// <c>{"verb":"snapshot-clone","pool":P,"name":N,"destination":D,"from":F?}</c>,
/// <c>{"verb":"snapshot-restore","pool":P,"name":N,"paths":[...],"dryRun":B?}</c> (rows {path, action} in "changes"),
/// <c>{"verb":"snapshot-rollback","pool":P,"name":N}</c> (the pool is unmounted, rolled back and mounted again;
/// EBUSY while the mount is in use), <c>{"verb":"df","pool":P}</c> (with the "cleaner" object),
/// <c>{"verb":"clean","pool":P,"until":PERCENT?}</c> (a cleaning pass now; the answer is cow clean's document; it
/// ends early, "cancelled", when the client closes the connection or on <c>{"verb":"clean-cancel","pool":P}</c>),
/// <c>{"verb":"scrub","pool":P,"rate":BYTES_PER_S?}</c> (a scrub now; the answer is cow scrub's document; EBUSY while
/// another runs; it ends early, "cancelled", when the client closes the connection or on
/// <c>{"verb":"scrub-cancel","pool":P}</c>),
/// <c>{"verb":"device-add","pool":P,"path":ABSOLUTE_PATH,"role":"log"|"base","size":BYTES?,"force":B?}</c> (adds a device;
/// the answer is cow device add's document; only root and the socket's owner may ask, since the server opens or creates
/// the path), <c>{"verb":"device-remove","pool":P,"device":COOKIE_OR_ABSOLUTE_PATH}</c> (moves the device's data to the
/// other devices and drops it; the answer is cow device remove's document; ENOSPC, sizes named, when the data would
/// not fit; it ends early, "cancelled", when the client closes the connection or on
/// <c>{"verb":"device-remove-cancel","pool":P}</c>), <c>{"verb":"device-list","pool":P}</c> (the rows of cow device
/// list in "devices"), <c>{"verb":"send","pool":P,"name":N?,"from":F?,"resume":TOKEN?}</c> (the stream follows the
/// request line as chunks: u32 little-endian length and bytes, ended by a chunk of length 0; then the answer, with the
/// stream's sizes), <c>{"verb":"receive","pool":P,"name":N?}</c> (the client sends the stream so chunked after the
/// request line; the answer comes after its end chunk: the snapshot made, or the error with "token" and
/// "damage_offset" when what was verified is kept; the pool is unmounted for the moment of the finishing commit),
/// <c>{"verb":"receive-finish"|"receive-token"|"receive-abort","pool":P}</c> (the pending receive: finish a verified
/// one, its resume token, or drop it)
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
