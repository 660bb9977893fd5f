using System.Globalization;
using Cow.Core.FileSystem;

namespace Cow.Cli;

/// <summary>The background cleaner's settings as <c>cow mount</c> (<c>--cleaner on|off</c>, <c>--cleaner-start</c>,
/// <c>--cleaner-stop</c>, <c>--cleaner-share</c>) and a <c>[pool NAME]</c> section of <c>cow serve</c>'s configuration
/// (<c>cleaner</c>, <c>cleaner-start</c>, <c>cleaner-stop</c>, <c>cleaner-share</c>) give them: parsing with a message
/// naming the option or key, the defaults (<see cref="CleanerSettings"/>'s; the stop threshold, when not given, is
/// the default or the start threshold when that is higher), and one line describing them. Stateless: thread-safe.</summary>
public static class CleanerOptions
{
    private static readonly CleanerSettings Defaults = new();

    /// <summary>A percentage from 0 to 100 ("30", "12.5", "30%"); null and a message naming <paramref name="what"/> otherwise.</summary>
    public static double? Percent(string text, string what, out string? problem)
    {
        problem = null;
        var t = text.Trim();
        if (t.EndsWith('%')) t = t[..^1].TrimEnd();
        if (double.TryParse(t, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && v <= 100) return v;
        problem = $"{what} must be a percentage from 0 to 100, not '{text}'";
        return null;
    }

    /// <summary>A share of the time above 0 and at most 1 ("0.25", or "25%"); null and a message naming <paramref name="what"/> otherwise.</summary>
    public static double? Share(string text, string what, out string? problem)
    {
        problem = null;
        var t = text.Trim();
        bool percent = t.EndsWith('%');
        if (percent) t = t[..^1].TrimEnd();
        if (double.TryParse(t, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v))
        {
            if (percent) v /= 100;
            if (v is > 0 and <= 1) return v;
        }
        problem = $"{what} must be a fraction of the time above 0 and at most 1 (e.g. 0.25, or 25%), not '{text}'";
        return null;
    }

    /// <summary>The settings from the values given (null: the default). A stop threshold below the start threshold
    /// is refused (<paramref name="problem"/>, naming <paramref name="startName"/> and <paramref name="stopName"/>).</summary>
    public static CleanerSettings? Settings(double? start, double? stop, double? share, string startName, string stopName, out string? problem)
    {
        var s = Defaults with { StartBelowFreePercent = start ?? Defaults.StartBelowFreePercent, Share = share ?? Defaults.Share };
        s = s with { StopAtFreePercent = stop ?? Math.Max(Defaults.StopAtFreePercent, s.StartBelowFreePercent) };
        problem = s.StopAtFreePercent < s.StartBelowFreePercent
            ? $"{stopName} {Num(s.StopAtFreePercent)} % is below {startName} {Num(s.StartBelowFreePercent)} %: a background pass starts when less than the start threshold of the log is free and runs until the stop threshold is"
            : s.Problem();
        return problem == null ? s : null;
    }

    /// <summary>One line for logs and <c>cow status</c>: "off", or the thresholds and share.</summary>
    public static string Describe(CleanerSettings? s) => s == null
        ? "off"
        : $"on (starts below {Num(s.StartBelowFreePercent)} % free log, stops at {Num(s.StopAtFreePercent)} %, share {Num(s.Share)})";

    internal static string Num(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
}
