using System.Diagnostics;
using Cow.Core.Devices;
using Cow.Core.Replication;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;
using static Cow.Tests.Replication.StreamFrames;
using static Cow.Tests.Replication.StreamRoundTripTests;

namespace Cow.Tests.Replication;

/// <summary>
/// Power cuts at every commit fault point of a receive (format.md 10.5): a full and an incremental receive, a resumed
/// one, one whose end record does not match (its abort), and an explicit abort, on a pool of fault-injecting devices
/// with batches of a few records (so a receive commits many times). The points are those a clean run of the same
/// operation passes ("gather", "snapshot", "write", "frees" of each commit, "receive-batch" after each batch); for
/// each k the power goes at the k-th. After the reboot fsck is clean and either the snapshot is there, whole and
/// identical to the sender's (and the live tree is it), or there is no snapshot, the live tree is as before, and a
/// pending receive resumes (with <see cref="PoolReplication.PendingToken"/>) to the same snapshot or aborts back to
/// the pool as before; with nothing pending, the stream is received again.
/// </summary>
[Trait("Tier", "slow")]
public class ReceiveCrashTests(ITestOutputHelper output)
{
    public enum Scenario { Full, Incremental, Resumed, DamagedEnd, Abort }

    private int Seed()
    {
        int seed = Environment.GetEnvironmentVariable("COW_SEED") is { } s ? int.Parse(s) : Random.Shared.Next();
        output.WriteLine($"seed {seed} (COW_SEED={seed} to repeat)");
        return seed;
    }

    private const int BatchRecords = 8;

    /// <summary>The sender and its streams: s0 (full) and s1 (incremental from s0), and s1 with a damaged end record.</summary>
    private sealed class Streams
    {
        public required MemoryPool A;
        public required byte[] Full, Inc, DamagedEnd;
        public int Cut;   // where the incremental stream is cut for a pending receive
    }

    private static Streams Build(Random rng)
    {
        var a = new MemoryPool();
        Change(a, rng, 0, 30);
        WriteAt(a.Live, CreateFile(a.Live, "/big"), 0, Pattern((3 << 19) + 4096, rng.Next()));
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s0", out _));
        Change(a, rng, 1, 30);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s1", out _));
        var full = Send(a, "s0", null, out _);
        var inc = Send(a, "s1", "s0", out _);
        var damaged = (byte[])inc.Clone();
        var end = Of(damaged)[^1];
        damaged[end.Payload + 8 + rng.Next(StreamFormat.ChainBytes)] ^= 0x40;
        FixCrc(damaged, end);
        var frames = Of(inc);
        return new Streams { A = a, Full = full, Inc = inc, DamagedEnd = damaged, Cut = frames[frames.Count / 2].Offset + 5 };
    }

    private static string Snap(Scenario sc) => sc == Scenario.Full ? "s0" : "s1";

    /// <summary>A receiving pool on fault-injecting devices in the state the scenario starts from.</summary>
    private static MemoryPool Prepare(Scenario sc, Streams s, out byte[]? resumed)
    {
        var p = Receiver(sc == Scenario.Full ? null : s.Full, faulty: true, batchRecords: BatchRecords);
        resumed = null;
        if (sc is Scenario.Resumed or Scenario.Abort)
        {
            Assert.Equal(Errno.EIO, Receive(p, s.Inc[..s.Cut], out var r));
            resumed = Resumed(s.A, r.Token!);
        }
        return p;
    }

    private static Errno Act(Scenario sc, MemoryPool p, Streams s, byte[]? resumed) => sc switch
    {
        Scenario.Full => Receive(p, s.Full, out _),
        Scenario.Incremental => Receive(p, s.Inc, out _),
        Scenario.Resumed => Receive(p, resumed!, out _),
        Scenario.DamagedEnd => Receive(p, s.DamagedEnd, out _),
        _ => p.Pool.Replication.AbortReceive(out _),
    };

    private static Errno Expected(Scenario sc) => sc == Scenario.DamagedEnd ? Errno.EBADMSG : 0;

    private static void CutPower(MemoryPool p, PowerCutMode mode, int seed)
    {
        foreach (var d in new[] { p.BaseFault!, p.LogFault!, p.MetaFault!, p.MetaLogFault! })
            if (!d.HasLostPower) d.PowerCut(mode, seed + d.Name.Length);
    }

    private sealed class PowerCut(string message) : IOException(message);

