using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Cli;

/// <summary>The outcome of one snapshot operation, shared by the CLI on an unmounted pool and by the service on a
/// mounted one. <see cref="Code"/>: 0 done (<see cref="Message"/> is what to print, may be empty), 1 failed,
/// 2 bad usage (<see cref="Message"/> says what is wrong). <see cref="Errno"/> names the failure on the control
/// socket. <see cref="Data"/>: the result document (diff rows, snapshot rows).</summary>
public sealed record OpResult(int Code, string Message, Errno Errno = 0, JsonNode? Data = null)
{
    public static OpResult Done(string message = "", JsonNode? data = null) => new(0, message, 0, data);
    public static OpResult Failed(Errno e, string message) => new(1, message, e);
    public static OpResult Usage(string message) => new(2, message, Errno.EINVAL);
}

/// <summary>Snapshot operations on an open pool, returning <see cref="OpResult"/>s whose messages name the
/// problem. Used on unmounted pools by the CLI and on mounted pools by the service (the engine orders
/// concurrent calls; see Engine.SnapshotOps). Stateless: thread-safe.</summary>
public static class SnapshotOpsCore
{
    private static string Describe(Errno e) => $"{e} ({Syscall.strerror(e)})";

    public static OpResult NoSnapshot(string pool, string name) =>
        OpResult.Failed(Errno.ENOENT, $"pool {pool} has no snapshot named '{name}' (see cow snapshot list {pool})");

    private static string HoldList(Pool p, string name) =>
        p.Snapshots.Holds(name) is { Count: > 0 } h ? string.Join(", ", h.Select(x => $"'{x}'")) : "none";

    public static OpResult Hold(Pool p, string pool, string name, string tag)
    {
        if (PoolSnapshots.HoldTagProblem(tag) is { } problem) return OpResult.Usage(problem);
        return p.Snapshots.Hold(name, tag) switch
        {
            0 => OpResult.Done(),
            Errno.ENOENT => NoSnapshot(pool, name),
            Errno.EEXIST => OpResult.Failed(Errno.EEXIST, $"snapshot '{name}' is already held by '{tag}'"),
            var e => OpResult.Failed(e, $"snapshot hold {name} {tag}: {Describe(e)}"),
        };
    }

    public static OpResult Release(Pool p, string pool, string name, string tag) => p.Snapshots.Release(name, tag) switch
    {
        0 => OpResult.Done(),
        Errno.ENOENT => NoSnapshot(pool, name),
        Errno.ESRCH => OpResult.Failed(Errno.ESRCH, $"snapshot '{name}' has no hold '{tag}' (holds: {HoldList(p, name)})"),
        var e => OpResult.Failed(e, $"snapshot release {name} {tag}: {Describe(e)}"),
    };

    public static OpResult Rollback(Pool p, string pool, string name)
    {
        var e = p.Snapshots.Rollback(name);
        if (e == Errno.ENOENT) return NoSnapshot(pool, name);
        if (e == Errno.EBUSY) return OpResult.Failed(e, $"snapshot rollback {name}: files of the live tree are open; close them and try again");
        if (e != 0) return OpResult.Failed(e, $"snapshot rollback {name}: {Describe(e)}");
        return OpResult.Done($"live tree rolled back to snapshot '{name}'");
    }

    /// <summary>Paths inside a pool are absolute (from the pool's root): what is wrong with <paramref name="path"/>, or null.</summary>
    public static string? PoolPathProblem(string path, string what) =>
        path.StartsWith('/') ? null : $"{what} '{path}' is not a path inside the pool: start it with / (e.g. /{path.TrimStart('.', '/')})";

