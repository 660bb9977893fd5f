using System.Diagnostics;
using Cow.Core;
using Cow.Core.Format;

/// <summary>
/// --devices: devices added and removed under load (issue 22, point 7d) on image files, engine API, one run.
/// (d1) <c>cow device add</c> of a log device while a writer overwrites a working set at full speed: how long the add
/// takes and the writer's throughput (median of 0.5 s windows) before, during and after it. (d2) <c>cow device
/// remove</c> of a 1 GiB device holding 512 MiB of live data (the log of a base 2 GiB + log 1 GiB pool) while the same
/// writer runs, flat out (share 1, the default of cow device remove) and at the background cleaner's share (0.25): how
/// long the removal takes, its move rate, and the writer's throughput before and during it. The peer of each is the
/// same writer on the same pool in the same run just before.
/// </summary>
static class DeviceBench
{
    private const int Mi = 1 << 20;

    public static void Run(string work, int runs)
    {
        Console.WriteLine($"# device benchmark: image files in {work}; {runs} runs of each, medians");
        var add = Enumerable.Range(0, runs).Select(i => AddUnderLoad(work, i)).ToList();
        Console.WriteLine($"(d1) cow device add of a 512 MiB log image to a base 1 GiB + log 512 MiB pool under a full-speed writer "
            + $"(random 1 MiB overwrites of a 128 MiB working set, fsync every 64 MiB, background cleaner on): the add took {Median(add.Select(a => a.AddMs).ToList()):F0} ms; "
            + $"writer {Median(add.Select(a => a.Before).ToList()):F0} MiB/s before, {Median(add.Select(a => a.After).ToList()):F0} MiB/s after "
            + $"(after/before {Median(add.Select(a => a.After / a.Before).ToList()):F2}); {Median(add.Select(a => a.OnNewMiB).ToList()):F0} MiB of the writes after it went to the new log; "
            + $"fsck {(add.All(a => a.Clean) ? "clean" : "NOT CLEAN")}");
        foreach (double share in new[] { 1.0, 0.25 })
        {
            var rm = Enumerable.Range(0, runs).Select(i => RemoveUnderLoad(work, i, share)).ToList();
            Console.WriteLine($"(d2) cow device remove of the 1 GiB log holding {Median(rm.Select(r => r.LiveMiB).ToList()):F0} MiB of live data (50 %) under the same writer, share {share}: "
                + $"{string.Join(",", rm.Select(r => r.Stop).Distinct())} in {Median(rm.Select(r => r.Seconds).ToList()):F1} s "
                + $"({Median(rm.Select(r => r.MovedMiB / r.Seconds).ToList()):F0} MiB/s moved); writer {Median(rm.Select(r => r.Before).ToList()):F0} MiB/s before, "
                + $"{Median(rm.Select(r => r.During).ToList()):F0} MiB/s during (during/before {Median(rm.Select(r => r.During / r.Before).ToList()):F2}); "
                + $"fsck {(rm.All(r => r.Clean) ? "clean" : "NOT CLEAN")}");
        }
    }

