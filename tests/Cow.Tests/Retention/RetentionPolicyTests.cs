using Cow.Core.Retention;
using Xunit;

namespace Cow.Tests.Retention;

/// <summary><see cref="RetentionPolicy"/> on a simulated UTC calendar: timeline counts across hour, day, week,
/// month and year boundaries (a leap day included), max-snapshots, min-free-percent ordering, holds and
/// hand-made snapshots.</summary>
[Trait("Tier", "unit")]
public class RetentionPolicyTests
{
    private static readonly Dictionary<string, string> Tl = new() { ["kind"] = "timeline" };
    private static RetentionSnapshot T(DateTime t, bool held = false, long excl = 0) => new($"timeline-{t:yyyyMMdd-HHmm}", t, held, Tl, excl);
    private static RetentionSnapshot K(string name, string? kind, DateTime t, bool held = false, long excl = 0)
        => new(name, t, held, kind == null ? new Dictionary<string, string>() : new Dictionary<string, string> { ["kind"] = kind }, excl);
    private static DateTime U(int y, int mo, int d, int h = 0, int mi = 0) => new(y, mo, d, h, mi, 0, DateTimeKind.Utc);

    /// <summary>Hourly timeline snapshots from <paramref name="from"/> (inclusive) to <paramref name="to"/> (exclusive).</summary>
    private static List<RetentionSnapshot> Hourly(DateTime from, DateTime to)
    {
        var l = new List<RetentionSnapshot>();
        for (var t = from; t < to; t = t.AddHours(1)) l.Add(T(t));
        return l;
    }

    private static HashSet<string> Kept(List<RetentionSnapshot> all, RetentionRules rules, DateTime now, PoolSpace? space = null)
    {
        var deleted = RetentionPolicy.Plan(all, rules, now, space).Select(d => d.Name).ToHashSet();
        Assert.Equal(deleted.Count, RetentionPolicy.Plan(all, rules, now, space).Count);   // no snapshot twice
        return all.Select(s => s.Name).Where(n => !deleted.Contains(n)).ToHashSet();
    }

    [Fact]
    public void HourlyKeepsTheNewestOfEachOfTheLastNHoursAcrossMidnight()
    {
        // Every 20 minutes from 21:00 to 01:00 the next day: the last 3 hours that have snapshots are 00, 23, 22.
        var all = new List<RetentionSnapshot>();
        for (var t = U(2025, 12, 31, 21); t < U(2026, 1, 1, 1); t = t.AddMinutes(20)) all.Add(T(t));
        var kept = Kept(all, new RetentionRules { Hourly = 3 }, U(2026, 1, 1, 1));
        Assert.Equal(new[] { "timeline-20251231-2240", "timeline-20251231-2340", "timeline-20260101-0040" }.ToHashSet(), kept);
    }

    [Fact]
    public void DailyAcrossALeapDayKeepsFeb28Feb29AndMar1()
    {
        var all = Hourly(U(2024, 2, 26), U(2024, 3, 2));
        var kept = Kept(all, new RetentionRules { Daily = 4 }, U(2024, 3, 2));
        // Newest of each of the last four days: Mar 1, Feb 29 (the leap day), Feb 28, Feb 27.
        Assert.Equal(new[] { "timeline-20240301-2300", "timeline-20240229-2300", "timeline-20240228-2300", "timeline-20240227-2300" }.ToHashSet(), kept);
    }

    [Fact]
    public void WeeklyUsesIsoWeeksStartingMondayAcrossTheYearEnd()
    {
        // 2025-12-29 is a Monday; that ISO week holds 2026-01-01..04 too.
        var all = new List<RetentionSnapshot>();
        for (var d = U(2025, 12, 15, 12); d <= U(2026, 1, 6, 12); d = d.AddDays(1)) all.Add(T(d));
        var kept = Kept(all, new RetentionRules { Weekly = 3 }, U(2026, 1, 7));
        // Weeks from Monday: Jan 5 (newest: Jan 6), Dec 29 (newest: Sunday Jan 4), Dec 22 (newest: Sunday Dec 28).
        Assert.Equal(new[] { "timeline-20260106-1200", "timeline-20260104-1200", "timeline-20251228-1200" }.ToHashSet(), kept);
    }

    [Fact]
    public void MonthlyAndYearlyCombineAndAKeptSnapshotCountsForEveryRuleThatKeepsIt()
    {
        // One snapshot on the 1st and the 15th of each month, 2023-01 .. 2024-12.
        var all = new List<RetentionSnapshot>();
        for (var m = U(2023, 1, 1); m < U(2025, 1, 1); m = m.AddMonths(1)) { all.Add(T(m)); all.Add(T(m.AddDays(14))); }
        var kept = Kept(all, new RetentionRules { Monthly = 2, Yearly = 2 }, U(2025, 1, 1));
        // Monthly: Dec 15 and Nov 15 2024; yearly: the newest of 2024 (Dec 15, already kept) and of 2023 (Dec 15).
        Assert.Equal(new[] { "timeline-20241215-0000", "timeline-20241115-0000", "timeline-20231215-0000" }.ToHashSet(), kept);
    }

