using Cow.Core;
using Cow.Core.FileSystem;
using Cow.Fuse.Kernel;
using Cow.Fuse.Native;
using Cow.Fuse.Server;

namespace Cow.Fuse.Mounting;

/// <summary>How a pool is mounted.</summary>
public sealed record MountSettings
{
    public required string MountPoint { get; init; }
    /// <summary>Serve this snapshot read-only as the root instead of the live tree.</summary>
    public string? Snapshot { get; init; }
    /// <summary>When reads update atime (<c>cow mount -o relatime|strictatime|noatime,nodiratime</c>; default relatime).</summary>
    public AtimeOptions Atime { get; init; }
    /// <summary>Ask the kernel for its writeback cache (buffered writes are gathered in the page cache).</summary>
    public bool WritebackCache { get; init; }
    /// <summary>Keep live files opened for writing out of the FUSE page cache (see <see cref="FuseMountOptions.DirectIo"/>).</summary>
    public bool DirectIo { get; init; }
    /// <summary>Read-ahead of the mount's backing device info in KiB, set after the mount (root only); 0 leaves
    /// the kernel's default (128 KiB for FUSE).</summary>
    public int ReadAheadKib { get; init; } = DefaultReadAheadKib;
    /// <summary>Largest READ request in KiB (the kernel's <c>max_read</c> mount option): below 1 MiB a read-ahead
    /// window arrives as several READs that the worker threads serve in parallel. 0 (the default): READs of up
    /// to 1 MiB.</summary>
    public int MaxReadKib { get; init; } = DefaultMaxReadKib;
    /// <summary>List .snapshots in the root directory (it can always be looked up by name).</summary>
    public bool SnapshotDirVisible { get; init; }
    /// <summary>FUSE worker threads.</summary>
    public int Threads { get; init; } = DefaultThreads;
    /// <summary>Let other users use the mount; null = yes for root mounts, no otherwise.</summary>
    public bool? AllowOther { get; init; }
    /// <summary>Mount through fusermount3 even as root.</summary>
    public bool UseFusermount { get; init; }
    /// <summary>fuse-iomap (<c>cow mount --iomap</c>): Auto asks the kernel and falls back to userspace I/O
    /// (logged once) when it refuses; On refuses the mount instead; Off never asks.</summary>
    public IomapMode Iomap { get; init; } = IomapMode.Auto;
    /// <summary>The CAP_SYS_RAWIO check of the iomap negotiation and device registration (default: the
    /// calling thread's effective set); tests inject their own.</summary>
    public Func<bool>? HasSysRawio { get; init; }
    /// <summary>Use FUSE over io_uring when the kernel offers it (<c>fuse.enable_uring=1</c>); false keeps
    /// the connection on read/write of /dev/fuse. <c>cow mount</c> leaves it on: the kernel parameter,
    /// which root sets, is the switch.</summary>
    public bool IoUring { get; init; } = true;
    /// <summary>Ring entries (threads) per CPU queue with FUSE over io_uring.</summary>
    public int UringEntriesPerQueue { get; init; } = 2;
    public Action<string>? Log { get; init; }

    public static int DefaultThreads => Math.Clamp(Environment.ProcessorCount * 2, 4, 16);
    /// <summary>1 MiB: sequential readers get READs of max_write (1 MiB) with several in flight, where the
    /// kernel's 128 KiB gives one 256 KiB READ at a time. Larger (2–8 MiB) reads no faster (bench/README.md,
    /// "Tried and did not help") and makes every page fault of a memory-mapped file read that much around it.</summary>
    public const int DefaultReadAheadKib = 1024;
    public const int MaxReadAheadKib = 1 << 20;
    /// <summary>0: READs of up to max_pages (1 MiB). Smaller READs (64–512 KiB) spread a read-ahead window
    /// over several workers, but on one pool, remounted in turn, they read no faster than 1 MiB READs
    /// (bench/README.md, "Tried and did not help").</summary>
    public const int DefaultMaxReadKib = 0;
    /// <summary>Bounds of <see cref="MaxReadKib"/> (besides 0): a page, and max_pages (1 MiB).</summary>
    public const int MinMaxReadKib = 4, MaxMaxReadKib = 1024;

