using Cow.Core.FileSystem;
using Cow.Core.Format;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    /// <summary>
    /// Whether new writes may allocate blocks on the device <paramref name="cookie"/>: today only the log
    /// device does. The base device holds what <c>mkfs --import</c> placed there and is otherwise frozen
    /// (format.md §1). The one place that decides it: statfs, <c>cow df</c> and min-free-percent follow.
    /// </summary>
    internal static bool TakesNewWrites(uint cookie) => SpaceAllocator.TakesNewWrites(cookie);

    /// <summary>True when a commit would make freed blocks allocatable (a write short of space commits and retries).</summary>
    private bool HasPendingFrees()
    {
        lock (_lock) return _space.HasPendingFrees;
    }

    /// <summary>Blocks new writes can still get: the free blocks of the devices that take new writes. Anything
    /// that holds blocks back from new writes (a reserve, fallocate reservations) subtracts here. Caller holds
    /// <c>_lock</c>.</summary>
    private long FreeForNewWritesLocked()
    {
        long free = 0;
        foreach (var s in _space.Devices.Values)
            if (TakesNewWrites(s.Cookie)) free += s.FreeBlocks;
        return Math.Max(0, free - _space.Preallocated);   // fallocate reservations (Engine.Prealloc.cs) are not free
    }

    /// <summary>
    /// The pool's space as statfs(2) (df(1) on the mount) and <c>cow df</c> report it, in blocks:
    /// <list type="bullet">
    /// <item>free = available = what new writes can use (<see cref="FreeForNewWritesLocked"/>);</item>
    /// <item>size (f_blocks) = the data blocks of every device that takes new writes + the used blocks of
    /// every device that does not (the unused part of a frozen base device can hold nothing, so it is neither
    /// size nor used);</item>
    /// <item>used = size − free = what data occupies on every device (referenced by the live tree or a snapshot,
    /// or held back from new writes).</item>
    /// </list>
    /// </summary>
    internal FsStats StatFs()
    {
        lock (_lock)
        {
            long blocks = 0;
            foreach (var s in _space.Devices.Values)
                blocks += TakesNewWrites(s.Cookie) ? s.DataBlocks : s.DataBlocks - s.FreeBlocks;
            long free = FreeForNewWritesLocked();
            return new FsStats(BlockSize, blocks, free, free, 1L << 32, (1L << 32) - _pool.NextIno, NameMax);
        }
    }

    /// <summary>Space of every device, by cookie (cow df).</summary>
    public IReadOnlyList<DeviceUsage> DeviceUsage()
    {
        lock (_lock)
            return _space.Devices.Values.OrderBy(s => s.Cookie)
                .Select(s => new DeviceUsage(s.Cookie, s.DataBlocks, s.DataBlocks - s.FreeBlocks, s.FreeBlocks, TakesNewWrites(s.Cookie))).ToArray();
    }
}
