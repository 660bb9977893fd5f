using System.Diagnostics;
using Cow.Core.Devices;
using Cow.Core.Format;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Engine;

/// <summary>
/// Power cuts at every write of a device removal and of a device add (format.md 6, "Device removal"): on every
/// device the operation writes (the devices data moves to, the removed device's wiped superblock, the added device's
/// superblock, the metadata file and its log), the power goes after the k-th write, or the k-th write is torn. After
/// the reboot fsck is clean and every file of the live tree, the snapshots and the clone reads back exactly as
/// before; the removal is then carried on (or the add repeated) on the recovered pool, which ends with the same
/// device table as a fault-free run, fsck clean and the same contents.
/// </summary>
[Trait("Tier", "engine")]
public class DeviceCrashTests(ITestOutputHelper output)
{
    public enum Cut { AfterWrite, TornWrite }

    private const long Mi = 1 << 20;

    private static FaultInjectingBlockDevice Dev(MemoryPool p, string device) => device switch
    {
        "base" => p.BaseFault!,
        "log" => p.LogFault!,
        "meta" => p.MetaFault!,
        "meta-log" => p.MetaLogFault!,
        _ => p.AddedFault[FormatConstants.FirstAddedCookie],
    };

    /// <summary>An aged pool with a second base device: removing the log moves its blocks to both base devices.</summary>
    private static MemoryPool WithSecondBase()
    {
        var p = LogCleanerTests.AgedPool(baseSize: 16L * Mi, logSize: 32L * Mi, faulty: true);
        p.AddDevice("base2", 16L * Mi, DeviceRole.Base);
        return p;
    }

    private static string Table(MemoryPool p) => string.Join(",", p.Pool.Devices.Select(d => $"{d.Cookie}:{d.Role}:{d.State}"));

    private static readonly Lazy<(Dictionary<string, long> Writes, string Contents, string Table)> RemoveFaultFree = new(() =>
    {
        using var p = WithSecondBase();
        string contents = LogCleanerTests.Contents(p);
        string[] devices = ["base", "log", "meta", "meta-log", "added"];
        var before = devices.ToDictionary(d => d, d => Dev(p, d).TotalWrites);
        var r = p.Pool.RemoveDevice("2");
        if (r.Stop != "removed" || r.BlocksMoved == 0) throw new InvalidOperationException($"the fault-free removal: {r}");
        var writes = devices.ToDictionary(d => d, d => Dev(p, d).TotalWrites - before[d]);
        if (LogCleanerTests.Contents(p) != contents) throw new InvalidOperationException("the fault-free removal changed what the views read");
        return (writes, contents, Table(p));
    });

    private static string? RunRemove(string device, Cut cut, int k)
    {
        using var p = WithSecondBase();
        string where = $"removal, {cut} k={k} on '{device}'";
        if (cut == Cut.TornWrite) Dev(p, device).TearWriteNumber(k);
        else Dev(p, device).CutPowerAfterWrites(k, PowerCutMode.DropUnflushed, k);
        string stop;
        try { stop = p.Pool.RemoveDevice("2").Stop; }
        catch (Exception e) when (e is IOException or Cow.Core.Engine.CommitFailedException or Cow.Core.FileSystem.DeviceOperationException) { stop = "threw " + e.Message; }
        catch (Exception e) { return $"{where}: the removal threw {e.GetType().Name}: {e}"; }
        try
        {
            p.PowerCutAndReboot(PowerCutMode.DropUnflushed, k + 1);
            var fsck = p.Pool.Fsck();
            if (!fsck.Clean) return $"{where} (removal: {stop}): fsck after reboot:\n{fsck}";
            if (LogCleanerTests.Contents(p) is var found && found != RemoveFaultFree.Value.Contents)
                return $"{where} (removal: {stop}): after reboot the views read\n{found}\nexpected\n{RemoveFaultFree.Value.Contents}";
            if (p.Pool.Devices.Any(d => d.Cookie == FormatConstants.LogCookie))
            {
                var again = p.Pool.RemoveDevice("2");
                if (again.Stop != "removed") return $"{where}: the removal carried on after the reboot stopped: {again}";
            }
            fsck = p.Pool.Fsck();
            if (!fsck.Clean) return $"{where}: fsck after the removal was carried on:\n{fsck}";
            if (LogCleanerTests.Contents(p) != RemoveFaultFree.Value.Contents) return $"{where}: the views changed after the removal was carried on";
            if (Table(p) != RemoveFaultFree.Value.Table) return $"{where}: device table {Table(p)}, expected {RemoveFaultFree.Value.Table}";
            return null;
        }
        catch (Exception e) { return $"{where} (removal: {stop}): recovery threw {e}"; }
    }

