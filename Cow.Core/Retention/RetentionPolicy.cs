using System.Globalization;

namespace Cow.Core.Retention;

/// <summary>One snapshot as the retention policy sees it. <paramref name="ExclusiveBytes"/>: what deleting it
/// alone would free (0 when unknown: only the space rule uses it). Immutable.</summary>
public sealed record RetentionSnapshot(string Name, DateTime CreatedUtc, bool Held, IReadOnlyDictionary<string, string> Properties, long ExclusiveBytes = 0)
{
    /// <summary>The <c>kind</c> property, or null (a snapshot made by hand).</summary>
    public string? Kind => Properties.TryGetValue(RetentionPolicy.KindProperty, out var k) ? k : null;
}

/// <summary>The rules of one pool (the <c>[retention NAME]</c> counts). Null = not set. Immutable. Not sealed:
/// the service's configuration record extends it with its schedule.</summary>
public record RetentionRules
{
    public int? Hourly { get; init; }
    public int? Daily { get; init; }
    public int? Weekly { get; init; }
    public int? Monthly { get; init; }
    public int? Yearly { get; init; }
    /// <summary>Never keep more than this many managed snapshots.</summary>
    public int? MaxSnapshots { get; init; }
    /// <summary>Delete the oldest managed snapshots while the pool has less free space than this (percent).</summary>
    public int? MinFreePercent { get; init; }
    /// <summary>True when at least one timeline count is set: only then are timeline snapshots thinned out.</summary>
    public bool HasTimelineCounts => Hourly != null || Daily != null || Weekly != null || Monthly != null || Yearly != null;
}

/// <summary>Free space of the pool when the policy runs (the space rule needs it).</summary>
public readonly record struct PoolSpace(long TotalBytes, long FreeBytes);

/// <summary>What the reason of a deletion is.</summary>
public enum RetentionRule { Timeline, MaxSnapshots, MinFree }

/// <summary>One snapshot to delete and why (for the log). <paramref name="WithPrevious"/>: the post of a
/// pre/post pair, to be deleted together with the deletion before it (its pre), never apart from it.</summary>
public sealed record RetentionDeletion(string Name, RetentionRule Rule, string Reason, bool WithPrevious = false);

/// <summary>
/// The retention policy: which snapshots to delete, in order, for a set of rules. Pure: no clock, no I/O
/// (the time of the decision is <c>now</c>); stateless, so thread-safe.
/// <para><b>Managed snapshots</b>: those whose <c>kind</c> property is <c>timeline</c>, <c>pre</c> or <c>post</c>
/// (made by the service's schedule or by <c>cow snapshot wrap</c>). Only managed snapshots are ever deleted:
/// a snapshot without <c>kind</c> (made by hand) or with another kind, and a held snapshot, never is.
/// Snapshots created after <c>now</c> (a clock that went back) are kept and left out of every rule.</para>
/// <para><b>Rule 1, timeline counts</b> (like snapper), when at least one of hourly/daily/weekly/monthly/yearly
/// is set (unset ones count 0): among <c>kind=timeline</c> snapshots, newest first, a snapshot is kept when it
/// is the newest one of its hour (day, ISO week from Monday, month, year: UTC calendar) and that period is one
/// of the N most recent periods that hold a timeline snapshot. Periods without a snapshot (the service was
/// down) do not count, so an outage never makes the cleanup delete everything. Every other unheld timeline
/// snapshot is deleted.</para>
/// <para><b>Rule 2, max-snapshots</b>: when more than N managed snapshots remain (held ones count), the
/// oldest unheld managed ones are deleted until N remain or none is deletable.</para>
/// <para><b>Pre/post pairs</b> (<c>cow snapshot wrap</c>: the post names its pre in its <c>pre</c> property) go
/// together under rules 2 and 3, as snapper's number cleanup does: deleting a pre deletes its post with it,
/// and a pair whose pre or post is held is kept whole, so a post never outlives the pre it is compared with.
/// Rule 2 may then leave one fewer than N.</para>
/// <para><b>Rule 3, min-free-percent</b>: while the estimated free space is below the percentage of the
/// pool, the oldest remaining unheld managed snapshot is deleted, whatever rule 1 kept; each deletion adds
/// its exclusive bytes to the estimate. The estimate can only be low (deleting a snapshot may make blocks
/// exclusive to its neighbour), so a caller that wants no more deletions than needed applies the first
/// space deletion, measures again and asks again.</para>
/// </summary>
public static class RetentionPolicy
{
    public const string KindProperty = "kind";
    public const string Timeline = "timeline", Pre = "pre", Post = "post";
    private static readonly string[] Managed = [Timeline, Pre, Post];

    public static bool IsManaged(RetentionSnapshot s) => s.Kind is { } k && Managed.Contains(k, StringComparer.Ordinal);

