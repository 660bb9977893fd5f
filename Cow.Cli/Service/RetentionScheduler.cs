using System.Globalization;
using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Core.Retention;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Mono.Unix.Native;

namespace Cow.Cli.Service;

/// <summary>The open pools of the service, for work done in-process on a mounted pool. Implementations are
/// thread-safe: <see cref="Use"/> may be called from any thread (the scheduler, control connections).</summary>
public interface IServedPools
{
    /// <summary>Runs <paramref name="action"/> with the open pool named <paramref name="poolName"/> and its mount
    /// point (null: not mounted through FUSE, nothing to syncfs); the pool is not closed while it runs. False (nothing run) when that pool is not mounted.</summary>
    bool Use(string poolName, Action<Pool, string?> action);
}

/// <summary>
/// Applies the <c>[retention NAME]</c> sections: once at start and then at every hour boundary of the clock
/// (UTC), per pool with a retention section, takes a timeline snapshot when <c>timeline = yes</c>
/// (<c>timeline-YYYYMMDD-HHMM</c>, property <c>kind=timeline</c>), then deletes what
/// <see cref="RetentionPolicy"/> says. Snapshots are taken and deleted in-process through the pool's engine
/// (after syncfs of the mount, as the control socket does), so they carry properties. A deletion that fails
/// (held, I/O error) is logged and the cleanup goes on with the rest; a pool that is not mounted is skipped.
/// <see cref="Reconfigure"/> (a configuration reload) replaces the retention sections and applies them at once.
/// Threading: the loop task and <see cref="Reconfigure"/> (the reload thread) may run ticks concurrently:
/// <c>_tickGate</c> makes them one at a time; <c>_pools</c> is replaced whole (volatile), never changed.
/// Pools are used through <see cref="IServedPools.Use"/>, which orders it with unmounts. Lock order:
/// <c>_tickGate</c>, then the pool's lock inside <see cref="IServedPools.Use"/>.
/// </summary>
public sealed class RetentionScheduler(ServeConfig config, IServedPools pools, TimeProvider clock, ILogger<RetentionScheduler> log) : BackgroundService
{
    private volatile IReadOnlyList<PoolConfig> _pools = config.Pools;
    private readonly object _tickGate = new();

    /// <summary>Takes the <c>[retention NAME]</c> sections of <paramref name="next"/> for the pools this service
    /// serves (by name; a pool the new file no longer names keeps its rules until the restart that unmounts
    /// it) and runs the cleanup at once with them (no timeline snapshot: that waits for the hour).</summary>
    public void Reconfigure(ServeConfig next)
    {
        var byName = next.Pools.ToDictionary(p => p.Name, StringComparer.Ordinal);
        _pools = _pools.Select(p => byName.TryGetValue(p.Name, out var n) ? p with { Retention = n.Retention } : p).ToArray();
        Tick(clock.GetUtcNow().UtcDateTime, takeTimeline: false);
    }

    /// <summary>The retention section in force for each served pool (null: none).</summary>
    public IReadOnlyDictionary<string, RetentionConfig?> RetentionInForce => _pools.ToDictionary(p => p.Name, p => p.Retention, StringComparer.Ordinal);

    /// <summary>Raised after each tick (tests wait on it).</summary>
    public event Action<DateTime>? Ticked;
    /// <summary>Raised once the wait for the next boundary (its argument) is armed (tests advance the clock then).</summary>
    public event Action<DateTime>? Waiting;
    /// <summary>Raised just before each deletion (tests race a hold against the cleanup here).</summary>
    internal event Action<Pool, RetentionDeletion>? Deleting;

    protected override async Task ExecuteAsync(CancellationToken stop)
    {
        // The loop runs even without retention sections: a reload may add some.
        var now = clock.GetUtcNow().UtcDateTime;
        Tick(now, takeTimeline: false);
        while (!stop.IsCancellationRequested)
        {
            now = clock.GetUtcNow().UtcDateTime;
            var next = new DateTime(now.Year, now.Month, now.Day, now.Hour, 0, 0, DateTimeKind.Utc).AddHours(1);
            var delay = Task.Delay(next - now, clock, stop);
            Waiting?.Invoke(next);
            try { await delay; }
            catch (OperationCanceledException) { return; }
            // The boundary we waited for names the snapshot (a late wake-up does not shift the name).
            Tick(next, takeTimeline: true);
        }
    }

