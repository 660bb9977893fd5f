using Cow.Core.FileSystem;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    /// <summary>
    /// The pool's space as statfs(2) (df(1) on the mount) and <c>cow df</c> report it, in blocks:
    /// <list type="bullet">
    /// <item>free = available = what new writes can use (<see cref="SpaceAllocator.FreeForNewWrites"/>);</item>
    /// <item>size (f_blocks) = the data blocks of every device less the reserve (<see cref="SpaceAllocator.SizeBlocks"/>);</item>
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

    /// <summary>Runs a cleaning pass now, at full speed (cow clean): moves live blocks off the log until
    /// <paramref name="untilFreePercent"/> of it is free or nothing more can be gained (LogCleaner.cs).</summary>
    public CleanerPass CleanLog(double untilFreePercent, CancellationToken token = default) =>
        _ctx.Cleaner.Clean(untilFreePercent, share: 1, urgentBelowPercent: 100, token);

    /// <summary>Starts (or re-configures) the background cleaner of this pool; it stops when the pool closes.</summary>
    public void StartCleaner(CleanerSettings settings) => _ctx.Cleaner.Start(settings);

    /// <summary>Stops the background cleaner (waits for its batch in progress).</summary>
    public void StopCleaner() => _ctx.Cleaner.Stop();

    /// <summary>What the cleaner is doing and has done since open.</summary>
    public CleanerStatus CleanerStatus() => _ctx.Cleaner.Status();

    /// <summary>Tests only: runs after a cleaner batch's copies are written and before its commit.</summary>
    internal Action? CleanerAfterCopyHook { set => _ctx.Cleaner.AfterCopyHook = value; }

    /// <summary>Devices joining and leaving the pool (DeviceManager.cs).</summary>
    internal DeviceManager DeviceManager => _ctx.DeviceManager;

    /// <summary>Space of every device, by cookie (cow df).</summary>
    public IReadOnlyList<DeviceUsage> DeviceUsage()
    {
        lock (_lock) return _space.Usage();
    }
}
