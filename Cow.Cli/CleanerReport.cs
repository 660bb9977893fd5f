using System.Globalization;
using System.Text.Json.Nodes;
using Cow.Core.FileSystem;
using static Cow.Cli.CliCommon;

namespace Cow.Cli;

/// <summary>What the log cleaner did, as JSON and as text: the <c>cleaner</c> object of <c>cow df</c> and <c>cow status</c>
/// (<see cref="StatusObject"/>), <c>cow clean</c>'s document (<see cref="CleanDocument"/>), and their lines for people
/// (made from the JSON, so that an answer of the control socket prints as a local one does). Every count and byte
/// figure is a JSON integer; percentages and seconds are numbers. Stateless: thread-safe.</summary>
internal static class CleanerReport
{
    private static double Percent(long free, long data) => data <= 0 ? 0 : Math.Round(100.0 * free / data, 2);

    /// <summary>{background, state, blocks_moved, bytes_moved, segments_cleaned, passes (totals since the pool was
    /// opened), log_data_blocks, log_free_blocks, log_free_bytes, log_free_percent, last_pass: null or
    /// {blocks_moved, bytes_moved, segments_cleaned, batches, seconds, stop, log_free_blocks, log_free_percent}}.</summary>
    public static JsonObject StatusObject(CleanerStatus s, long blockSize) => new()
    {
        ["background"] = s.Background, ["state"] = s.State,
        ["blocks_moved"] = s.BlocksMoved, ["bytes_moved"] = s.BlocksMoved * blockSize, ["segments_cleaned"] = s.SegmentsCleaned, ["passes"] = s.Passes,
        ["log_data_blocks"] = s.LogDataBlocks, ["log_free_blocks"] = s.LogFreeBlocks, ["log_free_bytes"] = s.LogFreeBlocks * blockSize,
        ["log_free_percent"] = Percent(s.LogFreeBlocks, s.LogDataBlocks),
        ["last_pass"] = s.LastPass is { } p ? PassObject(p, blockSize) : null,
    };

    private static JsonObject PassObject(CleanerPass p, long blockSize) => new()
    {
        ["blocks_moved"] = p.BlocksMoved, ["bytes_moved"] = p.BlocksMoved * blockSize, ["segments_cleaned"] = p.SegmentsCleaned, ["batches"] = p.Batches,
        ["seconds"] = Math.Round(p.Seconds, 3), ["stop"] = p.Stop, ["log_free_blocks"] = p.LogFreeBlocks, ["log_free_percent"] = Percent(p.LogFreeBlocks, p.LogDataBlocks),
    };

    /// <summary>The configured settings of a mount, for <c>cow status</c>: null when the cleaner is off, else
    /// {start_percent, stop_percent, share}.</summary>
    public static JsonObject? SettingsObject(CleanerSettings? s) => s == null ? null : new JsonObject
    {
        ["start_percent"] = s.StartBelowFreePercent, ["stop_percent"] = s.StopAtFreePercent, ["share"] = s.Share,
    };

    /// <summary><c>cow clean</c>'s document: {until_percent, stop, blocks_moved, bytes_moved, segments_cleaned, batches,
    /// seconds, block_size, log_data_blocks, log_free_blocks_before, log_free_blocks_after, log_free_bytes_before,
    /// log_free_bytes_after, log_free_percent_before, log_free_percent_after}.</summary>
    public static JsonObject CleanDocument(double until, CleanerStatus before, CleanerPass pass, long blockSize) => new()
    {
        ["until_percent"] = until, ["stop"] = pass.Stop,
        ["blocks_moved"] = pass.BlocksMoved, ["bytes_moved"] = pass.BlocksMoved * blockSize, ["segments_cleaned"] = pass.SegmentsCleaned,
        ["batches"] = pass.Batches, ["seconds"] = Math.Round(pass.Seconds, 3), ["block_size"] = blockSize, ["log_data_blocks"] = pass.LogDataBlocks,
        ["log_free_blocks_before"] = before.LogFreeBlocks, ["log_free_blocks_after"] = pass.LogFreeBlocks,
        ["log_free_bytes_before"] = before.LogFreeBlocks * blockSize, ["log_free_bytes_after"] = pass.LogFreeBlocks * blockSize,
        ["log_free_percent_before"] = Percent(before.LogFreeBlocks, before.LogDataBlocks), ["log_free_percent_after"] = Percent(pass.LogFreeBlocks, pass.LogDataBlocks),
    };

