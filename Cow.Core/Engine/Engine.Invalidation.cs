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
/// restore or clone, a snapshot created or deleted; a listener ignores those that a request it serves made): with <see cref="Name"/> set, entry <see cref="Name"/> of directory <see cref="Parent"/> was
/// removed, made or replaced (a cached dentry or negative dentry of it is stale); with <see cref="Ino"/> set,
/// inode <see cref="Ino"/>'s attributes, and for a file its contents, changed (cached attributes and pages
/// are stale).
/// </summary>
public readonly record struct TreeChange(long Parent, string? Name, long Ino)
{
    /// <summary><see cref="Parent"/> of a change of the snapshot list: entry <see cref="Name"/> of the <c>.snapshots</c>
    /// directory a mount shows (a snapshot created or deleted, not through the mount); with <see cref="Ino"/> =
    /// <see cref="SnapshotList"/> and no name, that directory's attributes.</summary>
    public const long SnapshotList = -1;
}

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

    /// <summary>Starts telling <paramref name="listener"/> about extent-map changes of live files. Nothing is
    /// recorded while no listener is registered (the write path then does no extra work).</summary>
    public void AddMappingListener(IMappingInvalidationListener listener)
    {
        ArgumentNullException.ThrowIfNull(listener);
        lock (_lock) _mappings.Add(listener);
    }

    public void RemoveMappingListener(IMappingInvalidationListener listener)
    {
        lock (_lock) _mappings.Remove(listener);
    }
}