    /// <summary>One run for every pool with a retention section: the timeline snapshot (when asked and
    /// configured), then the cleanup. <paramref name="nowUtc"/> names the snapshot and dates the policy.</summary>
    public void Tick(DateTime nowUtc, bool takeTimeline)
    {
        lock (_tickGate) TickLocked(nowUtc, takeTimeline);
    }

    private void TickLocked(DateTime nowUtc, bool takeTimeline)
    {
        foreach (var pc in _pools.Where(p => p.Retention != null))
        {
            bool used = pools.Use(pc.Name, (pool, mountPoint) =>
            {
                try
                {
                    if (takeTimeline && pc.Retention!.Timeline) TakeTimeline(pc, pool, mountPoint, nowUtc);
                    Cleanup(pc, pool, nowUtc);
                }
                catch (Exception e) when (e is IOException or PoolException)
                {
                    // The engine throws only for a damaged pool: log it; the other pools and the next hour go on.
                    log.LogError("retention of pool {Name} stopped at {Time:u}: {Reason}", pc.Name, nowUtc, e.Message);
                }
            });
            if (!used) log.LogWarning("retention of pool {Name}: the pool is not mounted; nothing done at {Time:u}", pc.Name, nowUtc);
        }
        Ticked?.Invoke(nowUtc);
    }

    private void TakeTimeline(PoolConfig pc, Pool pool, string? mountPoint, DateTime nowUtc)
    {
        var baseName = "timeline-" + nowUtc.ToString("yyyyMMdd-HHmm", CultureInfo.InvariantCulture);
        var props = new Dictionary<string, string> { [RetentionPolicy.KindProperty] = RetentionPolicy.Timeline };
        var (code, name, message) = ServiceSnapshots.Create(pool, mountPoint, baseName, props);
        if (code != 0) log.LogError("retention of pool {Name}: timeline snapshot {Snapshot} not taken: {Reason}", pc.Name, baseName, message);
        else log.LogInformation("retention of pool {Name}: timeline snapshot {Snapshot} taken", pc.Name, name);
    }

    private void Cleanup(PoolConfig pc, Pool pool, DateTime nowUtc)
    {
        Core.Retention.RetentionRules rules = pc.Retention!;
        // Space deletions one at a time, measured again after each (the policy's estimate can only be low).
        for (int round = 0; round < 10_000; round++)
        {
            var snaps = pool.Snapshots.List();
            PoolSpace? space = null;
            Dictionary<string, long>? exclusive = null;
            if (rules.MinFreePercent is int pct)
            {
                var st = pool.Live.StatFs();
                space = new PoolSpace(st.Blocks * st.BlockSize, st.FreeBlocks * st.BlockSize);
                if (st.FreeBlocks * 100 < (long)pct * st.Blocks)
                    exclusive = pool.Snapshots.SpaceReport().Where(x => x.Name != "").ToDictionary(x => x.Name, x => x.ExclusiveBytes, StringComparer.Ordinal);
            }
            var view = snaps.Select(s => new RetentionSnapshot(s.Name, DateTime.UnixEpoch.AddTicks(s.CreatedNs / 100), s.Holds.Count > 0, s.Properties,
                exclusive != null && exclusive.TryGetValue(s.Name, out var x) ? x : 0)).ToList();
            var plan = RetentionPolicy.Plan(view, rules, nowUtc, space);
            bool spaceDeleted = false;
            foreach (var d in plan)
            {
                if (d.Rule == RetentionRule.MinFree && spaceDeleted && !d.WithPrevious) break;   // a pair's post goes with its pre
                Deleting?.Invoke(pool, d);
                var e = pool.Snapshots.Delete(d.Name);
                if (e == 0)
                {
                    log.LogInformation("retention of pool {Name}: deleted snapshot {Snapshot} ({Reason})", pc.Name, d.Name, d.Reason);
                    if (d.Rule == RetentionRule.MinFree) spaceDeleted = true;
                }
                else log.LogError("retention of pool {Name}: cannot delete snapshot {Snapshot} ({Reason}): {Error}; going on with the others",
                    pc.Name, d.Name, d.Reason, e == Errno.EBUSY ? SnapshotCommands.HeldMessage(pool, d.Name) : $"{e} ({Syscall.strerror(e)})");
            }
            // Only the space rule's first deletion (with its post, for a pre) was applied: measure again and ask again (each round
            // deletes a snapshot, so this ends). A failing space deletion stops the rounds.
            if (!spaceDeleted) return;
        }
    }
}

