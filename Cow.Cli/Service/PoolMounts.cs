using System.Diagnostics;
using Cow.Core;
using Cow.Fuse.Mounting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Cow.Cli.Service;

/// <summary>Thrown by <see cref="PoolMounts.StartAsync"/> when a pool cannot be mounted (nothing is left mounted).</summary>
public sealed class ServeStartException(string message) : Exception(message);

/// <summary>One pool served by <c>cow serve</c> or <c>cow mount</c>, as <c>status</c> reports it (<see cref="Snapshot"/>:
/// the snapshot mounted read-only instead of the live tree, or null;
/// <see cref="Cleaner"/> and <see cref="BlockSize"/>: the cleaner's state and the pool's block size, when asked for and mounted.</summary>
/// <param name="PendingPurges">Deleted snapshots whose records the mount is still purging (their space is not free yet).</param>
public sealed record ServedPool(PoolConfig Config, bool Mounted, string? IomapMode, string? Snapshot = null, Core.FileSystem.CleanerStatus? Cleaner = null, int BlockSize = 0, int PendingPurges = 0);

/// <summary>
/// The pools mounted by this process: for <c>cow serve</c>, the hosted service that mounts every pool of the
/// configuration (Pool.Open, then MountedFileSystem.Start) and, on stop, unmounts each (lazily if busy), commits
/// and closes it; for <c>cow mount</c>, the one pool it mounted (<see cref="Adopt"/>). The control socket
/// (<see cref="ControlServer"/>) works on either the same way. Once a pool is mounted, its background cleaner
/// starts with the pool's settings (<see cref="PoolConfig.Cleaner"/>; none when off); it pauses while a rollback
/// has the pool unmounted and while <see cref="Clean"/> (cow clean) runs a pass, and stops before the pool closes.
/// Start is all or nothing: when one pool fails, the pools mounted before it are unmounted and closed and
/// <see cref="ServeStartException"/> names the pool and the reason, so the service never runs half of its
/// configuration (systemd sees the start fail; Restart=on-failure tries again). A mount that is unmounted
/// from outside (umount(8), cow umount) is committed and closed, logged, and reported as not mounted.
/// Threading: Start and Stop are called by the host one at a time; <see cref="Status"/>, <see cref="Find"/>,
/// <see cref="WithPool{T}"/>, <see cref="WithPoolUnmounted{T}"/>, <see cref="Use"/> and the mount-ended watcher
/// may run on any thread concurrently with them. <c>_lock</c> guards the list and each entry's Mount/Pool/EndWatch
/// fields; each pool's <c>Served.Use</c> lock is held while an operation uses the pool (Use, WithPool,
/// WithPoolUnmounted, Close), so a pool is never closed or remounted under a user. A cleaning pass
/// (<see cref="Clean"/>, which may run for minutes) and a device removal (<see cref="RemoveDevice"/>, which may run
/// for hours) do not hold <c>Use</c>: they register in <c>Served.Cleans</c> and <c>Served.Removals</c> (guarded by
/// <c>Served.CleanLock</c>, taken last), and Close cancels them and waits for them before it closes the pool.
/// Every close runs under <c>_lock</c>, so <see cref="Status"/> reads the cleaner's state under it.
/// Lock order: <c>_lock</c> before <c>Served.Use</c> before <c>Served.CleanLock</c>, never the reverse (Use reads
/// the list under <c>_lock</c> and releases it first).
/// </summary>
public sealed class PoolMounts(ServeConfig config, ILogger<PoolMounts> log) : IHostedService, IServedPools
{
    private sealed class Served(PoolConfig config)
    {
        public readonly PoolConfig Config = config;
        /// <summary>Taken by <see cref="Use"/> and by <see cref="Close"/>: the pool is not closed under a user.</summary>
        public readonly object Use = new();
        /// <summary>How a <c>cow mount</c> mounted it (a remount uses the same); null: from <see cref="Config"/>.</summary>
        public MountSettings? Settings;
        public Pool? Pool;
        public MountedFileSystem? Mount;
        public RegisteredWaitHandle? EndWatch;
        /// <summary>Guards <see cref="Cleans"/>; taken after <see cref="Use"/>, never before.</summary>
        public readonly object CleanLock = new();
        /// <summary>The cleaning passes running now (<see cref="Clean"/>), each cancellable.</summary>
        public readonly List<CancellationTokenSource> Cleans = new();
        /// <summary>The device removals running now (<see cref="RemoveDevice"/>), each cancellable; guarded by <see cref="CleanLock"/>.</summary>
        public readonly List<CancellationTokenSource> Removals = new();
    }

