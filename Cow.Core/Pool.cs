using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Cow.Core.FileSystem;

namespace Cow.Core;

/// <summary>What mkfs makes.</summary>
public sealed record PoolCreateOptions
{
    /// <summary>Bytes per block: a power of two from 4096 to 65536.</summary>
    public int BlockSize { get; init; } = 4096;
    /// <summary>Size of a new base image file (ignored for an existing block device).</summary>
    public long BaseSize { get; init; } = 1L << 30;
    /// <summary>Size of a new log image file (ignored for an existing block device).</summary>
    public long LogSize { get; init; } = 4L << 30;
    /// <summary>An existing block device (or image file) to format as the base device; null: base.img in the pool folder.</summary>
    public string? BaseDevice { get; init; }
    /// <summary>An existing block device (or image file) to format as the log device; null: log.img in the pool folder.</summary>
    public string? LogDevice { get; init; }
    public string Label { get; init; } = "";
    /// <summary>Owner of the root directory.</summary>
    public uint RootUid { get; init; }
    public uint RootGid { get; init; }
    /// <summary>Format given devices even when they already hold a Cow superblock (destroys that pool).</summary>
    public bool Force { get; init; }
    /// <summary>A pool on its devices (<see cref="Pool.CreateOnDevices"/>): bytes of the log device kept for the metadata
    /// (null: <see cref="Pool.DefaultMetadataBytes"/>).</summary>
    public long? MetadataSize { get; init; }
}

/// <summary>A pool's devices and metadata streams, already open: how tests build pools on memory and
/// fault-injecting devices. The pool takes ownership.</summary>
public sealed record PoolMedia(IBlockDevice Base, IBlockDevice Log, Stream MetadataData, Stream MetadataLog)
{
    /// <summary>Devices added after mkfs (<see cref="Pool.AddDevice(IBlockDevice, DeviceRole, bool)"/>), by cookie.</summary>
    public IReadOnlyDictionary<uint, IBlockDevice> Added { get; init; } = new Dictionary<uint, IBlockDevice>();
}

/// <summary>One device of an open pool: its engine cookie (1 = base and 2 = log from mkfs, 3.. added later), role,
/// where it lives (an absolute image-file or block-device path; for pools on given media, that device's name), the
/// bytes the pool uses on it (a whole number of blocks, at most the device's length) and whether it is being
/// removed. Immutable.</summary>
public sealed record PoolDevice(uint Cookie, DeviceRole Role, string Path, long SizeBytes, DeviceState State = DeviceState.InService);

/// <summary>Opening or creating a pool failed; <see cref="Exception.Message"/> says what and where, for an administrator.</summary>
public sealed class PoolException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// An open pool: its devices, its metadata file and the engine over them. A pool folder holds
/// <c>cow.db</c> (+ <c>cow-log.db</c>), <c>cow.lock</c>, and by default <c>base.img</c> and <c>log.img</c>.
/// Callers outside Cow.Core use <see cref="Live"/>, <see cref="Snapshots"/> and the pool's own members
/// (Pool.Kernel.cs for a FUSE server), never the engine itself: <see cref="Engine"/> is for Cow.Core and tests.
/// Threading: thread-safe (see <see cref="Engine.Engine"/>); <see cref="Dispose"/> must not race other calls.
/// </summary>
public sealed partial class Pool : IDisposable
{
    public const string MetadataFile = "cow.db", LockFile = "cow.lock", BaseImage = "base.img", LogImage = "log.img";

    internal Engine.Engine Engine { get; }

    /// <summary>Metadata commits made since open.</summary>
    public long CommitCount => Engine.CommitCount;

    /// <summary>Longest time a completed change waits for its group commit (default 5 s; 0: commits only on
    /// fsync, snapshot operations, size thresholds and close).</summary>
    public TimeSpan CommitInterval { get => Engine.CommitInterval; set => Engine.CommitInterval = value; }
    /// <summary>The byte budget of the metadata caches (sized for the machine at open; <c>cow mount --cache-size</c>).</summary>
    public Engine.CacheBudget CacheBudget { get => Engine.CacheBudget; set => Engine.CacheBudget = value; }
    public FileSystemView Live { get; }
    /// <summary>The pool's snapshots (list, create, delete, hold, diff, restore...).</summary>
    public PoolSnapshots Snapshots { get; }
    /// <summary>Send and receive of snapshot streams (format.md 10).</summary>
    public PoolReplication Replication { get; }
    public string? Folder { get; }
    /// <summary>The pool's devices now, by cookie (what a kernel-side user such as fuse-iomap needs to open them
    /// itself); <c>cow device add</c> and <c>remove</c> change it (<see cref="AddDeviceListener"/>).</summary>
    public IReadOnlyList<PoolDevice> Devices => Engine.DeviceManager.List();
    private readonly FileStream? _lock;

