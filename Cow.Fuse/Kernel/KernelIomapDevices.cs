using Cow.Fuse.Native;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Mono.Unix.Native;

namespace Cow.Fuse.Kernel;

/// <summary>
/// The real <see cref="IIomapDeviceRegistrar"/>: registers a pool's devices with one FUSE connection for
/// fuse-iomap, and releases them after the session ended.
/// <para>
/// <see cref="Register"/>, in order: at most <see cref="ExperimentalConstants.MaxIomapDevices"/> devices;
/// CAP_SYS_RAWIO in the effective set (checked first, so the refusal is ours and clear, not an EPERM from
/// the kernel); then per device: an image file is attached to a loop device (<see cref="LoopDevice"/>:
/// LOOP_CONFIGURE, block size = the pool's, autoclear, NOT direct I/O), a block device is used as is; the
/// block device is opened O_RDWR|O_EXCL (<see cref="ExclusiveBlockDevice"/>: refused with EBUSY while it is
/// mounted or held elsewhere), checked to be a block device at least as large as the pool's device, and
/// handed to the kernel with ioctl(fuse fd, FUSE_DEV_IOC_BACKING_OPEN, {fd, FUSE_BACKING_TYPE_IOMAP}),
/// whose return value is the kernel's device cookie. No descriptor ever passes through write(2).
/// Any failure undoes everything done so far (BACKING_CLOSE of what was registered — the kernel may refuse
/// that with EBUSY and then keeps its reference until the connection ends —, our descriptors closed, loop
/// devices detached) and throws <see cref="IomapDeviceException"/> naming the device and the errno in words.
/// </para>
/// <para>
/// <see cref="Dispose"/> (after the session ended): closes our exclusive descriptors and detaches the loop
/// devices (LOOP_CLR_FD; autoclear would also do it on the last close). It does not call BACKING_CLOSE:
/// an iomap kernel refuses that with EBUSY while mounted, and once the session has ended the connection's
/// /dev/fuse descriptor is closed (its number may already belong to another file). Ending the connection is
/// what makes the kernel drop its references to the registered devices; closing ours releases the rest.
/// </para>
/// <see cref="Add"/> registers one more device the same way after the mount (cow device add); <see cref="Release"/>
/// tries BACKING_CLOSE for a device that left the pool.
/// Threading: <see cref="Register"/>, <see cref="Add"/>, <see cref="Release"/> and <see cref="Dispose"/> take one lock,
/// so they never interleave; <see cref="Register"/> succeeds at most once per instance (the contract: once per connection);
/// <see cref="Dispose"/> is idempotent. <see cref="Registered"/> may be read from any thread.
/// </summary>
public sealed class KernelIomapDevices : IIomapDeviceRegistrar
{
    private readonly object _gate = new();
    private readonly int _blockSize;
    private readonly Func<bool> _hasSysRawio;
    private readonly Action<string>? _log;
    private readonly List<Held> _held = new();
    private volatile IReadOnlyList<RegisteredIomapDevice> _registered = Array.Empty<RegisteredIomapDevice>();
    private bool _registeredOnce, _disposed;

    /// <summary>One device we hold: the loop device (for an image file), our exclusive descriptor, and the
    /// kernel's cookie once BACKING_OPEN succeeded.</summary>
    private sealed class Held
    {
        public required PoolDeviceInfo Device;
        public LoopDevice? Loop;
        public ExclusiveBlockDevice? Block;
        public uint? KernelCookie;
    }

