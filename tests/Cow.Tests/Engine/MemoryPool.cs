using Cow.Core;
using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>
/// A pool on memory devices (metadata included, through <see cref="BlockDeviceStream"/>), optionally
/// behind fault-injecting devices so that power cuts hit data and metadata alike. <see cref="Reboot"/>
/// drops the open pool without closing it (what survives is what was flushed) and opens it again.
/// Not thread-safe.
/// </summary>
public sealed class MemoryPool : IDisposable
{
    public MemoryBlockDevice BaseMem { get; }
    public MemoryBlockDevice LogMem { get; }
    public MemoryBlockDevice MetaMem { get; }
    public MemoryBlockDevice MetaLogMem { get; }
    public FaultInjectingBlockDevice? BaseFault, LogFault, MetaFault, MetaLogFault;
    /// <summary>Devices added with <see cref="AddDevice"/>, by cookie (and their fault-injecting fronts when faulty).</summary>
    public Dictionary<uint, MemoryBlockDevice> AddedMem { get; } = new();
    public Dictionary<uint, FaultInjectingBlockDevice> AddedFault { get; } = new();
    public Pool Pool { get; private set; }
    public FileSystemView Live => Pool.Live;
    public Core.Engine.Engine Engine => Pool.Engine;
    private readonly bool _faulty;
    private readonly long _logDataBytes;
    /// <summary>Bytes of the log device kept for the metadata when it lives there (a pool on its devices), else 0.</summary>
    public const long MetadataOnLogBytes = 48L << 20;
    private readonly bool _metadataOnLog;

    /// <param name="metadataOnLog">Keep the metadata streams in two windows at the end of the log device, as a pool on
    /// its devices does (format.md 2), instead of on devices of their own.</param>
    public MemoryPool(long baseSize = 64 << 20, long logSize = 256 << 20, bool faulty = false, int blockSize = 4096, bool metadataOnLog = false)
    {
        BaseMem = new MemoryBlockDevice("base", baseSize);
        _metadataOnLog = metadataOnLog;
        _logDataBytes = logSize;
        LogMem = new MemoryBlockDevice("log", logSize + (metadataOnLog ? MetadataOnLogBytes : 0));
        MetaMem = new MemoryBlockDevice("meta", 1L << 30);
        MetaLogMem = new MemoryBlockDevice("meta-log", 1L << 30);
        _faulty = faulty;
        var media = Media(fresh: true);
        Pool = Pool.Create(media, new PoolCreateOptions { BlockSize = blockSize });
    }

    private PoolMedia Media(bool fresh)
    {
        IBlockDevice b = BaseMem, l = LogMem, m = MetaMem, ml = MetaLogMem;
        if (_faulty)
        {
            b = BaseFault = new FaultInjectingBlockDevice(BaseMem, "base");
            l = LogFault = new FaultInjectingBlockDevice(LogMem, "log");
            m = MetaFault = new FaultInjectingBlockDevice(MetaMem, "meta");
            ml = MetaLogFault = new FaultInjectingBlockDevice(MetaLogMem, "meta-log");
        }
        if (_metadataOnLog)
        {
            // The layout of a pool on its devices: the log's data blocks, then the metadata and its log, one device.
            m = new DeviceWindow(l, _logDataBytes, MetadataOnLogBytes / 4 * 3, "metadata", ownsInner: false);
            ml = new DeviceWindow(l, _logDataBytes + MetadataOnLogBytes / 4 * 3, MetadataOnLogBytes / 4, "metadata log", ownsInner: false);
            l = new DeviceWindow(l, 0, _logDataBytes, "log data", ownsInner: false);
        }
        Stream data = fresh ? new BlockDeviceStream(m) : BlockDeviceStream.Open(m);
        var log = fresh ? new BlockDeviceStream(ml) : BlockDeviceStream.Open(ml);
        log.FlushBeforeTruncate = data;
        var added = new Dictionary<uint, IBlockDevice>();
        foreach (var (cookie, mem) in AddedMem)
            added[cookie] = _faulty ? AddedFault[cookie] = new FaultInjectingBlockDevice(mem, mem.Name) : mem;
        return new PoolMedia(b, l, data, log) { Added = added };
    }

