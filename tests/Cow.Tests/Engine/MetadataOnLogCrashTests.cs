using System.Diagnostics;
using Cow.Core.Devices;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// Power cuts at every write of the log device of a pool that keeps its metadata there (format.md 2: the data blocks,
/// then the metadata's data and log streams in windows of the same device), for a workload of writes, commits,
/// snapshot creates and deletes and a cleaning pass: after the reboot fsck is clean, and what the live tree and the
/// snapshots read is the state after the last step that completed or after the one that was cut, never a mix.
/// </summary>
[Trait("Tier", "engine")]
public class MetadataOnLogCrashTests(ITestOutputHelper output)
{
    public enum Cut { AfterWrite, TornWrite, KeepRandom }

    private const int Mi = 1 << 20;

    private static MemoryPool NewPool() => new(baseSize: 16L * Mi, logSize: 24L * Mi, faulty: true, metadataOnLog: true);

    /// <summary>The workload's steps; each ends durable (a commit, a snapshot operation, a cleaning pass).</summary>
    private static readonly Action<MemoryPool>[] Steps =
    [
        p => { WriteAt(p.Live, CreateFile(p.Live, "/a"), 0, Pattern(3 * Mi, 1)); p.Pool.Commit(); },
        p => Assert.Equal(0, (int)p.Pool.Snapshots.Create("s1", out _)),
        p => { WriteAt(p.Live, Ino(p.Live, "/a"), Mi, Pattern(Mi, 2)); WriteAt(p.Live, CreateFile(p.Live, "/b"), 0, Pattern(2 * Mi + 5, 3)); p.Pool.Commit(); },
        p => Assert.Equal(0, (int)p.Pool.Snapshots.Create("s2", out _)),
        p => { Assert.Equal(0, (int)p.Live.ResolveParent("/a", out var root, out var name)); Assert.Equal(0, (int)p.Live.Unlink(root, name)); p.Pool.Commit(); },
        p => Assert.Equal(0, (int)p.Pool.Snapshots.Delete("s1")),
        p => p.Pool.CleanLog(100),
    ];

    private static string Contents(MemoryPool p)
    {
        var lines = new List<string>();
        void Walk(Cow.Core.FileSystem.FileSystemView fs, string label)
        {
            foreach (var path in new[] { "/a", "/b" })
            {
                if (fs.Resolve(path, out var attr) != 0) { lines.Add($"{label}{path}: absent"); continue; }
                lines.Add($"{label}{path}: {Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(ReadAll(fs, attr.Ino)))[..16]}");
            }
        }
        Walk(p.Live, "live");
        foreach (var s in p.Pool.Snapshots.List()) Walk(p.Pool.Snapshot(s.Name)!, s.Name);
        return string.Join("\n", lines);
    }

    /// <summary>The contents after each step (index 0: before any), and the writes the log device receives.</summary>
    private static readonly Lazy<(string[] States, long Writes)> FaultFree = new(() =>
    {
        using var p = NewPool();
        long before = p.LogFault!.TotalWrites;
        var states = new List<string> { Contents(p) };
        foreach (var step in Steps) { step(p); states.Add(Contents(p)); }
        return (states.ToArray(), p.LogFault!.TotalWrites - before);
    });

    private static string? Run(Cut cut, int k)
    {
        using var p = NewPool();
        string where = $"{cut} k={k}";
        var mode = cut == Cut.KeepRandom ? PowerCutMode.KeepRandomSubset : PowerCutMode.DropUnflushed;
        if (cut == Cut.TornWrite) p.LogFault!.TearWriteNumber(k);
        else p.LogFault!.CutPowerAfterWrites(k, mode, k);
        int done = 0;
        try
        {
            foreach (var step in Steps) { step(p); done++; }
        }
        catch (Exception) { /* the step that was cut */ }
        try
        {
            p.PowerCutAndReboot(mode, k + 1);
            var fsck = p.Pool.Fsck();
            if (!fsck.Clean) return $"{where} (after {done} steps): fsck after reboot:\n{fsck}";
            string found = Contents(p);
            var states = FaultFree.Value.States;
            if (found != states[done] && (done + 1 >= states.Length || found != states[done + 1]))
                return $"{where} (after {done} steps): the views read\n{found}\nexpected\n{states[done]}";
            // The recovered pool takes writes and commits.
            WriteAt(p.Live, CreateFile(p.Live, "/after"), 0, Pattern(Mi, 9));
            p.Pool.Commit();
            fsck = p.Pool.Fsck();
            return fsck.Clean ? null : $"{where}: fsck after writing on the recovered pool:\n{fsck}";
        }
        catch (Exception e) { return $"{where} (after {done} steps): recovery threw {e}"; }
    }

    [Theory]
    [InlineData(Cut.AfterWrite)]
    [InlineData(Cut.TornWrite)]
    [InlineData(Cut.KeepRandom)]
    public void A_power_cut_at_every_write_of_the_log_device_holding_the_metadata_loses_nothing_committed(Cut cut)
    {
        long writes = FaultFree.Value.Writes;
        var clock = Stopwatch.StartNew();
        var failures = new List<string>();
        for (int k = 1; k <= writes + 1; k++)
            if (Run(cut, k) is { } f) failures.Add(f);
        output.WriteLine($"{cut}: {writes + 1} cut points, {failures.Count} failed, {clock.ElapsedMilliseconds} ms");
        Assert.True(failures.Count == 0, $"{failures.Count} of {writes + 1} cut points failed; the first:\n" + string.Join("\n\n", failures.Take(2)));
    }
}
