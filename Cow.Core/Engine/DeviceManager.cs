using System.Diagnostics;
using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// Devices joining and leaving an open pool (format.md 5.2 and 6, "Device removal"): the device table, adding a
/// device (<see cref="Add"/>), and removing one (<see cref="Remove"/>): it is marked <c>removing</c> (no block of it
/// is handed out any more), its blocks are moved to the other devices in relocation batches exactly as the cleaner
/// moves log blocks (<see cref="LogCleaner.RunBatch"/>: copy, then one commit that points every mapping of every
/// generation at the copy), and once it holds nothing, one commit drops it from the table.
/// <para>State: the device table (<c>_table</c>, copies of the stored rows) guarded by <c>StateLock</c>; the listeners
/// and the last problem a resumed removal reported by <c>_listenersLock</c> (taken alone); <c>_removing</c> (Interlocked)
/// makes removals one at a time. Adds, the marking and the drop hold <c>CommitLock</c>; a removal's moves
/// run as a cleaner pass (one relocation at a time). Devices leave <see cref="EngineContext.DeviceSlots"/> with
/// <c>ReuseGate</c> held in write mode, so that no reader is inside a read of them.</para>
/// </summary>
internal sealed class DeviceManager : EnginePart
{
    private readonly Dictionary<uint, DeviceRecord> _table;
    private readonly object _listenersLock = new();
    private IDeviceChangeListener[] _listeners = [];
    private int _removing;   // removals running now (Interlocked): one at a time

    public DeviceManager(EngineContext context) : base(context)
    {
        _table = Store.LoadDevices().ToDictionary(d => d.Cookie);
    }

    /// <summary>How a device row is shown to callers (the pool sets it: paths relative to its folder become absolute).</summary>
    public Func<DeviceRecord, PoolDevice> Describe { get; set; } = r => new PoolDevice(r.Cookie, r.Role, r.Path, r.DeviceSize, r.State);

    /// <summary>The device table now, by cookie.</summary>
    public IReadOnlyList<PoolDevice> List()
    {
        lock (StateLock) return _table.Values.OrderBy(d => d.Cookie).Select(d => Describe(d)).ToArray();
    }

    /// <summary>True when a device of the table has <paramref name="deviceUuid"/>.</summary>
    public bool HasDevice(Guid deviceUuid)
    {
        lock (StateLock) return _table.Values.Any(d => d.DeviceUuid == deviceUuid);
    }

    /// <summary>The pool's label (superblocks of added devices carry it).</summary>
    public string PoolLabel => PoolState.Label;

    /// <summary>True while a device of the pool is being removed.</summary>
    public bool HasRemovals
    {
        get { lock (StateLock) return _table.Values.Any(d => d.State == DeviceState.Removing); }
    }

    public void AddListener(IDeviceChangeListener l)
    {
        lock (_listenersLock) _listeners = [.. _listeners, l];
    }

    public void RemoveListener(IDeviceChangeListener l)
    {
        lock (_listenersLock) _listeners = _listeners.Where(x => x != l).ToArray();
    }

    private IDeviceChangeListener[] Listeners
    {
        get { lock (_listenersLock) return _listeners; }
    }

