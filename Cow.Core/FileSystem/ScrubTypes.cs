namespace Cow.Core.FileSystem;

/// <summary>How a scrub runs (<see cref="Pool.Scrub"/>: <c>cow scrub</c>, and <c>cow serve</c>'s <c>scrub-every</c>).</summary>
public sealed record ScrubSettings
{
    /// <summary>The default <see cref="RateBytesPerSecond"/>: 64 MiB/s.</summary>
    public const long DefaultRateBytesPerSecond = 64L << 20;

    /// <summary>Bytes read per second at most, on average over the pass (the scrub sleeps between segments to keep
    /// to it); 0: as fast as the devices go.</summary>
    public long RateBytesPerSecond { get; init; } = DefaultRateBytesPerSecond;

    /// <summary>A clear message when a value is out of range, else null.</summary>
    public string? Problem() => RateBytesPerSecond < 0 ? $"scrub rate {RateBytesPerSecond} bytes/s is negative (0: unlimited)" : null;
}

/// <summary>Where a scrub is: blocks checked so far, of about how many (the blocks referenced when it began),
/// and the damaged blocks found so far.</summary>
public readonly record struct ScrubProgress(long BlocksChecked, long BlocksToCheck, long DamagedBlocks);

/// <summary>A path at which a damaged block is seen: in the live tree (<see cref="Snapshot"/> null) or in a snapshot.</summary>
public sealed record ScrubPath(string? Snapshot, string Path);

/// <summary>
/// One damaged mapping: device block <see cref="Block"/> of device <see cref="Device"/> (a cookie: 1 base, 2 log) is
/// file offset <see cref="Offset"/> of inode <see cref="Ino"/>, and its data does not match the checksum recorded
/// for it (<see cref="Problem"/> says so, or names the read error). <see cref="Paths"/>: the file's paths in the live
/// tree and in each snapshot that sees this version of its data; <see cref="PathsText"/> the same as one line (as
/// <c>cow fsck</c> writes it). A block shared by several files (range clones) gives one entry per file and offset.
/// </summary>
public sealed record ScrubDamage(uint Device, long Block, long Ino, long Offset, string Problem, IReadOnlyList<ScrubPath> Paths, string PathsText)
{
    public override string ToString() => $"device {Device} block {Block}: inode {Ino} offset {Offset}: {Problem} ({PathsText})";
}

/// <summary>
/// What one scrub did. <see cref="BlocksChecked"/> distinct device blocks were read and compared with their
/// checksums (<see cref="BytesChecked"/> bytes) in <see cref="Seconds"/>. <see cref="Stop"/>: "complete" (every
/// block referenced by the metadata committed when the scrub began, or since, was checked), "cancelled", "closed"
/// (the pool was closed), "busy" (another scrub of this pool runs: nothing was checked). <see cref="DamagedBlocks"/>
/// device blocks were damaged; <see cref="Damaged"/> lists each damaged mapping (at most <see cref="MaxListed"/>).
/// </summary>
public sealed record ScrubReport(long BlocksChecked, long BytesChecked, double Seconds, string Stop, long DamagedBlocks, IReadOnlyList<ScrubDamage> Damaged)
{
    /// <summary>Most damaged mappings listed in one report (the count goes on).</summary>
    public const int MaxListed = 10_000;

    /// <summary>What a report with damage tells its reader: Cow has no second copy to repair from.</summary>
    public const string NoRepair = "Cow keeps no redundant copy of data, so nothing was repaired: restore each damaged file from a backup, "
        + "or from an older snapshot that does not share the damaged block.";

    /// <summary>What no scrub checks: data written while it runs.</summary>
    public const string NotChecked = "Blocks written after the scrub began (not committed when it read their segment) are not checked in this pass.";

    public bool Complete => Stop == "complete";

    /// <summary>No damage found (in what was checked).</summary>
    public bool Clean => DamagedBlocks == 0;
}