    private Pool(Engine.Engine engine, string? folder, FileStream? lockFile, string? source = null, IBlockDevice? metadataDevice = null,
        IReadOnlyDictionary<uint, string>? foundAt = null)
    {
        Engine = engine; Folder = folder; _lock = lockFile; _metadataDevice = metadataDevice;
        Source = folder ?? source ?? "memory";
        LockPath = lockFile?.Name;
        Live = new FileSystemView(engine, engine.LiveTree, null);
        Snapshots = new PoolSnapshots(this);
        Replication = new PoolReplication(this);
        // Paths in the device table are relative to the pool folder when the device lives in it.
        // A pool on its devices finds them by uuid: where they are now may differ from the path the table keeps.
        engine.DeviceManager.Describe = r => new PoolDevice(r.Cookie, r.Role,
            foundAt != null && foundAt.TryGetValue(r.Cookie, out var at) ? at : folder != null ? Path.GetFullPath(r.Path, folder) : r.Path, r.DeviceSize, r.State);
    }

    /// <summary>Opens a read-only view of a snapshot; null if there is none by that name.</summary>
    public FileSystemView? Snapshot(string name)
    {
        var s = Engine.FindSnapshot(name);
        return s == null ? null : new FileSystemView(Engine, Engine.SnapshotTree(s.Gen), s.Name);
    }

    /// <summary>The pool's uuid (<c>pool_uuid</c>).</summary>
    public Guid Uuid => Engine.PoolUuid;
    /// <summary>Bytes per block.</summary>
    public int BlockSize => Engine.BlockSize;
    /// <summary>The pool's <c>format_version</c> (format.md 9): 1, or 2 once its device table changed or it lives on its devices.</summary>
    public int FormatVersion => Engine.FormatVersion;
    /// <summary>Blocks of each device: data, used, free (df).</summary>
    public IReadOnlyList<DeviceUsage> DeviceUsage() => Engine.DeviceUsage();

    /// <summary>Runs a log-cleaning pass now, at full speed: moves live blocks off the log device onto the base
    /// device until <paramref name="untilFreePercent"/> of the log is free or nothing more can be moved.</summary>
    public CleanerPass CleanLog(double untilFreePercent = 100, CancellationToken token = default) => Engine.CleanLog(untilFreePercent, token);

    /// <summary>Starts (or re-configures) the background cleaner; it stops when the pool closes.</summary>
    public void StartCleaner(CleanerSettings settings) => Engine.StartCleaner(settings);

    /// <summary>Stops the background cleaner (waits for the batch in progress).</summary>
    public void StopCleaner() => Engine.StopCleaner();

    /// <summary>Purges deleted snapshots' records on a background thread from now on: a snapshot delete returns once
    /// the snapshot is gone and its space is freed after (a mounted pool). It stops when the pool closes.</summary>
    public void StartPurger() => Engine.StartPurger();

    /// <summary>Deleted snapshots whose records are still being purged (their space is not free yet).</summary>
    public int PendingPurges => Engine.PendingPurges;

    /// <summary>Waits until every deleted snapshot's records are purged (inline when no background purger runs); false
    /// when <paramref name="timeout"/> passed first or the pool failed or closed.</summary>
    public bool WaitForPurges(TimeSpan timeout) => Engine.WaitForPurges(timeout);

    /// <summary>What the cleaner is doing and has done since the pool was opened.</summary>
    public CleanerStatus CleanerStatus() => Engine.CleanerStatus();
    /// <summary>Problems the engine reports for an administrator (a failed commit, a checksum mismatch...).</summary>
    public event Action<string>? Problem { add => Engine.Problem += value; remove => Engine.Problem -= value; }

