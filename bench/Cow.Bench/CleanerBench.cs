using System.Diagnostics;
using Cow.Core;
using Cow.Core.FileSystem;

/// <summary>
/// --cleaner: the space model and the log cleaner (issue 22, point 7) on image files, engine API, one run:
/// (a) fill: bytes written before ENOSPC against the pool's devices less the reserve, and statfs against the
/// device usage; (b) sustained random 64 KiB–1 MiB overwrites of 10 × the log's size over a working set of half
/// the capacity, a snapshot every 30 s and the oldest deleted beyond 10, with the background cleaner — its
/// throughput against the same writes on an empty log; (c) sequential reads of a file before and after the
/// cleaner moved it to the base device; the cost of moving (seconds per GiB).
/// </summary>
static class CleanerBench
{
    private const int Mi = 1 << 20;

    public static void Run(string work, long baseMiB, long logMiB, double snapshotSeconds, int rounds, Action settle)
    {
        Console.WriteLine($"# cleaner benchmark: base {baseMiB} MiB + log {logMiB} MiB image files in {work}");
        Fill(work, baseMiB, logMiB);
        Sustained(work, baseMiB, logMiB, snapshotSeconds, rounds);
        ReadsAfterMove(work, baseMiB, logMiB, settle);
    }

    private static Pool NewPool(string work, long baseMiB, long logMiB)
    {
        var dir = Path.Combine(work, "pool-" + Guid.NewGuid().ToString("N")[..8]);
        return Pool.Create(dir, new PoolCreateOptions { BaseSize = baseMiB * Mi, LogSize = logMiB * Mi });
    }

    private static void Drop(Pool p)
    {
        var dir = p.Folder!;
        p.Dispose();
        Directory.Delete(dir, true);
    }

    private static void Ok(Mono.Unix.Native.Errno e, string what) { if (e != 0) throw new IOException($"{what}: {e}"); }

    private static double Median(List<double> v) { var s = v.OrderBy(x => x).ToList(); return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2; }

    // (a)
    private static void Fill(string work, long baseMiB, long logMiB)
    {
        var p = NewPool(work, baseMiB, logMiB);
        try
        {
            var st0 = p.Live.StatFs();
            long bs = st0.BlockSize;
            var buf = new byte[Mi];
            new Random(1).NextBytes(buf);
            long written = 0;
            var clock = Stopwatch.StartNew();
            Mono.Unix.Native.Errno e = 0;
            for (int f = 0; e == 0; f++)
            {
                Ok(p.Live.Create(1, $"fill{f}", 0x1A4, 0, 0, out var a), "create");
                for (int i = 0; i < 64 && e == 0; i++)
                {
                    e = p.Live.Write(a.Ino, (long)i * Mi, buf, out int n);
                    written += n;
                }
                if (e == 0) Ok(p.Live.Fsync(a.Ino), "fsync");
            }
            double secs = clock.Elapsed.TotalSeconds;
            var usage = p.DeviceUsage();
            long data = usage.Sum(u => u.DataBlocks);
            long reserve = data / 100;
            long devicesLessReserve = (baseMiB + logMiB) * Mi - reserve * bs;
            var st = p.Live.StatFs();
            long usedDevices = usage.Sum(u => u.UsedBlocks);
            Console.WriteLine($"(a) fill: {written / Mi} MiB written before {e} in {secs:F1} s ({written / Mi / secs:F0} MiB/s)");
            Console.WriteLine($"    written / (base + log − reserve) = {written / Mi} / {devicesLessReserve / Mi} MiB = {(double)written / devicesLessReserve:F3}  (bar: ≥ 0.95)");
            Console.WriteLine($"    statfs: size {st.Blocks * bs / Mi} MiB = devices' data {data * bs / Mi} − reserve {reserve * bs / Mi}; used {st.UsedBlocks * bs / Mi} MiB (devices: {usedDevices * bs / Mi}); free {st.FreeBlocks * bs / Mi} MiB");
            Console.WriteLine($"    statfs agrees with the devices: {(st.Blocks == data - reserve && st.UsedBlocks + st.FreeBlocks == st.Blocks ? "yes" : "NO")}");
        }
        finally { Drop(p); }
    }