    /// <summary>
    /// Adds a device. Under <c>CommitLock</c>: the next free cookie (3..1024) is given to <paramref name="prepare"/>,
    /// which formats the device (its superblock written and flushed) and returns it open with its table row; the
    /// listeners hear of it (a kernel doing fuse-iomap registers it); then one commit writes the row (and format
    /// version 2), and the device takes data from then on. A failure before the commit leaves the table as it was.
    /// </summary>
    public PoolDevice Add(Func<uint, (IBlockDevice Device, DeviceRecord Row)> prepare)
    {
        lock (CommitLock)
        {
            ThrowIfUnchangeable();
            uint cookie;
            lock (StateLock)
            {
                cookie = FormatConstants.FirstAddedCookie;
                while (_table.ContainsKey(cookie) || Devices.ContainsKey(cookie)) cookie++;
                if (cookie > FormatConstants.MaxDeviceCookie)
                    throw new DeviceOperationException(Mono.Unix.Native.Errno.ENOSPC, $"the pool already has {_table.Count} devices; cookies go up to {FormatConstants.MaxDeviceCookie}, the devices one fuse-iomap connection registers");
            }
            var (dev, row) = prepare(cookie);
            var shown = Describe(row);
            try
            {
                foreach (var l in Listeners) l.DeviceAdding(shown);
            }
            catch (Exception e)
            {
                dev.Dispose();
                throw new DeviceOperationException(Mono.Unix.Native.Errno.EIO, $"device {row.Path} was not added: {e.Message}", e);
            }
            Commits.CommitLocked(batch =>
            {
                batch.Add(row);
                PoolState.FormatVersion = (int)FormatConstants.FormatVersion;
                Context.DeviceSlots[cookie] = dev;
                Space.AddDevice(cookie, row.DeviceSize / BlockSize, row.Role);
                _table[cookie] = row;
            });
            return shown;
        }
    }

    private void ThrowIfUnchangeable()
    {
        if (Failed) throw new DeviceOperationException(Mono.Unix.Native.Errno.EROFS, "the pool is read-only after an earlier failure; reopen it first");
        if (Commits.Frozen) throw new DeviceOperationException(Mono.Unix.Native.Errno.EBUSY, "the pool is frozen (fsfreeze); thaw it first");
    }

    /// <summary>
    /// Removes device <paramref name="cookie"/>: refused (ENOSPC, sizes named) when its data would not fit on the
    /// other devices in service, and when it is the last device in service; otherwise it is marked removing (one
    /// commit, format version 2), its data moves off in batches (at most <paramref name="share"/> of the time, as
    /// the cleaner's share; 1 = flat out) and it is dropped. A removal already marked (by an earlier call that was
    /// interrupted, or a crash) is carried on. <paramref name="token"/> stops it between batches ("cancelled": the
    /// device stays marked; the mount's background cleaner or a later call finishes it).
    /// </summary>
    public DeviceRemoval Remove(uint cookie, double share, Action<DeviceRemovalProgress>? progress, CancellationToken token)
    {
        // One removal at a time, checked before anything is marked: a refused call changes nothing.
        if (Interlocked.Increment(ref _removing) > 1)
        {
            Interlocked.Decrement(ref _removing);
            throw new DeviceOperationException(Mono.Unix.Native.Errno.EBUSY, "a device removal is already running on this pool");
        }
        try { return RemoveAlone(cookie, share, progress, token); }
        finally { Interlocked.Decrement(ref _removing); }
    }