    [Theory]
    [InlineData(Scenario.Full, PowerCutMode.DropUnflushed)]
    [InlineData(Scenario.Incremental, PowerCutMode.DropUnflushed)]
    [InlineData(Scenario.Incremental, PowerCutMode.KeepRandomSubset)]
    [InlineData(Scenario.Resumed, PowerCutMode.DropUnflushed)]
    [InlineData(Scenario.DamagedEnd, PowerCutMode.DropUnflushed)]
    [InlineData(Scenario.Abort, PowerCutMode.DropUnflushed)]
    [InlineData(Scenario.Abort, PowerCutMode.KeepRandomSubset)]
    public void A_power_cut_at_every_commit_point_of_a_receive_leaves_it_whole_resumable_or_undone(Scenario sc, PowerCutMode mode)
    {
        int seed = Seed();
        var s = Build(new Random(seed));
        using var a = s.A;
        string snap = Snap(sc);
        output.WriteLine($"full {s.Full.Length} bytes, incremental {s.Inc.Length} bytes ({Of(s.Inc).Count} frames), batches of {BatchRecords} records");

        // The fault points of a clean run.
        var points = new List<string>();
        using (var p = Prepare(sc, s, out var resumed))
        {
            p.Engine.CommitFaultHook = at => { lock (points) points.Add(at); };
            Assert.Equal(Expected(sc), Act(sc, p, s, resumed));
            p.Engine.CommitFaultHook = null;
        }
        output.WriteLine($"{points.Count} fault points: {string.Join(" ", points)}");
        if (sc != Scenario.Abort) Assert.Contains("receive-batch", points);
        Assert.True(points.Count >= 4, $"{points.Count} points");

        var clock = Stopwatch.StartNew();
        var failures = new List<string>();
        var outcomes = new Dictionary<string, int>();
        for (int k = 1; k <= points.Count; k++)
        {
            string where = $"{sc}, power cut at point {k} of {points.Count} ('{points[k - 1]}', {mode})";
            try
            {
                string outcome = CutAndCheck(sc, s, k, mode, seed + k);
                outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            }
            catch (Exception e) { failures.Add($"{where}: {e}"); }
        }
        output.WriteLine($"{points.Count} cut points in {clock.ElapsedMilliseconds} ms; {failures.Count} failed");
        foreach (var (o, n) in outcomes.OrderBy(o => o.Key, StringComparer.Ordinal)) output.WriteLine($"  {o}: {n}");
        Assert.True(failures.Count == 0, $"{failures.Count} of {points.Count} cut points failed; the first:\n" + string.Join("\n\n", failures.Take(2)));
    }

    /// <summary>Runs the scenario with the power cut at its <paramref name="k"/>-th fault point, reboots, checks the
    /// pool and finishes (or undoes) the receive. Returns what was found after the reboot.</summary>
    private string CutAndCheck(Scenario sc, Streams s, int k, PowerCutMode mode, int seed)
    {
        string snap = Snap(sc);
        using var p = Prepare(sc, s, out var resumed);
        var beforeSnaps = SnapshotNames(p);
        var beforeLive = TreeListing.Of(p.Live);
        string? pendingBefore = p.Pool.Replication.PendingToken();
        int n = 0;
        string? cutAt = null;
        p.Engine.CommitFaultHook = at =>
        {
            if (Interlocked.Increment(ref n) != k) return;
            cutAt = at;
            CutPower(p, mode, seed);
            throw new PowerCut($"power cut at '{at}'");
        };
        string run;
        try { run = $"returned {Act(sc, p, s, resumed)}"; }
        catch (IOException ex) { run = $"threw {ex.GetType().Name}"; }
        p.Engine.CommitFaultHook = null;
        Assert.True(cutAt != null, $"the run passed fewer than {k} fault points ({run})");
        p.PowerCutAndReboot(mode, seed);
        p.Engine.CommitInterval = TimeSpan.Zero;
        p.Engine.Receiver.BatchRecords = BatchRecords;
        p.AssertClean();

        if (SnapshotNames(p).Contains(snap) && !beforeSnaps.Contains(snap))
        {
            Assert.True(sc is Scenario.Full or Scenario.Incremental or Scenario.Resumed, $"{sc}: snapshot {snap} appeared");
            AssertReceived(s.A, p, snap);
            return "received whole";
        }
        Assert.Equal(beforeSnaps, SnapshotNames(p));
        Assert.Equal(beforeLive, TreeListing.Of(p.Live));
        string? token = p.Pool.Replication.PendingToken();
        if (pendingBefore != null && sc != Scenario.Abort) Assert.NotNull(token);   // a pending receive is not lost
        string found;
        if (token == null) found = "nothing pending";
        else if (k % 2 == 0 || sc == Scenario.Resumed)
        {
            ResumeToTheEnd(s.A, p, snap);
            return "pending, resumed to the end";
        }
        else
        {
            Assert.Equal(0, (int)p.Pool.Replication.AbortReceive(out _));
            Assert.Null(p.Pool.Replication.PendingToken());
            Assert.Equal(beforeSnaps, SnapshotNames(p));
            Assert.Equal(beforeLive, TreeListing.Of(p.Live));
            p.AssertClean();
            found = "pending, aborted";
        }
        // Nothing pending now: the pool takes the whole stream again.
        var e = Receive(p, sc == Scenario.Full ? s.Full : s.Inc, out var r);
        Assert.True(e == 0, $"receiving again: {e} {r.Problem}");
        AssertReceived(s.A, p, snap);
        return found;
    }
}