    /// <summary>A pass that did what was asked or all it could ("reached", "nothing to move"): exit 0; otherwise 1.</summary>
    public static bool Succeeded(string stop) => stop is "reached" or "nothing to move";

    /// <summary>Why a pass stopped, in words.</summary>
    public static string StopText(string stop, double? until = null) => stop switch
    {
        "reached" => until is { } u ? $"reached: {Pct(u)} % of the log is free" : "reached its free-log target",
        "nothing to move" => "nothing more to move (no log segment whose cleaning frees space)",
        "base full" => "the base device is full: there is no room to move more data to",
        "cancelled" => "cancelled (what moved before is committed)",
        "frozen" => "the pool is frozen (it takes no commits now)",
        _ => stop,
    };

    private static string Pct(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
    /// <summary>A number of a document made here (a long or a double) or parsed from a control-socket answer.</summary>
    private static double D(JsonNode? n) => n is not JsonValue v ? 0
        : v.TryGetValue(out double d) ? d : v.TryGetValue(out long l) ? l : v.TryGetValue(out int i) ? i : 0;

    private static long L(JsonNode? n) => n is not JsonValue v ? 0
        : v.TryGetValue(out long l) ? l : v.TryGetValue(out int i) ? i : (long)D(n);

    /// <summary>cow clean's lines from its document.</summary>
    public static IEnumerable<string> CleanLines(JsonObject d)
    {
        long bs = L(d["block_size"]), data = L(d["log_data_blocks"]);
        long segs = L(d["segments_cleaned"]), batches = L(d["batches"]);
        yield return $"moved {Bytes(L(d["bytes_moved"]))} ({L(d["blocks_moved"]):N0} blocks) off the log in {D(d["seconds"]):0.0##} s: "
                     + $"{segs:N0} segment{(segs == 1 ? "" : "s")} cleaned in {batches:N0} batch{(batches == 1 ? "" : "es")}";
        yield return $"stopped: {StopText((string?)d["stop"] ?? "", D(d["until_percent"]))}";
        yield return $"log free: {Pct(D(d["log_free_percent_before"]))} % -> {Pct(D(d["log_free_percent_after"]))} % "
                     + $"({Bytes(L(d["log_free_bytes_before"]))} -> {Bytes(L(d["log_free_bytes_after"]))} of {Bytes(data * bs)})";
    }

    /// <summary>The lines of the <c>cleaner</c> object (cow df, cow status): what it does now, its totals, the log's
    /// free share, and the last pass.</summary>
    public static IEnumerable<string> StatusLines(JsonObject c)
    {
        long passes = L(c["passes"]), segs = L(c["segments_cleaned"]);
        var running = (bool?)c["background"] == true ? "background cleaner running" : "no background cleaner";
        yield return $"cleaner: {running}, {(string?)c["state"]}; log {Pct(D(c["log_free_percent"]))} % free ({Bytes(L(c["log_free_bytes"]))}); "
                     + $"moved {Bytes(L(c["bytes_moved"]))} off the log in {passes:N0} pass{(passes == 1 ? "" : "es")} ({segs:N0} segment{(segs == 1 ? "" : "s")} cleaned) since the pool was opened";
        if (c["last_pass"] is JsonObject p)
            yield return $"cleaner's last pass: moved {Bytes(L(p["bytes_moved"]))} in {D(p["seconds"]):0.0##} s, {L(p["segments_cleaned"]):N0} segment(s) cleaned, "
                         + $"stopped: {StopText((string?)p["stop"] ?? "")}; log {Pct(D(p["log_free_percent"]))} % free after it";
    }

    /// <summary>A short form for a table cell (cow status): state, log free, bytes moved.</summary>
    public static string Cell(JsonObject? c) => c == null
        ? ""
        : $"{(string?)c["state"]}{((bool?)c["background"] == true ? "" : " (not running)")}, log {Pct(D(c["log_free_percent"]))} % free, moved {Bytes(L(c["bytes_moved"]))}";
}
