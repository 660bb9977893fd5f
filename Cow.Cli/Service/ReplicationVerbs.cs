using System.Text.Json.Nodes;
using Cow.Core.Replication;
using Microsoft.Extensions.Logging;
using Mono.Unix.Native;

namespace Cow.Cli.Service;

/// <summary>The stream verbs of the control socket (format.md 10) on a mounted pool: <c>send</c> writes the stream after
/// the request as chunks (<see cref="ChunkedWriteStream"/>), <c>receive</c> reads it so; the JSON response follows the
/// end chunk. A receive stages while the pool stays mounted (its live tree read-only) and finishes with the pool
/// unmounted for a moment, as a rollback does; <c>receive-finish</c>, <c>receive-token</c> and <c>receive-abort</c> act
/// on a pending receive. Other verbs on the same pool wait while a stream runs.</summary>
public sealed partial class ControlServer
{
    /// <summary>The connection of the request being handled on this thread: its buffered reading side and its writing
    /// side (set by <see cref="Serve"/> around each request).</summary>
    [ThreadStatic] private static (Stream Read, Stream Write)? t_connection;

    private JsonObject SendVerb(JsonObject req, uint uid)
    {
        if (t_connection is not { } conn) return ControlProtocol.Error("EINVAL", "send streams over a control socket connection only");
        var output = new ChunkedWriteStream(conn.Write);
        try
        {
            var p = RequestedPool("send", req, out var bad);
            if (p == null) return bad!;
            var name = Str(req, "name", out bad); if (bad != null) return bad;
            var from = Str(req, "from", out bad); if (bad != null) return bad;
            var token = Str(req, "resume", out bad); if (bad != null) return bad;
            ResumeToken? t = null;
            if (token != null && (t = ResumeToken.Parse(token, out var tp)) == null) return ControlProtocol.Error("EINVAL", tp!);
            if (t == null && name == null) return ControlProtocol.Error("EINVAL", "send needs \"name\" (or \"resume\")");
            JsonObject? resp = null;
            _mounts.Use(p.Config.Name, (pool, _) =>
            {
                using var buffered = new BufferedStream(output, 1 << 20);
                var e = t != null ? pool.Replication.Resume(t, buffered, out var sum, out var problem) : pool.Replication.Send(name!, from, buffered, out sum, out problem);
                buffered.Flush();
                resp = e != 0 ? ControlProtocol.Error(e.ToString(), $"send: {problem}") : new JsonObject
                {
                    ["ok"] = true, ["pool"] = p.Config.Name, ["stream_bytes"] = sum.StreamBytes, ["records"] = sum.Records, ["inodes"] = sum.Inodes,
                    ["data_bytes"] = sum.DataBytes, ["clone_bytes"] = sum.CloneBytes, ["hole_bytes"] = sum.HoleBytes,
                };
                if (e == 0) _log.LogInformation("control socket: send {Name} from {From} on pool {Pool} (uid {Uid}): {Bytes} bytes", name ?? "(resumed)", from ?? "-", p.Config.Name, uid, sum.StreamBytes);
            });
            return resp ?? NotServed(p.Config.Name);
        }
        finally { output.End(); }
    }

    private JsonObject ReceiveVerb(JsonObject req, uint uid)
    {
        if (t_connection is not { } conn) return ControlProtocol.Error("EINVAL", "receive streams over a control socket connection only");
        var input = new ChunkedReadStream(conn.Read);
        try
        {
            var p = RequestedPool("receive", req, out var bad);
            if (p == null) return bad!;
            var name = Str(req, "name", out bad); if (bad != null) return bad;
            if (name != null && Core.PoolSnapshots.NameProblem(name) is { } np) return ControlProtocol.Error("EINVAL", np);
            ReceiveResult? res = null;
            Errno e = 0;
            if (!_mounts.Use(p.Config.Name, (pool, _) => e = pool.Replication.Receive(input, name, out res, finish: false))) return NotServed(p.Config.Name);
            input.Drain();
            if (e != 0)
            {
                var err = ControlProtocol.Error(e.ToString(), $"receive failed: {res!.Problem}");
                if (res.Token != null) err["token"] = res.Token;
                if (res.DamageOffset is { } d) err["damage_offset"] = d;
                return err;
            }
            var fin = FinishReceive(p.Config.Name, uid);
            fin["records"] = res!.Records; fin["data_bytes"] = res.DataBytes; fin["stream_bytes"] = res.StreamBytes;
            return fin;
        }
        finally { input.Drain(); }
    }

    /// <summary>Finishes the pool's verified pending receive with the pool unmounted for the time of it.</summary>
    private JsonObject FinishReceive(string label, uint uid)
    {
        var r = _mounts.WithPoolUnmounted(label, pool =>
            {
                var fe = pool.Replication.FinishReceive(out var snap, out var problem);
                return fe == 0 ? OpResult.Done($"received snapshot '{snap}'", null) : OpResult.Failed(fe, $"finishing the receive: {problem}");
            },
            busy => OpResult.Failed(Errno.EBUSY, $"the stream is applied and verified, but finishing it needs the pool unmounted for a moment: {busy}; then run 'cow receive POOL --finish'"),
            (done, why) => OpResult.Failed(Errno.EIO, (done.Code == 0 ? "received, but " : done.Message + "; ") + why));
        if (r == null) return NotServed(label);
        if (r.Code != 0) return ControlProtocol.Error(r.Errno.ToString(), r.Message);
        _log.LogInformation("control socket: receive on pool {Pool} (uid {Uid}): {Message}", label, uid, r.Message);
        return new JsonObject { ["ok"] = true, ["pool"] = label, ["message"] = r.Message };
    }

    /// <summary><c>receive-token</c>, <c>receive-abort</c>, <c>receive-finish</c>: the pending receive of a pool.</summary>
    private JsonObject PendingReceiveVerb(string verb, JsonObject req, uint uid)
    {
        var p = RequestedPool(verb, req, out var bad);
        if (p == null) return bad!;
        if (verb == "receive-finish") return FinishReceive(p.Config.Name, uid);
        JsonObject? resp = null;
        _mounts.Use(p.Config.Name, (pool, _) =>
        {
            if (verb == "receive-token")
                resp = pool.Replication.PendingToken() is { } tk ? new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["token"] = tk }
                    : ControlProtocol.Error("ENOENT", "no receive is pending on this pool");
            else
            {
                var e = pool.Replication.AbortReceive(out var was);
                resp = e == 0 ? new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["message"] = $"the receive of '{was}' is dropped" }
                    : ControlProtocol.Error(e.ToString(), e == Errno.ENOENT ? "no receive is pending on this pool" : $"abort: {e}");
                if (e == 0) _log.LogInformation("control socket: receive-abort on pool {Pool} (uid {Uid})", p.Config.Name, uid);
            }
        });
        return resp ?? NotServed(p.Config.Name);
    }
}
