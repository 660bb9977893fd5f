using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Cow.Cli.Service;

/// <summary>
/// Replicates the pools that have a <c>[replicate NAME]</c> section (<see cref="PoolConfig.Replicate"/>), each at every
/// whole multiple of its <c>every</c> since 1970-01-01 00:00 UTC (as <see cref="ScrubScheduler"/> schedules scrubs), by
/// running <see cref="Replicator"/> from the pool's mount point: its cow commands reach this service through its control
/// socket (COW_SOCKET), so the pool stays mounted, and an ssh target runs its own cow. A run still going at the next
/// boundary, or a pool not mounted then, is skipped (logged); what each run sent or why it failed is logged. The
/// schedule is the configuration's at start: a reload changes it at the next restart.
/// Threading: the loop task starts runs; <c>_running</c> (guarded by itself) holds the run task of each pool.
/// </summary>
public sealed class ReplicationScheduler(ServeConfig config, IServedPools pools, TimeProvider clock, ILogger<ReplicationScheduler> log) : BackgroundService
{
    private readonly Dictionary<string, Task> _running = new(StringComparer.Ordinal);

    /// <summary>Raised when a run of a pool (its name) ended, with its exit code (null: skipped).</summary>
    public event Action<string, int?>? Replicated;

    protected override async Task ExecuteAsync(CancellationToken stop)
    {
        var scheduled = config.Pools.Where(p => p.Replicate != null).ToList();
        if (scheduled.Count == 0) return;
        var start = clock.GetUtcNow().UtcDateTime;
        foreach (var p in scheduled)
            log.LogInformation("pool {Name}: replicated to {Target} every {Every}; the next run starts at {Next:u}",
                p.Name, p.Replicate!.Target, ScrubSchedule.Describe(p.Replicate.Every), ScrubScheduler.NextBoundary(start, p.Replicate.Every));
        await ScrubScheduler.AtBoundaries(scheduled, p => p.Replicate!.Every, Start, clock, stop);
    }

    private void Start(PoolConfig pc, DateTime boundary)
    {
        lock (_running)
        {
            if (_running.TryGetValue(pc.Name, out var previous) && !previous.IsCompleted)
            {
                log.LogWarning("pool {Name}: the replication due at {Time:u} is skipped: the previous one is still running", pc.Name, boundary);
                Replicated?.Invoke(pc.Name, null);
                return;
            }
            _running[pc.Name] = Task.Factory.StartNew(() => Run(pc, boundary), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
    }

    /// <summary>One run now (the loop's, or a test's).</summary>
    internal int? Run(PoolConfig pc, DateTime boundary)
    {
        int? code = null;
        try
        {
            if (!pools.Use(pc.Name, (_, _) => { }))
            {
                log.LogWarning("pool {Name}: the replication due at {Time:u} is skipped: the pool is not mounted", pc.Name, boundary);
                return null;
            }
            var r = pc.Replicate!;
            var env = new Dictionary<string, string> { ["COW_SOCKET"] = config.Control.Socket };
            code = new Replicator(pc.MountPoint, r.Target, r.HoldTag, r.RemoteCow,
                m => log.LogInformation("pool {Name}: replicate: {Message}", pc.Name, m), env,
                m => log.LogError("pool {Name}: replicate to {Target}: {Message}", pc.Name, r.Target, m)).Run(dryRun: false);
            if (code == 0) log.LogInformation("pool {Name}: replicated to {Target}", pc.Name, r.Target);
            return code;
        }
        catch (Exception e) when (e is IOException or System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            log.LogError("pool {Name}: the replication due at {Time:u} failed: {Reason}", pc.Name, boundary, e.Message);
            return 1;
        }
        finally { Replicated?.Invoke(pc.Name, code); }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        Task[] running;
        lock (_running) running = _running.Values.ToArray();
        await Task.WhenAll(running).WaitAsync(cancellationToken);
    }
}