/// <summary>Snapshots taken in-process on a pool the service has open. Stateless: thread-safe (the engine
/// orders concurrent snapshots).</summary>
public static class ServiceSnapshots
{
    /// <summary>syncfs of <paramref name="mountPoint"/> (every write that returned before is in the snapshot),
    /// then a snapshot with <paramref name="properties"/>. A name in use gets a suffix (-2, -3, ...) when
    /// <paramref name="suffixOnCollision"/>. Returns the errno, the name taken and a message on failure.</summary>
    public static (Errno Code, string Name, string? Message) Create(Pool pool, string? mountPoint, string name,
        IReadOnlyDictionary<string, string> properties, bool suffixOnCollision = true)
    {
        if (mountPoint != null && MountedSnapshots.SyncMount(mountPoint, name) is { } fail) return (fail.Code, name, fail.Message);
        for (int i = 1; ; i++)
        {
            var candidate = i == 1 ? name : $"{name}-{i}";
            var e = pool.Snapshots.Create(candidate, properties, out _);
            if (e == 0) return (0, candidate, null);
            if (e == Errno.EEXIST && suffixOnCollision && i < 1000) continue;
            return (e, candidate, e switch
            {
                Errno.EEXIST => $"a snapshot named '{candidate}' already exists",
                Errno.EINVAL => $"snapshot '{candidate}': invalid name or properties",
                _ => $"snapshot create {candidate}: {e} ({Syscall.strerror(e)})",
            });
        }
    }

    /// <summary>The control socket's <c>snapshot-create</c> with <c>"properties"</c> (an object of string values):
    /// taken in-process through the pool's engine after syncfs of the mount, since mkdir in <c>.snapshots</c>
    /// cannot carry properties. No suffix on collision: EEXIST goes back to the client.</summary>
    public static JsonObject HandleCreateWithProperties(IServedPools mounts, PoolConfig pool, string name, JsonNode properties, uint uid, Microsoft.Extensions.Logging.ILogger log)
    {
        if (properties is not JsonObject po) return ControlProtocol.Error("EINVAL", "\"properties\" must be a JSON object of string values, e.g. {\"kind\":\"pre\"}");
        if (po.Count > PoolSnapshots.MaxProperties) return ControlProtocol.Error("EINVAL", $"a snapshot carries at most {PoolSnapshots.MaxProperties} properties, not {po.Count}");
        var props = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in po)
        {
            if (v is not JsonValue jv || !jv.TryGetValue<string>(out var sv)) return ControlProtocol.Error("EINVAL", $"property '{k}' must have a string value");
            if (PoolSnapshots.PropertyProblem(k, sv) is { } problem) return ControlProtocol.Error("EINVAL", problem);
            props[k] = sv;
        }
        (Errno Code, string Name, string? Message) r = (0, name, null);
        if (!mounts.Use(pool.Name, (p, mp) => r = Create(p, mp, name, props, suffixOnCollision: false)))
            return ControlProtocol.Error("ENOENT", $"this service serves no mounted pool '{pool.Name}' (the status request lists them)");
        if (r.Code != 0) return ControlProtocol.Error(r.Code.ToString(), r.Message!);
        Microsoft.Extensions.Logging.LoggerExtensions.LogInformation(log, "control socket: snapshot-create {Name} on pool {Pool} with {Count} properties (uid {Uid})", name, pool.Name, props.Count, uid);
        return new JsonObject { ["ok"] = true, ["pool"] = pool.Name, ["mountpoint"] = pool.MountPoint, ["snapshot"] = name };
    }
}
