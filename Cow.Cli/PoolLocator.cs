using System.CommandLine;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Core;
using Cow.Fuse.Mounting;

namespace Cow.Cli;

/// <summary>What the POOL argument of a command names and who has that pool: a pool folder, a pool name of the
/// running service or of its configuration file, or a mount point; the mount point serving a pool, and the
/// process holding a pool's lock. Reads the mount table, the control socket and the configuration file on each
/// call and keeps no state: thread-safe.</summary>
internal static class PoolLocator
{
    internal static readonly Argument<string> PoolArg = new("pool") { Description = "pool folder" };

    /// <summary>The configuration file that names the service's pools: <c>$COW_CONFIG</c>, else /etc/cow/cow.conf.</summary>
    internal static string ConfigFile => Environment.GetEnvironmentVariable("COW_CONFIG") is { Length: > 0 } f ? f : ServeCommand.DefaultConfig;

    /// <summary>The POOL argument of a command: a path (pool folder or mount point) as given; a bare word that is no
    /// folder here is looked up as a pool name of the running service, then of the configuration file
    /// (<see cref="ConfigFile"/>), and becomes that pool's folder. A name found in neither is refused with a
    /// message saying where it was looked for.</summary>
    internal static string PoolOf(ParseResult r) => ResolvePool(r.GetValue(PoolArg)!);

    internal static string ResolvePool(string arg)
    {
        if (arg.Length == 0 || arg.Contains('/') || arg is "." or ".." || Directory.Exists(arg) || File.Exists(arg)) return arg;
        using (var c = ControlClient.TryConnect(ControlClient.SocketPath, out _))
        {
            JsonObject? status = null;
            if (c != null) try { status = c.Request(new JsonObject { ["verb"] = "status" }); } catch (IOException) { }
            if ((status?["pools"] as JsonArray)?.OfType<JsonObject>().FirstOrDefault(p => (string?)p["name"] == arg) is { } served && (string?)served["path"] is { } path)
                return path;
        }
        var file = ConfigFile;
        if (!File.Exists(file))
            throw new PoolException($"'{arg}' is neither a pool folder nor the name of a pool: there is no folder {Path.GetFullPath(arg)}, no running Cow service names it, and there is no configuration file {file} ($COW_CONFIG)");
        var config = ServeConfig.Load(file, out var errors);
        if (config?.Pools.FirstOrDefault(p => p.Name == arg) is { } pc) return pc.Path;
        if (config == null)
            throw new PoolException($"'{arg}' is not a pool folder, and the configuration file {file} that names pools has {errors.Count} error(s) (cow serve --check --config {file})");
        throw new PoolException($"'{arg}' is neither a pool folder nor the name of a pool: there is no folder {Path.GetFullPath(arg)}, and neither the running Cow service nor {file} has a pool named '{arg}'"
                                + (config.Pools.Count > 0 ? $" (its pools: {string.Join(", ", config.Pools.Select(p => p.Name))})" : ""));
    }

    /// <summary><see cref="ResolvePool"/>, or the argument itself when it names no pool.</summary>
    internal static string ResolvePoolOrSelf(string arg)
    {
        try { return ResolvePool(arg); }
        catch (PoolException) { return arg; }
    }

    /// <summary>
    /// The mount point serving <paramref name="poolOrMountPoint"/>: the path itself when it is a Cow mount
    /// point, or the mount point of the pool folder it names when that pool is mounted (the server holds the
    /// pool's lock, so snapshot commands go through the mount). Null when not mounted.
    /// </summary>
    internal static string? MountedAt(string poolOrMountPoint)
    {
        var path = MountTable.Normalize(poolOrMountPoint);
        List<MountEntry> mounts;
        try { mounts = MountTable.Read(); } catch (IOException) { return null; }
        var at = mounts.LastOrDefault(m => m.MountPoint == path);
        if (at != null && at.IsCow) return path;
        var byName = mounts.LastOrDefault(m => m.IsCow && m.Source == path && m.Options.Split(',').Contains("rw"));
        if (byName != null || !File.Exists(path)) return byName?.MountPoint;
        // A device of a pool that lives on its devices: the mount names the device holding the metadata; the same
        // pool has the same lock.
        if (Pool.LockPathOf(path) is not { } lockPath) return null;
        return mounts.LastOrDefault(m => m.IsCow && m.Options.Split(',').Contains("rw") && m.Source.StartsWith('/') && !Directory.Exists(m.Source)
            && Pool.LockPathOf(m.Source) == lockPath)?.MountPoint;
    }

    /// <summary>Opens a pool folder for a command that works on an unmounted pool. When POOL is a Cow mount point
    /// or the folder of a pool mounted by <c>cow mount</c>, says so and what to do instead of the generic
    /// "not a Cow pool" / "already open" messages (<paramref name="instead"/>: where else the answer is).</summary>
    internal static Pool OpenUnmounted(string poolArg, string verb, string instead, bool viaService = false)
    {
        if (MountedAt(poolArg) is { } mp)
            throw new PoolException($"the pool is mounted at {mp} and {verb} opens the pool folder itself: {instead.Replace("MP", mp)}, "
                                    + $"or unmount it first ('cow umount {mp}')"
                                    + (viaService ? $"; a pool mounted by cow mount or cow serve answers {verb} through its control socket, which the process holding this one does not have" : ""));
        return OpenPool(poolArg);
    }

    /// <summary>Opens a pool in this process (an unmounted pool); the fast front end hands the command over to the full
    /// program instead (<see cref="FrontEnd.HandOver"/>).</summary>
    internal static Pool OpenPool(string poolArg)
    {
        FrontEnd.HandOver();
        return Pool.Open(poolArg);
    }

    /// <summary>The pid of the process holding a pool's lock, or null when nobody holds it.</summary>
    internal static int? LockHolder(string lockPath)
    {
        if (!File.Exists(lockPath)) return null;
        try
        {
            using var probe = new FileStream(lockPath, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
            return null;   // we got the lock: nobody holds it (ours is released at once)
        }
        catch (IOException) { return Pool.LockHolderPid(lockPath) ?? -1; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