    public static List<RetentionDeletion> Plan(IEnumerable<RetentionSnapshot> snapshots, RetentionRules rules, DateTime nowUtc, PoolSpace? space = null)
    {
        var all = snapshots.Where(s => s.CreatedUtc <= nowUtc).OrderBy(s => s.CreatedUtc).ThenBy(s => s.Name, StringComparer.Ordinal).ToList();
        var deletions = new List<RetentionDeletion>();
        var gone = new HashSet<string>(StringComparer.Ordinal);
        void Delete(RetentionSnapshot s, RetentionRule rule, string reason, bool withPrevious = false)
        {
            deletions.Add(new RetentionDeletion(s.Name, rule, reason, withPrevious));
            gone.Add(s.Name);
        }

        if (rules.HasTimelineCounts)
        {
            var timeline = all.Where(s => s.Kind == Timeline).ToList();
            var kept = new HashSet<string>(StringComparer.Ordinal);
            Keep(timeline, rules.Hourly ?? 0, t => new DateTime(t.Year, t.Month, t.Day, t.Hour, 0, 0), kept);
            Keep(timeline, rules.Daily ?? 0, t => t.Date, kept);
            Keep(timeline, rules.Weekly ?? 0, t => t.Date.AddDays(-(((int)t.DayOfWeek + 6) % 7)), kept);
            Keep(timeline, rules.Monthly ?? 0, t => new DateTime(t.Year, t.Month, 1), kept);
            Keep(timeline, rules.Yearly ?? 0, t => new DateTime(t.Year, 1, 1), kept);
            string counts = $"hourly={rules.Hourly ?? 0} daily={rules.Daily ?? 0} weekly={rules.Weekly ?? 0} monthly={rules.Monthly ?? 0} yearly={rules.Yearly ?? 0}";
            foreach (var s in timeline)
                if (!s.Held && !kept.Contains(s.Name)) Delete(s, RetentionRule.Timeline, $"timeline snapshot not kept by {counts}");
        }

        var managed = all.Where(s => IsManaged(s) && !gone.Contains(s.Name)).ToList();
        // The post of each pre (by its "pre" property), for the pairs that rules 2 and 3 delete together.
        var postOf = managed.Where(s => s.Kind == Post && s.Properties.TryGetValue(Pre, out _))
            .GroupBy(s => s.Properties[Pre], StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Last(), StringComparer.Ordinal);
        var preNames = managed.Where(s => s.Kind == Pre).Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        // The snapshots one deletion of s removes (s, and its post when s is a pre), or none when the unit is held
        // or s is a post whose pre is still there (it goes with its pre).
        List<RetentionSnapshot> Unit(RetentionSnapshot s)
        {
            if (s.Held || gone.Contains(s.Name)) return [];
            if (s.Kind == Post && s.Properties.TryGetValue(Pre, out var pre) && preNames.Contains(pre) && !gone.Contains(pre)) return [];
            if (s.Kind == Pre && postOf.TryGetValue(s.Name, out var post) && !gone.Contains(post.Name))
                return post.Held ? [] : [s, post];
            return [s];
        }

        if (rules.MaxSnapshots is int max && managed.Count > max)
        {
            int remaining = managed.Count;
            foreach (var s in managed)
            {
                if (remaining <= max) break;
                var unit = Unit(s);
                if (unit.Count == 0) continue;
                string reason = $"{remaining} managed snapshots (kind timeline, pre or post) is more than max-snapshots={max}";
                foreach (var u in unit) Delete(u, RetentionRule.MaxSnapshots, u == s ? reason : $"post snapshot of '{s.Name}', deleted with it", u != s);
                remaining -= unit.Count;
            }
        }

        if (rules.MinFreePercent is int pct && space is { TotalBytes: > 0 } sp)
        {
            long free = sp.FreeBytes;
            foreach (var s in all.Where(s => IsManaged(s) && !gone.Contains(s.Name)).ToList())
            {
                if (free * 100 >= (long)pct * sp.TotalBytes) break;
                var unit = Unit(s);
                if (unit.Count == 0) continue;
                string reason = string.Create(CultureInfo.InvariantCulture,
                    $"free space {free * 100.0 / sp.TotalBytes:F1}% is below min-free-percent={pct}; oldest managed snapshot");
                foreach (var u in unit)
                {
                    Delete(u, RetentionRule.MinFree, u == s ? reason : $"post snapshot of '{s.Name}', deleted with it", u != s);
                    free += u.ExclusiveBytes;
                }
            }
        }
        return deletions;
    }

    /// <summary>Marks the newest snapshot of each of the <paramref name="count"/> most recent periods.</summary>
    private static void Keep(List<RetentionSnapshot> ascending, int count, Func<DateTime, DateTime> period, HashSet<string> kept)
    {
        if (count <= 0) return;
        DateTime? last = null;
        int periods = 0;
        for (int i = ascending.Count - 1; i >= 0 && periods <= count; i--)
        {
            var p = period(ascending[i].CreatedUtc);
            if (p == last) continue;
            last = p;
            if (++periods > count) break;
            kept.Add(ascending[i].Name);
        }
    }
}