    /// <param name="blockSize">The pool's block size: the logical block size of loop devices made for image files.</param>
    /// <param name="hasSysRawio">The capability check (default: CAP_SYS_RAWIO in this thread's effective set,
    /// <see cref="Capabilities.HasSysRawio"/>); tests inject their own.</param>
    /// <param name="log">Receives one line per device registered.</param>
    public KernelIomapDevices(int blockSize, Func<bool>? hasSysRawio = null, Action<string>? log = null)
    {
        if (blockSize < 512 || (blockSize & (blockSize - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "a power of two of at least 512");
        _blockSize = blockSize;
        _hasSysRawio = hasSysRawio ?? Capabilities.HasSysRawio;
        _log = log;
    }

    /// <summary>The devices registered by the successful <see cref="Register"/> (empty before, and after <see cref="Dispose"/>).</summary>
    public IReadOnlyList<RegisteredIomapDevice> Registered => _registered;

    /// <inheritdoc />
    public IReadOnlyList<RegisteredIomapDevice> Register(int fuseFd, IReadOnlyList<PoolDeviceInfo> devices)
    {
        ArgumentNullException.ThrowIfNull(devices);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_registeredOnce) throw new InvalidOperationException("the pool's devices are already registered with this connection");
            if (devices.Count > ExperimentalConstants.MaxIomapDevices)
                throw new IomapDeviceException($"the pool has {devices.Count} devices; fuse-iomap registers at most {ExperimentalConstants.MaxIomapDevices} per connection");
            var seen = new HashSet<uint>();
            foreach (var d in devices)
            {
                if (d.EngineCookie == 0 || !seen.Add(d.EngineCookie))
                    throw new IomapDeviceException($"pool device {d.Path}: engine cookie {d.EngineCookie} is {(d.EngineCookie == 0 ? "reserved" : "used twice")}");
                if (d.SizeBytes <= 0)
                    throw new IomapDeviceException($"pool device {d.Path} (engine cookie {d.EngineCookie}): size {d.SizeBytes} bytes");
            }
            if (!_hasSysRawio()) throw new IomapDeviceException(Capabilities.MissingSysRawioMessage);

            var result = new List<RegisteredIomapDevice>(devices.Count);
            try
            {
                foreach (var d in devices)
                {
                    var h = new Held { Device = d };
                    _held.Add(h);   // before anything is acquired: Undo releases whatever part was
                    Acquire(h);
                    h.KernelCookie = BackingOpen(fuseFd, h);
                    result.Add(new RegisteredIomapDevice(d.EngineCookie, h.KernelCookie.Value, h.Block!.Path, d.SizeBytes));
                }
            }
            catch (IomapDeviceException)
            {
                Undo(fuseFd);
                throw;
            }
            _registeredOnce = true;
            _registered = result;
            foreach (var (r, h) in result.Zip(_held))
                _log?.Invoke($"fuse-iomap: pool device {h.Device.Path} (engine cookie {r.EngineCookie}) registered as {r.BlockDevicePath}{(h.Loop != null ? " (loop device)" : "")}, kernel device {r.KernelCookie}");
            return result;
        }
    }

