using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core;

/// <summary>Where a pool keeping its metadata on its devices has it: two regions at the end of the log device (format.md 2).</summary>
internal sealed record MetadataRegion(Guid PoolUuid, long DataOffset, long DataBytes, long LogOffset, long LogBytes);

/// <summary>A pool found by <see cref="Pool.Scan"/>: its uuid and label, the device holding its metadata (null when none
/// was found: the metadata is in a pool folder, or that device is missing) and the devices found.</summary>
public sealed record FoundPool(Guid Uuid, string Label, string? MetadataDevice, IReadOnlyList<FoundDevice> Devices);

/// <summary>One device of a <see cref="FoundPool"/>: where it is, its cookie, role and format version.</summary>
public sealed record FoundDevice(string Path, uint Cookie, DeviceRole Role, uint FormatVersion, long SizeBytes);

// A pool that lives on its devices (format.md 1 and 8): its metadata in two regions of its log device, found by
// scanning block devices (and image files beside a given one) for superblocks of the pool, locked by its uuid.
public sealed partial class Pool
{
    private readonly IBlockDevice? _metadataDevice;

    /// <summary>What names the pool: its folder, or the device holding its metadata (the mount table's source).</summary>
    public string Source { get; }

    /// <summary>The pool's lock file (null for pools on given media).</summary>
    public string? LockPath { get; }

    /// <summary>Where the locks of pools on devices are: <c>$COW_RUN_DIR</c>, else /run/cow.</summary>
    public static string DeviceLockDirectory => Environment.GetEnvironmentVariable("COW_RUN_DIR") is { Length: > 0 } d ? d : "/run/cow";

    /// <summary>The lock file of the pool <paramref name="source"/> names (a pool folder, or any device of a pool on
    /// devices); null when it names no pool.</summary>
    public static string? LockPathOf(string source)
    {
        if (Directory.Exists(source)) return Path.Combine(source, LockFile);
        return ReadSuperblock(source, out _) is { } sb ? DeviceLockPath(sb.PoolUuid) : null;
    }

    private static string DeviceLockPath(Guid pool) => Path.Combine(DeviceLockDirectory, $"pool-{pool}.lock");

    /// <summary>Default size of the metadata region: an eighth of the log device, from 64 MiB to 16 GiB.</summary>
    public static long DefaultMetadataBytes(long logDeviceBytes) => Math.Clamp(logDeviceBytes / 8, 64L << 20, 16L << 30);

