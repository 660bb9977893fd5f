using System.Runtime.InteropServices;

namespace Cow.Core.Engine;

/// <summary>
/// A byte range [<see cref="Offset"/>, <see cref="Offset"/>+<see cref="Length"/>) of live inode
/// <see cref="Ino"/> whose extent map changed: a mapping of it that someone cached (a kernel doing iomap)
/// is stale. Offsets and lengths are block-aligned; <see cref="Length"/> = <see cref="ToEndOfFile"/>
/// means "to the end of the file".
/// </summary>
public readonly record struct MappingRange(long Ino, long Offset, long Length)
{
    public const long ToEndOfFile = long.MaxValue;
}

/// <summary>
/// Told about every change of a live file's extent map (a write's remap, truncate and hole punching,
/// deletion of the last link, a range clone over the file), in batches. The promise: the ranges of a
/// change are delivered before any device block the change freed can be allocated again — so a cached
/// mapping is dropped before its blocks can hold someone else's data.
/// <para>Threading: called on the thread that completed the change or on the committing thread, possibly
/// several at once, and during a snapshot deletion with the engine's state lock held: an implementation
/// must be thread-safe, quick, and must not call into the engine. It must not throw: an exception is
/// reported through <see cref="Engine.Problem"/>, and since the promise cannot be kept for the ranges that
/// failed, the blocks the commits around it free are held back from reuse until the pool is reopened
/// (Engine.FailStop.cs).</para>
/// </summary>
public interface IMappingInvalidationListener
{
    void MappingsInvalidated(ReadOnlySpan<MappingRange> ranges);
}

/// <summary>
/// A change of the live tree made behind the kernel's back (not by a request the kernel sent: a snapshot
/// restore): with <see cref="Name"/> set, entry <see cref="Name"/> of directory <see cref="Parent"/> was
/// removed, made or replaced (a cached dentry or negative dentry of it is stale); with <see cref="Ino"/> set,
/// inode <see cref="Ino"/>'s attributes, and for a file its contents, changed (cached attributes and pages
/// are stale).
/// </summary>
public readonly record struct TreeChange(long Parent, string? Name, long Ino);

/// <summary>
/// Told about <see cref="TreeChange"/>s, after they are committed, on the thread that made them, with no
/// engine lock held: an implementation may block briefly (a kernel notification) but must not call into the
/// engine. It must not throw (an exception is reported through <see cref="Engine.Problem"/> and ignored).
/// </summary>
public interface ITreeChangeListener
{
    void TreeChanged(IReadOnlyList<TreeChange> changes);
}

public sealed partial class Engine
{
    private volatile ITreeChangeListener[] _treeListeners = [];

    /// <summary>Starts telling <paramref name="listener"/> about changes of the live tree made behind the kernel's back.</summary>
    public void AddTreeChangeListener(ITreeChangeListener listener)
    {
        ArgumentNullException.ThrowIfNull(listener);
        lock (_lock) _treeListeners = [.. _treeListeners, listener];
    }

    public void RemoveTreeChangeListener(ITreeChangeListener listener)
    {
        lock (_lock) _treeListeners = _treeListeners.Where(l => !ReferenceEquals(l, listener)).ToArray();
    }

    /// <summary>Hands <paramref name="changes"/> to the tree-change listeners. No engine lock held.</summary>
    private void DeliverTreeChanges(List<TreeChange> changes)
    {
        foreach (var l in _treeListeners)
        {
            try { l.TreeChanged(changes); }
            catch (Exception e) { Report($"tree change listener failed: {e.Message}"); }
        }
    }

    // Listeners: copy-on-write array, replaced under _lock, read without it.
    private volatile IMappingInvalidationListener[] _mappingListeners = [];
    // Ranges recorded and not yet delivered (under _lock), a spare list to swap with (Interlocked: handed
    // back after a delivery without _lock), and the number of batches taken out and not yet delivered
    // (Interlocked: a committer spins on it while holding _lock).
    private List<MappingRange> _pendingInvalidations = new();
    private List<MappingRange>? _spareInvalidations = new();
    private int _invalidationsInFlight;

    /// <summary>Starts telling <paramref name="listener"/> about extent-map changes of live files. Nothing is
    /// recorded while no listener is registered (the write path then does no extra work).</summary>
    public void AddMappingListener(IMappingInvalidationListener listener)
    {
        ArgumentNullException.ThrowIfNull(listener);
        lock (_lock) _mappingListeners = [.. _mappingListeners, listener];
    }

    public void RemoveMappingListener(IMappingInvalidationListener listener)
    {
        lock (_lock)
        {
            _mappingListeners = _mappingListeners.Where(l => !ReferenceEquals(l, listener)).ToArray();
            if (_mappingListeners.Length == 0) _pendingInvalidations.Clear();
        }
    }

    /// <summary>Records that file blocks [<paramref name="fileBlock"/>, +<paramref name="blocks"/>) of live
    /// inode <paramref name="ino"/> changed mapping. Under _lock. Adjacent ranges of one file merge.</summary>
    private void RecordMappingChange(long ino, long fileBlock, long blocks)
    {
        if (_mappingListeners.Length == 0 || blocks <= 0) return;
        long off = fileBlock << BlockShift, len = blocks << BlockShift;
        var list = _pendingInvalidations;
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
    /// commit inside a snapshot deletion, which holds _lock throughout).</summary>
    private void DeliverMappingInvalidations()
    {
        if (_mappingListeners.Length == 0) return;
        List<MappingRange> batch;
        IMappingInvalidationListener[] listeners;
        lock (_lock)
        {
            if (_pendingInvalidations.Count == 0) return;
            batch = _pendingInvalidations;
            _pendingInvalidations = Interlocked.Exchange(ref _spareInvalidations, null) ?? new List<MappingRange>();
            listeners = _mappingListeners;
            Interlocked.Increment(ref _invalidationsInFlight);
        }
        try
        {
            foreach (var l in listeners)
            {
                try { l.MappingsInvalidated(CollectionsMarshal.AsSpan(batch)); }
                catch (Exception e) { ListenerFailed(e); }
            }
        }
        finally
        {
            // Without _lock: a committer may hold it while it spins for this delivery to end (a snapshot deletion).
            batch.Clear();
            Interlocked.CompareExchange(ref _spareInvalidations, batch, null);
            Interlocked.Decrement(ref _invalidationsInFlight);
        }
    }

    /// <summary>Delivers what is recorded and waits until every batch taken out by any thread has been
    /// delivered: after this, every change recorded before the call has reached the listeners. The commit
    /// calls it before the blocks it freed become allocatable. Spins rather than waits on _lock, so that a
    /// caller holding _lock (a snapshot deletion) keeps it.</summary>
    private void DeliverMappingInvalidationsAndWait()
    {
        if (_mappingListeners.Length == 0 && Volatile.Read(ref _invalidationsInFlight) == 0) return;
        DeliverMappingInvalidations();
        var spin = new SpinWait();
        while (Volatile.Read(ref _invalidationsInFlight) > 0) spin.SpinOnce();
    }
}
