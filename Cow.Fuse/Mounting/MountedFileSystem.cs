using Cow.Core;
using Cow.Fuse.Server;

namespace Cow.Fuse.Mounting;

/// <summary>How a pool is mounted.</summary>
public sealed record MountSettings
{
    public required string MountPoint { get; init; }
    /// <summary>Serve this snapshot read-only as the root instead of the live tree.</summary>
    public string? Snapshot { get; init; }
    /// <summary>Ask the kernel for its writeback cache (buffered writes are gathered in the page cache).</summary>
    public bool WritebackCache { get; init; }
    /// <summary>Keep live files out of the FUSE page cache (see <see cref="FuseMountOptions.DirectIo"/>).</summary>
    public bool DirectIo { get; init; } = true;
    /// <summary>List .snapshots in the root directory (it can always be looked up by name).</summary>
    public bool SnapshotDirVisible { get; init; }
    /// <summary>FUSE worker threads.</summary>
    public int Threads { get; init; } = DefaultThreads;
    /// <summary>Let other users use the mount; null = yes for root mounts, no otherwise.</summary>
    public bool? AllowOther { get; init; }
    /// <summary>Mount through fusermount3 even as root.</summary>
    public bool UseFusermount { get; init; }
    public Action<string>? Log { get; init; }

    public static int DefaultThreads => Math.Clamp(Environment.ProcessorCount * 2, 4, 16);
}

/// <summary>
/// A pool mounted through /dev/fuse: the dispatcher, the worker threads and the kernel mount, started
/// together and taken down together. The pool stays the caller's (commit and close it after
/// <see cref="Unmount"/>). Threading: <see cref="Unmount"/> and <see cref="Dispose"/> may be called from
/// any thread (a signal handler); the second call does nothing.
/// </summary>
public sealed class MountedFileSystem : IDisposable
{
    private readonly FuseSession _session;
    private readonly MountSettings _settings;
    private int _unmounted;

    public string MountPoint { get; }
    public RequestDispatcher Dispatcher { get; }
    public FuseSession Session => _session;
    /// <summary>Set when the kernel connection has ended (unmounted from outside, e.g. umount(8)).</summary>
    public WaitHandle Ended => _session.EndedHandle;

    private MountedFileSystem(string mountPoint, RequestDispatcher d, FuseSession s, MountSettings settings)
    {
        MountPoint = mountPoint; Dispatcher = d; _session = s; _settings = settings;
    }

    /// <summary>Mounts <paramref name="pool"/> and starts serving. Throws <see cref="MountException"/> or
    /// <see cref="ArgumentException"/> (no such snapshot) with a message naming the problem.</summary>
    public static MountedFileSystem Start(Pool pool, MountSettings s)
    {
        var mp = MountTable.Normalize(s.MountPoint);
        var d = new RequestDispatcher(pool, new FuseMountOptions { Snapshot = s.Snapshot, WritebackCache = s.WritebackCache, SnapshotDirVisible = s.SnapshotDirVisible, DirectIo = s.DirectIo })
        {
            Log = s.Log,
        };
        int fd = Mounter.Mount(new MountRequest
        {
            Source = pool.Folder ?? "cow",
            MountPoint = mp,
            AllowOther = s.AllowOther ?? Mounter.IsRoot,
            ReadOnly = s.Snapshot != null,
            UseFusermount = s.UseFusermount,
        });
        var session = new FuseSession(d, fd, s.Threads) { Log = s.Log };
        session.Start();
        return new MountedFileSystem(mp, d, session, s);
    }

    /// <summary>
    /// Unmounts and stops serving. A busy mount point is detached lazily when <paramref name="lazyIfBusy"/>
    /// (processes that still have files open there get errors from now on), otherwise the
    /// <see cref="MountException"/> is thrown and the mount keeps running. When this returns, no request
    /// touches the pool any more.
    /// </summary>
    public void Unmount(bool lazyIfBusy = true)
    {
        if (Volatile.Read(ref _unmounted) != 0) return;
        if (!_session.Ended)
        {
            try { Mounter.Unmount(MountPoint, lazy: false, _settings.UseFusermount); }
            catch (MountException) when (_session.Ended) { /* unmounted meanwhile from outside */ }
            catch (MountException) when (lazyIfBusy)
            {
                _settings.Log?.Invoke($"{MountPoint} is busy: detaching it lazily");
                try { Mounter.Unmount(MountPoint, lazy: true, _settings.UseFusermount); }
                catch (MountException) when (_session.Ended) { }
            }
        }
        if (Interlocked.Exchange(ref _unmounted, 1) != 0) return;
        // A clean unmount ends the connection at once; a lazy one only when the last open file is closed,
        // so wait briefly, then stop dispatching either way: no request may reach the pool after this.
        _session.WaitEnded(TimeSpan.FromSeconds(2));
        _session.Close(TimeSpan.FromSeconds(30));
        _session.Dispose();
    }

    public void Dispose() => Unmount();
}
