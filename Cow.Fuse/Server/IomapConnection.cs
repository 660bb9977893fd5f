using System.Runtime.InteropServices;
using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>
/// The fuse-iomap state of one connection, made when INIT grants iomap: the pool's devices as the kernel
/// names them (registered once, on the first IOMAP_CONFIG, through <see cref="FuseMountOptions.IomapDevices"/>),
/// the translation between engine device cookies and kernel device cookies, and the engine listener that
/// turns extent-map changes of live files into FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS; devices added to the mounted pool
/// are registered with the kernel before any mapping names them (<see cref="DeviceAdding"/>).
/// <para>Threading: thread-safe. Registration runs at most once, and device changes one at a time, under <c>_gate</c>;
/// each device table is immutable, replaced whole and published through a volatile field, so lookups take no lock. Notifications are
/// sent from whichever thread the engine delivers on (one write(2) each, which the kernel and a
/// SOCK_SEQPACKET socket keep whole), and never call back into the engine.</para>
/// </summary>
internal sealed class IomapConnection : IMappingInvalidationListener, IDeviceChangeListener
{
    private readonly RequestDispatcher _d;
    private readonly object _gate = new();
    private volatile DeviceTable? _table;
    private bool _registrationTried;           // under _gate
    private readonly List<PoolDeviceInfo> _joining = new();   // under _gate: devices added before the first registration
    private Errno _registrationErrno;          // under _gate
    private volatile string? _registrationError;
    private volatile bool _attached;
    private int _notifyFailuresLogged;

    public IomapConnection(RequestDispatcher d)
    {
        _d = d;
        DeviceSizes = KernelDeviceSize;
        Delalloc = new IomapDelalloc(d.Pool.BlockSize);
    }

    /// <summary>Ranges the kernel holds dirty under a DELALLOC answer, for reports (SEEK_DATA/HOLE, FIEMAP).</summary>
    public IomapDelalloc Delalloc { get; }

    /// <summary><see cref="KernelDeviceSize"/> as a delegate made once (reply validation allocates nothing).</summary>
    public Func<uint, long?> DeviceSizes { get; }

    /// <summary>Why the device registration failed (null before IOMAP_CONFIG and after a success).</summary>
    public string? RegistrationError => _registrationError;

    /// <summary>The registered devices; empty until IOMAP_CONFIG registered them.</summary>
    public IReadOnlyList<RegisteredIomapDevice> Devices => _table?.Devices ?? [];

    /// <summary>Notifications sent and refused by the peer (tests, diagnostics).</summary>
    public long NotificationsSent => Interlocked.Read(ref _sent);
    private long _sent;

    private sealed class DeviceTable(RegisteredIomapDevice[] devices)
    {
        public readonly RegisteredIomapDevice[] Devices = devices;
        public RegisteredIomapDevice? ByKernel(uint cookie)
        {
            foreach (var d in Devices) if (d.KernelCookie == cookie) return d;
            return null;
        }
        public RegisteredIomapDevice? ByEngine(uint cookie)
        {
            foreach (var d in Devices) if (d.EngineCookie == cookie) return d;
            return null;
        }
    }

    // ------------------------------------------------------------------ devices

