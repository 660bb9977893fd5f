using Cow.Core.Metadata;

namespace Cow.Core.Check;

/// <summary>
/// Names an inode for an administrator: its paths in the live tree and in each snapshot that sees it, found by
/// walking the directory entries that name it up to the root (first name by ordinal order at each step). Shared
/// by fsck (which has every entry in memory) and scrub (which looks entries up by the <c>child</c> index): each
/// hands in how to find the entries naming an inode in a generation.
/// Not thread-safe: one per report; the lookups it is given are called on the caller's thread (scrub calls it
/// under the engine's state lock, as every metadata read).
/// </summary>
internal sealed class InodePaths(Func<long, long, IEnumerable<(long Dir, string Name)>> links)
{
    /// <summary>Names listed per view; the rest are counted ("and N more names").</summary>
    public const int MaxNamesPerView = 4;

    /// <summary>Snapshots named in a <see cref="Describe"/> text; the rest are counted.</summary>
    public const int MaxSnapshotsNamed = 5;

    private readonly Dictionary<(long Gen, long Ino), List<(long Dir, string Name)>> _names = new();

    /// <summary>The paths of one view: <see cref="Snapshot"/> null for the live tree.</summary>
    public sealed record View(string? Snapshot, IReadOnlyList<string> Paths);

    private List<(long Dir, string Name)> Names(long gen, long ino)
    {
        if (_names.TryGetValue((gen, ino), out var l)) return l;
        l = links(gen, ino).ToList();
        l.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return _names[(gen, ino)] = l;
    }

    /// <summary>One path of <paramref name="ino"/> up to the root through first names, or null if the chain breaks or loops.</summary>
    private string? PathOf(long gen, long ino)
    {
        var parts = new List<string>();
        var seen = new HashSet<long>();
        while (ino != Engine.Engine.RootIno)
        {
            var l = Names(gen, ino);
            if (!seen.Add(ino) || l.Count == 0) return null;
            parts.Add(l[0].Name);
            ino = l[0].Dir;
        }
        parts.Reverse();
        return "/" + string.Join("/", parts);
    }

    /// <summary>The paths of <paramref name="ino"/> in generation <paramref name="gen"/>: one per name (at most
    /// <see cref="MaxNamesPerView"/>, then "and N more names"); empty when nothing names it there.</summary>
    public List<string> PathsIn(long gen, long ino)
    {
        if (ino == Engine.Engine.RootIno) return ["/"];
        var list = new List<string>();
        var names = Names(gen, ino);
        foreach (var (dir, name) in names.Take(MaxNamesPerView))
            if (PathOf(gen, dir) is { } parent) list.Add((parent == "/" ? "" : parent) + "/" + name);
        if (names.Count > MaxNamesPerView) list.Add($"and {names.Count - MaxNamesPerView} more names");
        return list;
    }

    /// <summary>The views that name <paramref name="ino"/>: the live tree (generation <paramref name="liveGen"/>), then
    /// each snapshot, newest first, among those <paramref name="seenAt"/> says see it (by generation).</summary>
    public List<View> InViews(long ino, long liveGen, IReadOnlyList<SnapshotRecord> snapshots, Func<long, bool> seenAt)
    {
        var views = new List<View>();
        foreach (var (gen, name) in snapshots.OrderByDescending(s => s.Gen).Select(s => (s.Gen, (string?)s.Name)).Prepend((liveGen, null)))
        {
            if (!seenAt(gen)) continue;
            var paths = PathsIn(gen, ino);
            if (paths.Count > 0) views.Add(new View(name, paths));
        }
        return views;
    }

    /// <summary>The views as one line: "/a/b.txt, /c; snapshot monday: /a/b.txt", at most <see cref="MaxSnapshotsNamed"/>
    /// snapshots named ("N more snapshots"), "not in the live tree; ..." when it has none there, "no path: orphan"
    /// when no view names it.</summary>
    public static string Describe(IReadOnlyList<View> views)
    {
        var parts = new List<string>();
        int snapshotsNamed = 0, snapshotsMore = 0;
        bool inLive = false;
        foreach (var v in views)
        {
            if (v.Snapshot == null) inLive = true;
            else if (snapshotsNamed == MaxSnapshotsNamed) { snapshotsMore++; continue; }
            else snapshotsNamed++;
            parts.Add((v.Snapshot == null ? "" : $"snapshot {v.Snapshot}: ") + string.Join(", ", v.Paths));
        }
        if (snapshotsMore > 0) parts.Add($"{snapshotsMore} more snapshots");
        return parts.Count == 0 ? "no path: orphan" : (inLive ? "" : "not in the live tree; ") + string.Join("; ", parts);
    }
}
