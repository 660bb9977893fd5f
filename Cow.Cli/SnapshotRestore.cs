using System.CommandLine;
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
        foreach (var c in changes) rows.Add(new JsonObject { ["path"] = c.Path, ["action"] = ActionName(c.Action) });
        int changed = changes.Count(c => c.Action != RestoreAction.Unchanged);
        string msg = dryRun
            ? $"dry run: {changed} path(s) would change; nothing was changed"
            : $"restored from snapshot '{name}': {changed} path(s) changed, every data block shared with the snapshot";
        return OpResult.Done(msg, rows);
    }
}

public static partial class Program
{
    internal static Command SnapshotRestoreCommand()
    {
        var paths = new Argument<string[]>("path") { Description = "paths in the pool (from its root, e.g. /etc/fstab; / for the whole tree)", Arity = ArgumentArity.OneOrMore };
        var dryRun = new Option<bool>("--dry-run", "-n") { Description = "change nothing; list what would change" };
        var json = new Option<bool>("--json") { Description = "one JSON array of {path, action} (action: created, replaced, removed, attributes, unchanged)" };
        var c = new Command("restore", "put the snapshot's version of files or trees back at their paths in the live tree, replacing what is there and sharing every data block (like snapper's undochange; through the Cow service when it serves the pool)") { PoolArg, OpsSnapshotArg, paths, dryRun, json };
        c.SetAction(r => Guard(() =>
        {
            string pool = r.GetValue(PoolArg)!, name = r.GetValue(OpsSnapshotArg)!;
            var ps = r.GetValue(paths) ?? [];
            bool dry = r.GetValue(dryRun), asJson = r.GetValue(json);
            if (PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            if (SnapshotRestoreOps.PathsProblem(ps) is { } pp) return Usage(pp);
            int Print(JsonArray rows, string message, string suffix)
            {
                if (asJson) { Console.WriteLine(rows.ToJsonString(JsonOut)); return 0; }
                foreach (var x in rows.OfType<JsonObject>())
                    Console.WriteLine($"{(string?)x["action"],-10}  {Printable((string)x["path"]!)}");
                Console.WriteLine(message + suffix);
                return 0;
            }
            return OpViaService(pool, "snapshot-restore", name, new JsonObject { ["paths"] = new JsonArray(ps.Select(x => (JsonNode)JsonValue.Create(x)!).ToArray()), ["dryRun"] = dry },
                       resp => Print((JsonArray)resp["changes"]!.DeepClone(), (string?)resp["message"] ?? "", $" (through {(string?)resp["via"]})"))
                ?? WithUnmountedPool(pool, "restore", p =>
                {
                    var res = Busy($"restoring from '{name}'", () => SnapshotRestoreOps.Restore(p, pool, name, ps, dry));
                    return res.Code != 0 ? Report(res) : Print((JsonArray)res.Data!, res.Message, "");
                });
        }));
        return c;
    }
}
