using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Cow.Cli.Service;

/// <summary>
/// <c>cow serve --config FILE</c>: the systemd service. A Microsoft.Extensions.Hosting host with the systemd
/// lifetime (Type=notify: READY=1 once every pool is mounted, STOPPING=1 on SIGTERM; active whenever
/// NOTIFY_SOCKET is set), the <see cref="Watchdog"/>, the <see cref="ControlServer"/> and the
/// <see cref="PoolMounts"/>, then the <see cref="RetentionScheduler"/> and the <see cref="ConfigReloader"/> (SIGHUP). Logs go to standard output in the systemd console format (journal priority
/// prefixes <c>&lt;N&gt;</c>). Exit codes: 0 stopped cleanly, 1 a pool or the control socket could not be set
/// up (nothing is left mounted), 2 the configuration has errors (printed with their lines; nothing mounted).
/// </summary>
public static class ServeCommand
{
    public const string DefaultConfig = "/etc/cow/cow.conf";

    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "configuration file (default: $COW_CONFIG, else /etc/cow/cow.conf)", DefaultValueFactory = _ => PoolLocator.ConfigFile };
        var check = new Option<bool>("--check") { Description = "only check the configuration: print every error with its line and column; exit 0 if valid, 2 if not" };
        var cmd = new Command("serve", "run as the Cow service (systemd Type=notify): mount every pool of the configuration, serve the control socket, unmount and commit on SIGTERM") { config, check };
        cmd.SetAction(r => Run(r.GetValue(config)!, r.GetValue(check)));
        return cmd;
    }

    public static int Run(string configFile, bool checkOnly)
    {
        var config = ServeConfig.Load(configFile, out var errors);
        if (config == null)
        {
            foreach (var e in errors) Console.Error.WriteLine(e.ToString());
            Console.Error.WriteLine($"cow: {errors.Count} error(s) in {configFile}; nothing was mounted");
            return 2;
        }
        if (checkOnly)
        {
            Console.WriteLine($"{configFile}: valid ({config.Pools.Count} pool(s): {string.Join(", ", config.Pools.Select(p => $"{p.Name} on {p.MountPoint}"))}; control socket {config.Control.Socket})");
            return 0;
        }
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, Args = [] });
        builder.Services.AddSystemd();
        // AddSystemd registers the notifier only under systemd (or with NOTIFY_SOCKET); the watchdog asks for one
        // anyway (SystemdNotifier does nothing without NOTIFY_SOCKET).
        builder.Services.TryAddSingleton<ISystemdNotifier, SystemdNotifier>();
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddSystemdConsole(o => o.TimestampFormat = null);
        // Stopping unmounts and commits every pool; give it time (the unit's TimeoutStopSec is longer still).
        builder.Services.Configure<HostOptions>(o => { o.ShutdownTimeout = TimeSpan.FromMinutes(5); o.ServicesStartConcurrently = false; o.ServicesStopConcurrently = false; });
        builder.Services.AddSingleton(config);
        builder.Services.AddSingleton<PoolMounts>();
        builder.Services.AddSingleton<ControlServer>();
        // Start order: the control socket first (a socket problem fails before anything is mounted), then the
        // pools, then the watchdog. The host stops them in reverse order.
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ControlServer>());
        builder.Services.AddHostedService(sp => sp.GetRequiredService<PoolMounts>());
        builder.Services.AddHostedService<Watchdog>();
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<IServedPools>(sp => sp.GetRequiredService<PoolMounts>());
        builder.Services.AddSingleton<RetentionScheduler>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RetentionScheduler>());   // after the mounts: it snapshots mounted pools
        builder.Services.AddHostedService<ScrubScheduler>();   // after the mounts: it scrubs mounted pools (scrub-every)
        builder.Services.AddSingleton<ReplicationScheduler>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ReplicationScheduler>());   // after the mounts: it sends from mounted pools
        builder.Services.AddSingleton(new ServeConfigSource(configFile));
        builder.Services.AddHostedService<ConfigReloader>();   // SIGHUP (systemctl reload): retention at once, the rest at restart
        using var host = builder.Build();
        var log = host.Services.GetRequiredService<ILoggerFactory>().CreateLogger("cow.serve");
        try
        {
            host.Start();
        }
        catch (Exception e) when (e is ServeStartException or ControlSocketException)
        {
            log.LogCritical("cow serve cannot start: {Reason}", e.Message);
            try { host.StopAsync().GetAwaiter().GetResult(); } catch (Exception stop) { log.LogError("stopping after the failed start: {Reason}", stop.Message); }
            return 1;
        }
        host.WaitForShutdown();
        log.LogInformation("cow serve stopped: every pool committed and closed");
        return 0;
    }
}