    // (b)
    private static void Sustained(string work, long baseMiB, long logMiB, double snapshotSeconds, int rounds)
    {
        long total = logMiB * Mi * 10;
        var ratios = new List<double>(); var rates = new List<double>(); var peers = new List<double>();
        int enospc = 0, snaps = 0;
        CleanerStatus? c = null;
        string line = "";
        for (int r = 0; r < rounds; r++)
        {
            // The peer: the same writes (same seed, same working set, same fsyncs and snapshots) on a pool whose
            // log is empty at the start and larger than everything written, so that it never needs cleaning.
            // The order alternates from round to round.
            double peerSecs = 0, secs = 0;
            for (int k = 0; k < 2; k++)
                if ((k + r) % 2 == 0) peerSecs = SustainedRun(work, baseMiB, logMiB * 11, total, snapshotSeconds, cleaner: false).Seconds;
                else
                {
                    var run = SustainedRun(work, baseMiB, logMiB, total, snapshotSeconds, cleaner: true);
                    (secs, c, line) = (run.Seconds, run.Cleaner, run.Line);
                    enospc += run.Enospc; snaps = Math.Max(snaps, run.Snapshots);
                }
            double rate = total / secs / Mi, peerRate = total / peerSecs / Mi;
            rates.Add(rate); peers.Add(peerRate); ratios.Add(rate / peerRate);
        }
        Console.WriteLine($"(b) sustained: {total / Mi} MiB of random 64 KiB–1 MiB writes {line}, a snapshot every {snapshotSeconds} s (at most {snaps} taken in a run, the newest 10 kept); {rounds} rounds");
        Console.WriteLine($"    ENOSPC: {enospc}; the cleaner moved {c!.BlocksMoved * 4096 / Mi} MiB and emptied {c.SegmentsCleaned} segments in {c.Passes} passes (last round)");
        Console.WriteLine($"    throughput {Median(rates):F0} MiB/s with the cleaner vs {Median(peers):F0} MiB/s on an empty log ({logMiB * 11} MiB, never cleaned): median ratio {Median(ratios):F2}  (bar: ≥ 0.70); rounds {string.Join(" ", ratios.Select(x => x.ToString("F2")))}");
    }

    private static (double Seconds, int Enospc, int Snapshots, CleanerStatus? Cleaner, string Line) SustainedRun(string work, long baseMiB, long logMiB,
        long total, double snapshotSeconds, bool cleaner)
    {
        var p = NewPool(work, baseMiB, logMiB);
        try
        {
            // Half the capacity of the B + L pool, whichever pool this is.
            long capacity = (baseMiB + logMiB / (cleaner ? 1 : 11)) * Mi * 99 / 100;
            const long fileBytes = 64L * Mi;
            int files = (int)(capacity / 2 / fileBytes);
            var inos = new long[files];
            var buf = new byte[Mi];
            var rng = new Random(42);
            rng.NextBytes(buf);
            for (int f = 0; f < files; f++)
            {
                Ok(p.Live.Create(1, $"w{f}", 0x1A4, 0, 0, out var a), "create");
                inos[f] = a.Ino;
                for (long off = 0; off < fileBytes; off += Mi) Ok(p.Live.Write(a.Ino, off, buf, out _), "fill");
            }
            Ok(p.Live.Fsync(1), "fsync");
            if (cleaner) { p.CleanLog(100); p.StartCleaner(new CleanerSettings()); }
            var (secs, enospc, snaps) = RandomWrites(p, inos, fileBytes, total, rng, TimeSpan.FromSeconds(snapshotSeconds));
            CleanerStatus? c = null;
            if (cleaner) { p.StopCleaner(); c = p.CleanerStatus(); }
            var fsck = p.Fsck();
            if (!fsck.Clean) throw new InvalidOperationException($"fsck after the sustained run: {fsck}");
            return (secs, enospc, snaps, c, $"over a {files * fileBytes / Mi} MiB working set (half of {capacity / Mi} MiB)");
        }
        finally { Drop(p); }
    }

    /// <summary>Random writes of 64 KiB–1 MiB (64 KiB multiples) at 64 KiB-aligned offsets, fsync every 64 MiB.</summary>
    private static (double Seconds, int Enospc, int Snapshots) RandomWrites(Pool p, long[] inos, long fileBytes, long total, Random rng, TimeSpan? snapshotEvery)
    {
        var buf = new byte[Mi];
        rng.NextBytes(buf);
        var snaps = new Queue<string>();
        int taken = 0, enospc = 0;
        var clock = Stopwatch.StartNew();
        var nextSnap = snapshotEvery ?? TimeSpan.MaxValue;
        long done = 0, sinceSync = 0;
        while (done < total)
        {
            int len = rng.Next(1, 17) * 64 * 1024;
            long off = rng.NextInt64(0, (fileBytes - len) / 65536 + 1) * 65536;
            long ino = inos[rng.Next(inos.Length)];
            var e = p.Live.Write(ino, off, buf.AsSpan(0, len), out int n);
            if (e == Mono.Unix.Native.Errno.ENOSPC) { enospc++; if (enospc > 100) throw new IOException("ENOSPC 100 times: the pool is full"); continue; }
            Ok(e, "write");
            done += n; sinceSync += n;
            if (sinceSync >= 64L * Mi) { Ok(p.Live.Fsync(ino), "fsync"); sinceSync = 0; }
            if (clock.Elapsed >= nextSnap)
            {
                string name = $"t{taken++}";
                Ok(p.Snapshots.Create(name, out _), "snapshot");
                snaps.Enqueue(name);
                if (snaps.Count > 10) Ok(p.Snapshots.Delete(snaps.Dequeue()), "snapshot delete");
                nextSnap += snapshotEvery!.Value;
            }
        }
        Ok(p.Live.Fsync(1), "fsync");
        return (clock.Elapsed.TotalSeconds, enospc, taken);
    }

