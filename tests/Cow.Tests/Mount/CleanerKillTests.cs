using System.Diagnostics;
using System.Security.Cryptography;
using Cow.Core;
using Cow.Core.Format;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>
/// <c>cow clean</c> killed with SIGKILL in the middle of a pass, again and again: after each kill <c>cow fsck</c> is
/// clean and every file and snapshot reads back as before; the next pass takes up what was left (a pass keeps no
/// state: it chooses again) and completes. The real program on image files; seeded kill times, the seed printed.
/// </summary>
[Trait("Tier", "mount")]
public sealed class CleanerKillTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-cleankill-");
    private string PoolDir => _scratch.PoolDir;

    public void Dispose() => _scratch.Dispose();

    private static byte[] Bytes(int seed, int n)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>Every file of the live tree and of every snapshot, with a hash of its bytes.</summary>
    private static string Contents(Pool p)
    {
        var lines = new List<string>();
        void Walk(Cow.Core.FileSystem.FileSystemView fs, string label)
        {
            for (int f = 0; f < 4; f++)
            {
                if (fs.Lookup(fs.RootIno, $"f{f}", out var a) != 0) { lines.Add($"{label}/f{f}: absent"); continue; }
                var buf = new byte[a.Size];
                Assert.Equal(0, (int)fs.Read(a.Ino, 0, buf, out int n));
                lines.Add($"{label}/f{f}: {n} {Convert.ToHexString(SHA256.HashData(buf.AsSpan(0, n)))[..16]}");
            }
        }
        Walk(p.Live, "live");
        foreach (var s in p.Snapshots.List()) Walk(p.Snapshot(s.Name)!, s.Name);
        return string.Join("\n", lines);
    }

    /// <summary>Round <paramref name="round"/> of changes: a snapshot (the one two rounds older deleted), then 16 MiB
    /// of each of four files written, so the log holds live data and data only snapshots map. Returns what every view reads.</summary>
    private string Change(int round)
    {
        using var p = Pool.Open(PoolDir);
        var fs = p.Live;
        Assert.Equal(0, (int)p.Snapshots.Create($"r{round}", out _));
        if (round >= 2) Assert.Equal(0, (int)p.Snapshots.Delete($"r{round - 2}"));   // two kept: the pool does not fill
        for (int f = 0; f < 4; f++)
        {
            string name = $"f{f}";
            if (fs.Lookup(fs.RootIno, name, out var a) != 0) Assert.Equal(0, (int)fs.Create(fs.RootIno, name, 0x1A4, 0, 0, out a));
            var data = Bytes(round * 10 + f, 16 << 20);
            Assert.Equal(0, (int)fs.Write(a.Ino, (long)(round % 4) * (16 << 20), data, out _));
        }
        Assert.Equal(0, (int)fs.Fsync(fs.RootIno));
        return Contents(p);
    }

    private (long BaseUsed, long LogUsed) Usage()
    {
        using var p = Pool.Open(PoolDir);
        var u = p.DeviceUsage();
        return (u.Single(x => x.Cookie == FormatConstants.BaseCookie).UsedBlocks, u.Single(x => x.Cookie == FormatConstants.LogCookie).UsedBlocks);
    }

    [SkippableFact]
    public void A_pass_killed_mid_way_leaves_a_clean_pool_and_the_next_pass_completes()
    {
        int seed = Environment.GetEnvironmentVariable("COW_SEED") is { } s ? int.Parse(s) : System.Random.Shared.Next();
        output.WriteLine($"seed {seed} (rerun with COW_SEED={seed})");
        var rng = new Random(seed);
        using (Pool.Create(PoolDir, new PoolCreateOptions { BaseSize = 512L << 20, LogSize = 256L << 20 })) { }
        int killedMidPass = 0;
        string expected = "";
        // The kill comes after a seeded delay that adapts by bisection: between the longest delay that killed the
        // program before anything moved (a loaded machine starts it slowly) and the shortest by which the pass had
        // finished.
        int delay = rng.Next(150, 700), tooEarly = 0, tooLate = int.MaxValue;
        for (int round = 0; round < 10; round++)
        {
            expected = Change(round);
            var before = Usage();
            var clean = Process.Start(CowProgram.StartInfo("clean", PoolDir))!;
            clean.StandardOutput.ReadToEndAsync();
            clean.StandardError.ReadToEndAsync();
            Thread.Sleep(delay);
            bool killed = !clean.HasExited;
            if (killed) clean.Kill();
            Assert.True(clean.WaitForExit(60_000));
            var after = Usage();
            bool mid = killed && after.BaseUsed > before.BaseUsed;
            if (mid) killedMidPass++;
            if (!killed) tooLate = Math.Min(tooLate, delay);
            else if (!mid) tooEarly = Math.Max(tooEarly, delay);
            delay = mid ? delay + rng.Next(-30, 30)
                : tooLate == int.MaxValue ? delay * 2
                : (tooEarly + tooLate) / 2;
            output.WriteLine($"round {round}: {(killed ? "killed" : $"finished ({clean.ExitCode})")}; base used {before.BaseUsed} -> {after.BaseUsed} blocks, log used {before.LogUsed} -> {after.LogUsed}{(mid ? " (mid-pass)" : "")}");
            var fsck = CowProgram.Run("fsck", PoolDir);
            Assert.True(fsck.Code == 0, $"round {round}: cow fsck after the kill: {fsck.Out}{fsck.Err}");
            using (var p = Pool.Open(PoolDir)) Assert.Equal(expected, Contents(p));
        }
        Assert.True(killedMidPass > 0, "no kill landed in the middle of a pass: the test proved nothing (the seed's delays were all too short or too long)");
        var last = CowProgram.Run("clean", PoolDir, "--json");
        Assert.True(last.Code == 0, last.Err);
        output.WriteLine(last.Out);
        Assert.Equal(0, CowProgram.Run("fsck", PoolDir).Code);
        using (var p = Pool.Open(PoolDir))
        {
            Assert.Equal(expected, Contents(p));
            var log = p.DeviceUsage().Single(x => x.Cookie == FormatConstants.LogCookie);
            Assert.True(log.UsedBlocks < FormatConstants.SegmentBlocks * 2, $"the last pass left {log.UsedBlocks} blocks on the log");
        }
    }
}
