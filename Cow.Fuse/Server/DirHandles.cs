using Cow.Core.FileSystem;

namespace Cow.Fuse.Server;

/// <summary>
/// The open directories of a live tree (fuse_open_out.fh of OPENDIR → what the handle holds), for two
/// promises: one readdir pass never returns an entry twice, whatever renames run meanwhile (a pass lists
/// only positions below the directory's end as it was when the pass began, <see cref="FileSystemView.DirEnd"/>;
/// the end is taken at OPENDIR and again at every READDIR from offset 0, i.e. rewinddir), and a directory
/// removed while open stays an inode with nlink 0 until its last RELEASEDIR (the engine counts the handle as
/// an open, as it does for files), so fstat on the handle answers as on Linux instead of ENOENT.
/// Handles of snapshot trees and of <c>.snapshots</c> are 0 and not kept here: nothing changes under them.
/// Threading: thread-safe (one lock around the map; the kernel serialises the READDIRs of one handle).
/// </summary>
public sealed class DirHandles
{
    /// <summary>What one OPENDIR handle holds: the tree and directory it opened (counted open in the engine),
    /// and where the current readdir pass stops.</summary>
    private sealed class Handle(FileSystemView view, long ino, long end)
    {
        public readonly FileSystemView View = view;
        public readonly long Ino = ino;
        public long End = end;
    }

    private readonly Dictionary<ulong, Handle> _open = new();
    private readonly Lock _lock = new();
    private ulong _next;

    /// <summary>Open handles (for tests and diagnostics).</summary>
    public int Count { get { lock (_lock) return _open.Count; } }

    /// <summary>Registers an open of directory <paramref name="ino"/> of <paramref name="view"/>, which the
    /// caller has counted with <see cref="FileSystemView.Open"/>; returns its fh (never 0).</summary>
    public ulong Add(FileSystemView view, long ino, long end)
    {
        lock (_lock)
        {
            ulong fh = ++_next;
            _open[fh] = new Handle(view, ino, end);
            return fh;
        }
    }

    /// <summary>Where the readdir pass of handle <paramref name="fh"/> stops (long.MaxValue for an unknown
    /// handle: no bound). From <paramref name="offset"/> 0 a new pass begins and the end is taken again.</summary>
    public long PassEnd(ulong fh, long offset)
    {
        Handle? h;
        lock (_lock) if (fh == 0 || !_open.TryGetValue(fh, out h)) return long.MaxValue;
        if (offset == 0 && h.View.DirEnd(h.Ino, out long end) == 0) Volatile.Write(ref h.End, end);
        return Volatile.Read(ref h.End);
    }

    /// <summary>RELEASEDIR: forgets handle <paramref name="fh"/> and releases its engine open (a directory
    /// removed while open goes with its last handle). Unknown handles are ignored.</summary>
    public void Release(ulong fh)
    {
        Handle? h;
        lock (_lock) if (!_open.Remove(fh, out h)) return;
        h.View.Release(h.Ino);
    }

    /// <summary>The connection is gone: no RELEASEDIR will come, so every handle is released now (the pool
    /// may stay open after its mount, and an open left counted would hold a removed directory and refuse
    /// rollbacks).</summary>
    public void ReleaseAll()
    {
        List<Handle> all;
        lock (_lock)
        {
            all = [.. _open.Values];
            _open.Clear();
        }
        foreach (var h in all) h.View.Release(h.Ino);
    }
}
