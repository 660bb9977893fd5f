using System.Net.Sockets;
using System.Text.Json.Nodes;
using Cow.Core.FileSystem;
using Microsoft.Extensions.Logging;

namespace Cow.Cli.Service;

/// <summary>The control socket's <c>device-add</c>, <c>device-remove</c>, <c>device-remove-cancel</c> and
/// <c>device-list</c> verbs (<c>cow device</c> on a mounted pool). They need what every verb needs (root, the
/// socket's owner or its group: <see cref="ControlServer"/>), as <c>clean</c> does; <c>device-add</c> moreover
/// only root or the user who runs the server (the socket's owner), since it opens, creates or overwrites the
/// file or block device it names with the server's privileges. A removal runs on the connection's thread outside
/// the pool's use lock, as a <c>clean</c> pass (<see cref="PoolMounts.RemoveDevice"/>); the others are short and
/// run under it.</summary>
public sealed partial class ControlServer
{
    /// <summary><c>device-add</c> {pool, path (absolute), role ("log" or "base"), size (bytes, optional: a new image
    /// file), force (optional)}: adds the device; the answer is <c>cow device add --json</c>'s document
    /// (<see cref="DeviceCommands.AddDocument"/>). A refusal answers the engine's errno and message.</summary>
    private JsonObject DeviceAdd(JsonObject req, uint uid)
    {
        if (uid != 0 && uid != _endpoint.OwnerUid)
        {
            _log.LogWarning("control socket: refused device-add of uid {Uid}: only root and uid {Owner} may add devices", uid, _endpoint.OwnerUid);
            return ControlProtocol.Error("EACCES", $"permission denied: device-add opens or creates the file or device it names as uid {_endpoint.OwnerUid}, so only root and uid {_endpoint.OwnerUid} may ask for it");
        }
        var p = RequestedPool("device-add", req, out var bad);
        if (p == null) return bad!;
        var path = Str(req, "path", out bad);
        if (bad != null) return bad;
        if (path == null || !Path.IsPathRooted(path) || path.Contains('\0'))
            return ControlProtocol.Error("EINVAL", "device-add needs \"path\": the absolute path of the block device or image file to add");
        var roleText = Str(req, "role", out bad);
        if (bad != null) return bad;
        if (DeviceCommands.RoleOf(roleText) is not { } role)
            return ControlProtocol.Error("EINVAL", "device-add needs \"role\": \"log\" or \"base\"");
        long? size = null;
        if (req["size"] is { } sn)
        {
            if (!(sn is JsonValue sv && sv.TryGetValue(out long s) && s > 0))
                return ControlProtocol.Error("EINVAL", "\"size\" must be a whole number of bytes, more than 0 (the size of a new image file)");
            size = s;
        }
        bool force = false;
        if (req["force"] is { } fn && !(fn is JsonValue fv && fv.TryGetValue(out force)))
            return ControlProtocol.Error("EINVAL", "\"force\" must be true or false");
        JsonObject? doc;
        try { doc = _mounts.WithPool(p.Config.Name, pool => DeviceCommands.AddDocument(pool, Path.GetFullPath(path), role, size, force)); }
        catch (DeviceOperationException e)
        {
            _log.LogWarning("control socket: device-add {Path} on pool {Pool} (uid {Uid}) refused: {Reason}", path, p.Config.Name, uid, e.Message);
            return ControlProtocol.Error(e.Errno.ToString(), e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Core.PoolException)
        {
            _log.LogError("control socket: device-add {Path} on pool {Pool} (uid {Uid}) failed: {Reason}", path, p.Config.Name, uid, e.Message);
            return ControlProtocol.Error("EIO", $"device {path} was not added: {e.Message}");
        }
        if (doc == null) return NotServed(p.Config.Name);
        _log.LogInformation("control socket: device-add on pool {Pool} (uid {Uid}): device {Cookie} ({Role}, {Bytes} bytes) {Path}",
            p.Config.Name, uid, (long)doc["cookie"]!, roleText, (long)doc["size_bytes"]!, (string?)doc["path"]);
        doc["ok"] = true; doc["pool"] = p.Config.Name; doc["mountpoint"] = p.Config.MountPoint;
        return doc;
    }

    /// <summary><c>device-remove</c> {pool, device (a cookie, or an absolute path)}: moves the device's data to the
    /// other devices at full speed and drops it (<see cref="PoolMounts.RemoveDevice"/>); the answer is <c>cow device
    /// remove --json</c>'s document (<see cref="DeviceCommands.RemovalDocument"/>) with "background_cleaner" (whether
    /// the mount's cleaner, which carries an unfinished removal on, is on). It ends early ("cancelled") when the
    /// client closes its connection or a <c>device-remove-cancel</c> request names the pool. A refusal answers the
    /// engine's errno and message (ENOSPC with the sizes when the data would not fit).</summary>
    private JsonObject DeviceRemove(JsonObject req, uint uid, Socket? peer)
    {
        var p = RequestedPool("device-remove", req, out var bad);
        if (p == null) return bad!;
        var device = Str(req, "device", out bad);
        if (bad != null) return bad;
        if (device == null || !(uint.TryParse(device, out _) || (Path.IsPathRooted(device) && !device.Contains('\0'))))
            return ControlProtocol.Error("EINVAL", "device-remove needs \"device\": a device cookie, or the absolute path of the device");
        using var hangUp = new HangUpWatch(peer);
        DeviceRemoval? r;
        try { r = _mounts.RemoveDevice(p.Config.Name, device, null, hangUp.Token); }
        catch (DeviceOperationException e)
        {
            _log.LogWarning("control socket: device-remove {Device} on pool {Pool} (uid {Uid}) refused: {Reason}", device, p.Config.Name, uid, e.Message);
            return ControlProtocol.Error(e.Errno.ToString(), e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Core.PoolException)
        {
            _log.LogError("control socket: device-remove {Device} on pool {Pool} (uid {Uid}) failed: {Reason}", device, p.Config.Name, uid, e.Message);
            return ControlProtocol.Error("EIO", $"the removal of device {device} failed: {e.Message}");
        }
        if (r == null) return NotServed(p.Config.Name);
        _log.LogInformation("control socket: device-remove {Device} on pool {Pool} (uid {Uid}): {Blocks} blocks moved, {Left} left in {Seconds:0.0} s; stopped: {Stop}",
            r.Device.Cookie, p.Config.Name, uid, r.BlocksMoved, r.BlocksLeft, r.Seconds, r.Stop);
        var doc = DeviceCommands.RemovalDocument(r, p.BlockSize);   // the block size of the pool as it was mounted when asked
        doc["background_cleaner"] = p.Config.Cleaner != null;
        doc["ok"] = true; doc["pool"] = p.Config.Name; doc["mountpoint"] = p.Config.MountPoint;
        return doc;
    }

    /// <summary><c>device-remove-cancel</c>: cancels the <c>device-remove</c> requests running on the pool
    /// ("cancelled": how many); each answers its own request, "cancelled", at the end of its batch.</summary>
    private JsonObject DeviceRemoveCancel(JsonObject req, uint uid)
    {
        var p = RequestedPool("device-remove-cancel", req, out var bad);
        if (p == null) return bad!;
        int n = _mounts.CancelRemovals(p.Config.Name);
        if (n > 0) _log.LogInformation("control socket: device-remove-cancel on pool {Pool} (uid {Uid}): {Count} removal(s) cancelled", p.Config.Name, uid, n);
        return new JsonObject { ["ok"] = true, ["pool"] = p.Config.Name, ["mountpoint"] = p.Config.MountPoint, ["cancelled"] = n };
    }

    /// <summary><c>device-list</c> {pool}: "devices", the rows of <c>cow device list --json</c>
    /// (<see cref="DeviceCommands.ListDocument"/>), and "block_size".</summary>
    private JsonObject DeviceList(JsonObject req)
    {
        var p = RequestedPool("device-list", req, out var bad);
        if (p == null) return bad!;
        var doc = _mounts.WithPool(p.Config.Name, pool => new JsonObject { ["block_size"] = pool.BlockSize, ["devices"] = DeviceCommands.ListDocument(pool) });
        if (doc == null) return NotServed(p.Config.Name);
        doc["ok"] = true; doc["pool"] = p.Config.Name; doc["mountpoint"] = p.Config.MountPoint;
        return doc;
    }
}
