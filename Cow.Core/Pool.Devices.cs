using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core;

// Devices joining and leaving an open pool (cow device add/remove/list; format.md 5.2, 6 "Device removal",
// 9 "Versions"). The engine's DeviceManager does the work under its locks; this file finds, creates and formats the
// device files. Thread-safe as the engine is.
public sealed partial class Pool
{
    /// <summary>Smallest device <see cref="AddDevice(string, DeviceRole, long?, bool)"/> takes, in blocks (as mkfs).</summary>
    public const int MinDeviceBlocks = 16;

    /// <summary>
    /// Adds a device to the pool, online or not: an existing block device or image file (used whole), or a new image
    /// file of <paramref name="createSize"/> bytes. It is refused when it is already a device of this pool, and, unless
    /// <paramref name="force"/>, when it holds a Cow superblock of another pool or any other data in its first 64 KiB
    /// (a filesystem, a partition table); a superblock of this pool in no table row (an add that did not commit, a
    /// removal whose wipe did not happen) is taken as it is. Its superblock is written and
    /// flushed, the device listeners hear of it (fuse-iomap registers it with the kernel), then one commit adds it
    /// to the device table and upgrades the pool to format version 2; it takes data at once. Throws
    /// <see cref="DeviceOperationException"/> with a message for an administrator.
    /// </summary>
    public PoolDevice AddDevice(string path, DeviceRole role, long? createSize = null, bool force = false)
    {
        CheckRole(role);
        var full = System.IO.Path.GetFullPath(path);
        if (Devices.Any(d => d.Path == full))
            throw new DeviceOperationException(Errno.EEXIST, $"{full} is already a device of this pool");
        bool created = false;
        IBlockDevice dev;
        try
        {
            if (File.Exists(full) || Directory.Exists(full) || full.StartsWith("/dev/", StringComparison.Ordinal))
            {
                if (Directory.Exists(full)) throw new DeviceOperationException(Errno.EINVAL, $"{full} is a directory, not a device or image file");
                dev = FileBlockDevice.Open(full, writable: true);
            }
            else
            {
                if (createSize is not long size)
                    throw new DeviceOperationException(Errno.ENOENT, $"{full} does not exist; give --size to create an image file there");
                if (!Directory.Exists(System.IO.Path.GetDirectoryName(full)))
                    throw new DeviceOperationException(Errno.ENOENT, $"{full}: its folder {System.IO.Path.GetDirectoryName(full)} does not exist");
                dev = FileBlockDevice.Create(full, size);
                created = true;
                if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(full, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DeviceOperationException(Errno.EIO, $"device {full} cannot be opened: {e.Message}", e);
        }
        // Stored relative to the pool folder when it lives there (a pool folder can be moved whole).
        string stored = Folder != null && System.IO.Path.GetDirectoryName(full) == Folder ? System.IO.Path.GetFileName(full) : full;
        try { return AddDevice(dev, role, force, stored); }
        catch
        {
            dev.Dispose();
            if (created) try { File.Delete(full); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Adds an already open device (tests: memory and fault-injecting devices); the pool takes ownership
    /// once it is added. As <see cref="AddDevice(string, DeviceRole, long?, bool)"/> otherwise.</summary>
    public PoolDevice AddDevice(IBlockDevice device, DeviceRole role, bool force = false) => AddDevice(device, role, force, device.Name);

    private PoolDevice AddDevice(IBlockDevice dev, DeviceRole role, bool force, string stored)
    {
        CheckRole(role);
        int bs = BlockSize;
        long blocks = dev.Length / bs;
        if (blocks < MinDeviceBlocks)
            throw new DeviceOperationException(Errno.EINVAL, $"device {dev.Name} is too small: {dev.Length} bytes, at least {MinDeviceBlocks * bs} needed");
        if (Cow.Core.Engine.DeviceSpace.TooLarge(blocks, bs) is { } tooLarge)
            throw new DeviceOperationException(Errno.EFBIG, $"device {dev.Name}: {tooLarge}");
        if (dev.Length >= FormatConstants.SuperblockSize)
        {
            var old = new byte[FormatConstants.SuperblockSize];
            dev.Read(0, old);
            var sb0 = Superblock.TryRead(old, out _);
            if (sb0 == null && !force && HoldsData(dev))
                throw new DeviceOperationException(Errno.EEXIST, $"device {dev.Name} is not empty (its first 64 KiB hold data: a filesystem, a partition table or another program's data); refusing to add it without --force, which destroys what it holds");
            if (sb0 is { } sb)
            {
                if (sb.PoolUuid == Uuid && Engine.DeviceManager.HasDevice(sb.DeviceUuid))
                    throw new DeviceOperationException(Errno.EEXIST, $"device {dev.Name} is already a device of this pool");
                // One of this pool's that is in no table row: left by an add that did not commit or a removal whose wipe
                // did not happen. Anything else is another pool's device.
                if (sb.PoolUuid != Uuid && !force)
                    throw new DeviceOperationException(Errno.EEXIST, $"device {dev.Name} already holds a Cow device of pool {sb.PoolUuid} ({sb.Role.ToString().ToLowerInvariant()}, made {DateTime.UnixEpoch.AddTicks(sb.CreatedNs / 100):u}); refusing to add it without --force");
            }
        }
        return Engine.DeviceManager.Add(cookie =>
        {
            var sb = new Superblock
            {
                FormatVersion = FormatConstants.DevicesFormatVersion, Role = role, PoolUuid = Uuid, DeviceUuid = Guid.NewGuid(), DeviceCookie = cookie,
                BlockSize = (uint)bs, DeviceSize = (ulong)(blocks * bs), DataStart = (ulong)bs, DeviceCount = (uint)Devices.Count + 1,
                CreatedNs = Cow.Core.Engine.Engine.NowNs(), Label = Engine.DeviceManager.PoolLabel,
            };
            var block = new byte[bs];
            sb.Write(block);
            try
            {
                dev.Write(0, block);
                dev.Flush();
            }
            catch (IOException e) { throw new DeviceOperationException(Errno.EIO, $"device {dev.Name}: its superblock cannot be written: {e.Message}", e); }
            return (dev, new DeviceRecord { Cookie = cookie, DeviceUuid = sb.DeviceUuid, Role = role, Path = stored, DeviceSize = blocks * bs });
        });
    }

    /// <summary>True when the first 64 KiB of <paramref name="dev"/> are not all zero (where filesystems, partition tables
    /// and volume labels keep their signatures).</summary>
    private static bool HoldsData(IBlockDevice dev)
    {
        var head = new byte[(int)Math.Min(dev.Length, 64 * 1024)];
        dev.Read(0, head);
        return head.AsSpan().IndexOfAnyExcept((byte)0) >= 0;
    }

    private static void CheckRole(DeviceRole role)
    {
        if (role is not (DeviceRole.Base or DeviceRole.Log))
            throw new DeviceOperationException(Errno.EINVAL, $"role {role} is not a device role (log or base)");
    }

    /// <summary>
    /// Removes a device (by cookie, or by its path): its data is moved to the other devices, then it leaves the device
    /// table and its superblock is wiped. Refused (ENOSPC, sizes named) when the data would not fit on the others,
    /// and for the pool's last device in service. Resumable: an interrupted removal (cancelled, a crash) leaves the
    /// device marked <c>removing</c>; calling this again, or the background cleaner of a mount, carries it on.
    /// <paramref name="share"/> bounds the time spent moving (1 = flat out), as the cleaner's share.
    /// </summary>
    public DeviceRemoval RemoveDevice(string cookieOrPath, double share = 1, Action<DeviceRemovalProgress>? progress = null, CancellationToken token = default)
    {
        if (share is <= 0 or > 1) throw new DeviceOperationException(Errno.EINVAL, $"share {share} is not in (0, 1]");
        return Engine.DeviceManager.Remove(FindDevice(cookieOrPath).Cookie, share, progress, token);
    }

    /// <summary>The device named by its cookie or path (ENOENT when none).</summary>
    public PoolDevice FindDevice(string cookieOrPath)
    {
        var table = Devices;
        if (uint.TryParse(cookieOrPath, out uint cookie))
            return table.FirstOrDefault(d => d.Cookie == cookie)
                ?? throw new DeviceOperationException(Errno.ENOENT, $"the pool has no device with cookie {cookie} (it has {string.Join(", ", table.Select(d => d.Cookie))})");
        var full = System.IO.Path.GetFullPath(cookieOrPath);
        return table.FirstOrDefault(d => d.Path == full)
            ?? throw new DeviceOperationException(Errno.ENOENT, $"{full} is not a device of this pool (its devices: {string.Join(", ", table.Select(d => d.Path))})");
    }

    /// <summary>Hears of devices added and removed from now on (a FUSE server doing fuse-iomap registers them).</summary>
    public void AddDeviceListener(IDeviceChangeListener listener) => Engine.DeviceManager.AddListener(listener);
    public void RemoveDeviceListener(IDeviceChangeListener listener) => Engine.DeviceManager.RemoveListener(listener);
}