    /// <summary>What is wrong with a clone destination, or null.</summary>
    public static string? CloneDestinationProblem(string d)
    {
        if (PoolPathProblem(d, "destination") is { } notAbsolute) return notAbsolute;
        var parts = d.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) return $"destination '{d}' names the root; give a new path such as /restored";
        if (parts.Any(x => x is "." or "..")) return $"destination '{d}' contains '.' or '..'; give a plain path";
        if (parts is [".snapshots"]) return "the name .snapshots is reserved in the root directory (mounts show the snapshots there); choose another destination";
        return null;
    }

    public static OpResult Clone(Pool p, string pool, string name, string d, string src)
    {
        if (CloneDestinationProblem(d) is { } problem) return OpResult.Usage(problem);
        var last = d.Split('/', StringSplitOptions.RemoveEmptyEntries)[^1];
        return p.Snapshots.Clone(name, d, src) switch
        {
            0 => OpResult.Done($"snapshot '{name}'{(src is "/" or "" ? "" : ":" + src)} cloned to {d}"),
            Errno.EEXIST => OpResult.Failed(Errno.EEXIST, $"{d} already exists in the live tree; choose a new path"),
            Errno.ENOENT when p.Snapshots.Holds(name) == null => NoSnapshot(pool, name),
            Errno.ENOENT => OpResult.Failed(Errno.ENOENT, $"{src} does not exist in snapshot '{name}', or the parent directory of {d} does not exist in the live tree"),
            Errno.ENOTDIR => OpResult.Failed(Errno.ENOTDIR, $"a component of {src} (in snapshot '{name}') or of {d} (live) is not a directory"),
            Errno.EINVAL or Errno.ENAMETOOLONG => OpResult.Usage($"'{last}' is not a valid file name"),
            var e => OpResult.Failed(e, $"snapshot clone {name} {d}: {Describe(e)}"),
        };
    }

    /// <summary>Data: a JSON array of {path, kind, ino, old_path}; with <paramref name="ranges"/> every row also has
    /// size_before, size_after (bytes, null where the path is absent) and ranges ([{offset, length, kind: "data"|"hole"}]),
    /// all null on rows that carry none (see <see cref="SnapshotChange"/>).</summary>
    public static OpResult Diff(Pool p, string pool, string name, string? to, bool ranges = false)
    {
        var e = p.Snapshots.Diff(name, to, out var changes, ranges);
        if (e == Errno.ENOENT) return NoSnapshot(pool, p.Snapshots.Holds(name) == null ? name : to!);
        if (e != 0) return OpResult.Failed(e, $"snapshot diff: {Describe(e)}");
        var rows = new JsonArray();
        foreach (var x in changes)
        {
            var row = new JsonObject { ["path"] = x.Path, ["kind"] = KindName(x.Kind), ["ino"] = x.Ino, ["old_path"] = x.OldPath };
            if (ranges)
            {
                row["size_before"] = x.SizeBefore;
                row["size_after"] = x.SizeAfter;
                row["ranges"] = x.Ranges == null ? null : new JsonArray(x.Ranges.Select(b => (JsonNode)new JsonObject
                {
                    ["offset"] = b.Offset, ["length"] = b.Length, ["kind"] = b.Data ? "data" : "hole",
                }).ToArray());
            }
            rows.Add((JsonNode)row);
        }
        return OpResult.Done("", rows);
    }

    public static string KindName(ChangeKind k) => k switch
    {
        ChangeKind.Added => "added",
        ChangeKind.Removed => "removed",
        ChangeKind.Renamed => "renamed",
        ChangeKind.ModifiedData => "modified_data",
        ChangeKind.ModifiedMetadata => "modified_metadata",
        _ => "type_changed",
    };

    /// <summary>One row per snapshot: {name, generation, created_utc, referenced_bytes, exclusive_bytes, holds,
    /// properties}; with <paramref name="includeLive"/> the live tree comes first with name "" (cow df).</summary>
    public static JsonArray SnapshotRows(Pool p, bool includeLive)
    {
        var recs = p.Snapshots.List().ToDictionary(s => s.Name, StringComparer.Ordinal);
        var rows = new JsonArray();
        foreach (var s in p.Snapshots.SpaceReport())
        {
            if (s.Name == "" && !includeLive) continue;
            recs.TryGetValue(s.Name, out var rec);
            var props = new JsonObject();
            if (rec != null) foreach (var (k, v) in rec.Properties) props[k] = v;
            rows.Add((JsonNode)new JsonObject
            {
                ["name"] = s.Name, ["generation"] = s.Generation,
                ["created_utc"] = s.Name == "" ? null : DateTime.UnixEpoch.AddTicks(s.CreatedNs / 100).ToString("yyyy-MM-ddTHH:mm:ss.fffZ"),
                ["referenced_bytes"] = s.ReferencedBytes, ["exclusive_bytes"] = s.ExclusiveBytes,
                ["holds"] = new JsonArray((rec?.Holds ?? new List<string>()).Select(h => (JsonNode)JsonValue.Create(h)!).ToArray()),
                ["properties"] = props,
                // The snapshot's name across pools (format.md 10.4): cow replicate matches snapshots by it.
                ["identity"] = s.Name == "" ? null : p.Replication.IdentityOf(s.Name)?.ToString(),
            });
        }
        return rows;
    }

    /// <summary>cow df's document: {block_size, blocks, used_blocks, free_blocks, size_bytes, used_bytes, free_bytes,
    /// devices: [{cookie, role, path, size_bytes, data_bytes, used_bytes, free_bytes, takes_writes}], views:
    /// SnapshotRows(live first), cleaner: <see cref="CleanerReport.StatusObject"/>}. The pool figures are statfs's
    /// (what df(1) on the mount shows): blocks = every device's data blocks less the pool's reserve, free = what new
    /// writes can use. Every count is a JSON integer (long).</summary>
    public static JsonObject DfDocument(Pool p)
    {
        var st = p.Live.StatFs();
        long bs = st.BlockSize;
        var usage = p.DeviceUsage().ToDictionary(u => u.Cookie);
        var devices = new JsonArray();
        foreach (var d in p.Devices)
        {
            var u = usage.GetValueOrDefault(d.Cookie);
            devices.Add((JsonNode)new JsonObject
            {
                ["cookie"] = (long)d.Cookie, ["role"] = d.Role.ToString().ToLowerInvariant(), ["path"] = d.Path,
                ["size_bytes"] = d.SizeBytes, ["data_bytes"] = u.DataBlocks * bs, ["used_bytes"] = u.UsedBlocks * bs,
                ["free_bytes"] = u.FreeBlocks * bs, ["takes_writes"] = u.TakesNewWrites,
            });
        }
        return new JsonObject
        {
            ["block_size"] = bs, ["blocks"] = st.Blocks, ["used_blocks"] = st.UsedBlocks, ["free_blocks"] = st.FreeBlocks,
            ["size_bytes"] = st.Blocks * bs, ["used_bytes"] = st.UsedBlocks * bs, ["free_bytes"] = st.FreeBlocks * bs, ["devices"] = devices, ["views"] = SnapshotRows(p, includeLive: true),
            ["cleaner"] = CleanerReport.StatusObject(p.CleanerStatus(), bs),
        };
    }
}
