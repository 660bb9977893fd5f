using Cow.Core.Format;

namespace Cow.Core.FileSystem;

/// <summary>
/// Hears of devices joining and leaving an open pool (<c>cow device add</c>/<c>remove</c>): a kernel doing
/// fuse-iomap must know a device before any mapping names it. Called with the pool's commit lock held and no
/// other engine lock; a listener must not call back into the pool.
/// </summary>
public interface IDeviceChangeListener
{
    /// <summary>A device is joining: no block of it has been handed out yet. Throwing refuses the add (the pool's
    /// device table does not change; the exception's message is the reason the administrator sees).</summary>
    void DeviceAdding(PoolDevice device);

    /// <summary>A device left the pool: no committed record and no cached mapping names it any more.</summary>
    void DeviceRemoved(PoolDevice device);
}

/// <summary>What <c>cow device remove</c> did.</summary>
/// <param name="Stop">"removed" (the device is gone from the pool), "cancelled" (the moves made so far are
/// committed; the device stays, being removed, and a later <c>cow device remove</c> or the mount's background
/// cleaner finishes it), "no room" (the other devices filled up meanwhile), "frozen", "failed: ...".</param>
/// <param name="BlocksMoved">Blocks moved off the device by this call.</param>
/// <param name="BlocksLeft">Blocks the device still holds (0 once removed).</param>
public sealed record DeviceRemoval(PoolDevice Device, string Stop, long BlocksMoved, long BlocksLeft, double Seconds);

/// <summary>Progress of a removal, after each batch of moves: blocks moved so far and blocks the device still holds.</summary>
public readonly record struct DeviceRemovalProgress(long BlocksMoved, long BlocksLeft);

/// <summary>A device operation was refused; <see cref="Exception.Message"/> says why, for an administrator, and
/// <see cref="Errno"/> classifies it (EINVAL bad request, ENOENT no such device, ENOSPC would not fit, EEXIST
/// already in the pool, EBUSY frozen or already being changed, EROFS the pool failed, EIO an I/O error).</summary>
public sealed class DeviceOperationException(Mono.Unix.Native.Errno errno, string message, Exception? inner = null) : Exception(message, inner)
{
    public Mono.Unix.Native.Errno Errno { get; } = errno;
}
