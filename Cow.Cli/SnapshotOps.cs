using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Cli;

/// <summary><c>cow snapshot hold|release|rollback|clone|diff</c>: on a mounted pool through the control socket of
/// the process that mounts it (<c>cow serve</c> or <c>cow mount</c>; see <see cref="ViaService"/>), else on the
/// unmounted pool folder (a pool mounted by a process without a control socket is refused). Exit codes: 0 done, 1 the operation failed (the message says why; nothing changed),
/// 2 bad usage (including a malformed tag or path).</summary>
public static partial class Program
{
    private static readonly Argument<string> OpsSnapshotArg = new("snapshot") { Description = "snapshot name" };

    /// <summary>Opens the pool folder for a snapshot operation, or explains why not (mounted pool).</summary>
    private static int WithUnmountedPool(string poolDir, string verb, Func<Pool, int> body)
    {
        using var pool = OpenUnmounted(poolDir, $"cow snapshot {verb}", "it needs the pool to itself", viaService: true);
        return body(pool);
    }

    /// <summary>Runs <paramref name="work"/> under a spinner naming it when stdout is a terminal (long rollbacks,
    /// clones, diffs and deletions of large trees); plain otherwise. Nothing may be printed inside it.</summary>
    internal static T Busy<T>(string what, Func<T> work)
    {
        if (!Interactive) return work();
        T result = default!;
        Spectre.Console.AnsiConsole.Status().Start(Spectre.Console.Markup.Escape(what), _ => result = work());
        return result;
    }

    private static int Usage(string message) { Console.Error.WriteLine($"cow: {message}"); return 2; }

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

    internal static Command SnapshotHoldCommand()
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

    internal static Command SnapshotReleaseCommand()
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

    internal static Command SnapshotRollbackCommand()
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

    internal static Command SnapshotCloneCommand()
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

    private static int Ok(string message) { Console.WriteLine(message); return 0; }

    internal static Command SnapshotDiffCommand()
    {
        var to = new Argument<string?>("to") { Description = "newer snapshot (default: the live tree)", Arity = ArgumentArity.ZeroOrOne };
        var json = new Option<bool>("--json") { Description = "one JSON array of {path, kind, ino, old_path}" };
        var c = new Command("diff", "list what changed between a snapshot and a later one or the live tree (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, OpsSnapshotArg, to, json };
        c.SetAction(r => Guard(() =>
        {
            string pool = PoolOf(r), name = r.GetValue(OpsSnapshotArg)!;
            string? t = r.GetValue(to);
            if (PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            if (t != null && PoolSnapshots.NameProblem(t) is { } np2) return Usage(np2);
            int Print(JsonArray rows)
            {
                if (r.GetValue(json)) { Console.WriteLine(rows.ToJsonString(JsonOut)); return 0; }
                foreach (var x in rows.OfType<JsonObject>())
                {
                    string path = Printable((string)x["path"]!);
                    Console.WriteLine((string?)x["kind"] switch
                    {
                        "added" => $"+\t{path}",
                        "removed" => $"-\t{path}",
                        "renamed" => $"R\t{Printable((string)x["old_path"]!)} -> {path}",
                        "modified_data" => $"M\t{path}\t(data)",
                        "modified_metadata" => $"M\t{path}\t(metadata)",
                        _ => $"T\t{path}",
                    });
                }
                return 0;
            }
            var extra = new JsonObject();
            if (t != null) extra["to"] = t;
            return OpViaService(pool, "snapshot-diff", name, extra, resp => Print((JsonArray)resp["changes"]!))
                ?? WithUnmountedPool(pool, "diff", p =>
                {
                    var res = Busy($"comparing '{name}' with {t ?? "the live tree"}", () => SnapshotOpsCore.Diff(p, pool, name, t));
                    return res.Code != 0 ? Report(res) : Print((JsonArray)res.Data!);
                });
        }));
        return c;
    }

    /// <summary>How every --json document is written: indented, readable text, one document.</summary>
    internal static readonly JsonSerializerOptions JsonOut = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

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
