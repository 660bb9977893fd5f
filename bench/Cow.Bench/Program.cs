using System.Diagnostics;
using Cow.Core;
using Cow.Core.Devices;
using Cow.Core.FileSystem;

// Cow engine benchmark: the engine's throughput beside raw pwrite to the same kind of image file, in
// one run (one process, same disk), medians of --runs repetitions. Not a test: it prints figures.
// Usage: dotnet run -c Release --project bench/Cow.Bench -- [--scale | --devices | --cleaner [--base-mib N] [--log-mib N] [--snapshot-seconds S]] [--dir DIR] [--seq-mib N] [--rand-ops N]
//        [--rand-file-mib N] [--runs N] [--files N] [--snapshots N] [--prefault-mib N]

var opt = Options.Parse(args.Where(a => a != "--scale" && a != "--cleaner" && a != "--devices").ToArray());
bool scaleOnly = args.Contains("--scale");
bool cleanerOnly = args.Contains("--cleaner");
Directory.CreateDirectory(opt.Dir);
var work = Path.Combine(opt.Dir, $"cow-bench-{Environment.ProcessId}");
Directory.CreateDirectory(work);
Console.WriteLine($"# Cow engine benchmark  {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC  dir={work}  runs={opt.Runs} (medians)");
Console.WriteLine($"# {Environment.ProcessorCount} cores, .NET {Environment.Version}, seq {opt.SeqMiB} MiB, random {opt.RandOps} x 4 KiB over {opt.RandFileMiB} MiB");
var rows = new List<(string Test, string Unit, double Cow, double Peer, string PeerName)>();
if (args.Contains("--devices"))
{
    try { DeviceBench.Run(work, opt.Runs); } finally { Directory.Delete(work, true); }
    return 0;
}
if (cleanerOnly)
{
    try { CleanerBench.Run(work, opt.BaseMiB, opt.LogMiB, opt.SnapshotSeconds, opt.Runs, () => Settle(opt)); } finally { Directory.Delete(work, true); }
    return 0;
}
if (scaleOnly)
{
    try { ScaleSweep(work); } finally { Directory.Delete(work, true); }
    return 0;
}
try
{
    // 1. Sequential 1 MiB writes + final flush.
    // Peers: raw pwrite with one fdatasync at the end, and raw pwrite with an fdatasync every 256 MiB
    // (the cadence of Cow's size-triggered group commits, which keeps dirty pages few and so avoids
    // the kernel's dirty-page throttling that a single 1 GiB burst runs into).
    var seqCow = new List<double>(); var seqRaw = new List<double>(); var seqRawSync = new List<double>();
    for (int r = 0; r < opt.Runs; r++)
    {
        // Rotate which goes first; settle memory before each (see Settle).
        var order = new Action[]
        {
            () => seqRaw.Add(RawSequential(work, opt.SeqMiB, 0)),
            () => seqRawSync.Add(RawSequential(work, opt.SeqMiB, 256)),
            () => seqCow.Add(CowSequential(work, opt.SeqMiB)),
        };
        for (int k = 0; k < order.Length; k++) { Settle(opt); order[(k + r) % order.Length](); }
    }
    Console.WriteLine($"# seq MB/s per run: Cow {string.Join(" ", seqCow.Select(v => v.ToString("F0")))}; raw {string.Join(" ", seqRaw.Select(v => v.ToString("F0")))}; raw+sync/256MiB {string.Join(" ", seqRawSync.Select(v => v.ToString("F0")))}");
    rows.Add(("seq write 1 MiB + fsync", "MB/s", Median(seqCow), Median(seqRaw), "raw pwrite"));
    rows.Add(("seq write 1 MiB + fsync", "MB/s", Median(seqCow), Median(seqRawSync), "raw pwrite, fdatasync/256 MiB"));

    // 2. Random 4 KiB writes + final fsync, before and after a snapshot.
    var before = new List<double>(); var after = new List<double>(); var raw = new List<double>();
    for (int r = 0; r < opt.Runs; r++)
    {
        Settle(opt);
        raw.Add(RawRandom(work, opt.RandFileMiB, opt.RandOps, r));
        Settle(opt);
        var (b, a) = CowRandom(work, opt.RandFileMiB, opt.RandOps, r);
        before.Add(b); after.Add(a);
    }
    Console.WriteLine($"# rand IOPS per run: Cow {string.Join(" ", before.Select(v => v.ToString("F0")))}; after snapshot {string.Join(" ", after.Select(v => v.ToString("F0")))}; raw {string.Join(" ", raw.Select(v => v.ToString("F0")))}");
    rows.Add(("rand write 4 KiB + fsync", "IOPS", Median(before), Median(raw), "raw pwrite"));
    rows.Add(("rand write 4 KiB + fsync, after a snapshot", "IOPS", Median(after), Median(raw), "raw pwrite"));

    // 3. Commits per second: write 4 KiB then fsync, repeatedly (every fsync is one durable group commit).
    var commits = new List<double>(); var rawSync = new List<double>();
    for (int r = 0; r < opt.Runs; r++)
    {
        rawSync.Add(RawWriteSync(work, 300));
        commits.Add(CowWriteSync(work, 300));
    }
    rows.Add(("4 KiB write + fsync (durable commits)", "per s", Median(commits), Median(rawSync), "raw pwrite+fdatasync"));

    // 4. Snapshot create (durable) at 1 file, N files, and with M snapshots already taken.
    var (one, many, piled) = SnapshotTimes(work, opt.Files, opt.Snapshots);
    rows.Add(("snapshot create, 1 file", "ms", one, one, "itself"));
    rows.Add(($"snapshot create, {opt.Files:N0} files", "ms", many, one, "1 file"));
    rows.Add(($"snapshot create, {opt.Snapshots:N0} snapshots exist", "ms", piled, one, "1 snapshot"));
}
finally
{
    try { Directory.Delete(work, true); } catch (IOException) { }
}