    /// <summary>Adds a memory device of <paramref name="size"/> bytes to the pool (behind a fault-injecting device when
    /// faulty); it is given again at every reopen.</summary>
    public PoolDevice AddDevice(string name, long size, Cow.Core.Format.DeviceRole role)
    {
        var mem = new MemoryBlockDevice(name, size);
        IBlockDevice dev = mem;
        FaultInjectingBlockDevice? fault = null;
        if (_faulty) dev = fault = new FaultInjectingBlockDevice(mem, name);
        var d = Pool.AddDevice(dev, role);
        AddedMem[d.Cookie] = mem;
        if (fault != null) AddedFault[d.Cookie] = fault;
        return d;
    }

    /// <summary>Closes cleanly and opens again.</summary>
    public void Reopen()
    {
        Pool.Dispose();
        Pool = Pool.Open(Media(fresh: false));
    }

    /// <summary>Closes cleanly and opens again as a mount does: deleted snapshots are purged in the background.</summary>
    public void ReopenWithBackgroundPurges()
    {
        Pool.Dispose();
        Pool = Pool.Open(Media(fresh: false), purgeInBackground: true);
    }

    /// <summary>Closes cleanly, runs <paramref name="whileClosed"/> (which may change the devices), and opens again.</summary>
    public void ReopenAfter(Action whileClosed)
    {
        Pool.Dispose();
        whileClosed();
        Pool = Pool.Open(Media(fresh: false));
    }

    /// <summary>Cuts power on every device (unflushed writes lost) and opens the pool again.</summary>
    public void PowerCutAndReboot(PowerCutMode mode = PowerCutMode.DropUnflushed, int seed = 0)
    {
        if (!_faulty) throw new InvalidOperationException("power cuts need faulty: true");
        foreach (var f in new[] { BaseFault!, LogFault!, MetaFault!, MetaLogFault! }.Concat(AddedFault.Values))
        {
            if (_metadataOnLog && (f == MetaFault || f == MetaLogFault)) continue;   // not used: the metadata is on the log
            try { if (!f.HasLostPower) f.PowerCut(mode, seed); }
            catch (ObjectDisposedException) { /* a device removed from the pool was closed: nothing of it is unflushed */ }
        }
        Abandon();
        Pool = Pool.Open(Media(fresh: false));
    }

    /// <summary>Forgets the open pool without closing it (its devices have lost power).</summary>
    private void Abandon()
    {
        try { Pool.Dispose(); } catch (Exception) { /* the devices lost power: closing fails, as in a crash */ }
    }

    public void AssertClean()
    {
        var report = Pool.Fsck();
        Assert.True(report.Clean, report.ToString());
    }

    public void Dispose()
    {
        try { Pool.Dispose(); } catch (IOException) { }
    }

    // ---------------------------------------------------------------- path helpers

    public static long Ino(FileSystemView fs, string path)
    {
        var e = fs.Resolve(path, out var a);
        Assert.True(e == 0, $"resolve {path}: {e}");
        return a.Ino;
    }

    public static long CreateFile(FileSystemView fs, string path)
    {
        Assert.Equal(0, (int)fs.ResolveParent(path, out var parent, out var name));
        var e = fs.Create(parent, name, 0x1A4, 0, 0, out var a);
        Assert.True(e == 0, $"create {path}: {e}");
        return a.Ino;
    }

    public static void WriteAt(FileSystemView fs, long ino, long offset, byte[] data)
    {
        var e = fs.Write(ino, offset, data, out int n);
        Assert.True(e == 0, $"write {data.Length} at {offset}: {e}");
        Assert.Equal(data.Length, n);
    }

    public static byte[] ReadAll(FileSystemView fs, long ino)
    {
        Assert.Equal(0, (int)fs.GetAttr(ino, out var a));
        var buf = new byte[a.Size];
        var e = fs.Read(ino, 0, buf, out int n);
        Assert.True(e == 0, $"read: {e}");
        Assert.Equal(a.Size, n);
        return buf;
    }

    public static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}
