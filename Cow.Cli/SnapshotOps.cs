using System.CommandLine;
using System.Text.Json;
using Cow.Core;
using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Cli;

/// <summary><c>cow snapshot hold|release|rollback|clone|diff</c>: on an unmounted pool only (they open the pool
/// folder directly). Exit codes: 0 done, 1 the operation failed (the message says why; nothing changed),
/// 2 bad usage (including a malformed tag or path).</summary>
public static partial class Program
{
    private static readonly Argument<string> OpsSnapshotArg = new("snapshot") { Description = "snapshot name" };

    /// <summary>Opens the pool folder for a snapshot operation, or explains why not (mounted pool).</summary>
    private static int WithUnmountedPool(string poolDir, Func<Pool, int> body)
    {
        if (MountedAt(poolDir) is { } mp)
            return Fail($"pool is mounted at {mp}: stop the mount (or use the cow service) first");
        using var pool = Pool.Open(poolDir);
        return body(pool);
    }

    private static int Usage(string message) { Console.Error.WriteLine($"cow: {message}"); return 2; }

    private static string HoldList(Pool p, string name) =>
        p.Engine.SnapshotHolds(name) is { Count: > 0 } h ? string.Join(", ", h.Select(x => $"'{x}'")) : "none";

    /// <summary>What to say when deleting a snapshot failed with EBUSY: held (naming the holds), or frozen.</summary>
    public static string HeldMessage(Pool p, string name) =>
        p.Engine.SnapshotHolds(name) is { Count: > 0 } h
            ? $"snapshot '{name}' is held by {string.Join(", ", h.Select(x => $"'{x}'"))}; release it first (cow snapshot release POOL {name} TAG)"
            : $"snapshot '{name}' cannot be deleted now: the pool is frozen";

    private static int NoSnapshot(string pool, string name) => Fail($"pool {pool} has no snapshot named '{name}' (see cow snapshot list {pool})");

    internal static Command SnapshotHoldCommand()
    {
        var tag = new Argument<string>("tag") { Description = "hold tag (like a snapshot name); a held snapshot cannot be deleted" };
        var c = new Command("hold", "keep a snapshot from being deleted until the tag is released (unmounted pool)") { PoolArg, OpsSnapshotArg, tag };
        c.SetAction(r => Guard(() =>
        {
            string pool = r.GetValue(PoolArg)!, name = r.GetValue(OpsSnapshotArg)!, t = r.GetValue(tag)!;
            if (Core.Engine.Engine.HoldTagProblem(t) is { } problem) return Usage(problem);
            return WithUnmountedPool(pool, p => p.Engine.HoldSnapshot(name, t) switch
            {
                0 => 0,
                Errno.ENOENT => NoSnapshot(pool, name),
                Errno.EEXIST => Fail($"snapshot '{name}' is already held by '{t}'"),
                var e => Fail($"snapshot hold {name} {t}: {Describe(e)}"),
            });
        }));
        return c;
    }

    internal static Command SnapshotReleaseCommand()
    {
        var tag = new Argument<string>("tag") { Description = "the hold tag to remove" };
        var c = new Command("release", "remove a hold from a snapshot (unmounted pool)") { PoolArg, OpsSnapshotArg, tag };
        c.SetAction(r => Guard(() =>
        {
            string pool = r.GetValue(PoolArg)!, name = r.GetValue(OpsSnapshotArg)!, t = r.GetValue(tag)!;
            return WithUnmountedPool(pool, p => p.Engine.ReleaseSnapshot(name, t) switch
            {
                0 => 0,
                Errno.ENOENT => NoSnapshot(pool, name),
                Errno.ESRCH => Fail($"snapshot '{name}' has no hold '{t}' (holds: {HoldList(p, name)})"),
                var e => Fail($"snapshot release {name} {t}: {Describe(e)}"),
            });
        }));
        return c;
    }

    internal static Command SnapshotRollbackCommand()
    {
        var c = new Command("rollback", "make the live tree exactly the snapshot's tree; every snapshot is kept (unmounted pool)") { PoolArg, OpsSnapshotArg };
        c.SetAction(r => Guard(() =>
        {
            string pool = r.GetValue(PoolArg)!, name = r.GetValue(OpsSnapshotArg)!;
            return WithUnmountedPool(pool, p =>
            {
                var e = p.Engine.RollbackToSnapshot(name);
                if (e == Errno.ENOENT) return NoSnapshot(pool, name);
                if (e != 0) return Fail($"snapshot rollback {name}: {Describe(e)}");
                Console.WriteLine($"live tree rolled back to snapshot '{name}'");
                return 0;
            });
        }));
        return c;
    }

