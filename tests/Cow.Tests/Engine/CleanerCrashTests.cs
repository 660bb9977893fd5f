using System.Diagnostics;
using Cow.Core.Devices;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Engine;

/// <summary>
/// Power cuts at every write of a cleaning pass (format.md 6, "Relocation"): on every device the pass writes
/// (the copies on the base device, the metadata file and its log), the power goes after the k-th write, or the
/// k-th write is torn, or the unflushed writes survive at random. After the reboot fsck is clean and every file
/// of the live tree, the snapshots and the clone reads back exactly as before the pass; another pass then
/// completes on the recovered pool and changes nothing either.
/// </summary>
[Trait("Tier", "engine")]
public class CleanerCrashTests(ITestOutputHelper output)
{
    public enum Cut { AfterWrite, TornWrite, KeepRandom }

    private static readonly string[] Devices = ["base", "log", "meta", "meta-log"];

    private static FaultInjectingBlockDevice Dev(MemoryPool p, string device) => device switch
    {
        "base" => p.BaseFault!,
        "log" => p.LogFault!,
        "meta" => p.MetaFault!,
        _ => p.MetaLogFault!,
    };

    private static MemoryPool Aged() => LogCleanerTests.AgedPool(faulty: true);

    /// <summary>Writes each device receives during a fault-free pass, and what every view reads.</summary>
    private static readonly Lazy<(Dictionary<string, long> Writes, string Contents)> FaultFree = new(() =>
    {
        using var p = Aged();
        string contents = LogCleanerTests.Contents(p);
        var before = Devices.ToDictionary(d => d, d => Dev(p, d).TotalWrites);
        var pass = p.Engine.CleanLog(100);
        if (pass.BlocksMoved == 0) throw new InvalidOperationException($"the fault-free pass moved nothing: {pass}");
        var writes = Devices.ToDictionary(d => d, d => Dev(p, d).TotalWrites - before[d]);
        if (LogCleanerTests.Contents(p) != contents) throw new InvalidOperationException("the fault-free pass changed what the views read");
        return (writes, contents);
    });

    private static string? Run(string device, Cut cut, int k)
    {
        using var p = Aged();
        string where = $"{cut} k={k} on '{device}'";
        var mode = cut == Cut.KeepRandom ? PowerCutMode.KeepRandomSubset : PowerCutMode.DropUnflushed;
        switch (cut)
        {
            case Cut.TornWrite: Dev(p, device).TearWriteNumber(k); break;
            default: Dev(p, device).CutPowerAfterWrites(k, mode, k); break;
        }
        string stop;
        try { stop = p.Engine.CleanLog(100).Stop; }
        catch (IOException e) { stop = "threw " + e.Message; }
        catch (Exception e) { return $"{where}: the pass threw {e.GetType().Name} (only IOException is acceptable): {e}"; }
        try
        {
            p.PowerCutAndReboot(mode, k + 1);
            var fsck = p.Pool.Fsck();
            if (!fsck.Clean) return $"{where} (pass: {stop}): fsck after reboot:\n{fsck}";
            string found = LogCleanerTests.Contents(p);
            if (found != FaultFree.Value.Contents) return $"{where} (pass: {stop}): after reboot the views read\n{found}\nexpected\n{FaultFree.Value.Contents}";
            var again = p.Engine.CleanLog(100);
            fsck = p.Pool.Fsck();
            if (!fsck.Clean) return $"{where}: fsck after a second pass ({again}):\n{fsck}";
            if (LogCleanerTests.Contents(p) != FaultFree.Value.Contents) return $"{where}: a second pass changed what the views read";
            return null;
        }
        catch (Exception e) { return $"{where} (pass: {stop}): recovery threw {e}"; }
    }

    [Theory]
    [InlineData("base", Cut.AfterWrite)]
    [InlineData("meta", Cut.AfterWrite)]
    [InlineData("meta-log", Cut.AfterWrite)]
    [InlineData("base", Cut.TornWrite)]
    [InlineData("meta", Cut.TornWrite)]
    [InlineData("meta-log", Cut.TornWrite)]
    [InlineData("base", Cut.KeepRandom)]
    [InlineData("meta-log", Cut.KeepRandom)]
    public void A_power_cut_at_every_write_of_a_pass_loses_and_changes_nothing(string device, Cut cut)
    {
        long writes = FaultFree.Value.Writes[device];
        output.WriteLine(string.Join(", ", FaultFree.Value.Writes.Select(kv => $"{kv.Key}: {kv.Value} writes")));
        Assert.True(writes > 0, $"a pass writes nothing on '{device}': no cut point to test");
        var clock = Stopwatch.StartNew();
        var failures = new List<string>();
        for (int k = 1; k <= writes + 1; k++)
            if (Run(device, cut, k) is { } f) failures.Add(f);
        output.WriteLine($"{cut} on {device}: {writes + 1} cut points, {failures.Count} failed, {clock.ElapsedMilliseconds} ms");
        Assert.True(failures.Count == 0, $"{failures.Count} of {writes + 1} cut points failed; the first:\n" + string.Join("\n\n", failures.Take(2)));
    }

    [Fact]
    public void A_pass_writes_nothing_on_the_log_device()
    {
        Assert.Equal(0, FaultFree.Value.Writes["log"]);
    }
}
