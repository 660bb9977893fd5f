using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    /// <summary>Snapshot names: 1..255 bytes of UTF-8 without '/', NUL or control characters, not "." or "..".</summary>
    public static string? SnapshotNameProblem(string name)
    {
        if (string.IsNullOrEmpty(name)) return "a snapshot name cannot be empty";
        if (name == "." || name == "..") return $"'{name}' is not a valid snapshot name";
        if (name.Contains('/')) return $"snapshot name '{name}' contains '/'";
        if (name.Any(char.IsControl)) return "a snapshot name cannot contain control characters";
        if (Encoding.UTF8.GetByteCount(name) > NameMax) return "a snapshot name is at most 255 bytes";
        return null;
    }

    /// <summary>Tests only: the UTC time recorded as a new snapshot's <c>created_ns</c> (null: the system clock), so a
    /// simulated clock can date snapshots across days and months. Set before the engine is shared.</summary>
    internal Func<DateTime>? SnapshotClock { get; set; }

    internal IReadOnlyList<SnapshotRecord> ListSnapshots()
    {
        lock (_lock) return _snapshots.All.Select(s => s.Copy()).ToList();
    }

    internal SnapshotRecord? FindSnapshot(string name)
    {
        lock (_lock) return _snapshots.Find(name);
    }

    /// <summary>
    /// Takes a snapshot of the live tree in constant time: one group commit that also records the
    /// snapshot at the current live generation and moves the live tree to the next one. Nothing is
    /// copied; from now on records the snapshot shares are copied on their next change instead.
    /// Durable when it returns.
    /// </summary>
    internal Errno CreateSnapshot(string name, out SnapshotRecord snapshot) => CreateSnapshotCore(name, null, out snapshot);

    private Errno CreateSnapshotCore(string name, IReadOnlyDictionary<string, string>? properties, out SnapshotRecord snapshot)
    {
        snapshot = new SnapshotRecord();
        if (SnapshotNameProblem(name) != null) return Errno.EINVAL;
        WaitForWritesInProgress();   // before the commit lock: a write may need it (ENOSPC commits)
        lock (_commitLock)
        {
            lock (_lock)
            {
                if (Failed) return Errno.EIO;
                if (_commits.Frozen) return Errno.EBUSY;
                if (_snapshots.Find(name) != null) return Errno.EEXIST;
            }
            var snap = new SnapshotRecord { Name = name, CreatedNs = SnapshotClock is { } clock ? (clock().Ticks - DateTime.UnixEpoch.Ticks) * 100 : NowNs() };
            if (properties != null) foreach (var (k, v) in properties) snap.Properties[k] = v;
            _commits.CommitLocked(batch =>
            {
                snap.Gen = _pool.LiveGen;
                snap.CommitSeq = _pool.CommitSeq + 1;
                _pool.LiveGen++;
                _snapshots.Add(snap);
                batch.Add(snap);
            });
            snapshot = snap;
            return 0;
        }
    }

    /// <summary>
    /// Deletes a snapshot and every record that no remaining view (live tree or snapshot) sees any more;
    /// blocks whose last reference goes are free once this returns. EBUSY when the snapshot is held
    /// (<see cref="SnapshotHolds"/> names the holds) or the pool is frozen.
    /// </summary>
    public Errno DeleteSnapshot(string name)
    {
        // The state lock is held throughout (it is reentrant): a record retired in memory between the
        // first commit and the query would otherwise escape the purge and leak.
        lock (_commitLock)
            lock (_lock)
            {
                int i = _snapshots.IndexOf(name);
                if (i < 0) return Errno.ENOENT;
                if (Failed) return Errno.EIO;
                if (_commits.Frozen || _snapshots[i].Holds.Count > 0) return Errno.EBUSY;
                _commits.CommitLocked(null);
                var snap = _snapshots[i];
                // A failure halfway through the purge would leave part of it in memory for a later commit: fail-stop.
                try
                {
                    long prev = i > 0 ? _snapshots[i - 1].Gen : 0;
                    long next = i + 1 < _snapshots.Count ? _snapshots[i + 1].Gen : _pool.LiveGen;
                    var (inodes, dirents, chunks) = Store.FindUnseen(snap.Gen, next, prev);
                    _versions.Purge(inodes, dirents, chunks);
                    _commits.Fault("purge");
                    _snapshots.RemoveAt(i);
                }
                catch (Exception e) { throw _commits.Fail(_pool.CommitSeq + 1, $"while purging deleted snapshot '{name}'", e); }
                _commits.CommitLocked(batch => batch.DeletedSnapshots.Add(snap.Gen));
                return 0;
            }
    }

    /// <summary>
    /// Space per snapshot (and for the live tree, named "") : bytes of the distinct device blocks it
    /// references (a block two files share through a range clone counts once) and bytes only it holds
    /// (what deleting it would free). Reads every extent map: O(mapped blocks), a report, not a hot path.
    /// <para>Per block, the generations of every chunk version mapping it (of any file) form one interval
    /// [least birth, greatest death) with no view inside a gap: a block is only ever newly mapped while a
    /// live version maps it (a write's new block, a chunk's copy-on-write, a clone from a live file), and
    /// the versions a purge removes were seen by no view. So a view sees the block exactly when its
    /// generation is in that interval.</para>
    /// </summary>
    public List<SnapshotSpace> SpaceReport()
    {
        lock (_commitLock)
        {
            if (!_commits.Frozen) _commits.CommitLocked(null);
            List<SnapshotRecord> snaps; long liveGen;
            lock (_lock) { snaps = _snapshots.All.ToList(); liveGen = _pool.LiveGen; }
            var views = snaps.Select(s => s.Gen).Append(liveGen).ToArray(); // ascending
            var interval = new Dictionary<(uint, long), (long Min, long Max)>();
            lock (_lock)
            {
                foreach (var c in Store.AllChunks())
                {
                    long death = Math.Min(c.Death, liveGen + 1);
                    foreach (var e in c.Extents)
                        for (long b = e.Address; b < e.Address + e.Count; b++)
                        {
                            var key = (e.Device, b);
                            interval[key] = interval.TryGetValue(key, out var iv) ? (Math.Min(iv.Min, c.Birth), Math.Max(iv.Max, death)) : (c.Birth, death);
                        }
                }
            }
            var referenced = new long[views.Length + 1]; // difference array: views [first, last) see the block
            var exclusive = new long[views.Length];
            foreach (var (min, max) in interval.Values)
            {
                int first = Array.FindIndex(views, g => g >= min);
                if (first < 0 || views[first] >= max) continue;
                int last = first + 1;
                while (last < views.Length && views[last] < max) last++;
                referenced[first]++; referenced[last]--;
                if (last == first + 1) exclusive[first]++;
            }
            for (int v = 1; v < views.Length; v++) referenced[v] += referenced[v - 1];
            var result = new List<SnapshotSpace>();
            for (int v = 0; v < views.Length; v++)
            {
                var (nm, created) = v < snaps.Count ? (snaps[v].Name, snaps[v].CreatedNs) : ("", 0L);
                result.Add(new SnapshotSpace(nm, views[v], created, referenced[v] << BlockShift, exclusive[v] << BlockShift));
            }
            return result;
        }
    }
}