Console.WriteLine();
Console.WriteLine("| test | unit | Cow | peer | peer value | Cow / peer |");
Console.WriteLine("|---|---|---:|---|---:|---:|");
foreach (var (t, u, c, p, pn) in rows)
    Console.WriteLine($"| {t} | {u} | {Fmt(c)} | {pn} | {Fmt(p)} | {c / p:F2}x |");
return 0;

// Buffered writes on these VMs are bimodal: page-cache pages freed and reported to the host are
// faulted back in on first touch (../shared/bench/prefault.c). Before every timed test, as the shared
// bench scripts do: sync, drop caches (root only), then touch and free --prefault-mib of memory.
static unsafe void Settle(Options o)
{
    System.Diagnostics.Process.Start("sync")?.WaitForExit();
    try { File.WriteAllText("/proc/sys/vm/drop_caches", "3"); } catch (Exception e) when (e is UnauthorizedAccessException or IOException) { }
    if (o.PrefaultMiB <= 0) return;
    nuint n = (nuint)o.PrefaultMiB << 20;
    byte* p = (byte*)System.Runtime.InteropServices.NativeMemory.Alloc(n);
    for (nuint i = 0; i < n; i += 4096) p[i] = 1;
    System.Runtime.InteropServices.NativeMemory.Free(p);
}

static string Fmt(double v) => v >= 100 ? v.ToString("N0") : v.ToString("F2");
static double Median(List<double> v) { var s = v.OrderBy(x => x).ToList(); return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2; }

static Pool NewPool(string work, long logBytes)
{
    var dir = Path.Combine(work, "pool-" + Guid.NewGuid().ToString("N")[..8]);
    var pool = Pool.Create(dir, new PoolCreateOptions { BaseSize = 64L << 20, LogSize = logBytes });
    pool.CommitInterval = TimeSpan.Zero; // no timer commits inside a timed loop; size and fsync only
    return pool;
}

static void Drop(Pool pool)
{
    var dir = pool.Folder!;
    pool.Dispose();
    Directory.Delete(dir, true);
}

static void Ok(Mono.Unix.Native.Errno e, string what) { if (e != 0) throw new IOException($"{what}: {e}"); }

static double RawSequential(string work, int mib, int syncEveryMiB)
{
    var path = Path.Combine(work, "raw.img");
    using (var dev = FileBlockDevice.Create(path, (long)mib << 20))
    {
        var buf = new byte[1 << 20]; Random.Shared.NextBytes(buf);
        var sw = Stopwatch.StartNew();
        for (long i = 0; i < mib; i++)
        {
            dev.Write(i << 20, buf);
            if (syncEveryMiB > 0 && (i + 1) % syncEveryMiB == 0) dev.Flush();
        }
        dev.Flush();
        double mbs = (mib * 1.048576) / sw.Elapsed.TotalSeconds;
        File.Delete(path);
        return mbs;
    }
}

