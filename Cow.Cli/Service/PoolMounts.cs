using System.Diagnostics;
using Cow.Core;
using Cow.Fuse.Mounting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Cow.Cli.Service;

/// <summary>Thrown by <see cref="PoolMounts.StartAsync"/> when a pool cannot be mounted (nothing is left mounted).</summary>
public sealed class ServeStartException(string message) : Exception(message);

/// <summary>One pool served by <c>cow serve</c>, as <c>status</c> reports it.</summary>
public sealed record ServedPool(PoolConfig Config, bool Mounted, string? IomapMode);

/// <summary>
/// The hosted service that mounts every pool of the configuration in this process (Pool.Open, then
/// MountedFileSystem.Start) and, on stop, unmounts each (lazily if busy), commits and closes it.
/// Start is all or nothing: when one pool fails, the pools mounted before it are unmounted and closed and
/// <see cref="ServeStartException"/> names the pool and the reason, so the service never runs half of its
/// configuration (systemd sees the start fail; Restart=on-failure tries again). A mount that is unmounted
/// from outside (umount(8), cow umount) is committed and closed, logged, and reported as not mounted.
/// Threading: Start and Stop are called by the host one at a time; <see cref="Snapshot"/>, <see cref="Find"/>
/// the mount-ended watcher and <see cref="Use"/> may run on any thread concurrently with them (one lock guards the list;
/// a per-pool lock keeps a pool open while <see cref="Use"/> runs, taken after the list lock, never before it).
/// </summary>
public sealed class PoolMounts(ServeConfig config, ILogger<PoolMounts> log) : IHostedService, IServedPools
{
    private sealed class Served(PoolConfig config)
    {
        public readonly PoolConfig Config = config;
        /// <summary>Taken by <see cref="Use"/> and by <see cref="Close"/>: the pool is not closed under a user.</summary>
        public readonly object Use = new();
        public Pool? Pool;
        public MountedFileSystem? Mount;
        public RegisteredWaitHandle? EndWatch;
    }

    private readonly object _lock = new();
    private readonly List<Served> _served = new();
    public DateTime StartedUtc { get; } = DateTime.UtcNow;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var pc in config.Pools)
        {
            var s = new Served(pc);
            try { MountOne(s); }
            catch (Exception e) when (e is PoolException or MountException or IOException or UnauthorizedAccessException or ArgumentException)
            {
                log.LogCritical("pool {Name} ({Path}, configuration line {Line}) cannot be mounted on {MountPoint}: {Reason}; unmounting the pools mounted before it",
                    pc.Name, pc.Path, pc.Line, pc.MountPoint, e.Message);
                StopAll();
                throw new ServeStartException($"pool {pc.Name} ({pc.Path}) cannot be mounted on {pc.MountPoint}: {e.Message}");
            }
            lock (_lock) _served.Add(s);
            s.EndWatch = ThreadPool.RegisterWaitForSingleObject(s.Mount!.Ended, (_, _) => OnEnded(s), null, Timeout.Infinite, executeOnlyOnce: true);
        }
        log.LogInformation("serving {Count} pool(s); pid {Pid}", config.Pools.Count, Environment.ProcessId);
        return Task.CompletedTask;
    }

    private void MountOne(Served s)
    {
        var pc = s.Config;
        Mounter.CheckMountPoint(pc.MountPoint);
        var pool = Pool.Open(pc.Path);
        try
        {
            pool.Engine.Problem += line => log.LogError("pool {Name}: {Problem}", pc.Name, line);
            var mount = MountedFileSystem.Start(pool, pc.ToMountSettings(line => log.LogInformation("pool {Name}: {Line}", pc.Name, line)));
            s.Pool = pool; s.Mount = mount;
            log.LogInformation("mounted pool {Name} ({Path}) on {MountPoint} with {Threads} worker threads", pc.Name, pc.Path, pc.MountPoint, mount.Session.Workers);
        }
        catch { pool.Dispose(); throw; }
    }

    /// <summary>A mount ended without our asking (unmounted from outside): commit and close its pool.</summary>
    private void OnEnded(Served s)
    {
        lock (_lock)
        {
            if (s.Mount == null) return;   // we are stopping it
            log.LogWarning("pool {Name}: {MountPoint} was unmounted from outside; committing and closing the pool", s.Config.Name, s.Config.MountPoint);
            Close(s);
        }
    }

    private void Close(Served s)
    {
        lock (s.Use) CloseLocked(s);
    }

    private void CloseLocked(Served s)
    {
        var sw = Stopwatch.StartNew();
        try { s.Mount?.Unmount(lazyIfBusy: true); }
        catch (MountException e) { log.LogError("pool {Name}: unmount of {MountPoint} failed: {Reason}", s.Config.Name, s.Config.MountPoint, e.Message); }
        s.Mount = null;
        try { s.Pool?.Dispose(); log.LogInformation("pool {Name} ({Path}) committed and closed ({Ms} ms)", s.Config.Name, s.Config.Path, sw.ElapsedMilliseconds); }
        catch (Exception e) when (e is PoolException or IOException) { log.LogError("pool {Name}: closing failed: {Reason}", s.Config.Name, e.Message); }
        s.Pool = null;
    }

    private void StopAll()
    {
        lock (_lock)
        {
            for (int i = _served.Count - 1; i >= 0; i--)
            {
                _served[i].EndWatch?.Unregister(null);
                var m = _served[i].Mount;
                if (m != null) log.LogInformation("pool {Name}: unmounting {MountPoint}", _served[i].Config.Name, m.MountPoint);
                Close(_served[i]);
            }
        }
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        StopAll();
        return Task.CompletedTask;
    }

    /// <summary>Every configured pool and whether it is mounted now.</summary>
    public IReadOnlyList<ServedPool> Status()
    {
        lock (_lock)
            return _served.Select(s => new ServedPool(s.Config, s.Mount != null,
                s.Mount == null ? null : s.Mount.IomapRequest.Granted ? s.Config.Iomap.ToString().ToLowerInvariant() : "off")).ToArray();
    }

    /// <summary>The mounted pool whose configured name, pool folder or mount point is <paramref name="poolOrMountPoint"/>.</summary>
    public ServedPool? Find(string poolOrMountPoint)
    {
        var norm = poolOrMountPoint.StartsWith('/') ? MountTable.Normalize(poolOrMountPoint) : poolOrMountPoint;
        return Status().FirstOrDefault(p => p.Config.Name == poolOrMountPoint || p.Config.Path == norm || p.Config.MountPoint == norm);
    }

    /// <inheritdoc/>
    public bool Use(string poolName, Action<Pool, string?> action)
    {
        Served? s;
        lock (_lock) s = _served.FirstOrDefault(x => x.Config.Name == poolName);
        if (s == null) return false;
        lock (s.Use)
        {
            if (s.Pool == null || s.Mount == null) return false;
            action(s.Pool, s.Config.MountPoint);
            return true;
        }
    }
}
