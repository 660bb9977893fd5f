using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Fuse.Mounting;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;

namespace Cow.Cli;

/// <summary>Sends a command on a mounted pool to the process that mounts it: a running <c>cow serve</c>, else the
/// <c>cow mount</c> process holding the pool, each through its control socket. One connection per call, no state
/// kept: thread-safe.</summary>
internal static class ServiceRouting
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
    internal static int? ViaService(string poolOrMountPoint, Func<ControlClient, JsonObject, int> body)
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
        var pid = LockHolder(Core.Pool.LockPathOf(folder) ?? Path.Combine(folder, Core.Pool.LockFile));
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

    /// <summary>A control-socket response: <paramref name="ok"/> of it when it has "ok":true, else its message and
    /// error on standard error and exit code 1.</summary>
    internal static int ServiceResult(JsonObject r, Func<JsonObject, int> ok)
        => r["ok"]?.GetValue<bool>() == true ? ok(r) : Fail($"{(string?)r["message"]} ({(string?)r["error"]})");

    /// <summary>
    /// A long request through the control socket (<c>cow clean</c>, <c>cow scrub</c>) that Ctrl-C (SIGINT, SIGTERM,
    /// SIGHUP) cancels: the first signal sends <paramref name="cancelVerb"/> for <paramref name="pool"/> on a second
    /// connection, and the answer to the first request then reports what was done; a second signal ends this program
    /// (closing the connection cancels the work in the server too). No receive timeout: the work takes as long as it
    /// takes. Returns the answer.
    /// </summary>
    internal static JsonObject RequestCancellable(ControlClient c, JsonObject request, string cancelVerb, string? pool, string cancelling)
    {
        int signals = 0;
        using var answered = new ManualResetEventSlim(false);
        void OnSignal(System.Runtime.InteropServices.PosixSignalContext ctx)
        {
            if (Interlocked.Increment(ref signals) > 1) return;   // the default action: the process ends
            ctx.Cancel = true;
            Console.Error.WriteLine($"cow: {cancelling} (Ctrl-C again to leave at once)");
            ThreadPool.QueueUserWorkItem(_ =>
            {
                // A signal may come before the server has started the work the request asks for (a busy host): then the
                // cancel finds nothing to cancel, and is sent again until it finds it or the request is answered.
                try
                {
                    while (!answered.IsSet)
                    {
                        using (var cancel = ControlClient.TryConnect(c.SocketFile, out string? _))
                        {
                            var r = cancel?.Request(new JsonObject { ["verb"] = cancelVerb, ["pool"] = pool });
                            if (r == null || r["ok"]?.GetValue<bool>() != true) return;
                            if (r["cancelled"] is JsonValue v && (v.TryGetValue<bool>(out bool b) ? b : v.TryGetValue<int>(out int n) && n > 0)) return;
                        }
                        answered.Wait(200);
                    }
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException) { }
            });
        }
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, OnSignal);
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, OnSignal);
        using var sighup = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGHUP, OnSignal);
        c.ReceiveTimeout = TimeSpan.Zero;
        try { return c.Request(request); }
        finally { answered.Set(); }
    }
}
