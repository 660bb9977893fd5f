using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

// What fsck reads of an open engine, and its exclusive access.
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
    /// <summary>The generation histogram's classes (fsck compares them with the space maps).</summary>
    internal IReadOnlyDictionary<EraKey, long> GenerationClasses => _space.Generations.Blocks;
    internal IReadOnlyDictionary<uint, Devices.IBlockDevice> Devices => _devices;
    internal PoolRecord PoolState => _pool;
    internal IReadOnlyList<SnapshotRecord> SnapshotList => _snapshots.All;
}
