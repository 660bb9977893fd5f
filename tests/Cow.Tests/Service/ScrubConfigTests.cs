using Cow.Cli.Service;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>The scrub keys of a <c>[pool NAME]</c> section (<c>scrub-every</c>, <c>scrub-rate</c>) and the scrub
/// scheduler's boundaries.</summary>
[Trait("Tier", "unit")]
public class ScrubConfigTests
{
    private static ServeConfig? Parse(string keys, out List<ConfigError> errors) =>
        ServeConfig.Parse($"[pool a]\npath = /p\nmountpoint = /m\n{keys}", "x.conf", out errors);

    [Fact]
    public void ScrubKeysGiveASchedule()
    {
        Assert.Null(Parse("", out var e)!.Pools[0].Scrub);
        Assert.Empty(e);
        Assert.Null(Parse("scrub-every = off\nscrub-rate = 5\n", out e)!.Pools[0].Scrub);
        Assert.Equal(new ScrubSchedule(TimeSpan.FromDays(7), 64L << 20), Parse("scrub-every = 7d\n", out e)!.Pools[0].Scrub);
        Assert.Equal(new ScrubSchedule(TimeSpan.FromDays(14), 0), Parse("scrub-every = 2w\nscrub-rate = 0\n", out e)!.Pools[0].Scrub);
        Assert.Equal(new ScrubSchedule(TimeSpan.FromHours(12), (long)(2.5 * (1 << 20))), Parse("scrub-every = 12H\nscrub-rate = 2.5\n", out e)!.Pools[0].Scrub);
        Assert.Equal(new ScrubSchedule(TimeSpan.FromMinutes(90), 64L << 20), Parse("scrub-every = 90m\n", out e)!.Pools[0].Scrub);
        Assert.Empty(e);
    }

    [Fact]
    public void BadScrubValuesAreNamedWithTheirPlace()
    {
        foreach (var bad in new[] { "weekly", "7", "0d", "-1d", "7y", "d", "5000w" })
        {
            Assert.Null(Parse($"scrub-every = {bad}\n", out var errors));
            Assert.Contains($"x.conf:4:15: scrub-every: '{bad}' is not an interval", string.Join("\n", errors));
        }
        foreach (var bad in new[] { "fast", "-1", "NaN", "2000000" })
        {
            Assert.Null(Parse($"scrub-every = 1d\nscrub-rate = {bad}\n", out var errors));
            Assert.Contains($"x.conf:5:14: scrub-rate must be a number of MiB per second from 0 (unlimited) to 1048576, not '{bad}'", string.Join("\n", errors));
        }
    }

    [Fact]
    public void BoundariesAreWholeMultiplesOfTheIntervalSinceTheEpoch()
    {
        var now = new DateTime(2026, 3, 4, 10, 30, 0, DateTimeKind.Utc);   // a Wednesday
        Assert.Equal(new DateTime(2026, 3, 5, 0, 0, 0, DateTimeKind.Utc), ScrubScheduler.NextBoundary(now, TimeSpan.FromDays(1)));
        Assert.Equal(new DateTime(2026, 3, 5, 0, 0, 0, DateTimeKind.Utc), ScrubScheduler.NextBoundary(now, TimeSpan.FromDays(7)));   // Thursday
        Assert.Equal(new DateTime(2026, 3, 4, 11, 0, 0, DateTimeKind.Utc), ScrubScheduler.NextBoundary(now, TimeSpan.FromHours(1)));
        // Strictly after: at a boundary, the next one.
        Assert.Equal(new DateTime(2026, 3, 6, 0, 0, 0, DateTimeKind.Utc), ScrubScheduler.NextBoundary(new DateTime(2026, 3, 5, 0, 0, 0, DateTimeKind.Utc), TimeSpan.FromDays(1)));
        Assert.Equal(DayOfWeek.Thursday, ScrubScheduler.NextBoundary(now, TimeSpan.FromDays(7)).DayOfWeek);
        Assert.Equal("1w", ScrubSchedule.Describe(TimeSpan.FromDays(7)));
        Assert.Equal("3d", ScrubSchedule.Describe(TimeSpan.FromDays(3)));
        Assert.Equal("90m", ScrubSchedule.Describe(TimeSpan.FromMinutes(90)));
        Assert.Equal("2w", ScrubSchedule.Describe(TimeSpan.FromDays(14)));
    }
}
