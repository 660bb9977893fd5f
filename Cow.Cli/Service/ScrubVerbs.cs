using System.Net.Sockets;
using System.Text.Json.Nodes;
using Cow.Core.FileSystem;

namespace Cow.Cli.Service;

/// <summary>The control socket's <c>scrub</c> and <c>scrub-cancel</c> verbs (<c>cow scrub</c> on a mounted pool).
/// The scrub runs on the connection's thread, outside the pool's use lock (<see cref="PoolMounts.Use"/>): it may take
/// hours, and must not hold up unmounts, rollbacks or other verbs; closing the pool cancels it and waits for it
/// (the engine's <c>Scrubber.Stop</c>).</summary>
public sealed partial class ControlServer
{
    /// <summary><c>scrub</c>: scrubs the mounted pool at "rate" bytes per second (a whole number, 0: unlimited;
    /// default <see cref="ScrubSettings.DefaultRateBytesPerSecond"/>) and answers with cow scrub's document
    /// (<see cref="ScrubCommand.Document"/>); EBUSY when a scrub of the pool already runs. It ends early
    /// ("cancelled") when the client closes its connection or a <c>scrub-cancel</c> request names the pool.</summary>
    private JsonObject Scrub(JsonObject req, uint uid, Socket? peer)
    {
        var p = RequestedPool("scrub", req, out var bad);
        if (p == null) return bad!;
        long rate = ScrubSettings.DefaultRateBytesPerSecond;
        if (req["rate"] is { } rn && !(rn is JsonValue rv && rv.TryGetValue(out rate) && rate >= 0))
            return ControlProtocol.Error("EINVAL", "\"rate\" must be a whole number of bytes per second, 0 or more (0: unlimited)");
        var pool = _mounts.WithPool(p.Config.Name, x => x);
        if (pool == null) return NotServed(p.Config.Name);
        ScrubReport report;
        using var hangUp = new HangUpWatch(peer);
        try { report = pool.Scrub(new ScrubSettings { RateBytesPerSecond = rate }, null, hangUp.Token); }
        catch (ObjectDisposedException) { return NotServed(p.Config.Name); }   // closed between the lookup and the scrub
        if (report.Stop == "busy")
            return ControlProtocol.Error("EBUSY", $"a scrub of pool {p.Config.Name} is already running (another cow scrub, or the service's scrub-every); try again when it has finished");
        ScrubScheduler.LogReport(_log, p.Config.Name, report, $"scrub through the control socket (uid {uid})");
        var doc = ScrubCommand.Document(report);
        doc["ok"] = true; doc["pool"] = p.Config.Name; doc["mountpoint"] = p.Config.MountPoint;
        return doc;
    }

    /// <summary><c>scrub-cancel</c>: cancels the scrub running on the pool ("cancelled": whether one ran); it then
    /// answers its own request with what it found so far.</summary>
    private JsonObject ScrubCancel(JsonObject req)
    {
        var p = RequestedPool("scrub-cancel", req, out var bad);
        if (p == null) return bad!;
        bool cancelled = false;
        if (!_mounts.Use(p.Config.Name, (pool, _) => cancelled = pool.CancelScrub())) return NotServed(p.Config.Name);
        return new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["mountpoint"] = p.Config.MountPoint, ["cancelled"] = cancelled };
    }
}