    [Fact]
    public void PeriodsWithoutSnapshotsDoNotCountSoAnOutageDeletesNothingExtra()
    {
        // Snapshots at 08:00, 09:00, then the service was down for three days, then 10:00 on day 4.
        var all = new List<RetentionSnapshot> { T(U(2026, 3, 1, 8)), T(U(2026, 3, 1, 9)), T(U(2026, 3, 4, 10)) };
        var kept = Kept(all, new RetentionRules { Hourly = 3 }, U(2026, 3, 4, 11));
        Assert.Equal(3, kept.Count);
    }

    [Fact]
    public void WithoutAnyTimelineCountTimelineSnapshotsAreNotThinned()
    {
        var all = Hourly(U(2026, 1, 1), U(2026, 1, 3));
        Assert.Empty(RetentionPolicy.Plan(all, new RetentionRules { MaxSnapshots = 100 }, U(2026, 1, 3)));
        // Zero counts set explicitly: every timeline snapshot goes.
        Assert.Equal(all.Count, RetentionPolicy.Plan(all, new RetentionRules { Hourly = 0 }, U(2026, 1, 3)).Count);
    }

    [Fact]
    public void HeldAndHandMadeAndForeignKindSnapshotsAreNeverDeletedByAnyRule()
    {
        var now = U(2026, 5, 1);
        var all = new List<RetentionSnapshot>
        {
            K("by-hand", null, U(2020, 1, 1)),
            K("other-kind", "backup", U(2020, 1, 2)),
            T(U(2020, 1, 3), held: true),
            K("held-pre", "pre", U(2020, 1, 4), held: true),
            T(U(2026, 4, 30)),
        };
        var plan = RetentionPolicy.Plan(all, new RetentionRules { Hourly = 0, Daily = 0, MaxSnapshots = 0, MinFreePercent = 100 }, now, new PoolSpace(1000, 0));
        Assert.Equal(["timeline-20260430-0000"], plan.Select(d => d.Name));
    }

    [Fact]
    public void MaxSnapshotsDeletesTheOldestManagedOnesCountingHeldOnesButSkippingThem()
    {
        var all = new List<RetentionSnapshot>
        {
            K("pre-1", "pre", U(2026, 1, 1, 1)),
            K("post-1", "post", U(2026, 1, 1, 2), held: true),
            K("hand", null, U(2026, 1, 1, 3)),
            T(U(2026, 1, 1, 4)),
            K("pre-2", "pre", U(2026, 1, 1, 5)),
            K("post-2", "post", U(2026, 1, 1, 6)),
        };
        // Five managed (the hand-made one is not counted), max 2: delete three, oldest first, skipping the held one.
        var plan = RetentionPolicy.Plan(all, new RetentionRules { MaxSnapshots = 2 }, U(2026, 1, 2));
        Assert.Equal(["pre-1", "timeline-20260101-0400", "pre-2"], plan.Select(d => d.Name));
        Assert.All(plan, d => Assert.Equal(RetentionRule.MaxSnapshots, d.Rule));
        Assert.Contains("max-snapshots=2", plan[0].Reason);
    }

    [Fact]
    public void MinFreeDeletesOldestFirstUntilTheEstimateReachesTheThresholdEvenKeptOnes()
    {
        var all = Hourly(U(2026, 2, 1, 0), U(2026, 2, 1, 6)).Select(s => s with { ExclusiveBytes = 100 }).ToList();
        all.Insert(0, K("by-hand", null, U(2026, 1, 1), excl: 10_000));
        // Pool of 10000 bytes, 150 free, 5% wanted = 500: needs four deletions of 100 bytes (150 -> 550).
        var plan = RetentionPolicy.Plan(all, new RetentionRules { Hourly = 24, MinFreePercent = 5 }, U(2026, 2, 1, 6), new PoolSpace(10_000, 150));
        Assert.Equal(["timeline-20260201-0000", "timeline-20260201-0100", "timeline-20260201-0200", "timeline-20260201-0300"], plan.Select(d => d.Name));
        Assert.All(plan, d => Assert.Equal(RetentionRule.MinFree, d.Rule));
        Assert.Contains("below min-free-percent=5", plan[0].Reason);
        // Enough free space: nothing.
        Assert.Empty(RetentionPolicy.Plan(all, new RetentionRules { Hourly = 24, MinFreePercent = 5 }, U(2026, 2, 1, 6), new PoolSpace(10_000, 500)));
    }

