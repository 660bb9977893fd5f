using Cow.Core.FileSystem;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    /// <summary>Whether new writes may allocate blocks on the device <paramref name="cookie"/> (<see cref="SpaceAllocator.TakesNewWrites"/>).</summary>
    internal static bool TakesNewWrites(uint cookie) => SpaceAllocator.TakesNewWrites(cookie);

    /// <summary>
    /// The pool's space as statfs(2) (df(1) on the mount) and <c>cow df</c> report it, in blocks:
    /// <list type="bullet">
    /// <item>free = available = what new writes can use (<see cref="SpaceAllocator.FreeForNewWrites"/>);</item>
    /// <item>size (f_blocks) = the data blocks of every device that takes new writes + the used blocks of
    /// every device that does not (the unused part of a frozen base device can hold nothing, so it is neither
    /// size nor used: <see cref="SpaceAllocator.SizeBlocks"/>);</item>
    /// <item>used = size − free = what data occupies on every device (referenced by the live tree or a snapshot,
    /// or held back from new writes).</item>
    /// </list>
    /// </summary>
    internal FsStats StatFs()
    {
        lock (_lock)
        {
            long free = _space.FreeForNewWrites();
            return new FsStats(BlockSize, _space.SizeBlocks(), free, free, 1L << 32, (1L << 32) - _pool.NextIno, NameMax);
        }
    }

    /// <summary>Space of every device, by cookie (cow df).</summary>
    public IReadOnlyList<DeviceUsage> DeviceUsage()
    {
        lock (_lock) return _space.Usage();
    }
}