    [Theory]
    [InlineData("base", Cut.AfterWrite)]
    [InlineData("added", Cut.AfterWrite)]
    [InlineData("log", Cut.AfterWrite)]
    [InlineData("meta", Cut.AfterWrite)]
    [InlineData("meta-log", Cut.AfterWrite)]
    [InlineData("added", Cut.TornWrite)]
    [InlineData("log", Cut.TornWrite)]
    [InlineData("meta-log", Cut.TornWrite)]
    public void A_power_cut_at_every_write_of_a_removal_loses_nothing_and_the_removal_carries_on(string device, Cut cut)
    {
        long writes = RemoveFaultFree.Value.Writes[device];
        output.WriteLine(string.Join(", ", RemoveFaultFree.Value.Writes.Select(kv => $"{kv.Key}: {kv.Value} writes")));
        Assert.True(writes > 0, $"a removal writes nothing on '{device}': no cut point to test");
        var clock = Stopwatch.StartNew();
        var failures = new List<string>();
        // Every cut point up to 60, then every 7th (a removal's copies are hundreds of writes of the same kind).
        for (int k = 1; k <= writes + 1; k += k < 60 ? 1 : 7)
            if (RunRemove(device, cut, k) is { } f) failures.Add(f);
        output.WriteLine($"{cut} on {device}: {writes + 1} writes, {failures.Count} failed, {clock.ElapsedMilliseconds} ms");
        Assert.True(failures.Count == 0, $"{failures.Count} cut points failed; the first:\n" + string.Join("\n\n", failures.Take(2)));
    }

    private static readonly Lazy<(Dictionary<string, long> Writes, string Contents)> AddFaultFree = new(() =>
    {
        using var p = LogCleanerTests.AgedPool(faulty: true);
        string contents = LogCleanerTests.Contents(p);
        string[] devices = ["meta", "meta-log"];
        var before = devices.ToDictionary(d => d, d => Dev(p, d).TotalWrites);
        p.AddDevice("log2", 16L * Mi, DeviceRole.Log);
        var writes = devices.ToDictionary(d => d, d => Dev(p, d).TotalWrites - before[d]);
        writes["added"] = p.AddedFault[FormatConstants.FirstAddedCookie].TotalWrites;
        return (writes, contents);
    });

    [Theory]
    [InlineData("meta", Cut.AfterWrite)]
    [InlineData("meta-log", Cut.AfterWrite)]
    [InlineData("meta-log", Cut.TornWrite)]
    [InlineData("added", Cut.AfterWrite)]
    public void A_power_cut_at_every_write_of_an_add_leaves_the_pool_with_or_without_the_device_and_it_can_be_added(string device, Cut cut)
    {
        long writes = AddFaultFree.Value.Writes[device];
        output.WriteLine(string.Join(", ", AddFaultFree.Value.Writes.Select(kv => $"{kv.Key}: {kv.Value} writes")));
        Assert.True(writes > 0, $"an add writes nothing on '{device}'");
        var failures = new List<string>();
        for (int k = 1; k <= writes + 1; k++)
        {
            string where = $"add, {cut} k={k} on '{device}'";
            using var p = LogCleanerTests.AgedPool(faulty: true);
            var mem = new MemoryBlockDevice("log2", 16L * Mi);
            var fault = new FaultInjectingBlockDevice(mem, "log2");
            var target = device == "added" ? fault : Dev(p, device);
            if (cut == Cut.TornWrite) target.TearWriteNumber(k);
            else target.CutPowerAfterWrites(k, PowerCutMode.DropUnflushed, k);
            string outcome;
            try
            {
                var d = p.Pool.AddDevice(fault, DeviceRole.Log);
                p.AddedMem[d.Cookie] = mem;
                p.AddedFault[d.Cookie] = fault;
                outcome = "added";
            }
            catch (Exception e) { outcome = $"threw {e.GetType().Name}: {e.Message}"; }
            if (!fault.HasLostPower) fault.PowerCut(PowerCutMode.DropUnflushed, k);
            try
            {
                // The device goes with the pool on every reboot whether or not the add committed.
                p.AddedMem[FormatConstants.FirstAddedCookie] = mem;
                p.PowerCutAndReboot(PowerCutMode.DropUnflushed, k + 1);
                var fsck = p.Pool.Fsck();
                if (!fsck.Clean) { failures.Add($"{where} ({outcome}): fsck after reboot:\n{fsck}"); continue; }
                if (LogCleanerTests.Contents(p) != AddFaultFree.Value.Contents) { failures.Add($"{where} ({outcome}): the views changed"); continue; }
                bool present = p.Pool.Devices.Any(x => x.Cookie == FormatConstants.FirstAddedCookie);
                if (outcome == "added" && !present) { failures.Add($"{where}: an add that returned is not in the table after the reboot"); continue; }
                if (!present) p.Pool.AddDevice(mem, DeviceRole.Log);   // not in the table: it can be added (no --force)
                MemoryPool.WriteAt(p.Live, MemoryPool.CreateFile(p.Live, "/after"), 0, MemoryPool.Pattern(3 << 20, 9));
                p.Pool.Commit();
                fsck = p.Pool.Fsck();
                if (!fsck.Clean) failures.Add($"{where} ({outcome}): fsck after using the device:\n{fsck}");
            }
            catch (Exception e) { failures.Add($"{where} ({outcome}): recovery threw {e}"); }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} cut points failed; the first:\n" + string.Join("\n\n", failures.Take(2)));
    }
}