    /// <summary>
    /// Scrubs the pool while it is in use: reads every block the committed metadata references, at most
    /// <see cref="ScrubSettings.RateBytesPerSecond"/> on average, and compares it with its checksum; the damaged ones
    /// come back by device block, inode, offset and path in the live tree and each snapshot that sees them. Nothing
    /// is repaired (Cow keeps no second copy). One scrub at a time ("busy" otherwise); <paramref name="token"/> or
    /// <see cref="CancelScrub"/> stops it, and so does closing the pool (which waits for it).
    /// <paramref name="progress"/> is called from the scrubbing thread after each read (at most 1 MiB).
    /// </summary>
    public ScrubReport Scrub(ScrubSettings? settings = null, Action<ScrubProgress>? progress = null, CancellationToken token = default) =>
        Engine.Scrub(settings ?? new ScrubSettings(), progress, token);

    /// <summary>Cancels the scrub running on this pool (it returns "cancelled"); false when none runs.</summary>
    public bool CancelScrub() => Engine.CancelScrub();

    /// <summary>Checks the pool (<see cref="Check.Fsck"/>); <paramref name="progress"/> hears (data blocks verified, to verify).</summary>
    public Check.FsckReport Fsck(bool verifyData = true, Action<long, long>? progress = null) => Check.Fsck.Run(Engine, verifyData, progress);

    // ------------------------------------------------------------------ mkfs

    /// <summary>Makes a new pool in <paramref name="folder"/> (created if missing; must not already hold a pool).</summary>
    public static Pool Create(string folder, PoolCreateOptions options)
    {
        folder = Path.GetFullPath(folder);
        Directory.CreateDirectory(folder);
        var meta = Path.Combine(folder, MetadataFile);
        // The images and the metadata hold every file's bytes and attributes: only the owner (the service)
        // may read them, whatever the umask; the mount enforces permissions for everyone else.
        if (!File.Exists(meta) && !OperatingSystem.IsWindows()) File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        if (File.Exists(meta)) throw new PoolException($"{folder} already holds a Cow pool ({MetadataFile} exists); refusing to overwrite it");
        foreach (var (given, image) in new[] { (options.BaseDevice, BaseImage), (options.LogDevice, LogImage) })
            if (given == null && File.Exists(Path.Combine(folder, image)))
                throw new PoolException($"{folder} holds the pool device image {Path.Combine(folder, image)} but no metadata file {MetadataFile}: "
                    + $"refusing to format over it. If it belongs to a pool whose {MetadataFile} was lost, put that file back; to make a new pool here, remove the images first");
        CheckBlockSize(options.BlockSize);
        var lockFile = TakeLock(folder);
        var created = new List<string>();
        IBlockDevice? b = null, l = null;
        try
        {
            (b, string basePath) = CreateOrOpenDevice(folder, options.BaseDevice, BaseImage, options.BaseSize, created, "base", options.Force);
            (l, string logPath) = CreateOrOpenDevice(folder, options.LogDevice, LogImage, options.LogSize, created, "log", options.Force);
            var (data, log) = MetadataStore.OpenFiles(meta, create: true);
            created.Add(meta); created.Add(MetadataStore.LogPath(meta));
            if (!OperatingSystem.IsWindows())
                foreach (var f in created.Append(Path.Combine(folder, LockFile)).Where(File.Exists))
                    File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var engine = Format(new PoolMedia(b, l, data, log), options, basePath, logPath);
            return new Pool(engine, folder, lockFile);
        }
        catch
        {
            b?.Dispose(); l?.Dispose();
            foreach (var f in created) try { File.Delete(f); } catch (IOException) { }
            lockFile.Dispose();
            throw;
        }
    }

    /// <summary>Makes a new pool on already-open media (tests: memory and fault-injecting devices).</summary>
    public static Pool Create(PoolMedia media, PoolCreateOptions options)
    {
        CheckBlockSize(options.BlockSize);
        return new Pool(Format(media, options, media.Base.Name, media.Log.Name), null, null);
    }

    private static void CheckBlockSize(int bs)
    {
        if (BlockSizeProblem(bs) is { } problem) throw new PoolException(problem);
    }

    /// <summary>Why <paramref name="bs"/> cannot be a pool's block size, or null when it can.</summary>
    public static string? BlockSizeProblem(int bs) =>
        bs < FormatConstants.MinBlockSize || bs > FormatConstants.MaxBlockSize || (bs & (bs - 1)) != 0
            ? $"block size {bs} is not a power of two between {FormatConstants.MinBlockSize} and {FormatConstants.MaxBlockSize}"
            : null;