    private readonly object _lock = new();
    private readonly List<Served> _served = new();
    public DateTime StartedUtc { get; } = DateTime.UtcNow;

    /// <summary>What to tell the administrator to do when a pool could not be mounted again after a rollback.</summary>
    public string RestartHint { get; init; } = "restart the service (systemctl restart cow)";

    /// <summary>True for the served set of a <c>cow mount</c>, which ends when its mount is unmounted (cow umount,
    /// umount(8)): that is no surprise there, and the caller logs it; under <c>cow serve</c> it is a warning.</summary>
    public bool EndsWhenUnmounted { get; init; }

    /// <summary>Raised (on the thread that closed it, under the pool's lock: do not block) after a pool was
    /// committed and closed, by <see cref="StopAsync"/>, an unmount from outside, or a failed remount.</summary>
    public event Action<string>? PoolClosed;

    /// <summary>Takes over a pool that this process opened and mounted (<c>cow mount</c>): from now on it is served,
    /// watched, used, remounted (with <paramref name="settings"/>) and closed like a configured pool.</summary>
    public void Adopt(PoolConfig pc, MountSettings settings, Pool pool, MountedFileSystem mount)
    {
        var s = new Served(pc) { Settings = settings, Pool = pool, Mount = mount };
        lock (_lock) { _served.Add(s); Watch(s); }
        lock (s.Use) StartCleaner(s);
    }

    /// <summary>Starts the background cleaner of a mounted pool with its settings, unless it is off or a
    /// <see cref="Clean"/> pass or a <see cref="RemoveDevice"/> runs (it starts again when that ends). Called with
    /// <c>s.Use</c> held.</summary>
    private static void StartCleaner(Served s)
    {
        if (s.Config.Cleaner is not { } settings || s.Pool == null || s.Mount == null) return;
        lock (s.CleanLock) if (s.Cleans.Count > 0 || s.Removals.Count > 0) return;
        s.Pool.StartCleaner(settings);
    }