public sealed partial class Engine
{
    /// <summary>Commits, then runs <paramref name="action"/> with every change blocked (fsck). A frozen engine
    /// is not committed: <paramref name="action"/> sees the state of the freeze, and changes made since
    /// (which fsck would take for leaks) make it throw.</summary>
    internal T Exclusive<T>(Func<T> action)
    {
        lock (_commitLock)
            lock (_lock)
            {
                if (_commits.Frozen && _commits.HasChanges())
                    throw new InvalidOperationException("the pool is frozen with changes made since the freeze; thaw it before checking it");
                if (!Failed && !_commits.Frozen) _commits.CommitLocked(null);
                return action();
            }
    }

    /// <summary>True while <paramref name="ino"/> has an open handle on the live tree (fsck: unlinked-but-open files).</summary>
    internal bool IsOpen(long ino)
    {
        lock (_lock) return _cache.TryGetCached(ino, out var li) && !li.Deleted && li.OpenCount > 0;
    }

    internal IReadOnlyDictionary<uint, DeviceSpace> Space => _space.Devices;
    internal IReadOnlyDictionary<uint, Devices.IBlockDevice> Devices => _devices;
    internal PoolRecord PoolState => _pool;
    internal IReadOnlyList<SnapshotRecord> SnapshotList => _snapshots.All;
}