    /// <inheritdoc />
    public RegisteredIomapDevice Add(int fuseFd, PoolDeviceInfo device)
    {
        ArgumentNullException.ThrowIfNull(device);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_registeredOnce) throw new InvalidOperationException("devices are added to a connection after its first registration");
            if (_held.Count >= ExperimentalConstants.MaxIomapDevices)
                throw new IomapDeviceException($"the connection has {_held.Count} devices; fuse-iomap registers at most {ExperimentalConstants.MaxIomapDevices}");
            if (device.EngineCookie == 0 || _held.Any(h => h.Device.EngineCookie == device.EngineCookie))
                throw new IomapDeviceException($"pool device {device.Path}: engine cookie {device.EngineCookie} is {(device.EngineCookie == 0 ? "reserved" : "already registered")}");
            if (device.SizeBytes <= 0) throw new IomapDeviceException($"pool device {device.Path} (engine cookie {device.EngineCookie}): size {device.SizeBytes} bytes");
            if (!_hasSysRawio()) throw new IomapDeviceException(Capabilities.MissingSysRawioMessage);
            var h = new Held { Device = device };
            try
            {
                Acquire(h);
                h.KernelCookie = BackingOpen(fuseFd, h);
            }
            catch (IomapDeviceException)
            {
                unsafe
                {
                    if (h.KernelCookie is uint id && fuseFd >= 0) LibC.Ioctl(fuseFd, FuseDevIoctl.BackingClose, &id);
                }
                h.Block?.Dispose();
                h.Loop?.Dispose();
                throw;
            }
            _held.Add(h);
            var r = new RegisteredIomapDevice(device.EngineCookie, h.KernelCookie.Value, h.Block!.Path, device.SizeBytes);
            _registered = [.. _registered, r];
            _log?.Invoke($"fuse-iomap: pool device {device.Path} (engine cookie {r.EngineCookie}) added as {r.BlockDevicePath}{(h.Loop != null ? " (loop device)" : "")}, kernel device {r.KernelCookie}");
            return r;
        }
    }

    /// <inheritdoc />
    public unsafe bool Release(int fuseFd, uint engineCookie)
    {
        lock (_gate)
        {
            var h = _held.FirstOrDefault(x => x.Device.EngineCookie == engineCookie);
            if (_disposed || h == null || h.KernelCookie is not uint id) return false;
            // An iomap kernel may refuse (EBUSY) while mounted; it then keeps the device until the connection ends, and
            // so do we (our exclusive descriptor and the loop device go at Dispose).
            if (LibC.Ioctl(fuseFd, FuseDevIoctl.BackingClose, &id) < 0)
            {
                _log?.Invoke($"fuse-iomap: pool device {h.Device.Path} left the pool; the kernel keeps it registered until unmount ({LibC.Describe(LibC.LastErrno)})");
                return false;
            }
            h.Block?.Dispose();
            h.Loop?.Dispose();
            _held.Remove(h);
            _registered = _registered.Where(r => r.EngineCookie != engineCookie).ToArray();
            return true;
        }
    }

    /// <summary>Attaches an image to a loop device, or takes a block device as is; opens it exclusively.</summary>
    private void Acquire(Held h)
    {
        var d = h.Device;
        string what = $"pool device {d.Path} (engine cookie {d.EngineCookie})";
        if (Syscall.stat(d.Path, out var st) != 0)
            throw new IomapDeviceException($"{what}: {LibC.Describe(Stdlib.GetLastError())}");
        try
        {
            if ((st.st_mode & FilePermissions.S_IFMT) == FilePermissions.S_IFREG)
            {
                h.Loop = LoopDevice.Attach(d.Path, _blockSize);
                h.Block = ExclusiveBlockDevice.Open(h.Loop.Path, d.SizeBytes);
            }
            else
                h.Block = ExclusiveBlockDevice.Open(d.Path, d.SizeBytes);
        }
        catch (IomapDeviceException e) { throw new IomapDeviceException($"{what}: {e.Message}", e); }
    }

    /// <summary>FUSE_DEV_IOC_BACKING_OPEN with FUSE_BACKING_TYPE_IOMAP: the kernel's device cookie.</summary>
    private static unsafe uint BackingOpen(int fuseFd, Held h)
    {
        var map = new FuseBackingMap { Fd = h.Block!.Fd, Flags = ExperimentalConstants.BackingTypeIomap, Padding = 0 };
        int id = LibC.Ioctl(fuseFd, FuseDevIoctl.BackingOpen, &map);
        string dev = $"pool device {h.Device.Path} (engine cookie {h.Device.EngineCookie}): the kernel refused to register "
            + (h.Loop != null ? $"{h.Block.Path} (the image's loop device)" : h.Block.Path);
        if (id < 0)
        {
            var e = LibC.LastErrno;
            throw new IomapDeviceException($"{dev} for fuse-iomap (FUSE_DEV_IOC_BACKING_OPEN, flags FUSE_BACKING_TYPE_IOMAP): {LibC.Describe(e)}{BackingOpenHint(e)}");
        }
        if (id == ExperimentalConstants.IomapNoDevice)
        {
            h.KernelCookie = 0;   // registered all the same: Undo tries to close it
            throw new IomapDeviceException($"pool device {h.Device.Path}: the kernel registered {h.Block.Path} as device 0, which fuse-iomap reserves for \"no device\"");
        }
        return (uint)id;
    }

    private static string BackingOpenHint(Errno e) => e switch
    {
        Errno.EPERM => "; this connection has no fuse-iomap (the kernel does not offer it or did not grant it at INIT), or the server lacks the privilege",
        Errno.EINVAL => "; the kernel does not know FUSE_BACKING_TYPE_IOMAP (no fuse-iomap in this kernel)",
        Errno.EOPNOTSUPP => "; the kernel was built without FUSE backing files",
        Errno.ENOTTY => "; the descriptor is not a /dev/fuse connection, or the kernel has no backing ioctls",
        Errno.EBADF => "; the /dev/fuse descriptor is not open",
        Errno.ENODEV => "; the kernel does not take it as a block device",
        Errno.EMFILE or Errno.ENOSPC => $"; the connection has reached the kernel's device limit ({ExperimentalConstants.MaxIomapDevices})",
        _ => "",
    };

    /// <summary>Releases everything held, newest first. Called under the lock.</summary>
    private unsafe void Undo(int fuseFd)
    {
        for (int i = _held.Count - 1; i >= 0; i--)
        {
            var h = _held[i];
            if (h.KernelCookie is uint id && fuseFd >= 0)
                LibC.Ioctl(fuseFd, FuseDevIoctl.BackingClose, &id);   // EBUSY on iomap kernels while mounted: the kernel keeps it until the connection ends
            h.Block?.Dispose();
            h.Loop?.Dispose();
        }
        _held.Clear();
    }

    /// <summary>Closes our descriptors and detaches the loop devices (see the class summary). Idempotent.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Undo(fuseFd: -1);
            _registered = Array.Empty<RegisteredIomapDevice>();
        }
    }
}