    /// <summary>
    /// Registers the pool's devices the first time it is called; later calls return the first outcome.
    /// A registrar failure (an exception, or an answer that does not name every pool device once with its
    /// own non-zero cookie and enough bytes) is logged once and answered EIO, which makes the kernel fail
    /// the mount (it accepts only success or ENOSYS from IOMAP_CONFIG).
    /// </summary>
    public Errno EnsureRegistered()
    {
        if (_table != null) return 0;
        lock (_gate)
        {
            if (_registrationTried) return _registrationErrno;
            _registrationTried = true;
            var registrar = _d.Options.IomapDevices;
            var pool = _d.Pool.Devices.Select(v => new PoolDeviceInfo(v.Cookie, v.Path, v.SizeBytes)).ToList();
            foreach (var j in _joining) if (!pool.Any(p => p.EngineCookie == j.EngineCookie)) pool.Add(j);
            string? problem;
            IReadOnlyList<RegisteredIomapDevice>? got = null;
            if (registrar == null) problem = "no device registrar is configured";
            else
            {
                try
                {
                    got = registrar.Register(_d.FuseFd, pool);
                    problem = CheckRegistration(pool, got);
                }
                catch (Exception e) { problem = e.Message; }
            }
            if (problem != null)
            {
                _registrationErrno = Errno.EIO;
                _registrationError = $"fuse-iomap: the pool's devices could not be registered with the kernel: {problem}";
                _d.LogLine(_registrationError);
                return Errno.EIO;
            }
            _table = new DeviceTable(got!.ToArray());
            return 0;
        }
    }

    private static string? CheckRegistration(List<PoolDeviceInfo> pool, IReadOnlyList<RegisteredIomapDevice>? got)
    {
        if (got == null || got.Count != pool.Count) return $"the registrar answered {got?.Count ?? 0} devices for the pool's {pool.Count}";
        foreach (var p in pool)
        {
            var matches = got.Where(g => g.EngineCookie == p.EngineCookie).ToList();
            if (matches.Count != 1) return $"the registrar answered {matches.Count} entries for device cookie {p.EngineCookie} ({p.Path})";
            var r = matches[0];
            if (r.KernelCookie == ExperimentalConstants.IomapNoDevice) return $"device {p.Path} got kernel cookie 0, which means \"no device\"";
            if (r.SizeBytes < p.SizeBytes) return $"device {p.Path} was registered with {r.SizeBytes} bytes, fewer than the pool's {p.SizeBytes}";
        }
        if (got.Select(g => g.KernelCookie).Distinct().Count() != got.Count) return "two devices got the same kernel cookie";
        return null;
    }

    /// <summary>The kernel cookie of engine device <paramref name="engineCookie"/>; false before registration or for an unknown device.</summary>
    public bool TryKernelCookie(uint engineCookie, out uint kernelCookie)
    {
        kernelCookie = 0;
        if (_table?.ByEngine(engineCookie) is not { } d) return false;
        kernelCookie = d.KernelCookie;
        return true;
    }

    /// <summary>The engine cookie of kernel device <paramref name="kernelCookie"/>; false when no registered device has it.</summary>
    public bool TryEngineCookie(uint kernelCookie, out uint engineCookie)
    {
        engineCookie = 0;
        if (kernelCookie == 0 || _table?.ByKernel(kernelCookie) is not { } d) return false;
        engineCookie = d.EngineCookie;
        return true;
    }

    /// <summary>Bytes of registered device <paramref name="kernelCookie"/> (the bound a mapping must stay inside), null if none.</summary>
    public long? KernelDeviceSize(uint kernelCookie) => kernelCookie == 0 ? null : _table?.ByKernel(kernelCookie)?.SizeBytes;

    // ------------------------------------------------------------------ invalidation

    /// <summary>Starts listening to the engine's extent-map changes and device changes (iomap granted on a live mount).</summary>
    public void Attach()
    {
        if (_attached) return;
        _attached = true;
        _d.Pool.AddMappingListener(this);
        _d.Pool.AddDeviceListener(this);
    }

    /// <summary>Stops listening (connection gone or DESTROY). Idempotent.</summary>
    public void Detach()
    {
        if (!_attached) return;
        _attached = false;
        _d.Pool.RemoveMappingListener(this);
        _d.Pool.RemoveDeviceListener(this);
    }