static double CowSequential(string work, int mib)
{
    var pool = NewPool(work, ((long)mib << 20) * 2 + (256L << 20));
    try
    {
        var fs = pool.Live;
        Ok(fs.Create(1, "seq", 0x1A4, 0, 0, out var a), "create");
        var buf = new byte[1 << 20]; Random.Shared.NextBytes(buf);
        var sw = Stopwatch.StartNew();
        for (long i = 0; i < mib; i++) Ok(fs.Write(a.Ino, i << 20, buf, out _), "write");
        Ok(fs.Fsync(a.Ino), "fsync");
        return (mib * 1.048576) / sw.Elapsed.TotalSeconds;
    }
    finally { Drop(pool); }
}

static double RawRandom(string work, int fileMiB, int ops, int seed)
{
    var path = Path.Combine(work, "rawr.img");
    using var dev = FileBlockDevice.Create(path, (long)fileMiB << 20);
    var big = new byte[1 << 20];
    for (long i = 0; i < fileMiB; i++) dev.Write(i << 20, big);
    dev.Flush();
    var rnd = new Random(seed); var buf = new byte[4096]; rnd.NextBytes(buf);
    long blocks = ((long)fileMiB << 20) / 4096;
    var sw = Stopwatch.StartNew();
    for (int i = 0; i < ops; i++) dev.Write(rnd.NextInt64(blocks) * 4096, buf);
    dev.Flush();
    double iops = ops / sw.Elapsed.TotalSeconds;
    File.Delete(path);
    return iops;
}

static (double Before, double After) CowRandom(string work, int fileMiB, int ops, int seed)
{
    var pool = NewPool(work, ((long)fileMiB << 20) * 4 + (256L << 20));
    try
    {
        var fs = pool.Live;
        Ok(fs.Create(1, "rand", 0x1A4, 0, 0, out var a), "create");
        var big = new byte[1 << 20];
        for (long i = 0; i < fileMiB; i++) Ok(fs.Write(a.Ino, i << 20, big, out _), "fill");
        Ok(fs.Fsync(a.Ino), "fsync");
        double Pass(int s)
        {
            var rnd = new Random(s); var buf = new byte[4096]; rnd.NextBytes(buf);
            long blocks = ((long)fileMiB << 20) / 4096;
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < ops; i++) Ok(fs.Write(a.Ino, rnd.NextInt64(blocks) * 4096, buf, out _), "write");
            Ok(fs.Fsync(a.Ino), "fsync");
            return ops / sw.Elapsed.TotalSeconds;
        }
        double before = Pass(seed);
        Ok(pool.Snapshots.Create("s", out _), "snapshot");
        double after = Pass(seed + 1000);
        return (before, after);
    }
    finally { Drop(pool); }
}

static double RawWriteSync(string work, int n)
{
    var path = Path.Combine(work, "raws.img");
    using var dev = FileBlockDevice.Create(path, 64L << 20);
    var buf = new byte[4096];
    var sw = Stopwatch.StartNew();
    for (int i = 0; i < n; i++) { dev.Write((long)i * 4096, buf); dev.Flush(); }
    double r = n / sw.Elapsed.TotalSeconds;
    File.Delete(path);
    return r;
}

static double CowWriteSync(string work, int n)
{
    var pool = NewPool(work, 256L << 20);
    try
    {
        var fs = pool.Live;
        Ok(fs.Create(1, "sync", 0x1A4, 0, 0, out var a), "create");
        var buf = new byte[4096];
        long c0 = pool.CommitCount;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < n; i++) { Ok(fs.Write(a.Ino, (long)i * 4096, buf, out _), "write"); Ok(fs.Fsync(a.Ino), "fsync"); }
        double r = (pool.CommitCount - c0) / sw.Elapsed.TotalSeconds;
        return r;
    }
    finally { Drop(pool); }
}

