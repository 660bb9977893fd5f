namespace Cow.Core.Engine;

/// <summary>The exception a failed commit throws (after the pool turned read-only and the failure was reported
/// with its stack): an <see cref="IOException"/>, so that every caller that maps I/O failures to EIO does so.</summary>
internal sealed class CommitFailedException(string message, Exception inner) : IOException(message, inner);

/// <summary>
/// Fail-stop commits. Any exception on the commit path (gathering the batch, a snapshot operation's step,
/// a snapshot deletion's purge, flushing the data devices, the metadata transaction, releasing the blocks
/// it freed) makes the pool read-only until it is reopened: <c>_failure</c> is set (while <c>_lock</c> is
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
/// each commit's take). A failure so holds back the frees of at most the commit in progress and the next.</para>
/// <para>Threading: <c>_failure</c> is volatile and set once; <c>_listenerFailures</c> is Interlocked; the
/// mark is read and moved under <c>_lock</c> by the commit (which holds <c>_commitLock</c>).</para>
/// </summary>
public sealed partial class Engine
{
    /// <summary>Tests only: called at named points of the commit path ("gather": after the dirty state was
    /// taken out; "snapshot": after a snapshot operation's step ran; "purge": halfway through a snapshot
    /// deletion's purge (its blocks released in memory, the snapshot not yet dropped); "write": before the
    /// metadata transaction; "frees": after the commit is durable, before its freed blocks are released), so
    /// that a test can throw there. Null in production.</summary>
    internal Action<string>? CommitFaultHook { get; set; }

    private void CommitFault(string point) => CommitFaultHook?.Invoke(point);

    private int _listenerFailures;            // Interlocked: mapping-invalidation deliveries that threw
    private int _listenerFailuresReported;    // Interlocked: how many of them were reported in full
    private int _listenerFailuresAtLastTake;  // under _lock: _listenerFailures when the last commit took its frees

    /// <summary>Makes the pool read-only after a failure on the commit path of commit <paramref name="seq"/>,
    /// reports it with its stack, and returns the exception to throw.</summary>
    private CommitFailedException FailCommit(long seq, string where, Exception e)
    {
        lock (_lock) _failure ??= e;
        Report($"commit {seq} failed {where}; the pool is now read-only until reopened (every change gets EIO, "
            + $"the last durable commit is kept): {e}");
        return new CommitFailedException($"metadata commit failed: {e.Message}", e);
    }

    /// <summary>Counts a mapping-invalidation delivery that threw (the blocks its changes freed will be held
    /// back) and reports the first few with their stack.</summary>
    private void ListenerFailed(Exception e)
    {
        Interlocked.Increment(ref _listenerFailures);
        if (Interlocked.Increment(ref _listenerFailuresReported) <= 10)
            Report($"mapping invalidation listener failed; the blocks the changes freed are held back from reuse until the pool is reopened: {e}");
    }

    /// <summary>Under _lock, when a commit takes its frees: the previous commit's mark, replaced by now's.</summary>
    private int TakeListenerFailureMark()
    {
        int before = _listenerFailuresAtLastTake;
        _listenerFailuresAtLastTake = Volatile.Read(ref _listenerFailures);
        return before;
    }

    private bool ListenerFailedSince(int mark) => Volatile.Read(ref _listenerFailures) != mark;

    /// <summary>Under _lock: keeps a commit's freed blocks busy for the rest of this mount; the number of blocks.</summary>
    private long HoldBackFrees(List<(uint Cookie, List<(long, long)> Ranges)> frees)
    {
        long blocks = 0;
        foreach (var (cookie, ranges) in frees) blocks += _space[cookie].HoldBack(ranges);
        return blocks;
    }

    private void ReportHeldBack(long seq, long blocks)
    {
        if (blocks > 0)
            Report($"commit {seq}: {blocks} blocks it freed are held back from reuse until the pool is reopened "
                + "(a mapping invalidation listener failed, so a cached mapping of them may still be in use)");
    }
}
