using System.Globalization;

namespace Cow.Cli.Service;

/// <summary>The scheduled scrub of one pool (<c>scrub-every</c>, <c>scrub-rate</c> in its <c>[pool NAME]</c> section),
/// run by <see cref="ScrubScheduler"/>: every <see cref="Every"/>, reading at most <see cref="RateBytesPerSecond"/>
/// (0: unlimited). Immutable.</summary>
public sealed record ScrubSchedule(TimeSpan Every, long RateBytesPerSecond)
{
    /// <summary>Units of <c>scrub-every</c>: minutes, hours, days, weeks.</summary>
    private static readonly (char Unit, TimeSpan Length)[] Units =
        [('m', TimeSpan.FromMinutes(1)), ('h', TimeSpan.FromHours(1)), ('d', TimeSpan.FromDays(1)), ('w', TimeSpan.FromDays(7))];

    /// <summary>Parses an interval such as <c>7d</c>, <c>12h</c>, <c>2w</c>, <c>30m</c> (a whole number and one unit:
    /// m, h, d, w; at least a minute, at most 10 years); null with <paramref name="problem"/> set otherwise.</summary>
    public static TimeSpan? ParseInterval(string text, out string? problem)
    {
        problem = null;
        var t = text.Trim();
        if (t.Length >= 2 && long.TryParse(t[..^1], NumberStyles.None, CultureInfo.InvariantCulture, out long n) && n >= 1)
            foreach (var (unit, length) in Units)
                if (unit == char.ToLowerInvariant(t[^1]) && n <= TimeSpan.FromDays(3650).Ticks / length.Ticks)
                    return length * n;
        problem = $"'{text}' is not an interval: a whole number and a unit, m (minutes), h (hours), d (days) or w (weeks), e.g. 7d; at most 10 years; or off";
        return null;
    }

    /// <summary>An interval as the configuration writes it (<c>7d</c>, <c>1w</c>, <c>90m</c>).</summary>
    public static string Describe(TimeSpan every)
    {
        foreach (var (unit, length) in Units.Reverse())
            if (every.Ticks % length.Ticks == 0) return $"{every.Ticks / length.Ticks}{unit}";
        return every.ToString();
    }

    /// <summary>A rate for the log: "at most N MiB/s" or "unlimited rate".</summary>
    public static string DescribeRate(long bytesPerSecond) =>
        bytesPerSecond == 0 ? "unlimited rate" : $"at most {bytesPerSecond / (double)(1 << 20):0.##} MiB/s";
}

/// <summary>The scrub keys of a <c>[pool NAME]</c> section.</summary>
public sealed partial class ServeConfig
{
    /// <summary><c>scrub-every</c> (an interval, or <c>off</c>, the default) and <c>scrub-rate</c> (MiB/s, default 64,
    /// 0: unlimited) of a [pool NAME] section: null when off. Each bad value is reported at its value.</summary>
    private static ScrubSchedule? Scrub(Section s, Action<int, int, string> err)
    {
        long rate = Core.FileSystem.ScrubSettings.DefaultRateBytesPerSecond;
        if (s.Entries.TryGetValue("scrub-rate", out var re))
        {
            if (double.TryParse(re.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double mib) && double.IsFinite(mib) && mib >= 0 && mib <= 1 << 20)
                rate = Math.Max(mib > 0 ? 1 : 0, (long)Math.Round(mib * (1 << 20)));
            else err(re.Line, re.ValueCol, $"scrub-rate must be a number of MiB per second from 0 (unlimited) to {1 << 20}, not '{re.Value}'");
        }
        if (!s.Entries.TryGetValue("scrub-every", out var e) || e.Value.ToLowerInvariant() is "off" or "no") return null;
        if (ScrubSchedule.ParseInterval(e.Value, out var problem) is { } every) return new ScrubSchedule(every, rate);
        err(e.Line, e.ValueCol, $"scrub-every: {problem}");
        return null;
    }
}
