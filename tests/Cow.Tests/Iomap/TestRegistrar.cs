using Cow.Fuse.Server;

namespace Cow.Tests.Iomap;

/// <summary>
/// Stands in for the real registrar (loop devices + FUSE_DEV_IOC_BACKING_OPEN): hands out the kernel cookies
/// it was given — non-trivial ones, 5 and 9 by default — and remembers which image file each cookie names,
/// so that the test kernel can do its I/O there. Counts calls; can be told to fail or to answer nonsense.
/// Thread-safety: the dispatcher calls <see cref="Register"/> at most once; the test reads the results after.
/// </summary>
internal sealed class TestRegistrar(params uint[] cookies) : IIomapDeviceRegistrar
{
    private readonly uint[] _cookies = cookies.Length > 0 ? cookies : [5, 9];
    public int Calls;
    public int Disposals;
    public int FuseFd = int.MinValue;
    public IReadOnlyList<PoolDeviceInfo> Asked = [];
    public IReadOnlyList<RegisteredIomapDevice> Answered = [];
    /// <summary>Throw this message instead of registering.</summary>
    public string? FailWith;
    /// <summary>Answer this instead of the real table (a broken registrar).</summary>
    public Func<IReadOnlyList<PoolDeviceInfo>, IReadOnlyList<RegisteredIomapDevice>>? Answer;

    public IReadOnlyList<RegisteredIomapDevice> Register(int fuseFd, IReadOnlyList<PoolDeviceInfo> devices)
    {
        Calls++;
        FuseFd = fuseFd;
        Asked = devices;
        if (FailWith != null) throw new IomapDeviceException(FailWith);
        Answered = Answer?.Invoke(devices)
            ?? devices.Select((d, i) => new RegisteredIomapDevice(d.EngineCookie, _cookies[i], d.Path, d.SizeBytes)).ToList();
        return Answered;
    }

    /// <summary>Devices registered after the mount (<see cref="Add"/>) and released (<see cref="Release"/>).</summary>
    public readonly List<RegisteredIomapDevice> Added = new();
    public readonly List<uint> Released = new();

    public RegisteredIomapDevice Add(int fuseFd, PoolDeviceInfo device)
    {
        if (FailWith != null) throw new IomapDeviceException(FailWith);
        var r = new RegisteredIomapDevice(device.EngineCookie, 100 + (uint)Added.Count, device.Path, device.SizeBytes);
        Added.Add(r);
        Answered = [.. Answered, r];
        return r;
    }

    public bool Release(int fuseFd, uint engineCookie)
    {
        Released.Add(engineCookie);
        return true;
    }

    public void Dispose() => Disposals++;
}
