namespace Cow.Core.Engine;

/// <summary>The exception a failed commit throws (after the pool turned read-only and the failure was reported
/// with its stack): an <see cref="IOException"/>, so that every caller that maps I/O failures to EIO does so.</summary>
internal sealed class CommitFailedException(string message, Exception inner) : IOException(message, inner);

/// <summary>
/// Fail-stop commits. Any exception on the commit path (gathering the batch, a snapshot operation's step,
/// a snapshot deletion's purge, flushing the data devices, the metadata transaction, releasing the blocks
/// it freed) makes the pool read-only until it is reopened: <see cref="CommitPipeline.Failure"/> is set (while <c>_lock</c> is
/// still held when the failure came in the gather, so no change slips in after the changes the gather took
/// out of memory), one <see cref="Problem"/> line carries the full exception with its stack, and from then
/// on every change and every commit (fsync, snapshot operations, freeze, the timed and background commits,
/// close) fails with EIO. EIO, not the EROFS that ext4 (errors=remount-ro) and btrfs (aborted transaction)
/// give new changes: every change path of this engine has always answered EIO after a failed commit, and
/// the tests pin it. Reads keep working from what is in memory. Nothing after the failure reaches the
/// metadata store, so reopening gives the last durable commit (or the failed one, if it failed only after
/// its transaction was durable).
/// <para>Mapping-invalidation listeners that throw: the promise of <see cref="IMappingInvalidationListener"/>
/// (a cached mapping is dropped before its blocks can be reused) cannot be kept for the ranges that failed,
/// so the blocks freed by the commits those ranges may belong to are held back: they stay busy (never
/// allocated) for the rest of this mount, counted in <see cref="DeviceSpace.HeldBackBlocks"/> and reported,
/// and fsck does not count them as leaks. (Ending the iomap connection instead is not the engine's to do;
/// holding blocks back keeps the promise whoever the listener is.) On disk they are free after the commit
/// (their references are gone), which is right on the next open: no kernel caches a mapping across a
/// remount. Which commits: the ranges whose frees a commit takes were recorded (with those frees, under
/// <c>_lock</c>) after the previous commit took its own, and every batch holding them has been delivered by
/// the end of this commit's wait; so a commit holds back its frees when a listener failed between the
/// previous commit's take and the end of its own wait (<c>_listenerFailures</c> against the mark taken at
/// each commit's take, <see cref="MappingInvalidations.TakeFailureMark"/>). A failure so holds back the frees of at most the commit in progress and the next.</para>
/// <para>Where: <see cref="CommitPipeline"/> (the failure state and the commit path) and
/// <see cref="MappingInvalidations"/> (listener failures and the mark); every change path of the engine
/// checks <c>Failed</c> under <c>_lock</c>.</para>
/// </summary>
public sealed partial class Engine
{
    /// <summary>Tests only: the commit path's fault points (<see cref="CommitPipeline.FaultHook"/>). Null in production.</summary>
    internal Action<string>? CommitFaultHook { get => _commits.FaultHook; set => _commits.FaultHook = value; }
}