    internal static Command SnapshotCloneCommand()
    {
        var dest = new Argument<string>("destination") { Description = "new path in the live tree, e.g. /restored" };
        var from = new Option<string>("--from") { Description = "path inside the snapshot to copy (default: its whole tree)", DefaultValueFactory = _ => "/" };
        var c = new Command("clone", "copy a snapshot's tree (or --from a path of it) to a new live directory, sharing every data block (unmounted pool)") { PoolArg, OpsSnapshotArg, dest, from };
        c.SetAction(r => Guard(() =>
        {
            string pool = r.GetValue(PoolArg)!, name = r.GetValue(OpsSnapshotArg)!, d = r.GetValue(dest)!, src = r.GetValue(from)!;
            var parts = d.Split('/', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) return Usage($"destination '{d}' names the root; give a new path such as /restored");
            if (parts.Any(x => x is "." or "..")) return Usage($"destination '{d}' contains '.' or '..'; give a plain path");
            if (parts is [".snapshots"]) return Usage("the name .snapshots is reserved in the root directory (mounts show the snapshots there); choose another destination");
            return WithUnmountedPool(pool, p => p.Engine.CloneSnapshot(name, d, src) switch
            {
                0 => Ok($"snapshot '{name}'{(src is "/" or "" ? "" : ":" + src)} cloned to {d}"),
                Errno.EEXIST => Fail($"{d} already exists in the live tree; choose a new path"),
                Errno.ENOENT when p.Engine.SnapshotHolds(name) == null => NoSnapshot(pool, name),
                Errno.ENOENT => Fail($"{src} does not exist in snapshot '{name}', or the parent directory of {d} does not exist in the live tree"),
                Errno.ENOTDIR => Fail($"a component of {src} (in snapshot '{name}') or of {d} (live) is not a directory"),
                Errno.EINVAL or Errno.ENAMETOOLONG => Usage($"'{parts[^1]}' is not a valid file name"),
                var e => Fail($"snapshot clone {name} {d}: {Describe(e)}"),
            });
        }));
        return c;
    }

    private static int Ok(string message) { Console.WriteLine(message); return 0; }

    internal static Command SnapshotDiffCommand()
    {
        var to = new Argument<string?>("to") { Description = "newer snapshot (default: the live tree)", Arity = ArgumentArity.ZeroOrOne };
        var json = new Option<bool>("--json") { Description = "one JSON array of {path, kind, ino, old_path}" };
        var c = new Command("diff", "list what changed between a snapshot and a later one or the live tree (unmounted pool)") { PoolArg, OpsSnapshotArg, to, json };
        c.SetAction(r => Guard(() =>
        {
            string pool = r.GetValue(PoolArg)!, name = r.GetValue(OpsSnapshotArg)!;
            string? t = r.GetValue(to);
            return WithUnmountedPool(pool, p =>
            {
                var e = p.Engine.DiffSnapshots(name, t, out var changes);
                if (e == Errno.ENOENT) return NoSnapshot(pool, p.Engine.SnapshotHolds(name) == null ? name : t!);
                if (e != 0) return Fail($"snapshot diff: {Describe(e)}");
                if (r.GetValue(json))
                {
                    var rows = changes.Select(x => new Dictionary<string, object?>
                    {
                        ["path"] = x.Path, ["kind"] = KindName(x.Kind), ["ino"] = x.Ino, ["old_path"] = x.OldPath,
                    });
                    Console.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
                    return 0;
                }
                foreach (var x in changes)
                    Console.WriteLine(x.Kind switch
                    {
                        ChangeKind.Added => $"+\t{Printable(x.Path)}",
                        ChangeKind.Removed => $"-\t{Printable(x.Path)}",
                        ChangeKind.Renamed => $"R\t{Printable(x.OldPath!)} -> {Printable(x.Path)}",
                        ChangeKind.ModifiedData => $"M\t{Printable(x.Path)}\t(data)",
                        ChangeKind.ModifiedMetadata => $"M\t{Printable(x.Path)}\t(metadata)",
                        _ => $"T\t{Printable(x.Path)}",
                    });
                return 0;
            });
        }));
        return c;
    }

    private static string KindName(ChangeKind k) => k switch
    {
        ChangeKind.Added => "added", ChangeKind.Removed => "removed", ChangeKind.Renamed => "renamed",
        ChangeKind.ModifiedData => "modified_data", ChangeKind.ModifiedMetadata => "modified_metadata", _ => "type_changed",
    };

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