    /// <summary>
    /// A device joins the mounted pool (cow device add): registered with the kernel (BACKING_OPEN) now, before the
    /// engine hands out any block of it, and added to the translation table. Before the first IOMAP_CONFIG it is
    /// remembered and registered with the others. A failure refuses the add (the exception's message says why).
    /// </summary>
    public void DeviceAdding(Cow.Core.PoolDevice device)
    {
        var info = new PoolDeviceInfo(device.Cookie, device.Path, device.SizeBytes);
        lock (_gate)
        {
            if (!_registrationTried) { _joining.Add(info); return; }
            if (_table is not { } table)
                throw new IomapDeviceException($"the pool's devices are not registered with the kernel ({_registrationError}); device {device.Path} cannot be added to this mount");
            var registrar = _d.Options.IomapDevices ?? throw new IomapDeviceException("no device registrar is configured");
            var r = registrar.Add(_d.FuseFd, info);
            if (r.EngineCookie != device.Cookie || r.KernelCookie == ExperimentalConstants.IomapNoDevice || table.ByKernel(r.KernelCookie) != null || r.SizeBytes < device.SizeBytes)
                throw new IomapDeviceException($"the registrar answered {r} for device {device.Path} (engine cookie {device.Cookie}, {device.SizeBytes} bytes)");
            _table = new DeviceTable([.. table.Devices, r]);
            _d.LogLine($"fuse-iomap: device {device.Path} joined the pool as engine device {r.EngineCookie}, kernel device {r.KernelCookie}");
        }
    }

    /// <summary>A device left the pool: no mapping names it any more. Dropped from the table; the registrar releases it
    /// when the kernel lets go of it.</summary>
    public void DeviceRemoved(Cow.Core.PoolDevice device)
    {
        lock (_gate)
        {
            _joining.RemoveAll(j => j.EngineCookie == device.Cookie);
            if (_table is not { } table) return;
            _table = new DeviceTable(table.Devices.Where(d => d.EngineCookie != device.Cookie).ToArray());
            _d.Options.IomapDevices?.Release(_d.FuseFd, device.Cookie);
        }
    }

    /// <summary>
    /// Sends one FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS per range, dropping both the read and the write mappings
    /// the kernel may cache for it. Live inodes are node id = st_ino = inode number (slot 0). A kernel that
    /// no longer holds the inode answers ESTALE (or ENOENT): nothing was cached, nothing to do. Other
    /// refusals are logged (the first few).
    /// </summary>
    public void MappingsInvalidated(ReadOnlySpan<MappingRange> ranges)
    {
        if (!_attached) return;
        Span<byte> msg = stackalloc byte[FuseOutHeader.Size + FuseIomapInvalMappingsOut.Size];
        foreach (var r in ranges)
        {
            if (r.Offset < 0 || r.Offset >= Engine.MaxFileSize || r.Length <= 0) continue;
            ulong len = r.Length == MappingRange.ToEndOfFile || r.Length > Engine.MaxFileSize - r.Offset
                ? ExperimentalConstants.IomapInvalToEof : (ulong)r.Length;
            var h = new FuseOutHeader { Len = (uint)msg.Length, Error = (int)FuseNotifyCode.IomapInvalMappings, Unique = 0 };
            var body = new FuseIomapInvalMappingsOut
            {
                NodeId = (ulong)r.Ino, AttrIno = (ulong)r.Ino,
                Read = new FuseRange { Offset = (ulong)r.Offset, Length = len },
                Write = new FuseRange { Offset = (ulong)r.Offset, Length = len },
            };
            MemoryMarshal.Write(msg, in h);
            MemoryMarshal.Write(msg[FuseOutHeader.Size..], in body);
            var e = _d.SendNotification(msg);
            if (e == 0) { Interlocked.Increment(ref _sent); continue; }
            if (e is Errno.ESTALE or Errno.ENOENT or Errno.ENOTCONN or Errno.ENODEV) continue;
            if (Interlocked.Increment(ref _notifyFailuresLogged) <= 5)
                _d.LogLine($"FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS for inode {r.Ino} {r.Offset}+{r.Length} refused: {e}");
        }
    }
}
