namespace Cow.Core.FileSystem;

/// <summary>How the background cleaner runs (cow mount and cow serve; <c>cow clean</c> runs one pass now).</summary>
public sealed record CleanerSettings
{
    /// <summary>A pass starts when less than this share of the log device's data blocks is free (percent).</summary>
    public double StartBelowFreePercent { get; init; } = 25;
    /// <summary>A background pass stops once this share of the log is free (percent).</summary>
    public double StopAtFreePercent { get; init; } = 40;
    /// <summary>Share of the time the cleaner may spend moving data (0 &lt; share ≤ 1): after a batch that took
    /// t, it pauses t × (1 − share) / share. Below <see cref="UrgentBelowFreePercent"/> it runs flat out.</summary>
    public double Share { get; init; } = 0.25;
    /// <summary>Below this share of free log (percent) the cleaner ignores <see cref="Share"/>.</summary>
    public double UrgentBelowFreePercent { get; init; } = 5;
    /// <summary>How often the background cleaner looks at the log when it is idle.</summary>
    public TimeSpan Poll { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A clear message when a value is out of range, else null.</summary>
    public string? Problem() =>
        StartBelowFreePercent is < 0 or > 100 ? $"cleaner start threshold {StartBelowFreePercent} is not a percentage"
        : StopAtFreePercent is < 0 or > 100 ? $"cleaner stop threshold {StopAtFreePercent} is not a percentage"
        : StopAtFreePercent < StartBelowFreePercent ? $"cleaner stop threshold {StopAtFreePercent} % is below its start threshold {StartBelowFreePercent} %"
        : Share is <= 0 or > 1 ? $"cleaner share {Share} is not in (0, 1]"
        : null;
}

/// <summary>What one cleaning pass did.</summary>
/// <param name="Stop">Why it stopped: "reached" (the log has the free share asked for), "nothing to move"
/// (no segment whose cleaning frees space), "base full" (no room to move to), "cancelled", "frozen",
/// "failed: ..." (an I/O error or a failed commit; nothing of the batch was committed).</param>
public sealed record CleanerPass(long BlocksMoved, long SegmentsCleaned, long Batches, double Seconds, string Stop,
    long LogFreeBlocks, long LogDataBlocks);

/// <summary>The cleaner's state (cow status, cow df): whether the background cleaner runs, what it is doing,
/// totals since the pool was opened and the last pass.</summary>
public sealed record CleanerStatus(bool Background, string State, long BlocksMoved, long SegmentsCleaned, long Passes,
    long LogFreeBlocks, long LogDataBlocks, CleanerPass? LastPass);