    [Fact]
    public void RulesApplyInOrderTimelineThenMaxThenSpaceWithoutDeletingTwice()
    {
        var all = Hourly(U(2026, 6, 1, 0), U(2026, 6, 1, 5)).Select(s => s with { ExclusiveBytes = 10 }).ToList();
        all.Add(K("pre-a", "pre", U(2026, 6, 1, 5, 30), excl: 10));
        all.Add(K("post-a", "post", U(2026, 6, 1, 5, 40), excl: 10));
        var plan = RetentionPolicy.Plan(all, new RetentionRules { Hourly = 3, MaxSnapshots = 4, MinFreePercent = 50 }, U(2026, 6, 1, 6), new PoolSpace(100, 35));
        // Timeline: hours 00 and 01 go. Then 5 managed remain (02, 03, 04, pre-a, post-a): max 4 deletes 02.
        // Space: 35% free, 50% wanted: 03 (45%), then 04 (55%).
        Assert.Equal(new[] { ("timeline-20260601-0000", RetentionRule.Timeline), ("timeline-20260601-0100", RetentionRule.Timeline),
            ("timeline-20260601-0200", RetentionRule.MaxSnapshots), ("timeline-20260601-0300", RetentionRule.MinFree), ("timeline-20260601-0400", RetentionRule.MinFree) },
            plan.Select(d => (d.Name, d.Rule)));
    }

    /// <summary>A pre/post pair as <c>cow snapshot wrap</c> makes it: the post names its pre.</summary>
    private static (RetentionSnapshot Pre, RetentionSnapshot Post) Pair(string name, DateTime t, bool preHeld = false, bool postHeld = false, long excl = 0) =>
        (new RetentionSnapshot($"{name}-pre", t, preHeld, new Dictionary<string, string> { ["kind"] = "pre", ["command"] = name }, excl),
         new RetentionSnapshot($"{name}-post", t.AddMinutes(1), postHeld, new Dictionary<string, string> { ["kind"] = "post", ["pre"] = $"{name}-pre", ["command"] = name }, excl));

    [Fact]
    public void MaxSnapshotsDeletesAPreWithItsPostAndKeepsAPairWithAHeldHalfWhole()
    {
        var (a, b, c) = (Pair("a", U(2026, 3, 1, 1)), Pair("b", U(2026, 3, 1, 2), postHeld: true), Pair("c", U(2026, 3, 1, 3)));
        var all = new List<RetentionSnapshot> { a.Pre, a.Post, b.Pre, b.Post, c.Pre, c.Post, T(U(2026, 3, 1, 4)) };
        // Seven managed, max 4: pair a goes whole (5 left); pair b has a held post, so it stays whole; pair c goes
        // (3 left: one fewer than 4, as a pair is never split).
        var plan = RetentionPolicy.Plan(all, new RetentionRules { MaxSnapshots = 4 }, U(2026, 3, 2));
        Assert.Equal(["a-pre", "a-post", "c-pre", "c-post"], plan.Select(d => d.Name));
        Assert.Equal([false, true, false, true], plan.Select(d => d.WithPrevious));
        Assert.Contains("deleted with it", plan[1].Reason);
        // A post whose pre is gone already (deleted by hand) is an ordinary managed snapshot.
        plan = RetentionPolicy.Plan([a.Post, T(U(2026, 3, 1, 4))], new RetentionRules { MaxSnapshots = 1 }, U(2026, 3, 2));
        Assert.Equal(["a-post"], plan.Select(d => d.Name));
    }

    [Fact]
    public void MinFreeDeletesPairsWholeAndCountsBothHalves()
    {
        var (a, b) = (Pair("a", U(2026, 3, 1, 1), excl: 100), Pair("b", U(2026, 3, 1, 2), excl: 100));
        // Pool of 1000 bytes, 150 free, 25% wanted: pair a frees 200 (350 = 35%), so pair b stays.
        var plan = RetentionPolicy.Plan([a.Pre, a.Post, b.Pre, b.Post], new RetentionRules { MinFreePercent = 25 }, U(2026, 3, 2), new PoolSpace(1000, 150));
        Assert.Equal(["a-pre", "a-post"], plan.Select(d => d.Name));
        Assert.All(plan, d => Assert.Equal(RetentionRule.MinFree, d.Rule));
    }

    [Fact]
    public void SnapshotsDatedAfterNowAreLeftAlone()
    {
        var all = new List<RetentionSnapshot> { T(U(2026, 1, 1, 10)), T(U(2026, 1, 1, 12)) };
        var plan = RetentionPolicy.Plan(all, new RetentionRules { Hourly = 0, MaxSnapshots = 0 }, U(2026, 1, 1, 11));
        Assert.Equal(["timeline-20260101-1000"], plan.Select(d => d.Name));
    }
}