    /// <summary>
    /// Makes a pool that lives on its devices (no folder): <see cref="PoolCreateOptions.LogDevice"/> and
    /// <see cref="PoolCreateOptions.BaseDevice"/> (block devices, or image files, made with the sizes given when
    /// missing). The log device ends with the metadata region (<see cref="PoolCreateOptions.MetadataSize"/>, default
    /// <see cref="DefaultMetadataBytes"/>): three quarters for LiteDB's data stream, a quarter for its write-ahead log,
    /// each behind a crash-safe stream header. The pool is format version 2. Open it with <see cref="Open(string)"/> on
    /// any of its devices.
    /// </summary>
    public static Pool CreateOnDevices(PoolCreateOptions o)
    {
        if (o.LogDevice == null || o.BaseDevice == null)
            throw new PoolException("a pool on its devices needs both a log device and a base device");
        CheckBlockSize(o.BlockSize);
        var created = new List<string>();
        IBlockDevice? b = null, l = null, metaDev = null;
        FileStream? lockFile = null;
        try
        {
            (b, string basePath) = CreateOrOpenDevice(Path.GetDirectoryName(Path.GetFullPath(o.BaseDevice))!, o.BaseDevice, BaseImage, o.BaseSize, created, "base", o.Force);
            (l, string logPath) = CreateOrOpenDevice(Path.GetDirectoryName(Path.GetFullPath(o.LogDevice))!, o.LogDevice, LogImage, o.LogSize, created, "log", o.Force);
            int bs = o.BlockSize;
            long metaBytes = o.MetadataSize ?? DefaultMetadataBytes(l.Length);
            metaBytes = metaBytes / bs * bs;
            if (metaBytes < 16L << 20) throw new PoolException($"metadata region of {metaBytes} bytes is too small: at least 16 MiB");
            long start = (l.Length - metaBytes) / bs * bs;
            if (start < 64L * bs) throw new PoolException($"log device {logPath} ({l.Length} bytes) is too small for a metadata region of {metaBytes} bytes and data");
            long dataBytes = metaBytes / 4 * 3 / bs * bs;
            var region = new MetadataRegion(Guid.NewGuid(), start, dataBytes, start + dataBytes, l.Length - start - dataBytes);
            Directory.CreateDirectory(DeviceLockDirectory);
            lockFile = TakeLockAt(DeviceLockPath(region.PoolUuid), logPath);
            metaDev = FileBlockDevice.Open(logPath, writable: true);
            var (data, log) = MetadataStreams(metaDev, region, fresh: true);
            var engine = Format(new PoolMedia(b, l, data, log), o, basePath, logPath, region);
            return new Pool(engine, null, lockFile, logPath, metaDev);
        }
        catch
        {
            b?.Dispose(); l?.Dispose(); metaDev?.Dispose(); lockFile?.Dispose();
            foreach (var f in created) try { File.Delete(f); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>The two metadata streams in their windows of <paramref name="dev"/> (the log device, opened once more for them).</summary>
    private static (BlockDeviceStream Data, BlockDeviceStream Log) MetadataStreams(IBlockDevice dev, MetadataRegion r, bool fresh)
    {
        var dw = new DeviceWindow(dev, r.DataOffset, r.DataBytes, "metadata", ownsInner: false);
        var lw = new DeviceWindow(dev, r.LogOffset, r.LogBytes, "metadata log", ownsInner: false);
        var data = fresh ? new BlockDeviceStream(dw) : BlockDeviceStream.Open(dw);
        var log = fresh ? new BlockDeviceStream(lw) : BlockDeviceStream.Open(lw);
        log.FlushBeforeTruncate = data;
        if (fresh) { data.Flush(); log.Flush(); }
        return (data, log);
    }

    private static Superblock? ReadSuperblock(string path, out string? problem)
    {
        problem = null;
        try
        {
            // One small read: no block-device object (its read-ahead and write-behind descriptors) for a probe.
            using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            var block = new byte[FormatConstants.SuperblockSize];
            if (RandomAccess.Read(h, block, 0) < block.Length) { problem = "is too small to hold a superblock"; return null; }
            return Superblock.TryRead(block, out problem);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { problem = e.Message; return null; }
    }

    /// <summary>Paths where devices of pools may be: every block device of this machine (/sys/class/block), and for each
    /// of <paramref name="near"/> that is a regular file, the regular files beside it (pools of image files).</summary>
    private static List<string> Candidates(IEnumerable<string> near)
    {
        var list = new List<string>();
        foreach (var n in near)
        {
            var full = Path.GetFullPath(n);
            list.Add(full);
            if (File.Exists(full) && (File.GetAttributes(full) & FileAttributes.Device) == 0 && !full.StartsWith("/dev/", StringComparison.Ordinal))
                try { list.AddRange(Directory.EnumerateFiles(Path.GetDirectoryName(full)!).Take(4096)); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            else if (Directory.Exists(full))
                try { list.AddRange(Directory.EnumerateFiles(full).Take(4096)); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        try
        {
            foreach (var b in Directory.EnumerateDirectories("/sys/class/block").Select(Path.GetFileName).Order())
                if (File.Exists("/dev/" + b) || Mono.Unix.Native.Syscall.access("/dev/" + b, Mono.Unix.Native.AccessModes.F_OK) == 0) list.Add("/dev/" + b);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return list.Distinct().ToList();
    }

    /// <summary>Every Cow device among the block devices of this machine and the files in or beside
    /// <paramref name="near"/>, grouped by pool. Reads block 0 of each; writes nothing.</summary>
    public static IReadOnlyList<FoundPool> Scan(IEnumerable<string>? near = null)
    {
        var found = new List<(Superblock Sb, string Path)>();
        foreach (var c in Candidates(near ?? []))
            if (ReadSuperblock(c, out _) is { } sb) found.Add((sb, c));
        return found.GroupBy(f => f.Sb.PoolUuid).Select(g =>
        {
            var devs = g.GroupBy(x => x.Sb.DeviceUuid).Select(x => x.First()).OrderBy(x => x.Sb.DeviceCookie).ToList();
            var meta = devs.FirstOrDefault(x => x.Sb.HoldsMetadata);
            return new FoundPool(g.Key, devs[0].Sb.Label, meta.Path,
                devs.Select(x => new FoundDevice(x.Path, x.Sb.DeviceCookie, x.Sb.Role, x.Sb.FormatVersion, (long)x.Sb.DeviceSize)).ToArray());
        }).OrderBy(p => p.Label).ThenBy(p => p.Uuid).ToArray();
    }

    /// <summary>
    /// Opens the pool that <paramref name="device"/> (a block device or image file) belongs to, when that pool keeps its
    /// metadata on its devices: its other devices are found by their uuid among the block devices and the files
    /// beside <paramref name="device"/>; the checks of format.md 8 run before anything is written.
    /// </summary>
    private static Pool OpenDevice(string device, bool purgeInBackground)
    {
        device = Path.GetFullPath(device);
        var sb = ReadSuperblock(device, out var problem)
            ?? throw new PoolException(device.StartsWith("/dev/", StringComparison.Ordinal)
                ? $"{device} is not a device of a Cow pool: it {problem}"
                : $"{device} is a file, not a pool folder nor a device of a Cow pool (it {problem})");
        var members = new Dictionary<Guid, (Superblock Sb, string Path)>();
        foreach (var c in Candidates([device]))
            if (ReadSuperblock(c, out _) is { } s && s.PoolUuid == sb.PoolUuid && !members.ContainsKey(s.DeviceUuid)) members[s.DeviceUuid] = (s, c);
        var host = members.Values.FirstOrDefault(m => m.Sb.HoldsMetadata);
        if (host.Path == null)
            throw new PoolException(sb.FormatVersion < FormatConstants.DevicesFormatVersion || members.Values.All(m => m.Sb.FormatVersion < FormatConstants.DevicesFormatVersion)
                ? $"{device} is a {sb.Role.ToString().ToLowerInvariant()} device of pool {sb.PoolUuid}{(sb.Label.Length > 0 ? $" ({sb.Label})" : "")}, whose metadata is in a pool folder: open that folder"
                : $"{device} is a device of pool {sb.PoolUuid}, but the device holding its metadata (its log device) was not found among this machine's block devices{(File.Exists(device) && !device.StartsWith("/dev/", StringComparison.Ordinal) ? " and the files beside " + device : "")}");
        var region = new MetadataRegion(sb.PoolUuid, (long)host.Sb.MetaDataOffset, (long)host.Sb.MetaDataBytes, (long)host.Sb.MetaLogOffset, (long)host.Sb.MetaLogBytes);
        Directory.CreateDirectory(DeviceLockDirectory);
        var lockFile = TakeLockAt(DeviceLockPath(sb.PoolUuid), host.Path);
        IBlockDevice? metaDev = null;
        var devs = new Dictionary<uint, IBlockDevice>();
        try
        {
            metaDev = FileBlockDevice.Open(host.Path, writable: false);
            PoolRecord poolRec; List<DeviceRecord> table;
            {
                var (d0, l0) = MetadataStreams(metaDev, region, fresh: false);
                using var scratch = OpenStore(host.Path, new ScratchOverlayStream(d0, owns: true), new ScratchOverlayStream(l0, owns: true));
                poolRec = scratch.LoadPool(); table = scratch.LoadDevices();
            }
            metaDev.Dispose();
            metaDev = null;
            CheckPoolRecord(poolRec, host.Path);
            if (poolRec.PoolUuid != sb.PoolUuid) throw new PoolException($"the metadata on {host.Path} describes pool {poolRec.PoolUuid}, not {sb.PoolUuid}");
            var foundAt = new Dictionary<uint, string>();
            foreach (var rec in table)
            {
                // The path the table keeps is tried first; device names change between boots, uuids do not.
                string path = (members.TryGetValue(rec.DeviceUuid, out var m) ? m.Path : null)
                    ?? throw new PoolException($"{rec.Role.ToString().ToLowerInvariant()} device (cookie {rec.Cookie}, uuid {rec.DeviceUuid}, last seen at {rec.Path}) of pool {sb.PoolUuid} is missing: not found among this machine's block devices");
                using (var probe = OpenDeviceChecked(path, rec, table, poolRec, writable: false)) { }
                foundAt[rec.Cookie] = path;
            }
            foreach (var rec in table) devs[rec.Cookie] = FileBlockDevice.Open(foundAt[rec.Cookie], writable: true);
            metaDev = FileBlockDevice.Open(host.Path, writable: true);
            var (data, log) = MetadataStreams(metaDev, region, fresh: false);
            var store = OpenStore(host.Path, data, log);
            return new Pool(BuildEngine(store, devs, purgeInBackground), null, lockFile, host.Path, metaDev, foundAt);
        }
        catch
        {
            foreach (var d in devs.Values) d.Dispose();
            metaDev?.Dispose();
            lockFile.Dispose();
            throw;
        }
    }
}