    private static double Median(List<double> v)
    {
        if (v.Count == 0) return double.NaN;
        var s = v.OrderBy(x => x).ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    /// <summary>Overwrites random 1 MiB pieces of <paramref name="files"/> until stopped, fsync every 64 MiB;
    /// bytes written per 0.5 s window, each window tagged with the phase it ended in.</summary>
    private sealed class Writer
    {
        private readonly Pool _p;
        private readonly long[] _inos;
        private readonly long _fileBytes;
        private readonly Thread _t;
        private volatile bool _stop;
        public volatile string Phase = "before";
        public readonly List<(string Phase, double MiBs)> Windows = new();
        public Exception? Failure;

        public Writer(Pool p, long[] inos, long fileBytes)
        {
            _p = p; _inos = inos; _fileBytes = fileBytes;
            _t = new Thread(Loop) { Name = "bench-writer" };
        }

        public Writer Start() { _t.Start(); return this; }

        public void Stop() { _stop = true; _t.Join(); if (Failure != null) throw new InvalidOperationException("the writer failed", Failure); }

        public double MedianOf(string phase) => Median(Windows.Where(w => w.Phase == phase).Select(w => w.MiBs).ToList());

        private void Loop()
        {
            try
            {
                var rng = new Random(7);
                var buf = new byte[Mi];
                rng.NextBytes(buf);
                var window = Stopwatch.StartNew();
                long bytes = 0, sinceSync = 0;
                while (!_stop)
                {
                    long ino = _inos[rng.Next(_inos.Length)];
                    long off = rng.NextInt64(_fileBytes / Mi) * Mi;
                    var e = _p.Live.Write(ino, off, buf, out int n);
                    if (e != 0) throw new IOException($"write: {e}");
                    bytes += n; sinceSync += n;
                    if (sinceSync >= 64L * Mi) { _p.Live.Fsync(ino); sinceSync = 0; }
                    if (window.Elapsed.TotalSeconds >= 0.5)
                    {
                        lock (Windows) Windows.Add((Phase, bytes / (double)Mi / window.Elapsed.TotalSeconds));
                        bytes = 0;
                        window.Restart();
                    }
                }
            }
            catch (Exception e) { Failure = e; }
        }
    }

    private static long[] MakeFiles(Pool p, string prefix, int files, long fileBytes)
    {
        var inos = new long[files];
        var buf = new byte[Mi];
        new Random(3).NextBytes(buf);
        for (int f = 0; f < files; f++)
        {
            if (p.Live.Create(1, $"{prefix}{f}", 0x1A4, 0, 0, out var a) != 0) throw new IOException("create");
            inos[f] = a.Ino;
            for (long off = 0; off < fileBytes; off += Mi)
                if (p.Live.Write(a.Ino, off, buf, out _) != 0) throw new IOException("fill");
        }
        p.Live.Fsync(1);
        return inos;
    }

    // (d1)
    private static (double AddMs, double Before, double After, double OnNewMiB, bool Clean) AddUnderLoad(string work, int run)
    {
        var dir = Path.Combine(work, $"pool-add-{run}");
        var p = Pool.Create(dir, new PoolCreateOptions { BaseSize = 1024L * Mi, LogSize = 512L * Mi });
        p.StartCleaner(new Cow.Core.FileSystem.CleanerSettings());
        var inos = MakeFiles(p, "w", 4, 32L * Mi);
        var w = new Writer(p, inos, 32L * Mi).Start();
        Thread.Sleep(4000);
        w.Phase = "during";
        var clock = Stopwatch.StartNew();
        var d = p.AddDevice(Path.Combine(dir, "log2.img"), DeviceRole.Log, 512L * Mi);
        double addSecs = clock.Elapsed.TotalSeconds;
        Thread.Sleep(500);
        w.Phase = "after";
        Thread.Sleep(4000);
        w.Stop();
        long onNew = p.DeviceUsage().Single(u => u.Cookie == d.Cookie).UsedBlocks * p.BlockSize;
        var fsck = p.Fsck(verifyData: false);
        p.StopCleaner();
        p.Dispose();
        Directory.Delete(dir, true);
        return (addSecs * 1000, w.MedianOf("before"), w.MedianOf("after"), onNew / (double)Mi, fsck.Clean);
    }

    // (d2)
    private static (double LiveMiB, string Stop, double Seconds, double MovedMiB, double Before, double During, bool Clean) RemoveUnderLoad(string work, int run, double share)
    {
        var dir = Path.Combine(work, $"pool-remove-{run}");
        var p = Pool.Create(dir, new PoolCreateOptions { BaseSize = 2048L * Mi, LogSize = 1024L * Mi });
        // The writer's working set, then 512 MiB of live data: together half of the 1 GiB log.
        var inos = MakeFiles(p, "w", 4, 32L * Mi);
        MakeFiles(p, "data", 6, 64L * Mi);
        long live = p.DeviceUsage().Single(u => u.Cookie == FormatConstants.LogCookie).UsedBlocks * (long)p.BlockSize;
        var w = new Writer(p, inos, 32L * Mi).Start();
        Thread.Sleep(4000);
        w.Phase = "during";
        var clock = Stopwatch.StartNew();
        var r = p.RemoveDevice(FormatConstants.LogCookie.ToString(), share);
        double secs = clock.Elapsed.TotalSeconds;
        w.Phase = "after";
        w.Stop();
        var fsck = p.Fsck(verifyData: false);
        p.Dispose();
        Directory.Delete(dir, true);
        // A removal shorter than a window leaves none "during": the window that ended after it covers it.
        double during = w.MedianOf("during") is var d && !double.IsNaN(d) ? d : w.MedianOf("after");
        return (live / (double)Mi, r.Stop, secs, r.BlocksMoved * (double)p.BlockSize / Mi, w.MedianOf("before"), during, fsck.Clean);
    }
}
