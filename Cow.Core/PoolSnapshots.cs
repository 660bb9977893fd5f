using System.Collections.ObjectModel;
using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core;

/// <summary>One snapshot as callers outside Cow.Core see it: a copy taken under the engine's lock, immutable.
/// <see cref="Gen"/> is the generation it sees (format.md, "Generations"); <see cref="CreatedNs"/> is
/// <c>created_ns</c>; <see cref="Holds"/> are sorted ordinally; <see cref="Properties"/> enumerate in ordinal
/// key order.</summary>
public sealed record SnapshotInfo(string Name, long Gen, long CreatedNs, long CommitSeq, IReadOnlyList<string> Holds,
    IReadOnlyDictionary<string, string> Properties)
{
    /// <summary>When it was taken (UTC).</summary>
    public DateTime CreatedUtc => DateTime.UnixEpoch.AddTicks(CreatedNs / 100);

    internal static SnapshotInfo From(SnapshotRecord r) => new(r.Name, r.Gen, r.CreatedNs, r.CommitSeq,
        Array.AsReadOnly(r.Holds.ToArray()),
        new ReadOnlyDictionary<string, string>(new SortedDictionary<string, string>(r.Properties, StringComparer.Ordinal)));
}

/// <summary>
/// The snapshots of one open pool (<see cref="Pool.Snapshots"/>): list, create, delete, hold, release,
/// properties, rollback, clone, diff, restore and the space report, as the <c>cow</c> CLI, the service and
/// the FUSE server need them. Every call goes to the engine, which does the work and its locking; results
/// are immutable copies. Owns nothing; thread-safe as the engine is.
/// Errnos are those of the engine methods each forwards to (documented there).
/// </summary>
public sealed class PoolSnapshots
{
    private readonly Pool _pool;
    private Engine.Engine E => _pool.Engine;

    internal PoolSnapshots(Pool pool) { _pool = pool; }

    /// <summary>At most this many properties on one snapshot.</summary>
    public const int MaxProperties = Engine.Engine.MaxSnapshotProperties;
    /// <summary>At most this many bytes of UTF-8 in one property value.</summary>
    public const int MaxPropertyValue = Engine.Engine.MaxSnapshotPropertyValue;

    /// <summary>What is wrong with <paramref name="name"/> as a snapshot name, or null.</summary>
    public static string? NameProblem(string name) => Engine.SnapshotManager.SnapshotNameProblem(name);
    /// <summary>What is wrong with <paramref name="tag"/> as a hold tag, or null.</summary>
    public static string? HoldTagProblem(string tag) => Engine.SnapshotManager.HoldTagProblem(tag);
    /// <summary>What is wrong with a property (null value: its removal), or null.</summary>
    public static string? PropertyProblem(string name, string? value) => Engine.SnapshotManager.SnapshotPropertyProblem(name, value);

    /// <summary>Every snapshot, oldest first.</summary>
    public IReadOnlyList<SnapshotInfo> List() => E.ListSnapshots().Select(SnapshotInfo.From).ToArray();

    /// <summary>A read-only view of snapshot <paramref name="name"/>; null if there is none by that name.</summary>
    public FileSystemView? Open(string name) => _pool.Snapshot(name);

    /// <summary>Takes a snapshot of the live tree (<see cref="Engine.Engine.CreateSnapshot(string, IReadOnlyDictionary{string, string}?, out SnapshotRecord)"/>);
    /// <paramref name="snapshot"/> is null unless it returns 0.</summary>
    public Errno Create(string name, IReadOnlyDictionary<string, string>? properties, out SnapshotInfo? snapshot)
    {
        var e = E.CreateSnapshot(name, properties, out var r);
        snapshot = e == 0 ? SnapshotInfo.From(r) : null;
        return e;
    }

    public Errno Create(string name, out SnapshotInfo? snapshot) => Create(name, null, out snapshot);

    public Errno Delete(string name) => E.DeleteSnapshot(name);
    /// <summary>Hold tags of <paramref name="name"/> (sorted), or null when there is no such snapshot.</summary>
    public IReadOnlyList<string>? Holds(string name) => E.SnapshotHolds(name);
    public Errno Hold(string name, string tag) => E.HoldSnapshot(name, tag);
    public Errno Release(string name, string tag) => E.ReleaseSnapshot(name, tag);
    public Errno SetProperties(string name, IReadOnlyDictionary<string, string?> changes) => E.SetSnapshotProperties(name, changes);
    public Errno Rollback(string name) => E.RollbackToSnapshot(name);
    public Errno Clone(string name, string destinationPath, string sourcePath = "/") => E.CloneSnapshot(name, destinationPath, sourcePath);
    /// <summary>What changed from <paramref name="fromName"/> to <paramref name="toName"/> (null: the live tree);
    /// <paramref name="withRanges"/>: regular files' rows also carry sizes and changed byte ranges (<see cref="SnapshotChange"/>).</summary>
    public Errno Diff(string fromName, string? toName, out List<SnapshotChange> changes, bool withRanges = false) => E.DiffSnapshots(fromName, toName, out changes, withRanges);
    public Errno Restore(string name, IReadOnlyList<string> paths, bool dryRun, out List<Engine.RestoreChange> changes, out string? badPath) =>
        E.RestoreFromSnapshot(name, paths, dryRun, out changes, out badPath);
    /// <summary>Referenced and exclusive bytes of each snapshot and of the live tree (name "").</summary>
    public List<SnapshotSpace> SpaceReport() => E.SpaceReport();
}
