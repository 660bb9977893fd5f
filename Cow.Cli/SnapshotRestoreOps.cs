using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Core.Engine;
using Mono.Unix.Native;

namespace Cow.Cli;

/// <summary><c>cow snapshot restore</c> on an open pool (the CLI on an unmounted pool, the service on a mounted
/// one): the result's <see cref="OpResult.Data"/> is a JSON array of <c>{path, action}</c> (action: created,
/// replaced, removed, attributes, unchanged), sorted by path. Stateless: thread-safe.</summary>
public static class SnapshotRestoreOps
{
    /// <summary>What is wrong with the restore paths, or null.</summary>
    public static string? PathsProblem(IReadOnlyList<string> paths)
    {
        if (paths.Count == 0) return "give at least one path to restore, e.g. /etc/fstab (or / for the whole tree)";
        foreach (var p in paths)
        {
            if (SnapshotOpsCore.PoolPathProblem(p, "path") is { } notAbsolute) return notAbsolute;
            var parts = p.Split('/', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Any(x => x is "." or "..")) return $"path '{p}' contains '.' or '..'; give a plain path";
            if (parts is [".snapshots", ..]) return $"path '{p}' is inside .snapshots, which is not part of the live tree";
        }
        return null;
    }

    public static string ActionName(RestoreAction a) => a switch
    {
        RestoreAction.Created => "created",
        RestoreAction.Replaced => "replaced",
        RestoreAction.Removed => "removed",
        RestoreAction.Attributes => "attributes",
        _ => "unchanged",
    };

    public static OpResult Restore(Pool p, string pool, string name, IReadOnlyList<string> paths, bool dryRun)
    {
        if (PathsProblem(paths) is { } problem) return OpResult.Usage(problem);
        var e = p.Snapshots.Restore(name, paths, dryRun, out var changes, out var bad);
        if (e == Errno.ENOENT && bad == null) return SnapshotOpsCore.NoSnapshot(pool, name);
        if (e == Errno.ENOENT) return OpResult.Failed(e, $"{bad} exists neither in snapshot '{name}' nor in the live tree, or its parent directory does not exist in the live tree (restore the parent instead); nothing was changed");
        if (e == Errno.ENOTDIR) return OpResult.Failed(e, $"a parent of {bad} in the live tree is not a directory; nothing was changed");
        if (e == Errno.EINVAL) return OpResult.Usage($"'{bad}' is not a valid path in the pool");
        if (e != 0) return OpResult.Failed(e, $"snapshot restore {name}: {e} ({Syscall.strerror(e)}); nothing was changed");
        var rows = new JsonArray();
        foreach (var c in changes) rows.Add((JsonNode)new JsonObject { ["path"] = c.Path, ["action"] = ActionName(c.Action) });
        int changed = changes.Count(c => c.Action != RestoreAction.Unchanged);
        string msg = dryRun
            ? $"dry run: {changed} path(s) would change; nothing was changed"
            : $"restored from snapshot '{name}': {changed} path(s) changed, every data block shared with the snapshot";
        return OpResult.Done(msg, rows);
    }
}