// --scale: snapshot create (durable) as one pool grows to 200,000 files, and as another piles up
// 8,000 snapshots; median of 41 creates at each point, after the setup's writeback has settled.
static void ScaleSweep(string work)
{
    double Median41(Pool pool, string prefix)
    {
        System.Diagnostics.Process.Start("sync")?.WaitForExit();
        Thread.Sleep(1000);
        var t = new List<double>();
        for (int i = 0; i < 41; i++)
        {
            var sw = Stopwatch.StartNew();
            Ok(pool.Snapshots.Create($"{prefix}-{i}", out _), "snapshot");
            t.Add(sw.Elapsed.TotalMilliseconds);
        }
        return Median(t);
    }
    Console.WriteLine("\n| files in the pool | snapshot create (ms, median of 41) |\n|---:|---:|");
    var pf = NewPool(work, 256L << 20);
    try
    {
        Ok(pf.Live.Mkdir(1, "d", 0x1ED, 0, 0, out var d), "mkdir");
        int made = 0;
        foreach (int target in new[] { 1, 25_000, 50_000, 100_000, 200_000 })
        {
            while (made < target) Ok(pf.Live.Create(d.Ino, $"f{made++}", 0x1A4, 0, 0, out _), "create");
            Ok(pf.Live.Fsync(1), "fsync");
            Console.WriteLine($"| {made:N0} | {Median41(pf, $"f{made}"):F2} |");
        }
    }
    finally { Drop(pf); }
    Console.WriteLine("\n| snapshots already taken | snapshot create (ms, median of 41) |\n|---:|---:|");
    var ps = NewPool(work, 256L << 20);
    try
    {
        int taken = 0;
        foreach (int target in new[] { 0, 1000, 2000, 4000, 8000 })
        {
            while (taken < target) Ok(ps.Snapshots.Create($"p{taken++}", out _), "snapshot");
            double m = Median41(ps, $"m{target}");
            Console.WriteLine($"| {taken:N0} | {m:F2} |");
            taken += 41;
        }
    }
    finally { Drop(ps); }
}

static (double One, double Many, double Piled) SnapshotTimes(string work, int files, int snapshots)
{
    double Measure(Pool pool, string prefix, int n = 21)
    {
        // Let the writeback of whatever was just set up finish, so each row measures the same thing.
        System.Diagnostics.Process.Start("sync")?.WaitForExit();
        Thread.Sleep(1000);
        var t = new List<double>();
        for (int i = 0; i < n; i++)
        {
            var sw = Stopwatch.StartNew();
            Ok(pool.Snapshots.Create($"{prefix}{i}", out _), "snapshot");
            t.Add(sw.Elapsed.TotalMilliseconds);
        }
        return Median(t);
    }
    double one, many, piled;
    var p1 = NewPool(work, 256L << 20);
    try
    {
        Ok(p1.Live.Create(1, "only", 0x1A4, 0, 0, out var a), "create");
        Ok(p1.Live.Write(a.Ino, 0, new byte[4096], out _), "write");
        Ok(p1.Live.Fsync(a.Ino), "fsync");
        one = Measure(p1, "one");
        for (int i = 0; i < snapshots; i++) Ok(p1.Snapshots.Create($"pile{i}", out _), "snapshot");
        piled = Measure(p1, "piled");
    }
    finally { Drop(p1); }
    var pn = NewPool(work, 256L << 20);
    try
    {
        Ok(pn.Live.Mkdir(1, "d", 0x1ED, 0, 0, out var d), "mkdir");
        for (int i = 0; i < files; i++) Ok(pn.Live.Create(d.Ino, $"f{i}", 0x1A4, 0, 0, out _), "create");
        Ok(pn.Live.Fsync(1), "fsync");
        many = Measure(pn, "many");
    }
    finally { Drop(pn); }
    return (one, many, piled);
}

sealed record Options(string Dir, int SeqMiB, int RandOps, int RandFileMiB, int Runs, int Files, int Snapshots, int PrefaultMiB, long BaseMiB = 1024, long LogMiB = 512, double SnapshotSeconds = 30)
{
    public static Options Parse(string[] a)
    {
        var o = new Options("/var/tmp", 1024, 50_000, 256, 5, 100_000, 1000, 2048);
        for (int i = 0; i + 1 < a.Length; i += 2)
            o = a[i] switch
            {
                "--dir" => o with { Dir = a[i + 1] },
                "--seq-mib" => o with { SeqMiB = int.Parse(a[i + 1]) },
                "--rand-ops" => o with { RandOps = int.Parse(a[i + 1]) },
                "--rand-file-mib" => o with { RandFileMiB = int.Parse(a[i + 1]) },
                "--runs" => o with { Runs = int.Parse(a[i + 1]) },
                "--files" => o with { Files = int.Parse(a[i + 1]) },
                "--snapshots" => o with { Snapshots = int.Parse(a[i + 1]) },
                "--prefault-mib" => o with { PrefaultMiB = int.Parse(a[i + 1]) },
                "--base-mib" => o with { BaseMiB = long.Parse(a[i + 1]) },
                "--log-mib" => o with { LogMiB = long.Parse(a[i + 1]) },
                "--snapshot-seconds" => o with { SnapshotSeconds = double.Parse(a[i + 1], System.Globalization.CultureInfo.InvariantCulture) },
                _ => throw new ArgumentException($"unknown option {a[i]}"),
            };
        return o;
    }
}