    private DeviceRemoval RemoveAlone(uint cookie, double share, Action<DeviceRemovalProgress>? progress, CancellationToken token)
    {
        var clock = Stopwatch.StartNew();
        DeviceRecord row;
        lock (CommitLock)
        {
            ThrowIfUnchangeable();
            lock (StateLock)
            {
                if (!_table.TryGetValue(cookie, out var r)) throw new DeviceOperationException(Mono.Unix.Native.Errno.ENOENT, $"the pool has no device with cookie {cookie}");
                row = r;
                if (row.State != DeviceState.Removing) CheckRemovable(cookie);
            }
            if (row.State != DeviceState.Removing)
            {
                var marked = row.Clone();
                marked.State = DeviceState.Removing;
                Commits.CommitLocked(batch =>
                {
                    batch.Add(marked);
                    PoolState.FormatVersion = (int)FormatConstants.FormatVersion;
                    Space[cookie].Draining = true;
                    _table[cookie] = marked;
                });
                row = marked;
            }
        }
        var (stop, moved, left) = Evacuate(cookie, share, progress, token);
        if (stop == "removed") Drop(cookie);
        return new DeviceRemoval(Describe(row), stop, moved, left, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Refuses the removal of <paramref name="cookie"/> when its data would not fit elsewhere. Under StateLock.</summary>
    private void CheckRemovable(uint cookie)
    {
        var sp = Space[cookie];
        var others = Space.Devices.Values.Where(d => d.Cookie != cookie && !d.Draining).ToList();
        if (others.Count == 0)
            throw new DeviceOperationException(Mono.Unix.Native.Errno.EINVAL, $"device {cookie} is the pool's last device in service; add another before removing it");
        long held = sp.ReferencedBlocks() + Reservations.PendingBlocks().Count(b => b.Item1 == cookie);
        long data = others.Sum(d => d.DataBlocks), free = others.Sum(d => d.FreeBlocks);
        // What is left must keep the reserve of the devices that stay (format.md §1) and the fallocate reservations.
        long room = free - data / 100 - Space.Preallocated;
        if (held > room)
            throw new DeviceOperationException(Mono.Unix.Native.Errno.ENOSPC,
                $"device {cookie} holds {Bytes(held)} of data, but the other devices have only {Bytes(Math.Max(0, room))} free "
                + $"(after their 1 % reserve{(Space.Preallocated > 0 ? " and fallocate reservations" : "")}); free space or add a device first");
    }

    private string Bytes(long blocks) => Size((blocks << BlockShift));

    private static string Size(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.##} GiB" : $"{bytes / (double)(1L << 20):0.##} MiB";

    /// <summary>Carries on every removal that is marked (the background cleaner, after a restart or a cancelled
    /// <c>cow device remove</c>). Returns the last removal's stop, or null when there was none.</summary>
    public string? ResumeRemovals(double share, CancellationToken token)
    {
        if (Volatile.Read(ref _removing) > 0) return null;   // one runs now (cow device remove): nothing to resume
        List<uint> marked;
        lock (StateLock) marked = _table.Values.Where(d => d.State == DeviceState.Removing).Select(d => d.Cookie).ToList();
        string? stop = null;
        foreach (var c in marked)
        {
            if (token.IsCancellationRequested) return "cancelled";
            try
            {
                var r = Remove(c, share, null, token);
                stop = r.Stop;
                if (r.Stop is "no room" or "frozen" || r.Stop.StartsWith("failed", StringComparison.Ordinal)) ReportOnce($"removal of device {c} stopped: {r.Stop}");
                if (r.Stop == "removed") Report($"device {c} ({r.Device.Path}) was removed from the pool: its data was moved to the other devices");
            }
            catch (DeviceOperationException e) when (e.Errno == Mono.Unix.Native.Errno.EBUSY) { return null; }   // started meanwhile
            catch (DeviceOperationException e) { ReportOnce($"removal of device {c}: {e.Message}"); return e.Message; }
            catch (Exception e) when (e is IOException or CommitFailedException) { ReportOnce($"removal of device {c} stopped: {e}"); return "failed: " + e.Message; }
        }
        return stop;
    }

    private string? _lastResumeReport;   // under _listenersLock: the background cleaner retries every poll

    /// <summary>Reports <paramref name="message"/> unless it is the one reported last (a retry that fails the same way).</summary>
    private void ReportOnce(string message)
    {
        lock (_listenersLock)
        {
            if (message == _lastResumeReport) return;
            _lastResumeReport = message;
        }
        Report(message);
    }

    /// <summary>Moves every block of device <paramref name="cookie"/> (marked removing) to the other devices. Returns
    /// "removed" when it holds nothing any more (no mapping, no write in flight), else why it stopped.</summary>
    private (string Stop, long Moved, long Left) Evacuate(uint cookie, double share, Action<DeviceRemovalProgress>? progress, CancellationToken token)
    {
        long moved = 0;
        var inFlightSince = Stopwatch.StartNew();
        while (true)
        {
            if (token.IsCancellationRequested) return ("cancelled", moved, Left(cookie));
            var batchClock = Stopwatch.StartNew();
            string? stop;
            long blocks;
            try { (stop, blocks, _) = Cleaner.AsPass(() => Cleaner.RunBatch(() => PlanEvacuation(cookie))); }
            catch (IOException e)
            {
                Report($"device removal: a batch failed and was undone (nothing of it was committed): {e}");
                return ("failed: " + e.Message, moved, Left(cookie));
            }
            moved += blocks;
            if (stop == "evacuated")
            {
                bool writesInFlight;
                lock (StateLock) writesInFlight = Reservations.PendingBlocks().Any(b => b.Item1 == cookie);
                if (!writesInFlight) return ("removed", moved, 0);
                // Writes that were given blocks of the device before it was marked: moved once they end.
                if (inFlightSince.Elapsed > TimeSpan.FromMinutes(1)) return ("failed: writes given blocks of the device before the removal began have not ended", moved, Left(cookie));
                if (token.WaitHandle.WaitOne(20)) return ("cancelled", moved, Left(cookie));
                continue;
            }
            if (stop != null) return (stop, moved, Left(cookie));
            inFlightSince.Restart();
            progress?.Invoke(new DeviceRemovalProgress(moved, Left(cookie)));
            if (share < 1)
            {
                var pause = batchClock.Elapsed * ((1 - share) / share);
                if (token.WaitHandle.WaitOne(pause)) return ("cancelled", moved, Left(cookie));
            }
        }
    }

    private long Left(uint cookie)
    {
        lock (StateLock) return Space.TryGet(cookie, out var sp) ? sp.ReferencedBlocks() : 0;
    }

    /// <summary>The next batch of a removal: segments of the device that hold mapped blocks, up to a batch, with room
    /// reserved on the other devices (base first). Under StateLock.</summary>
    private (string? Stop, List<Relocation> Plan, List<(uint Cookie, long Segment)> Segments) PlanEvacuation(uint cookie)
    {
        if (!Space.TryGet(cookie, out var sp)) return ("evacuated", [], []);
        var segments = new List<(uint, long)>();
        long total = 0;
        foreach (long s in sp.UsedSegments())
        {
            if (total >= LogCleaner.BatchBlocks) break;
            int live = sp.LiveBlocks(s);
            segments.Add((cookie, s));
            total += live;
        }
        if (segments.Count == 0) return ("evacuated", [], segments);
        var plan = Cleaner.ReserveTargets(segments, (want, from) => (Space.AllocateForEvacuation(want, from, out uint d, out long a), d, a));
        return (plan.Count == 0 ? "no room" : null, plan, segments);
    }

    /// <summary>Drops an evacuated device: a commit makes the frees of its last moves durable, one more deletes its
    /// table row (both under <c>CommitLock</c>, so nothing can map it in between); then, with <c>ReuseGate</c> held in
    /// write mode, it leaves the open devices; its superblock is wiped (so it can be used again without --force) and
    /// it is closed; the listeners hear of it.</summary>
    private void Drop(uint cookie)
    {
        DeviceRecord row;
        lock (CommitLock)
        {
            ThrowIfUnchangeable();
            lock (StateLock)
                if (!_table.TryGetValue(cookie, out row!)) return;   // dropped meanwhile
            Commits.CommitLocked(null);
            Commits.CommitLocked(batch =>
            {
                var sp = Space[cookie];
                if (sp.ReferencedBlocks() != 0 || sp.HasPendingFrees || Reservations.PendingBlocks().Any(b => b.Item1 == cookie))
                    throw new InvalidOperationException($"device {cookie} is dropped while it still holds data");
                batch.DeletedDevices.Add(cookie);
                PoolState.FormatVersion = (int)FormatConstants.FormatVersion;
                Space.RemoveDevice(cookie);
                _table.Remove(cookie);
            });
        }
        IBlockDevice? dev;
        ReuseGate.EnterWriteLock();
        try { Context.DeviceSlots.TryRemove(cookie, out dev); }
        finally { ReuseGate.ExitWriteLock(); }
        if (dev != null)
        {
            try
            {
                dev.Write(0, new byte[BlockSize]);
                dev.Flush();
            }
            catch (IOException e) { Report($"device {cookie} ({row.Path}) left the pool, but its superblock could not be wiped: {e.Message}"); }
            finally { dev.Dispose(); }
        }
        var shown = Describe(row);
        foreach (var l in Listeners)
        {
            try { l.DeviceRemoved(shown); }
            catch (Exception e) { Report($"device {cookie} left the pool; a listener failed to hear of it: {e}"); }
        }
    }
}