    // (c)
    private static void ReadsAfterMove(string work, long baseMiB, long logMiB, Action settle)
    {
        var p = NewPool(work, baseMiB, logMiB);
        try
        {
            long bytes = Math.Min(256, logMiB / 2) * Mi;
            var buf = new byte[Mi];
            new Random(7).NextBytes(buf);
            Ok(p.Live.Create(1, "r", 0x1A4, 0, 0, out var a), "create");
            for (long off = 0; off < bytes; off += Mi) Ok(p.Live.Write(a.Ino, off, buf, out _), "write");
            Ok(p.Live.Fsync(a.Ino), "fsync");
            double ReadAll()
            {
                settle();
                var clock = Stopwatch.StartNew();
                for (long off = 0; off < bytes; off += Mi) Ok(p.Live.Read(a.Ino, off, buf, out _), "read");
                return bytes / clock.Elapsed.TotalSeconds / Mi;
            }
            var before = new List<double>(); var after = new List<double>();
            for (int i = 0; i < 3; i++) before.Add(ReadAll());
            var clock = Stopwatch.StartNew();
            var pass = p.CleanLog(100);
            double moveSecs = clock.Elapsed.TotalSeconds;
            for (int i = 0; i < 3; i++) after.Add(ReadAll());
            double movedGiB = pass.BlocksMoved * 4096.0 / (1L << 30);
            Console.WriteLine($"(c) reads of a {bytes / Mi} MiB file: {Median(before):F0} MiB/s on the log, {Median(after):F0} MiB/s after the cleaner moved it to the base device: ratio {Median(after) / Median(before):F2} (medians of 3)");
            Console.WriteLine($"    moving it: {pass.BlocksMoved * 4096 / Mi} MiB in {moveSecs:F2} s = {moveSecs / Math.Max(movedGiB, 1e-9):F2} s per GiB moved ({pass.Batches} batches, one relocation commit each)");
        }
        finally { Drop(p); }
        MoveCostWithSnapshots(work, baseMiB, logMiB);
    }

    /// <summary>The cost of moving blocks that many chunk versions map: a file under 10 snapshots, 16 MiB of it
    /// overwritten between each, so that most of its chunks have several versions (one per snapshot that saw a
    /// change) mapping the same blocks; every version is rewritten when they move.</summary>
    private static void MoveCostWithSnapshots(string work, long baseMiB, long logMiB)
    {
        var p = NewPool(work, baseMiB, logMiB);
        try
        {
            long bytes = Math.Min(256, logMiB / 2) * Mi;
            var buf = new byte[Mi];
            var rng = new Random(8);
            rng.NextBytes(buf);
            Ok(p.Live.Create(1, "s", 0x1A4, 0, 0, out var a), "create");
            for (long off = 0; off < bytes; off += Mi) Ok(p.Live.Write(a.Ino, off, buf, out _), "write");
            for (int i = 0; i < 10; i++)
            {
                Ok(p.Snapshots.Create($"v{i}", out _), "snapshot");
                for (int j = 0; j < 16; j++) Ok(p.Live.Write(a.Ino, rng.NextInt64(0, bytes / Mi) * Mi, buf, out _), "overwrite");
            }
            Ok(p.Live.Fsync(a.Ino), "fsync");
            var clock = Stopwatch.StartNew();
            var pass = p.CleanLog(100);
            double secs = clock.Elapsed.TotalSeconds, gib = pass.BlocksMoved * 4096.0 / (1L << 30);
            Console.WriteLine($"    the same file under 10 snapshots (16 MiB overwritten between each): {pass.BlocksMoved * 4096 / Mi} MiB moved in {secs:F2} s = {secs / Math.Max(gib, 1e-9):F2} s per GiB");
        }
        finally { Drop(p); }
    }
}