    private static (IBlockDevice, string) CreateOrOpenDevice(string folder, string? given, string defaultName, long size, List<string> created, string role, bool force)
    {
        var full = Path.GetFullPath(given ?? Path.Combine(folder, defaultName));
        if (given == null || !File.Exists(full))
        {
            FileBlockDevice d;
            try { d = FileBlockDevice.Create(full, size); }
            catch (IOException e) { throw new PoolException($"{role} device {full} cannot be created: {e.Message}", e); }
            created.Add(full);
            return (d, given == null ? defaultName : full);
        }
        IBlockDevice existing;
        try { existing = FileBlockDevice.Open(full, writable: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new PoolException($"{role} device {full}: {e.Message}", e); }
        if (!force && existing.Length >= FormatConstants.SuperblockSize)
        {
            var sb = new byte[FormatConstants.SuperblockSize];
            existing.Read(0, sb);
            if (Superblock.TryRead(sb, out _) is { } old)
            {
                existing.Dispose();
                throw new PoolException($"{role} device {full} already holds a Cow device of pool {old.PoolUuid} ({old.Role.ToString().ToLowerInvariant()}, made {DateTime.UnixEpoch.AddTicks(old.CreatedNs / 100):u}); refusing to format it without --force");
            }
        }
        return (existing, full);
    }

    /// <summary>Writes superblocks (flushed), then the metadata with the root directory: the pool exists
    /// once its metadata commit is durable (format.md, "mkfs").</summary>
    private static Engine.Engine Format(PoolMedia media, PoolCreateOptions o, string basePath, string logPath, MetadataRegion? meta = null)
    {
        int bs = o.BlockSize;
        var poolUuid = meta?.PoolUuid ?? Guid.NewGuid();
        long now = Cow.Core.Engine.Engine.NowNs();
        var devices = new List<DeviceRecord>();
        var blocks = new Dictionary<uint, long>();
        foreach (var (dev, cookie, role, path) in new[] { (media.Base, FormatConstants.BaseCookie, DeviceRole.Base, basePath), (media.Log, FormatConstants.LogCookie, DeviceRole.Log, logPath) })
        {
            // The log device of a pool that keeps its metadata on its devices ends with the metadata region.
            long usable = role == DeviceRole.Log && meta != null ? meta.DataOffset : dev.Length;
            long nblocks = usable / bs;
            if (nblocks < 16) throw new PoolException($"{role.ToString().ToLowerInvariant()} device {dev.Name} is too small: {usable} bytes{(usable != dev.Length ? " besides its metadata region" : "")}, at least {16 * bs} needed");
            if (Cow.Core.Engine.DeviceSpace.TooLarge(nblocks, bs) is { } tooLarge) throw new PoolException($"{role.ToString().ToLowerInvariant()} device {dev.Name}: {tooLarge}");
            var sb = new Superblock
            {
                Role = role, PoolUuid = poolUuid, DeviceUuid = Guid.NewGuid(), DeviceCookie = cookie, BlockSize = (uint)bs,
                DeviceSize = (ulong)(nblocks * bs), DataStart = (ulong)bs, DeviceCount = 2, CreatedNs = now, Label = o.Label,
                FormatVersion = meta != null ? FormatConstants.DevicesFormatVersion : FormatConstants.MkfsFormatVersion,
            };
            if (role == DeviceRole.Log && meta != null)
                sb = sb with { MetaDataOffset = (ulong)meta.DataOffset, MetaDataBytes = (ulong)meta.DataBytes, MetaLogOffset = (ulong)meta.LogOffset, MetaLogBytes = (ulong)meta.LogBytes };
            var block = new byte[bs];
            sb.Write(block);
            dev.Write(0, block);
            dev.Flush();
            devices.Add(new DeviceRecord { Cookie = cookie, DeviceUuid = sb.DeviceUuid, Role = role, Path = path, DeviceSize = nblocks * bs });
            blocks[cookie] = nblocks;
        }
        var pool = new PoolRecord
        {
            PoolUuid = poolUuid, BlockSize = bs, CreatedNs = now, Label = o.Label, LiveGen = 1, NextIno = 2, NextRid = 2, LogCursor = 1,
            FormatVersion = (int)FormatConstants.FormatVersion,
        };
        var store = MetadataStore.Create(media.MetadataData, media.MetadataLog, pool, devices);
        var root = new InodeRecord
        {
            Rid = 1, Ino = 1, Birth = 1, Mode = 0x4000 | 0x1ED, Nlink = 2, Uid = o.RootUid, Gid = o.RootGid, Parent = 1, NextPos = 3,
            AtimeNs = now, MtimeNs = now, CtimeNs = now, BtimeNs = now,
        };
        var batch = new MetadataBatch { Pool = pool };
        batch.Add(root);
        store.Commit(batch);
        return new Engine.Engine(store, pool, new Dictionary<uint, IBlockDevice> { [1] = media.Base, [2] = media.Log });
    }

    // ------------------------------------------------------------------ open

    /// <summary>
    /// Opens the pool in <paramref name="folder"/>, or, when it names a device or image file, the pool on devices that
    /// device belongs to (<see cref="OpenDevice"/>). Everything is checked before anything is written:
    /// the metadata file is first read through a scratch overlay, each device's superblock is checked
    /// against the device table (missing, swapped, foreign, truncated, wrong format), and the first
    /// problem found is thrown as a <see cref="PoolException"/> naming the device and what is wrong.
    /// <para>With <paramref name="purgeInBackground"/> (a pool about to be mounted) the purges of deleted snapshots run on
    /// a background thread (<see cref="StartPurger"/>), those a crash or an unmount left pending first; otherwise the
    /// open finishes those before it returns and a snapshot delete purges before it returns.</para>
    /// </summary>
    public static Pool Open(string folder, bool purgeInBackground = false)
    {
        folder = Path.GetFullPath(folder);
        var meta = Path.Combine(folder, MetadataFile);
        if (File.Exists(folder)) return OpenDevice(folder, purgeInBackground);   // a device (or image file) of a pool that lives on its devices
        if (!Directory.Exists(folder)) throw new PoolException($"pool folder {folder} does not exist");
        if (!File.Exists(meta)) throw new PoolException($"{folder} is not a Cow pool: metadata file {MetadataFile} not found");
        var lockFile = TakeLock(folder);
        try
        {
            PoolRecord poolRec; List<DeviceRecord> table;
            using (var scratch = OpenStore(meta, new ScratchOverlayStream(meta), new ScratchOverlayStream(MetadataStore.LogPath(meta))))
            {
                poolRec = scratch.LoadPool(); table = scratch.LoadDevices();
            }
            CheckPoolRecord(poolRec, meta);
            var devs = new Dictionary<uint, IBlockDevice>();
            try
            {
                foreach (var rec in table)
                {
                    var path = Path.IsPathRooted(rec.Path) ? rec.Path : Path.Combine(folder, rec.Path);
                    devs[rec.Cookie] = OpenDeviceChecked(path, rec, table, poolRec, writable: false);
                }
            }
            catch (PoolException) when (ForeignMetadata(folder, meta, table, poolRec) is { } problem) { throw new PoolException(problem); }
            finally { foreach (var d in devs.Values) d.Dispose(); }
            // Every check passed: open for real.
            devs.Clear();
            try
            {
                foreach (var rec in table)
                    devs[rec.Cookie] = FileBlockDevice.Open(Path.IsPathRooted(rec.Path) ? rec.Path : Path.Combine(folder, rec.Path), writable: true);
                var (data, log) = MetadataStore.OpenFiles(meta, create: false);
                var store = OpenStore(meta, data, log);
                return new Pool(BuildEngine(store, devs, purgeInBackground), folder, lockFile);
            }
            catch { foreach (var d in devs.Values) d.Dispose(); throw; }
        }
        catch
        {
            lockFile.Dispose();
            throw;
        }
    }

    /// <summary>Opens a pool on already-open media, with the same checks (tests).</summary>
    public static Pool Open(PoolMedia media, bool purgeInBackground = false)
    {
        var store = OpenStore("metadata", media.MetadataData, media.MetadataLog);
        try
        {
            var poolRec = store.LoadPool();
            CheckPoolRecord(poolRec, "metadata");
            var table = store.LoadDevices();
            var given = new Dictionary<uint, IBlockDevice>(media.Added) { [1] = media.Base, [2] = media.Log };
            var used = new Dictionary<uint, IBlockDevice>();
            foreach (var rec in table)
            {
                if (!given.TryGetValue(rec.Cookie, out var dev))
                    throw new PoolException($"{rec.Role.ToString().ToLowerInvariant()} device (cookie {rec.Cookie}, uuid {rec.DeviceUuid}) is missing");
                CheckDevice(dev, rec, table, poolRec);
                used[rec.Cookie] = dev;
            }
            // A given device the table no longer has (removed) is not the pool's: closed here.
            foreach (var (c, d) in given) if (!used.ContainsKey(c)) d.Dispose();
            return new Pool(BuildEngine(store, used, purgeInBackground), null, null);
        }
        catch { store.Dispose(); throw; }
    }

    private static MetadataStore OpenStore(string where, Stream data, Stream log)
    {
        try { return MetadataStore.Open(data, log); }
        catch (InvalidDataException e) { data.Dispose(); log.Dispose(); throw new PoolException($"metadata file {where} {e.Message}", e); }
        catch (IOException e) { data.Dispose(); log.Dispose(); throw new PoolException($"metadata file {where} cannot be read: {e.Message}", e); }
    }

    private static void CheckPoolRecord(PoolRecord p, string where)
    {
        if (p.FormatVersion > FormatConstants.FormatVersion)
            throw new PoolException($"metadata file {where} has Cow format version {p.FormatVersion}, newer than this build understands ({FormatConstants.FormatVersion}); use a newer cow");
        if (p.FormatVersion < FormatConstants.OldestFormatVersion)
            throw new PoolException($"metadata file {where} has Cow format version {p.FormatVersion}, which this build no longer reads");
    }

    private static Engine.Engine BuildEngine(MetadataStore store, Dictionary<uint, IBlockDevice> devs, bool purgeInBackground)
    {
        store.EnsureLaterIndexes();
        var pool = store.LoadPool();
        if (!pool.ChunkSegs) store.FillChunkSegs(pool);   // the cleaner finds chunks by segs (format.md 9)
        var engine = new Engine.Engine(store, pool, devs);
        engine.RemoveOrphans();
        if (purgeInBackground) engine.StartPurger();
        else engine.ResumePurges();
        return engine;
    }

    private static IBlockDevice OpenDeviceChecked(string path, DeviceRecord rec, List<DeviceRecord> table, PoolRecord pool, bool writable)
    {
        string what = $"{rec.Role.ToString().ToLowerInvariant()} device {path} (cookie {rec.Cookie})";
        IBlockDevice dev;
        try { dev = FileBlockDevice.Open(path, writable); }
        catch (FileNotFoundException) { throw new PoolException($"{what} is missing: no such file or device (expected device uuid {rec.DeviceUuid})"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new PoolException($"{what} cannot be opened: {e.Message}", e); }
        try { CheckDevice(dev, rec, table, pool, what); }
        catch { dev.Dispose(); throw; }
        return dev;
    }

    /// <summary>When a device check failed: if every device of the table has a valid superblock and all
    /// name one same pool other than the metadata's, it is the metadata file that belongs to another pool
    /// (not each device): says so. Otherwise null, and the device's own problem stands. Reads only.</summary>
    private static string? ForeignMetadata(string folder, string meta, List<DeviceRecord> table, PoolRecord pool)
    {
        var uuids = new HashSet<Guid>();
        var paths = new List<string>();
        var block = new byte[FormatConstants.SuperblockSize];
        foreach (var rec in table)
        {
            var path = Path.IsPathRooted(rec.Path) ? rec.Path : Path.Combine(folder, rec.Path);
            try
            {
                using var dev = FileBlockDevice.Open(path, writable: false);
                if (dev.Length < block.Length) return null;
                dev.Read(0, block);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
            if (Superblock.TryRead(block, out _) is not { } sb) return null;
            uuids.Add(sb.PoolUuid);
            paths.Add(path);
        }
        if (uuids.Count != 1 || uuids.Contains(pool.PoolUuid)) return null;
        return $"metadata file {meta} belongs to another pool: it describes pool {pool.PoolUuid}, but its devices ({string.Join(", ", paths)}) "
            + $"all belong to pool {uuids.First()}. Put back this pool's {MetadataFile} (and its {Path.GetFileName(MetadataStore.LogPath(meta))}, if any)";
    }

    /// <summary>The device checks of format.md "Opening a pool", in order.</summary>
    private static void CheckDevice(IBlockDevice dev, DeviceRecord rec, List<DeviceRecord> table, PoolRecord pool, string? what = null)
    {
        what ??= $"{rec.Role.ToString().ToLowerInvariant()} device {dev.Name} (cookie {rec.Cookie})";
        if (dev.Length < FormatConstants.SuperblockSize) throw new PoolException($"{what} is truncated: {dev.Length} bytes, too small to hold a superblock");
        var block = new byte[FormatConstants.SuperblockSize];
        dev.Read(0, block);
        var sb = Superblock.TryRead(block, out var problem) ?? throw new PoolException($"{what} {problem}");
        if (sb.PoolUuid != pool.PoolUuid)
            throw new PoolException($"{what} belongs to another pool (its pool uuid is {sb.PoolUuid}, this pool is {pool.PoolUuid}): wrong device given");
        if (sb.DeviceUuid != rec.DeviceUuid)
        {
            var other = table.FirstOrDefault(t => t.DeviceUuid == sb.DeviceUuid);
            throw new PoolException(other != null
                ? $"{what} holds this pool's {other.Role.ToString().ToLowerInvariant()} device (cookie {other.Cookie}), not the {rec.Role.ToString().ToLowerInvariant()} device: the devices were swapped"
                : $"{what} is an unknown device of this pool (device uuid {sb.DeviceUuid}, expected {rec.DeviceUuid})");
        }
        if (sb.DeviceCookie != rec.Cookie || sb.Role != rec.Role)
            throw new PoolException($"{what}: superblock says cookie {sb.DeviceCookie} role {sb.Role}, the device table says cookie {rec.Cookie} role {rec.Role}");
        if (sb.BlockSize != pool.BlockSize)
            throw new PoolException($"{what}: superblock block size {sb.BlockSize} differs from the pool's {pool.BlockSize}");
        if (Cow.Core.Engine.DeviceSpace.TooLarge(rec.DeviceSize / pool.BlockSize, pool.BlockSize) is { } tooLarge)
            throw new PoolException($"{what}: {tooLarge}");
        if ((ulong)dev.Length < sb.DeviceSize)
            throw new PoolException($"{what} is truncated: it has {dev.Length} bytes, but was formatted with {sb.DeviceSize} bytes");
    }

    private static FileStream TakeLock(string folder) => TakeLockAt(Path.Combine(folder, LockFile), folder);

    /// <summary>Takes the pool's exclusive lock at <paramref name="path"/> (<paramref name="pool"/> names the pool in
    /// the message when another process holds it).</summary>
    private static FileStream TakeLockAt(string path, string pool)
    {
        var folder = pool;
        try
        {
            // .NET on Linux takes an exclusive flock for FileShare.None: a second opener, in this
            // process or another, fails here.
            var fs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            fs.SetLength(0);
            var text = System.Text.Encoding.UTF8.GetBytes($"{Environment.ProcessId}\n");
            fs.Write(text);
            fs.Flush();
            return fs;
        }
        catch (IOException e)
        {
            var holder = LockHolderPid(path) is int pid ? $"process {pid}" : "another process";
            throw new PoolException($"pool {folder} is already open by {holder} (lock {path} is held, e.g. by a cow mount); unmount it or stop that process first", e);
        }
    }

    /// <summary>The pid recorded in a lock file (read without taking the lock), or null.</summary>
    public static int? LockHolderPid(string lockPath)
    {
        int fd = Mono.Unix.Native.Syscall.open(lockPath, Mono.Unix.Native.OpenFlags.O_RDONLY);
        if (fd < 0) return null;
        try
        {
            var buf = new byte[32];
            long n;
            unsafe { fixed (byte* b = buf) n = Mono.Unix.Native.Syscall.read(fd, b, (ulong)buf.Length); }
            if (n <= 0) return null;
            return int.TryParse(System.Text.Encoding.ASCII.GetString(buf, 0, (int)n).Trim(), out int pid) ? pid : null;
        }
        finally { Mono.Unix.Native.Syscall.close(fd); }
    }

    /// <summary>Commits and closes. The lock is released even when the final commit fails (which throws).</summary>
    public void Dispose()
    {
        try { Engine.Dispose(); }
        finally
        {
            _metadataDevice?.Dispose();
            _lock?.Dispose();
        }
    }
}
