using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
using Mono.Unix.Native;

namespace Cow.Cli.Service;

/// <summary>
/// systemd's watchdog: Microsoft.Extensions.Hosting.Systemd sends READY=1 and STOPPING=1 but never WATCHDOG=1,
/// so when systemd sets WATCHDOG_USEC (WatchdogSec= in the unit; WATCHDOG_PID, when set, must be this
/// process) this service sends WATCHDOG=1 through the notify socket every half interval, from the moment the
/// host has started (every pool mounted) until it stops. Each ping first checks every mount with statfs(2),
/// which the FUSE workers answer: a ping is skipped when a configured pool is no longer mounted or its
/// statfs fails, and none is sent while a statfs hangs (a stuck server), so systemd restarts a service that
/// lost a mount or stopped answering (WatchdogSec=, Restart=on-failure).
/// Threading: the timer callback runs on the thread pool, one at a time (the timer is not re-entered:
/// each ping re-arms it).
/// </summary>
public sealed class Watchdog(ISystemdNotifier notifier, IHostApplicationLifetime lifetime, PoolMounts mounts, ILogger<Watchdog> log) : IHostedService, IDisposable
{
    private Timer? _timer;
    private TimeSpan _interval;

    /// <summary>The ping interval asked by the environment (half of WATCHDOG_USEC), or null when there is no watchdog.</summary>
    public static TimeSpan? IntervalFromEnvironment()
    {
        var usec = Environment.GetEnvironmentVariable("WATCHDOG_USEC");
        if (string.IsNullOrEmpty(usec) || !long.TryParse(usec, NumberStyles.None, CultureInfo.InvariantCulture, out long us) || us <= 0) return null;
        var pid = Environment.GetEnvironmentVariable("WATCHDOG_PID");
        if (!string.IsNullOrEmpty(pid) && pid != Environment.ProcessId.ToString(CultureInfo.InvariantCulture)) return null;
        return TimeSpan.FromTicks(Math.Max(us * 10 / 2, TimeSpan.TicksPerMillisecond));
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var interval = IntervalFromEnvironment();
        if (interval == null || !notifier.IsEnabled) return Task.CompletedTask;
        _interval = interval.Value;
        lifetime.ApplicationStarted.Register(() =>
        {
            log.LogInformation("systemd watchdog: pinging every {Ms} ms", (long)_interval.TotalMilliseconds);
            _timer = new Timer(_ => Ping(), null, TimeSpan.Zero, Timeout.InfiniteTimeSpan);
        });
        return Task.CompletedTask;
    }

    private void Ping()
    {
        if (lifetime.ApplicationStopping.IsCancellationRequested) return;
        var status = mounts.Status();
        var lost = status.Where(p => !p.Mounted).Select(p => p.Config.Name).ToArray();
        // statfs(2) of every mount goes through the kernel to a FUSE worker (FUSE_STATFS is never cached): a
        // server that stopped answering blocks here, the pings stop, and systemd restarts the service.
        var failing = status.Where(p => p.Mounted && Syscall.statvfs(p.Config.MountPoint, out _) != 0)
            .Select(p => $"{p.Config.Name} ({Stdlib.GetLastError()})").ToArray();
        if (lost.Length == 0 && failing.Length == 0) notifier.Notify(new ServiceState("WATCHDOG=1"));
        else if (lost.Length > 0) log.LogError("systemd watchdog: not pinging, pool(s) {Pools} no longer mounted", string.Join(", ", lost));
        else log.LogError("systemd watchdog: not pinging, statfs of pool(s) {Pools} failed", string.Join(", ", failing));
        try { _timer?.Change(_interval, Timeout.InfiniteTimeSpan); } catch (ObjectDisposedException) { }
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        _timer?.Dispose();
        return Task.CompletedTask;
    }

    public void Dispose() => _timer?.Dispose();
}
