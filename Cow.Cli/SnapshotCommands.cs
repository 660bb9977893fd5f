using System.CommandLine;
using System.Text.Json.Nodes;
using Cow.Core;
using Mono.Unix.Native;
using Spectre.Console;
using static Cow.Cli.CliCommon;
using static Cow.Cli.MountedSnapshots;
using static Cow.Cli.PoolLocator;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary><c>cow snapshot</c> and its verbs (create, list, delete, hold, release, rollback, clone, restore, diff;
/// wrap is <see cref="SnapshotWrapCommand"/>): on a mounted pool through the control socket of the process that
/// mounts it (<c>cow serve</c> or <c>cow mount</c>; see <see cref="ServiceRouting.ViaService"/>), else on the
/// unmounted pool folder. create, list and delete also work through the mount (<see cref="MountedSnapshots"/>) of a
/// pool mounted by a process without a control socket; the other verbs refuse such a pool. Exit codes: 0 done, 1
/// the operation failed (the message says why; nothing changed), 2 bad usage (including a malformed tag or path).
/// Stateless: thread-safe.</summary>
internal static class SnapshotCommands
{
    private static readonly Argument<string> OpsSnapshotArg = new("snapshot") { Description = "snapshot name" };

    /// <summary>The <c>cow snapshot</c> command with all its verbs.</summary>
    internal static Command Create()
    {
        var name = new Argument<string>("name") { Description = "snapshot name" };
        var create = new Command("create", "take a snapshot of the live tree (constant time, durable when it returns); POOL may be a pool folder or the mount point of a mounted pool") { PoolArg, name };
        create.SetAction(r => Guard(() =>
        {
            var n = r.GetValue(name)!;
            if (PoolSnapshots.NameProblem(n) is { } problem) return Usage(problem);
            var poolArg = PoolOf(r);
            if (SnapshotViaService(poolArg, n, create: true) is int viaService) return viaService;
            if (MountedAt(poolArg) is { } mp) return SnapshotThroughMount(mp, n, create: true);
            using var pool = OpenPool(poolArg);
            var e = pool.Snapshots.Create(n, out var s);
            if (e == Errno.EEXIST) return Fail($"a snapshot named '{n}' already exists");
            if (e != 0) return Fail($"snapshot create {n}: {Describe(e)}");
            Console.WriteLine($"snapshot '{s!.Name}' at generation {s.Gen}");
            return 0;
        }));
        var wait = new Option<bool>("--wait")
        {
            Description = "on a mounted pool, also wait until what only the snapshot held is freed (a mount purges a deleted snapshot's "
                + "records in the background; without --wait the command returns once the snapshot is gone). Offline, the delete always waits",
        };
        var delete = new Command("delete", "delete a snapshot and free what only it held") { PoolArg, name, wait };
        delete.SetAction(r => Guard(() =>
        {
            var poolArg = PoolOf(r);
            if (SnapshotViaService(poolArg, r.GetValue(name)!, create: false, r.GetValue(wait)) is int viaService) return viaService;
            if (MountedAt(poolArg) is { } mp)
            {
                if (r.GetValue(wait)) return Fail($"cow snapshot delete --wait on {mp} needs the control socket of the process serving it, which this user cannot reach; delete without --wait ('cow status' shows the purges left)");
                return SnapshotThroughMount(mp, r.GetValue(name)!, create: false);
            }
            using var pool = OpenPool(poolArg);
            var e = Busy($"deleting snapshot '{r.GetValue(name)}'", () => pool.Snapshots.Delete(r.GetValue(name)!));
            if (e == 0) Console.WriteLine($"snapshot '{r.GetValue(name)}' deleted");
            return e switch
            {
                0 => 0,
                Errno.ENOENT => Fail($"no snapshot named '{r.GetValue(name)}'"),
                Errno.EBUSY => Fail(HeldMessage(pool, r.GetValue(name)!)),
                _ => Fail(Describe(e)),
            };
        }));
        var listJson = new Option<bool>("--json") { Description = "one JSON array of {name, generation, created_utc, referenced_bytes, exclusive_bytes, holds, properties}" };
        var list = new Command("list", "list snapshots with the bytes each references and holds alone, their holds and properties") { PoolArg, listJson };
        list.SetAction(r => Guard(() =>
        {
            bool j = r.GetValue(listJson);
            var poolArg = PoolOf(r);
            if (ListViaService(poolArg, j) is int viaService) return viaService;
            if (MountedAt(poolArg) is { } mp) return ListThroughMount(mp, j);
            using var pool = OpenPool(poolArg);
            PrintSnapshotRows(SnapshotOpsCore.SnapshotRows(pool, includeLive: false), j);
            return 0;
        }));
        return new Command("snapshot", "create, list and delete snapshots") { create, list, delete,
            SnapshotHoldCommand(),
            SnapshotReleaseCommand(),
            SnapshotRollbackCommand(),
            SnapshotCloneCommand(),
            SnapshotRestoreCommand(),
            SnapshotDiffCommand(),
            SnapshotWrapCommand.Create(),
        };
    }

    /// <summary>Snapshot rows (<see cref="SnapshotOpsCore.SnapshotRows"/>) as a table or one JSON array.</summary>
    internal static void PrintSnapshotRows(System.Text.Json.Nodes.JsonArray rows, bool json)
    {
        if (json) { Console.WriteLine(rows.ToJsonString(JsonOut)); return; }
        var t = new Table().AddColumn("snapshot").AddColumn("generation").AddColumn("created (UTC)")
            .AddColumn(new TableColumn("referenced").RightAligned()).AddColumn(new TableColumn("exclusive").RightAligned())
            .AddColumn("holds").AddColumn("properties");
        foreach (var s in rows.OfType<System.Text.Json.Nodes.JsonObject>())
        {
            var name = (string)s["name"]!;
            var holds = string.Join(", ", ((System.Text.Json.Nodes.JsonArray)s["holds"]!).Select(h => (string)h!));
            var props = string.Join(", ", ((System.Text.Json.Nodes.JsonObject)s["properties"]!).Select(kv => $"{kv.Key}={(string)kv.Value!}"));
            t.AddRow(name == "" ? "(live)" : Markup.Escape(name), ((long)s["generation"]!).ToString(),
                ((string?)s["created_utc"])?.Replace('T', ' ')[..19] ?? "",
                Bytes((long)s["referenced_bytes"]!), Bytes((long)s["exclusive_bytes"]!), Markup.Escape(holds), Markup.Escape(props));
        }
        AnsiConsole.Write(t);
    }

    private static int? SnapshotViaService(string poolOrMountPoint, string name, bool create, bool wait = false) => ViaService(poolOrMountPoint, (c, p) =>
    {
        var req = new JsonObject { ["verb"] = create ? "snapshot-create" : "snapshot-delete", ["pool"] = (string?)p["name"], ["name"] = name };
        if (wait)
        {
            req["wait"] = true;
            c.ReceiveTimeout = TimeSpan.Zero;   // a purge takes what the snapshot alone held: minutes for millions of files
        }
        return ServiceResult(c.Request(req), r =>
        {
            if (create) Console.WriteLine($"snapshot '{name}' of {(string?)r["mountpoint"]} (through {(string?)p["via"]})");
            return 0;
        });
    });

    private static int? ListViaService(string poolOrMountPoint, bool json) => ViaService(poolOrMountPoint, (c, p) =>
        ServiceResult(c.Request(new JsonObject { ["verb"] = "snapshot-list", ["pool"] = (string?)p["name"] }), r =>
        {
            PrintSnapshotRows((JsonArray)r["details"]!.DeepClone(), json);
            if (json) return 0;
            Console.WriteLine($"(pool {(string?)p["name"]} served by {(string?)p["via"]} on {(string?)r["mountpoint"]})");
            return 0;
        }));

    /// <summary>Opens the pool folder for a snapshot operation, or explains why not (mounted pool).</summary>
    private static int WithUnmountedPool(string poolDir, string verb, Func<Pool, int> body)
    {
        using var pool = OpenUnmounted(poolDir, $"cow snapshot {verb}", "it needs the pool to itself", viaService: true);
        return body(pool);
    }

    /// <summary>What to say when deleting a snapshot failed with EBUSY: held (naming the holds), or frozen.</summary>
    public static string HeldMessage(Pool p, string name) =>
        p.Snapshots.Holds(name) is { Count: > 0 } h
            ? $"snapshot '{name}' is held by {string.Join(", ", h.Select(x => $"'{x}'"))}; release it first (cow snapshot release POOL {name} TAG)"
            : $"snapshot '{name}' cannot be deleted now: the pool is frozen";


    /// <summary>Prints an <see cref="OpResult"/> and returns its exit code.</summary>
    private static int Report(OpResult r)
    {
        if (r.Code != 0) { Console.Error.WriteLine($"cow: {r.Message}"); return r.Code; }
        if (r.Message.Length > 0) Console.WriteLine(r.Message);
        return 0;
    }

    /// <summary>Sends a snapshot verb to the service when it serves <paramref name="pool"/>; null otherwise.
    /// A refused request exits 2 for EINVAL (bad usage), 1 otherwise, as the local operation would.</summary>
    private static int? OpViaService(string pool, string verb, string name, JsonObject extra, Func<JsonObject, int>? ok = null) => ViaService(pool, (c, p) =>
    {
        var req = new JsonObject { ["verb"] = verb, ["pool"] = (string?)p["name"], ["name"] = name };
        foreach (var (k, v) in extra.ToList()) { extra.Remove(k); req[k] = v; }
        var r = Busy($"{verb} through {(string?)p["via"]}", () => c.Request(req));
        if (r["ok"]?.GetValue<bool>() != true)
        {
            Console.Error.WriteLine($"cow: {(string?)r["message"]} ({(string?)r["error"]})");
            return (string?)r["error"] == "EINVAL" ? 2 : 1;
        }
        if (ok != null) { r["via"] = (string?)p["via"]; return ok(r); }   // "via": who answered, for the caller's message
        if ((string?)r["message"] is { Length: > 0 } m) Console.WriteLine($"{m} (through {(string?)p["via"]})");
        return 0;
    });

    private static Command SnapshotHoldCommand()
    {
        var tag = new Argument<string>("tag") { Description = "hold tag (like a snapshot name); a held snapshot cannot be deleted" };
        var c = new Command("hold", "keep a snapshot from being deleted until the tag is released (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, OpsSnapshotArg, tag };
        c.SetAction(r => Guard(() =>
        {
            string pool = PoolOf(r), name = r.GetValue(OpsSnapshotArg)!, t = r.GetValue(tag)!;
            if (PoolSnapshots.HoldTagProblem(t) is { } problem) return Usage(problem);
            if (PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            return OpViaService(pool, "snapshot-hold", name, new JsonObject { ["tag"] = t })
                ?? WithUnmountedPool(pool, "hold", p => Report(SnapshotOpsCore.Hold(p, pool, name, t)));
        }));
        return c;
    }

    private static Command SnapshotReleaseCommand()
    {
        var tag = new Argument<string>("tag") { Description = "the hold tag to remove" };
        var c = new Command("release", "remove a hold from a snapshot (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, OpsSnapshotArg, tag };
        c.SetAction(r => Guard(() =>
        {
            string pool = PoolOf(r), name = r.GetValue(OpsSnapshotArg)!, t = r.GetValue(tag)!;
            if (PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            return OpViaService(pool, "snapshot-release", name, new JsonObject { ["tag"] = t })
                ?? WithUnmountedPool(pool, "release", p => Report(SnapshotOpsCore.Release(p, pool, name, t)));
        }));
        return c;
    }

    private static Command SnapshotRollbackCommand()
    {
        var c = new Command("rollback", "make the live tree exactly the snapshot's tree; every snapshot is kept (on a mounted pool, the process that mounted it, cow mount or cow serve, unmounts it for the time of the rollback and mounts it again, refusing while files are open there)") { PoolArg, OpsSnapshotArg };
        c.SetAction(r => Guard(() =>
        {
            string pool = PoolOf(r), name = r.GetValue(OpsSnapshotArg)!;
            if (PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            return OpViaService(pool, "snapshot-rollback", name, new JsonObject())
                ?? WithUnmountedPool(pool, "rollback", p => Report(Busy($"rolling back to '{name}'", () => SnapshotOpsCore.Rollback(p, pool, name))));
        }));
        return c;
    }

    private static Command SnapshotCloneCommand()
    {
        var dest = new Argument<string>("destination") { Description = "new path in the live tree, e.g. /restored" };
        var from = new Option<string>("--from") { Description = "path inside the snapshot to copy (default: its whole tree)", DefaultValueFactory = _ => "/" };
        var c = new Command("clone", "copy a snapshot's tree (or --from a path of it) to a new live directory, sharing every data block (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, OpsSnapshotArg, dest, from };
        c.SetAction(r => Guard(() =>
        {
            string pool = PoolOf(r), name = r.GetValue(OpsSnapshotArg)!, d = r.GetValue(dest)!, src = r.GetValue(from)!;
            if ((SnapshotOpsCore.CloneDestinationProblem(d) ?? SnapshotOpsCore.PoolPathProblem(src, "--from")) is { } problem) return Usage(problem);
            if (PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            return OpViaService(pool, "snapshot-clone", name, new JsonObject { ["destination"] = d, ["from"] = src })
                ?? WithUnmountedPool(pool, "clone", p => Report(Busy($"cloning '{name}' to {d}", () => SnapshotOpsCore.Clone(p, pool, name, d, src))));
        }));
        return c;
    }

    private static Command SnapshotRestoreCommand()
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

    private static Command SnapshotDiffCommand()
    {
        var to = new Argument<string?>("to") { Description = "newer snapshot (default: the live tree)", Arity = ArgumentArity.ZeroOrOne };
        var json = new Option<bool>("--json") { Description = "one JSON array of {path, kind, ino, old_path} (with --ranges also size_before, size_after, ranges)" };
        var ranges = new Option<bool>("--ranges") { Description = "for regular files changed in data, added or removed: sizes before and after, and the changed byte ranges (data or hole) from the extent maps; no file data is read" };
        var c = new Command("diff", "list what changed between a snapshot and a later one or the live tree (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, OpsSnapshotArg, to, json, ranges };
        c.SetAction(r => Guard(() =>
        {
            string pool = PoolOf(r), name = r.GetValue(OpsSnapshotArg)!;
            string? t = r.GetValue(to);
            if (PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            if (t != null && PoolSnapshots.NameProblem(t) is { } np2) return Usage(np2);
            bool withRanges = r.GetValue(ranges);
            int Print(JsonArray rows)
            {
                if (r.GetValue(json)) { Console.WriteLine(rows.ToJsonString(JsonOut)); return 0; }
                foreach (var x in rows.OfType<JsonObject>()) Console.WriteLine(DiffLine(x));
                return 0;
            }
            var extra = new JsonObject();
            if (t != null) extra["to"] = t;
            if (withRanges) extra["ranges"] = true;
            return OpViaService(pool, "snapshot-diff", name, extra, resp => Print((JsonArray)resp["changes"]!))
                ?? WithUnmountedPool(pool, "diff", p =>
                {
                    var res = Busy($"comparing '{name}' with {t ?? "the live tree"}", () => SnapshotOpsCore.Diff(p, pool, name, t, withRanges));
                    return res.Code != 0 ? Report(res) : Print((JsonArray)res.Data!);
                });
        }));
        return c;
    }

    /// <summary>One row of <c>cow snapshot diff</c>'s text: a kind letter, the path, tab-separated; a row with sizes
    /// (--ranges) adds "size BEFORE -> AFTER" ("-": absent) and its ranges ("data OFFSET+LENGTH, hole ...", "none").</summary>
    internal static string DiffLine(JsonObject x)
    {
        string path = Printable((string)x["path"]!);
        string line = (string?)x["kind"] switch
        {
            "added" => $"+\t{path}",
            "removed" => $"-\t{path}",
            "renamed" => $"R\t{Printable((string)x["old_path"]!)} -> {path}",
            "modified_data" => $"M\t{path}\t(data)",
            "modified_metadata" => $"M\t{path}\t(metadata)",
            _ => $"T\t{path}",
        };
        if (x["ranges"] is not JsonArray ranges) return line;
        static string Size(JsonNode? n) => n == null ? "-" : $"{(long)n}";
        var parts = ranges.OfType<JsonObject>().Select(b => $"{(string?)b["kind"]} {(long)b["offset"]!}+{(long)b["length"]!}").ToList();
        return $"{line}\tsize {Size(x["size_before"])} -> {Size(x["size_after"])}\t{(parts.Count == 0 ? "none" : string.Join(", ", parts))}";
    }

    /// <summary>A path on one line: control characters (a newline in a name) as \xNN, backslash doubled.</summary>
    private static string Printable(string path)
    {
        if (!path.Any(ch => char.IsControl(ch) || ch == '\\')) return path;
        var sb = new System.Text.StringBuilder();
        foreach (var ch in path)
            if (ch == '\\') sb.Append(@"\\");
            else if (char.IsControl(ch)) sb.Append($"\\x{(int)ch:x2}");
            else sb.Append(ch);
        return sb.ToString();
    }
}
