using System.Runtime.InteropServices;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Cow.Cli.Service;

/// <summary>Where <c>cow serve</c> read its configuration (a reload reads it again).</summary>
public sealed record ServeConfigSource(string File);

/// <summary>
/// <c>systemctl reload cow</c> (SIGHUP): reads the configuration file again. A file with errors is refused
/// whole, each error logged with its line and column, and the running configuration stays. A valid file's
/// <c>[retention NAME]</c> sections take effect at once (the cleanup runs with them); changes that would
/// need a pool unmounted or the control socket made again (a pool added, removed, or with another path,
/// mount point or mount option; the <c>[control]</c> section) are logged as waiting for the next restart,
/// and nothing is unmounted.
/// Threading: signals are handled on a thread of their own, one reload at a time (<c>_gate</c>); the
/// running configuration (<c>_running</c>) is read and replaced only under it.
/// </summary>
public sealed class ConfigReloader(ServeConfigSource source, ServeConfig config, RetentionScheduler retention, ILogger<ConfigReloader> log) : IHostedService, IDisposable
{
    private PosixSignalRegistration? _sighup;
    private readonly object _gate = new();
    private ServeConfig _running = config;   // under _gate

    public Task StartAsync(CancellationToken cancellationToken)
    {
        // Started with SIGHUP ignored (nohup, or a parent that ignores it), the process inherits SIG_IGN, and .NET
        // keeps an ignored signal ignored: the registration below would never run. A reload is what SIGHUP asks
        // of this service, so an inherited SIG_IGN is reset to the default before registering (a SIGHUP in the
        // microseconds between the two would end the service, as it would any service started without nohup).
        if (SignalDisposition.IsIgnored(SignalDisposition.SIGHUP))
        {
            SignalDisposition.SetDefault(SignalDisposition.SIGHUP);
            log.LogInformation("SIGHUP was ignored when the service started (nohup?): it is handled again, as a reload");
        }
        _sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, ctx =>
        {
            ctx.Cancel = true;   // SIGHUP must not end the service (the default action)
            ThreadPool.QueueUserWorkItem(_ => Reload());
        });
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        _sighup?.Dispose();
        _sighup = null;
    }

    /// <summary>Reads the file again and applies what can be applied without unmounting; true when the file was valid.</summary>
    public bool Reload()
    {
        lock (_gate)
        {
            var next = ServeConfig.Load(source.File, out var errors);
            if (next == null)
            {
                foreach (var e in errors) log.LogError("reload: {Error}", e.ToString());
                log.LogError("reload of {File} refused: {Count} error(s); the running configuration stays", source.File, errors.Count);
                return false;
            }
            foreach (var waiting in ChangesNeedingARestart(_running, next))
                log.LogWarning("reload: {Change}; this takes effect at the next restart (systemctl restart cow)", waiting);
            foreach (var pool in next.Pools)
            {
                var before = _running.Pools.FirstOrDefault(p => p.Name == pool.Name)?.Retention;
                if (before != pool.Retention)
                    log.LogInformation("reload: retention of pool {Name} is now {Rules}", pool.Name, Describe(pool.Retention));
            }
            retention.Reconfigure(next);
            _running = next;
            log.LogInformation("configuration reloaded from {File}", source.File);
            return true;
        }
    }

    /// <summary>What differs between two configurations beyond the retention sections, in words.</summary>
    public static IEnumerable<string> ChangesNeedingARestart(ServeConfig running, ServeConfig next)
    {
        if (running.Control != next.Control) yield return "the [control] section changed";
        foreach (var p in next.Pools)
        {
            var old = running.Pools.FirstOrDefault(x => x.Name == p.Name);
            if (old == null) yield return $"pool {p.Name} is new (it is mounted on {p.MountPoint} at the next restart)";
            else
            {
                if (old with { Retention = null, Replicate = null, Line = 0 } != p with { Retention = null, Replicate = null, Line = 0 })
                    yield return $"pool {p.Name}: its path, mount point or mount options changed";
                if (old.Replicate != p.Replicate) yield return $"pool {p.Name}: its [replicate] section changed";
            }
        }
        foreach (var p in running.Pools.Where(x => next.Pools.All(n => n.Name != x.Name)))
            yield return $"pool {p.Name} is no longer in the file (it stays mounted on {p.MountPoint} until the next restart)";
    }

    private static string Describe(RetentionConfig? r) => r == null
        ? "none"
        : $"timeline={(r.Timeline ? "yes" : "no")} hourly={r.Hourly?.ToString() ?? "-"} daily={r.Daily?.ToString() ?? "-"} weekly={r.Weekly?.ToString() ?? "-"} " +
          $"monthly={r.Monthly?.ToString() ?? "-"} yearly={r.Yearly?.ToString() ?? "-"} max-snapshots={r.MaxSnapshots?.ToString() ?? "-"} min-free-percent={r.MinFreePercent?.ToString() ?? "-"}";
}

/// <summary>Reads and resets a signal's disposition (libc sigaction/signal). Only for signals that .NET has not
/// taken over yet: resetting one that has a .NET handler would remove it. Stateless: thread-safe.</summary>
internal static class SignalDisposition
{
    public const int SIGHUP = 1;

    [DllImport("libc", SetLastError = true)]
    private static extern unsafe int sigaction(int signum, void* act, void* oldact);

    [DllImport("libc", SetLastError = true)]
    private static extern nint signal(int signum, nint handler);

    /// <summary>True when <paramref name="signum"/> is ignored (SIG_IGN) in this process.</summary>
    public static unsafe bool IsIgnored(int signum)
    {
        // struct sigaction starts with the handler on Linux with glibc and musl on the architectures .NET runs on
        // (x86-64, arm64, arm, riscv64, ...; not MIPS); the buffer is larger than the whole struct.
        var old = stackalloc byte[512];
        if (sigaction(signum, null, old) != 0) return false;
        return *(nint*)old == 1;   // SIG_IGN
    }

    /// <summary>Sets <paramref name="signum"/> to its default action (SIG_DFL).</summary>
    public static void SetDefault(int signum) => signal(signum, 0);
}