    /// <summary>Null when <paramref name="kib"/> is a valid <see cref="MaxReadKib"/>, else what is wrong with it.</summary>
    public static string? CheckMaxReadKib(int kib) =>
        kib == 0 || (kib >= MinMaxReadKib && kib <= MaxMaxReadKib && kib % 4 == 0) ? null
        : $"must be 0 (READs of up to {MaxMaxReadKib} KiB) or a multiple of 4 KiB from {MinMaxReadKib} to {MaxMaxReadKib}, not {kib}";
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
    private readonly IIomapDeviceRegistrar? _iomapDevices;
    private int _unmounted;

    public string MountPoint { get; }
    public RequestDispatcher Dispatcher { get; }
    public FuseSession Session => _session;
    /// <summary>Set when the kernel connection has ended (unmounted from outside, e.g. umount(8)).</summary>
    public WaitHandle Ended => _session.EndedHandle;
    /// <summary>What the kernel answered to FUSE_DEV_IOC_ADD_IOMAP (not granted, with the reason, when it
    /// refused or <see cref="IomapMode.Off"/> did not ask).</summary>
    public IomapRequestResult IomapRequest { get; }
    /// <summary>The connection's primary /dev/fuse descriptor (valid while mounted; tests).</summary>
    internal int DeviceFd { get; }

    private MountedFileSystem(string mountPoint, RequestDispatcher d, FuseSession s, MountSettings settings, IIomapDeviceRegistrar? iomapDevices, IomapRequestResult iomap, int fd)
    {
        MountPoint = mountPoint; Dispatcher = d; _session = s; _settings = settings; _iomapDevices = iomapDevices; IomapRequest = iomap; DeviceFd = fd;
    }

    /// <summary>The pool's devices as the iomap registrar names them.</summary>
    public static IReadOnlyList<PoolDeviceInfo> IomapDeviceInfos(Pool pool)
        => pool.Devices.Select(d => new PoolDeviceInfo(d.Cookie, d.Path, d.SizeBytes)).ToArray();

    /// <summary>Mounts <paramref name="pool"/> and starts serving. Throws <see cref="MountException"/> or
    /// <see cref="ArgumentException"/> (no such snapshot) with a message naming the problem.</summary>
    /// <remarks>fuse-iomap: with <see cref="MountSettings.Iomap"/> Auto or On the kernel is asked
    /// (FUSE_DEV_IOC_ADD_IOMAP) before mount(2). Refused under Auto: one log line "fuse-iomap not available
    /// (reason): serving I/O in userspace", and the dispatcher gets <see cref="IomapMode.Off"/>. Refused under
    /// On: <see cref="MountException"/> (<see cref="MountException.IomapUnavailable"/>), nothing mounted.
    /// Accepted: the dispatcher gets the mode and a <see cref="KernelIomapDevices"/> for the pool's devices,
    /// which <see cref="Unmount"/> disposes after the session ended.</remarks>
    public static MountedFileSystem Start(Pool pool, MountSettings s)
    {
        var mp = MountTable.Normalize(s.MountPoint);
        // The dispatcher is made after the mount (it must know whether the kernel took ADD_IOMAP); check what
        // its constructor would refuse first, so that a bad snapshot name never leaves a mount behind.
        if (s.Snapshot != null && pool.Snapshot(s.Snapshot) == null)
            throw new ArgumentException($"The pool has no snapshot named '{s.Snapshot}' (cow snapshot list shows them).", nameof(s));
        int fd = Mounter.Mount(new MountRequest
        {
            Source = pool.Source,
            MountPoint = mp,
            AllowOther = s.AllowOther ?? Mounter.IsRoot,
            ReadOnly = s.Snapshot != null,
            UseFusermount = s.UseFusermount,
            Iomap = s.Iomap,
            HasSysRawio = s.HasSysRawio,
            MaxReadBytes = s.MaxReadKib * 1024,
            Atime = s.Atime,
        }, out var iomap);
        KernelIomapDevices? devices = null;
        try
        {
            var mode = iomap.Granted ? s.Iomap : IomapMode.Off;
            if (s.Iomap == IomapMode.Auto && !iomap.Granted)
                s.Log?.Invoke($"fuse-iomap not available ({iomap.Reason}): serving I/O in userspace");
            else if (s.Iomap == IomapMode.Off)
                s.Log?.Invoke("serving I/O in userspace (--iomap off)");
            if (iomap.Granted)
                devices = new KernelIomapDevices(pool.BlockSize, s.HasSysRawio, s.Log);
            bool uring = s.IoUring && UringUsable(s.Log);
            var d = new RequestDispatcher(pool, new FuseMountOptions
            {
                Snapshot = s.Snapshot, WritebackCache = s.WritebackCache, SnapshotDirVisible = s.SnapshotDirVisible, DirectIo = s.DirectIo,
                Iomap = mode, IomapDevices = devices, OverIoUring = uring, Atime = s.Atime,
            })
            {
                Log = s.Log,
            };
            var session = new FuseSession(d, fd, s.Threads, s.UringEntriesPerQueue)
            {
                Log = s.Log,
                // After INIT: the kernel sets the read-ahead from the INIT reply (never above its 128 KiB).
                InitAnswered = s.ReadAheadKib > 0 ? () => SetReadAhead(mp, s.ReadAheadKib, s.Log) : null,
            };
            session.Start();
            return new MountedFileSystem(mp, d, session, s, devices, iomap, fd);
        }
        catch
        {
            // Nothing serves the mount: end the connection, then take the mount away.
            devices?.Dispose();
            LibC.Close(fd);
            try { Mounter.Unmount(mp, lazy: true, s.UseFusermount); } catch (MountException) { }
            throw;
        }
    }

