using Cow.Core;
using Cow.Core.FileSystem;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Cow.Cli.Service;

/// <summary>
/// Scrubs the pools whose section sets <c>scrub-every</c> (<see cref="PoolConfig.Scrub"/>), each at every whole multiple
/// of its interval since 1970-01-01 00:00 UTC (<c>1d</c>: each midnight UTC; <c>7d</c>: each Thursday 00:00 UTC, the
/// epoch's weekday), so that a restart of the service moves no scrub; one missed while the service was down is not
/// made up. Each pool's scrub runs on a thread of its own at its <c>scrub-rate</c>, outside the pool's use lock (it may
/// take hours: closing the pool cancels it and waits); its result is logged (<see cref="LogReport"/>: damaged files by
/// path, at error level). A scrub still running at the next boundary, or a pool not mounted then, is skipped (logged).
/// The schedule is the configuration's at start: a reload changes it at the next restart.
/// Threading: the loop task starts scrubs; <c>_running</c> (guarded by itself) holds the scrub task of each pool.
/// </summary>
public sealed class ScrubScheduler(ServeConfig config, IServedPools pools, TimeProvider clock, ILogger<ScrubScheduler> log) : BackgroundService
{
    private readonly Dictionary<string, Task> _running = new(StringComparer.Ordinal);

    /// <summary>Raised once the wait for the next boundary (its argument) is armed (tests advance the clock then).</summary>
    public event Action<DateTime>? Waiting;

    /// <summary>Raised when a scheduled scrub of a pool (its name) ended, with its report (null: it did not run).</summary>
    public event Action<string, ScrubReport?>? Scrubbed;

    /// <summary>The first whole multiple of <paramref name="every"/> since the Unix epoch strictly after <paramref name="nowUtc"/>.</summary>
    public static DateTime NextBoundary(DateTime nowUtc, TimeSpan every)
    {
        long ticks = (nowUtc - DateTime.UnixEpoch).Ticks;
        return DateTime.UnixEpoch.AddTicks((Math.Max(0, ticks) / every.Ticks + 1) * every.Ticks);
    }

    protected override async Task ExecuteAsync(CancellationToken stop)
    {
        var scheduled = config.Pools.Where(p => p.Scrub != null).ToList();
        if (scheduled.Count == 0) return;
        var start = clock.GetUtcNow().UtcDateTime;
        foreach (var p in scheduled)
            log.LogInformation("pool {Name}: scrubbed every {Every} at {Rate}; the next scrub starts at {Next:u}",
                p.Name, ScrubSchedule.Describe(p.Scrub!.Every), ScrubSchedule.DescribeRate(p.Scrub.RateBytesPerSecond), NextBoundary(start, p.Scrub.Every));
        await AtBoundaries(scheduled, p => p.Scrub!.Every, (p, at) => Start(p, at, stop), clock, stop, next => Waiting?.Invoke(next));
    }

    /// <summary>Until <paramref name="stop"/>: waits for the next whole multiple of any item's interval (<see cref="NextBoundary"/>),
    /// then starts every item due then. <paramref name="waiting"/> hears each boundary once its wait is armed. The loop of
    /// the scrub and replication schedules.</summary>
    internal static async Task AtBoundaries<T>(IReadOnlyList<T> items, Func<T, TimeSpan> every, Action<T, DateTime> start, TimeProvider clock,
        CancellationToken stop, Action<DateTime>? waiting = null)
    {
        while (!stop.IsCancellationRequested)
        {
            var now = clock.GetUtcNow().UtcDateTime;
            var next = items.Min(p => NextBoundary(now, every(p)));
            var delay = Task.Delay(next - now, clock, stop);
            waiting?.Invoke(next);
            try { await delay; }
            catch (OperationCanceledException) { return; }
            foreach (var p in items.Where(p => NextBoundary(now, every(p)) == next)) start(p, next);
        }
    }

    private void Start(PoolConfig pc, DateTime boundary, CancellationToken stop)
    {
        lock (_running)
        {
            if (_running.TryGetValue(pc.Name, out var previous) && !previous.IsCompleted)
            {
                log.LogWarning("pool {Name}: the scrub due at {Time:u} is skipped: the previous one is still running", pc.Name, boundary);
                Scrubbed?.Invoke(pc.Name, null);
                return;
            }
            _running[pc.Name] = Task.Factory.StartNew(() => Run(pc, boundary, stop), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
    }

    private void Run(PoolConfig pc, DateTime boundary, CancellationToken stop)
    {
        ScrubReport? report = null;
        try
        {
            Pool? pool = null;
            if (!pools.Use(pc.Name, (p, _) => pool = p))
            {
                log.LogWarning("pool {Name}: the scrub due at {Time:u} is skipped: the pool is not mounted", pc.Name, boundary);
                return;
            }
            log.LogInformation("pool {Name}: scheduled scrub started ({Rate})", pc.Name, ScrubSchedule.DescribeRate(pc.Scrub!.RateBytesPerSecond));
            report = pool!.Scrub(new ScrubSettings { RateBytesPerSecond = pc.Scrub.RateBytesPerSecond }, null, stop);
            LogReport(log, pc.Name, report, "scheduled scrub");
        }
        catch (ObjectDisposedException) { log.LogWarning("pool {Name}: the scrub due at {Time:u} did not run: the pool was closed", pc.Name, boundary); }
        catch (Exception e) when (e is IOException or PoolException)
        {
            log.LogError("pool {Name}: the scrub due at {Time:u} failed: {Reason}", pc.Name, boundary, e.Message);
        }
        finally { Scrubbed?.Invoke(pc.Name, report); }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);   // cancels the scrubs running (each ends at its next segment)
        Task[] running;
        lock (_running) running = _running.Values.ToArray();
        await Task.WhenAll(running).WaitAsync(cancellationToken);
    }

    /// <summary>Most damaged mappings logged one per line; the rest are counted.</summary>
    private const int MaxLogged = 100;

    /// <summary>Logs a scrub's result for pool <paramref name="pool"/>: a clean pass at information level, one stopped
    /// early as a warning, damage as errors (a summary with <see cref="ScrubReport.NoRepair"/>, then each damaged
    /// mapping with its paths). <paramref name="what"/> names the scrub ("scheduled scrub", ...).</summary>
    public static void LogReport(ILogger log, string pool, ScrubReport r, string what)
    {
        if (r.Stop == "busy")
        {
            log.LogWarning("pool {Name}: {What} not run: another scrub of the pool is running", pool, what);
            return;
        }
        string done = $"{r.BlocksChecked:N0} blocks ({r.BytesChecked / (double)(1 << 20):0.0} MiB) checked in {r.Seconds:0.0} s";
        if (r.Clean)
        {
            if (r.Complete) log.LogInformation("pool {Name}: {What} complete: {Done}; no damaged block", pool, what, done);
            else log.LogWarning("pool {Name}: {What} stopped early ({Stop}): {Done}; no damaged block among them", pool, what, r.Stop, done);
            return;
        }
        log.LogError("pool {Name}: {What} {State}: {Done}; {Damaged} damaged block(s). {NoRepair}", pool, what,
            r.Complete ? "complete" : $"stopped early ({r.Stop})", done, r.DamagedBlocks, ScrubReport.NoRepair);
        foreach (var d in r.Damaged.Take(MaxLogged)) log.LogError("pool {Name}: damaged: {Damage}", pool, d.ToString());
        if (r.Damaged.Count > MaxLogged) log.LogError("pool {Name}: and {More} more damaged mappings (cow scrub --json lists them)", pool, r.Damaged.Count - MaxLogged);
    }
}