    private MountSettings SettingsOf(Served s) =>
        s.Settings ?? s.Config.ToMountSettings(line => log.LogInformation("pool {Name}: {Line}", s.Config.Name, line));

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
            lock (_lock) { _served.Add(s); Watch(s); }
            lock (s.Use) StartCleaner(s);
        }
        log.LogInformation("serving {Count} pool(s); pid {Pid}", config.Pools.Count, Environment.ProcessId);
        return Task.CompletedTask;
    }

    private void MountOne(Served s)
    {
        var pc = s.Config;
        Mounter.CheckMountPoint(pc.MountPoint);
        var pool = Pool.Open(pc.Path, purgeInBackground: true);
        if (pc.CacheBytes is long cacheBytes) pool.CacheBudget = new Core.Engine.CacheBudget(cacheBytes);
        try
        {
            pool.Problem += line => log.LogError("pool {Name}: {Problem}", pc.Name, line);
            var mount = MountedFileSystem.Start(pool, pc.ToMountSettings(line => log.LogInformation("pool {Name}: {Line}", pc.Name, line)));
            s.Pool = pool; s.Mount = mount;
            log.LogInformation("mounted pool {Name} ({Path}) on {MountPoint} with {Threads} worker threads; cleaner {Cleaner}", pc.Name, pc.Path, pc.MountPoint, mount.Session.Workers,
                Cli.CleanerOptions.Describe(pc.Cleaner));
        }
        catch { pool.Dispose(); throw; }
    }

    /// <summary>A mount ended without our asking (unmounted from outside): commit and close its pool.</summary>
    private void OnEnded(Served s, MountedFileSystem mount)
    {
        lock (_lock)
        {
            if (s.Mount != mount) return;   // we are stopping it, or it was mounted again since
            if (!EndsWhenUnmounted)
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
        StopCleaning(s);
        try { s.Mount?.Unmount(lazyIfBusy: true); }
        catch (MountException e) { log.LogError("pool {Name}: unmount of {MountPoint} failed: {Reason}", s.Config.Name, s.Config.MountPoint, e.Message); }
        s.Mount = null;
        if (s.Pool == null) return;   // closed before (unmounted from outside, or a failed remount)
        try { s.Pool.Dispose(); log.LogInformation("pool {Name} ({Path}) committed and closed ({Ms} ms)", s.Config.Name, s.Config.Path, sw.ElapsedMilliseconds); }
        catch (Exception e) when (e is PoolException or IOException) { log.LogError("pool {Name}: closing failed: {Reason}", s.Config.Name, e.Message); }
        s.Pool = null;
        PoolClosed?.Invoke(s.Config.Name);
    }

    /// <summary>Cancels the <see cref="Clean"/> passes and <see cref="RemoveDevice"/> removals of a pool, waits until
    /// they have ended (each at the end of its batch), and stops its background cleaner. Called with <c>s.Use</c> held.</summary>
    private static void StopCleaning(Served s)
    {
        if (s.Pool == null) return;
        lock (s.CleanLock)
        {
            foreach (var c in s.Cleans.Concat(s.Removals)) c.Cancel();
            while (s.Cleans.Count > 0 || s.Removals.Count > 0) Monitor.Wait(s.CleanLock);
        }
        s.Pool.StopCleaner();
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

    /// <summary>Every configured pool and whether it is mounted now; with <paramref name="cleaner"/>, also the
    /// cleaner's state of each mounted pool (read under <c>_lock</c>, under which every close runs).</summary>
    public IReadOnlyList<ServedPool> Status(bool cleaner = false)
    {
        lock (_lock)
            return _served.Select(s => new ServedPool(s.Config, s.Mount != null,
                s.Mount == null ? null : s.Mount.IomapRequest.Granted ? s.Config.Iomap.ToString().ToLowerInvariant() : "off", s.Settings?.Snapshot,
                cleaner && s.Mount != null && s.Pool != null ? s.Pool.CleanerStatus() : null, s.Pool?.BlockSize ?? 0, s.Pool?.PendingPurges ?? 0)).ToArray();
    }

    /// <summary>
    /// Runs a cleaning pass now on the mounted pool <paramref name="name"/> (cow clean): the background cleaner
    /// pauses (at the end of its batch) and the pass runs at full speed until <paramref name="untilFreePercent"/>
    /// of the log is free, nothing more can be moved, or <paramref name="token"/> or <see cref="CancelCleans"/>
    /// cancels it; then the background cleaner starts again. The pool is not closed while the pass runs (a close
    /// cancels it and waits), but other operations on the pool are not held up by it. Returns the cleaner's state
    /// before the pass, the pass and the block size; null when the pool is not mounted.
    /// </summary>
    public (Core.FileSystem.CleanerStatus Before, Core.FileSystem.CleanerPass Pass, int BlockSize)? Clean(string name, double untilFreePercent, CancellationToken token)
    {
        (Core.FileSystem.CleanerStatus, Core.FileSystem.CleanerPass, int)? result = null;
        if (!RunAlone(name, s => s.Cleans, token, (pool, t) => result = (pool.CleanerStatus(), pool.CleanLog(untilFreePercent, t), pool.BlockSize))) return null;
        return result;
    }

    /// <summary>
    /// Removes the device <paramref name="cookieOrPath"/> (a cookie, or an absolute path) from the mounted pool
    /// <paramref name="name"/> (cow device remove): as <see cref="Clean"/>, the background cleaner pauses (so that it
    /// does not try to carry the removal on at the same time) and starts again when the removal ends; the data moves
    /// at full speed until the device is empty, or <paramref name="token"/> or <see cref="CancelRemovals"/> cancels
    /// it (the device then stays marked removing, and the background cleaner carries the removal on at its share).
    /// <paramref name="progress"/> hears of each batch. Throws <see cref="Core.FileSystem.DeviceOperationException"/>
    /// when the removal is refused. Null when the pool is not mounted.
    /// </summary>
    public Core.FileSystem.DeviceRemoval? RemoveDevice(string name, string cookieOrPath, Action<Core.FileSystem.DeviceRemovalProgress>? progress, CancellationToken token)
    {
        Core.FileSystem.DeviceRemoval? result = null;
        if (!RunAlone(name, s => s.Removals, token, (pool, t) => result = pool.RemoveDevice(cookieOrPath, 1, progress, t))) return null;
        return result;
    }

    /// <summary>Runs <paramref name="work"/> on the mounted pool <paramref name="name"/> with its background cleaner
    /// paused, registered in <paramref name="list"/> (so that a close cancels it and waits for it) with a token
    /// cancelled by <paramref name="token"/> or a cancel of that list; then the last of them to end starts the
    /// background cleaner again (unless the pool was closed meanwhile). False when the pool is not mounted.</summary>
    private bool RunAlone(string name, Func<Served, List<CancellationTokenSource>> list, CancellationToken token, Action<Pool, CancellationToken> work)
    {
        Served? s;
        lock (_lock) s = _served.FirstOrDefault(x => x.Config.Name == name);
        if (s == null) return false;
        Pool pool;
        var cts = CancellationTokenSource.CreateLinkedTokenSource(token);
        lock (s.Use)
        {
            if (s.Pool == null || s.Mount == null) { cts.Dispose(); return false; }
            pool = s.Pool;
            lock (s.CleanLock) list(s).Add(cts);
            pool.StopCleaner();   // waits for its batch in progress; the work below then runs alone
        }
        try
        {
            work(pool, cts.Token);
            return true;
        }
        finally
        {
            lock (s.CleanLock) { list(s).Remove(cts); Monitor.PulseAll(s.CleanLock); }
            cts.Dispose();
            // The last one to end starts the background cleaner again (unless the pool was closed meanwhile).
            lock (s.Use) if (s.Pool == pool) StartCleaner(s);
        }
    }

    /// <summary>Cancels every <see cref="Clean"/> pass running on the pool <paramref name="name"/> (cow clean's
    /// Ctrl-C); each ends at the end of its batch and reports "cancelled". Returns how many were running.</summary>
    public int CancelCleans(string name) => Cancel(name, s => s.Cleans);

    /// <summary>Cancels every <see cref="RemoveDevice"/> running on the pool <paramref name="name"/> (cow device
    /// remove's Ctrl-C); each ends at the end of its batch and reports "cancelled". Returns how many were running.</summary>
    public int CancelRemovals(string name) => Cancel(name, s => s.Removals);

    private int Cancel(string name, Func<Served, List<CancellationTokenSource>> list)
    {
        Served? s;
        lock (_lock) s = _served.FirstOrDefault(x => x.Config.Name == name);
        if (s == null) return 0;
        lock (s.CleanLock)
        {
            foreach (var c in list(s)) c.Cancel();
            return list(s).Count;
        }
    }

    /// <summary>Runs <paramref name="op"/> on the engine of the mounted pool <paramref name="name"/> (configured
    /// name) while it stays mounted; null when it is not mounted.</summary>
    public T? WithPool<T>(string name, Func<Pool, T> op) where T : class
    {
        T? result = null;
        Use(name, (pool, _) => result = op(pool));
        return result;
    }

    /// <summary>
    /// Unmounts the pool <paramref name="name"/> (never lazily: a busy mount point gets <paramref name="busy"/>
    /// with the reason and stays mounted), runs <paramref name="op"/> on its engine, and mounts it again with
    /// the same settings. Between the two, the mount point shows the folder under it: the pool is briefly
    /// unavailable. When the remount fails, the pool is committed, closed and reported as not mounted, and
    /// <paramref name="remountFailed"/> says why. Null when the pool is not mounted.
    /// </summary>
    public T? WithPoolUnmounted<T>(string name, Func<Pool, T> op, Func<string, T> busy, Func<T, string, T> remountFailed) where T : class
    {
        lock (_lock)
        {
            var s = _served.FirstOrDefault(x => x.Config.Name == name);
            if (s == null) return null;
            lock (s.Use) return UnmountedLocked(s, op, busy, remountFailed);
        }
    }

    private T? UnmountedLocked<T>(Served s, Func<Pool, T> op, Func<string, T> busy, Func<T, string, T> remountFailed) where T : class
    {
        if (s.Mount == null || s.Pool == null) return null;
        s.EndWatch?.Unregister(null);
        s.EndWatch = null;
        s.Pool.StopCleaner();   // paused while the pool is unmounted; started again once it is mounted
        try { s.Mount.Unmount(lazyIfBusy: false); }
        catch (MountException e)
        {
            Watch(s);
            StartCleaner(s);
            return busy($"{s.Config.MountPoint} is busy ({e.Message}): files are open or a process works in it (fuser -vm {s.Config.MountPoint} lists them); close them and try again");
        }
        s.Mount = null;
        log.LogInformation("pool {Name}: unmounted {MountPoint} for a rollback", s.Config.Name, s.Config.MountPoint);
        var result = op(s.Pool);
        try
        {
            Mounter.CheckMountPoint(s.Config.MountPoint);
            s.Mount = MountedFileSystem.Start(s.Pool, SettingsOf(s));
            log.LogInformation("pool {Name}: mounted again on {MountPoint}", s.Config.Name, s.Config.MountPoint);
            Watch(s);
            StartCleaner(s);
            return result;
        }
        catch (Exception e) when (e is MountException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            log.LogCritical("pool {Name}: cannot mount {MountPoint} again: {Reason}; the pool is closed", s.Config.Name, s.Config.MountPoint, e.Message);
            CloseLocked(s);
            return remountFailed(result, $"the pool could not be mounted again on {s.Config.MountPoint} ({e.Message}); it is closed: {RestartHint}");
        }
    }

    private void Watch(Served s)
    {
        var m = s.Mount!;
        s.EndWatch = ThreadPool.RegisterWaitForSingleObject(m.Ended, (_, _) => OnEnded(s, m), null, Timeout.Infinite, executeOnlyOnce: true);
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
