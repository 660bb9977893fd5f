using Cow.Core.Replication;
using Mono.Unix.Native;

namespace Cow.Core;

/// <summary>
/// Snapshot streams of one open pool (<see cref="Pool.Replication"/>, format.md 10): send a snapshot (whole, or what
/// changed since an older one, or the rest of an interrupted stream), receive one, and the state of a receive that
/// stopped part-way. Every call goes to the engine (<see cref="StreamSender"/>, <see cref="StreamReceiver"/>), which
/// does the work and its locking. Owns nothing; thread-safe as the engine is.
/// </summary>
public sealed class PoolReplication
{
    private readonly Pool _pool;
    private Engine.Engine E => _pool.Engine;

    internal PoolReplication(Pool pool) { _pool = pool; }

    /// <summary>Writes snapshot <paramref name="name"/> (incremental from <paramref name="from"/> when given) to
    /// <paramref name="output"/>. Errnos and <paramref name="problem"/>: <see cref="StreamSender.Send"/>.</summary>
    public Errno Send(string name, string? from, Stream output, out SendSummary summary, out string? problem) =>
        E.Sender.Send(name, from, null, output, out summary, out problem);

    /// <summary>Writes the rest of the stream <paramref name="token"/> (from a receiver) names.</summary>
    public Errno Resume(ResumeToken token, Stream output, out SendSummary summary, out string? problem) =>
        E.Sender.Send(null, null, token, output, out summary, out problem);

    /// <summary>Receives a stream (<see cref="StreamReceiver.Receive"/>); with <paramref name="finish"/> false a verified
    /// stream stays pending until <see cref="FinishReceive"/>.</summary>
    public Errno Receive(Stream input, string? name, out ReceiveResult result, bool finish = true) => E.Receiver.Receive(input, name, finish, out result);

    /// <summary>Finishes a pending receive whose stream is all applied and verified (<see cref="StreamReceiver.FinishPending"/>);
    /// <paramref name="snapshot"/> names the snapshot it made.</summary>
    public Errno FinishReceive(out string? snapshot, out string? problem)
    {
        var e = E.Receiver.FinishPending(out var s, out problem);
        snapshot = s?.Name;
        return e;
    }

    /// <summary>The resume token of the receive pending on this pool, or null when none is.</summary>
    public string? PendingToken() => E.Receiver.PendingToken();

    /// <summary>Drops the pending receive (ENOENT when none); <paramref name="name"/>: the snapshot it was receiving.</summary>
    public Errno AbortReceive(out string? name) => E.Receiver.Abort(out name);

    /// <summary>The cross-pool identity of snapshot <paramref name="name"/> (format.md 10), null when there is none.</summary>
    public SnapshotIdentity? IdentityOf(string name)
    {
        var s = E.FindSnapshot(name);
        return s == null ? null : E.Sender.IdentityOf(s);
    }
}