    /// <summary>
    /// Sets the read-ahead of the mount (<c>/sys/class/bdi/MAJOR:MINOR/read_ahead_kb</c> of the mount's device
    /// number, as an administrator would): FUSE offers only the kernel's 128 KiB at INIT and lets a server lower
    /// it, never raise it. Needs root; without it, or on any error, one log line and the mount keeps the kernel's
    /// setting. Runs on the worker that answered INIT, right after the kernel applied the INIT reply (which
    /// sets the read-ahead to at most 128 KiB: set before, the value would be overwritten). The device number
    /// comes from /proc/self/mountinfo (mount(2) returned before the workers started), not from a stat of the
    /// mount point: that would be a request to this very server, from one of its workers.
    /// </summary>
    private static void SetReadAhead(string mountPoint, int kib, Action<string>? log)
    {
        var entry = MountTable.Find(mountPoint);
        if (entry == null || !entry.IsCow)
        {
            log?.Invoke($"read-ahead left at the kernel's default: {mountPoint} is not in the mount table");
            return;
        }
        var path = $"/sys/class/bdi/{entry.MajorMinor}/read_ahead_kb";
        try { File.WriteAllText(path, kib.ToString(System.Globalization.CultureInfo.InvariantCulture)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log?.Invoke($"read-ahead left at the kernel's default: cannot write {path}: {e.Message}");
        }
    }

    /// <summary>The kernel parameter that makes the kernel offer FUSE over io_uring at INIT.</summary>
    public const string EnableUringParameter = "/sys/module/fuse/parameters/enable_uring";

    /// <summary>Whether the kernel will offer FUSE over io_uring (fuse.enable_uring is Y) and this process can
    /// make the rings it needs; logs why not when the kernel would offer it but the rings cannot be made.</summary>
    private static bool UringUsable(Action<string>? log)
    {
        string value;
        try { value = File.ReadAllText(EnableUringParameter).Trim(); }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
        if (value is not ("Y" or "1")) return false;
        if (FuseUringTransport.Available(out var why)) return true;
        log?.Invoke($"fuse.enable_uring is on but {why}: serving requests with read/write of /dev/fuse");
        return false;
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
        // Only now: the kernel dropped the connection's references to the registered devices when it ended.
        _iomapDevices?.Dispose();
    }

    public void Dispose() => Unmount();
}
