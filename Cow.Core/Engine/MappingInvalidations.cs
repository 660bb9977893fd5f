using System.Runtime.InteropServices;

namespace Cow.Core.Engine;

/// <summary>
/// Extent-map changes of live files on their way to the <see cref="IMappingInvalidationListener"/>s (the
/// kernel's iomap mapping cache, read-ahead buffers): recorded where the map changes, delivered outside the
/// engine's lock, and awaited by a commit before the blocks it freed can be allocated again.
/// <para>Owns the listeners (a copy-on-write array, replaced under the engine's <c>_lock</c>, read without
/// it), the ranges recorded and not yet delivered (under <c>_lock</c>), a spare list to swap with
/// (Interlocked: handed back after a delivery without <c>_lock</c>), the number of batches taken out and not
/// yet delivered (Interlocked: a committer spins on it, possibly holding <c>_lock</c>), and the count of
/// deliveries that threw with the mark each commit takes of it (Engine.FailStop.cs says why the frees of a
/// commit whose ranges failed to reach a listener are held back).</para>
/// <para>Threading: <see cref="Record"/>, <see cref="Add"/>, <see cref="Remove"/> and
/// <see cref="TakeFailureMark"/> are called with <c>_lock</c> held; <see cref="Deliver"/> takes
/// <c>_lock</c> itself (call it without; a snapshot deletion's commit holds it and still may);
/// <see cref="DeliverAndWait"/> spins rather than waiting on <c>_lock</c>.</para>
/// </summary>
internal sealed class MappingInvalidations(object engineLock, int blockShift, Action<string> report)
{
    private volatile IMappingInvalidationListener[] _listeners = [];
    private List<MappingRange> _pending = new();
    private List<MappingRange>? _spare = new();
    private int _inFlight;
    private int _failures;            // Interlocked: deliveries that threw
    private int _failuresReported;    // Interlocked: how many of them were reported in full
    private int _failuresAtLastTake;  // under _lock: _failures when the last commit took its frees

    /// <summary>True when anyone listens (the write path records nothing otherwise).</summary>
    public bool Listening => _listeners.Length != 0;

    public void Add(IMappingInvalidationListener listener) => _listeners = [.. _listeners, listener];

    public void Remove(IMappingInvalidationListener listener)
    {
        _listeners = _listeners.Where(l => !ReferenceEquals(l, listener)).ToArray();
        if (_listeners.Length == 0) _pending.Clear();
    }

    /// <summary>Records that file blocks [<paramref name="fileBlock"/>, +<paramref name="blocks"/>) of live
    /// inode <paramref name="ino"/> changed mapping. Under _lock. Adjacent ranges of one file merge.</summary>
    public void Record(long ino, long fileBlock, long blocks)
    {
        if (_listeners.Length == 0 || blocks <= 0) return;
        long off = fileBlock << blockShift, len = blocks << blockShift;
        var list = _pending;
        if (list.Count > 0)
        {
            var last = list[^1];
            if (last.Ino == ino && last.Length != MappingRange.ToEndOfFile && off >= last.Offset && off <= last.Offset + last.Length)
            {
                long end = Math.Max(last.Offset + last.Length, off + len);
                list[^1] = last with { Length = end - last.Offset };
                return;
            }
        }
        list.Add(new MappingRange(ino, off, len));
    }

    /// <summary>Hands the recorded ranges to the listeners. Call with no engine lock held (except from a
    /// commit inside a snapshot deletion, which holds _lock throughout: the lock is reentrant).</summary>
    public void Deliver()
    {
        if (_listeners.Length == 0) return;
        List<MappingRange> batch;
        IMappingInvalidationListener[] listeners;
        lock (engineLock)
        {
            if (_pending.Count == 0) return;
            batch = _pending;
            _pending = Interlocked.Exchange(ref _spare, null) ?? new List<MappingRange>();
            listeners = _listeners;
            Interlocked.Increment(ref _inFlight);
        }
        try
        {
            foreach (var l in listeners)
            {
                try { l.MappingsInvalidated(CollectionsMarshal.AsSpan(batch)); }
                catch (Exception e) { Failed(e); }
            }
        }
        finally
        {
            // Without _lock: a committer may hold it while it spins for this delivery to end (a snapshot deletion).
            batch.Clear();
            Interlocked.CompareExchange(ref _spare, batch, null);
            Interlocked.Decrement(ref _inFlight);
        }
    }

    /// <summary>Delivers what is recorded and waits until every batch taken out by any thread has been
    /// delivered: after this, every change recorded before the call has reached the listeners. The commit
    /// calls it before the blocks it freed become allocatable. Spins rather than waits on _lock, so that a
    /// caller holding _lock (a snapshot deletion) keeps it.</summary>
    public void DeliverAndWait()
    {
        if (_listeners.Length == 0 && Volatile.Read(ref _inFlight) == 0) return;
        Deliver();
        var spin = new SpinWait();
        while (Volatile.Read(ref _inFlight) > 0) spin.SpinOnce();
    }

    /// <summary>Counts a delivery that threw (the blocks its changes freed will be held back) and reports the
    /// first few with their stack.</summary>
    private void Failed(Exception e)
    {
        Interlocked.Increment(ref _failures);
        if (Interlocked.Increment(ref _failuresReported) <= 10)
            report($"mapping invalidation listener failed; the blocks the changes freed are held back from reuse until the pool is reopened: {e}");
    }

    /// <summary>Under _lock, when a commit takes its frees: the previous commit's mark, replaced by now's.</summary>
    public int TakeFailureMark()
    {
        int before = _failuresAtLastTake;
        _failuresAtLastTake = Volatile.Read(ref _failures);
        return before;
    }

    /// <summary>True when a delivery threw since <paramref name="mark"/> was taken.</summary>
    public bool FailedSince(int mark) => Volatile.Read(ref _failures) != mark;
}
