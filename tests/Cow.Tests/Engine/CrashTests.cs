using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Cow.Core;
using Cow.Core.Devices;
using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// Power cuts at every device write of a deterministic workload, and I/O errors.
/// <para>The promise checked: after a crash at any point, reopening gives a consistent pool (fsck
/// clean, every referenced block matching its checksum) whose content — live tree and every
/// snapshot — equals the model state at the last durable point (successful fsync, snapshot create
/// or snapshot delete) or one of the later model states, each of which is a prefix of the workload:
/// the state after some later operation, never a mix. An operation cut mid-way counts as either not
/// done or done.</para>
/// </summary>
[Trait("Tier", "slow")]
public class CrashTests(ITestOutputHelper output)
{
    // ------------------------------------------------------------------ the model

    /// <summary>What the file system should hold: directories, names of files, file contents (a
    /// node per inode, so hard links share content) and the snapshots' trees.</summary>
    private sealed class FsModel
    {
        public readonly SortedSet<string> Dirs = new(StringComparer.Ordinal);
        public readonly Dictionary<string, int> Files = new(StringComparer.Ordinal);
        public readonly Dictionary<int, byte[]> Nodes = new();
        public readonly SortedDictionary<string, string> Snapshots = new(StringComparer.Ordinal);
        /// <summary>Each snapshot's file contents by path (what a restore puts back).</summary>
        public readonly Dictionary<string, Dictionary<string, byte[]>> SnapshotFiles = new(StringComparer.Ordinal);
        private int _next;

        public void Create(string path) { Files[path] = ++_next; Nodes[_next] = Array.Empty<byte>(); }

        public byte[] Content(string path) => Nodes[Files[path]];
        public void SetContent(string path, byte[] c) => Nodes[Files[path]] = c;

        public void Remove(string path)
        {
            int n = Files[path];
            Files.Remove(path);
            if (!Files.ContainsValue(n)) Nodes.Remove(n);
        }

        public void Rename(string from, string to)
        {
            if (Dirs.Contains(from))
            {
                foreach (var d in Dirs.Where(d => d == from || d.StartsWith(from + "/")).ToList()) { Dirs.Remove(d); Dirs.Add(to + d[from.Length..]); }
                foreach (var f in Files.Keys.Where(f => f.StartsWith(from + "/")).ToList()) { int n = Files[f]; Files.Remove(f); Files[to + f[from.Length..]] = n; }
                return;
            }
            int node = Files[from];
            if (Files.ContainsKey(to)) Remove(to);
            Files.Remove(from);
            Files[to] = node;
        }

        public string Tree()
        {
            var lines = Dirs.Select(d => "d " + d).Concat(Files.Select(f => FileLine(f.Key, Nodes[f.Value]))).ToList();
            lines.Sort(StringComparer.Ordinal);
            return string.Join("\n", lines);
        }

        public string Listing() => Join(Tree(), Snapshots);
    }

    private static string FileLine(string path, byte[] content) =>
        $"f {path} {content.Length} {Convert.ToHexString(SHA256.HashData(content))[..16]}";

    private static string Join(string live, IEnumerable<KeyValuePair<string, string>> snapshots)
    {
        var sb = new StringBuilder(live);
        foreach (var (name, tree) in snapshots) sb.Append($"\n== snapshot {name}\n").Append(tree);
        return sb.ToString();
    }

    /// <summary>Reads a whole tree back: the same lines as <see cref="FsModel.Tree"/>.</summary>
    private static string ReadTree(FileSystemView fs)
    {
        var lines = new List<string>();
        void Walk(long dir, string path)
        {
            long off = 0;
            var entries = new List<DirEntryInfo>();
            while (true)
            {
                var batch = new List<DirEntryInfo>();
                var e = fs.ReadDir(dir, off, 64, batch);
                if (e != 0) { lines.Add($"! readdir {path}: {e}"); return; }
                if (batch.Count == 0) break;
                foreach (var d in batch)
                {
                    off = d.NextOffset;
                    if (d.Name is not ("." or "..")) entries.Add(d);
                }
            }
            foreach (var d in entries)
            {
                string p = path + "/" + d.Name;
                var e = fs.GetAttr(d.Ino, out var a);
                if (e != 0) { lines.Add($"! getattr {p}: {e}"); continue; }
                if (a.IsDirectory) { lines.Add("d " + p); Walk(d.Ino, p); }
                else if (a.IsRegular)
                {
                    var buf = new byte[a.Size];
                    e = fs.Read(d.Ino, 0, buf, out int n);
                    lines.Add(e != 0 || n != a.Size ? $"! read {p}: {e}, {n} of {a.Size} bytes" : FileLine(p, buf));
                }
                else lines.Add($"? {p} mode {Convert.ToString(a.Mode, 8)}");
            }
        }
        Walk(fs.RootIno, "");
        lines.Sort(StringComparer.Ordinal);
        return string.Join("\n", lines);
    }

    private static string ReadListing(MemoryPool p) => ReadListing(p.Pool);

    private static string ReadListing(Pool pool) =>
        Join(ReadTree(pool.Live), pool.Engine.ListSnapshots().OrderBy(s => s.Name, StringComparer.Ordinal)
            .Select(s => KeyValuePair.Create(s.Name, ReadTree(pool.Snapshot(s.Name)!))));

    // ------------------------------------------------------------------ the workload

    /// <summary>One step: runs on the pool (true = fully done; false = failed or short; an
    /// IOException also counts as failed) and on the model.</summary>
    private sealed record Op(string Text, Func<MemoryPool, bool> Run, Action<FsModel> Model, bool Durable = false)
    {
        public override string ToString() => Text;
    }

    private static long? InoOf(FileSystemView fs, string path) => fs.Resolve(path, out var a) == 0 ? a.Ino : null;

    private static bool InParent(FileSystemView fs, string path, Func<long, string, Errno> f) =>
        fs.ResolveParent(path, out long parent, out string name) == 0 && f(parent, name) == 0;

    private static bool OnIno(FileSystemView fs, string path, Func<long, bool> f) => InoOf(fs, path) is long ino && f(ino);

    private static Op Mkdir(string path) => new($"mkdir {path}",
        p => InParent(p.Live, path, (d, n) => p.Live.Mkdir(d, n, 0x1ED, 0, 0, out _)), m => m.Dirs.Add(path));

    private static Op Rmdir(string path) => new($"rmdir {path}",
        p => InParent(p.Live, path, (d, n) => p.Live.Rmdir(d, n)), m => m.Dirs.Remove(path));

    private static Op Create(string path) => new($"create {path}",
        p => InParent(p.Live, path, (d, n) => p.Live.Create(d, n, 0x1A4, 0, 0, out _)), m => m.Create(path));

    private static Op Write(string path, long offset, int length, int seed)
    {
        var data = Pattern(length, seed);
        return new($"write {path} {offset}+{length}",
            p => OnIno(p.Live, path, ino => p.Live.Write(ino, offset, data, out int n) == 0 && n == data.Length),
            m =>
            {
                var old = m.Content(path);
                var c = new byte[Math.Max(old.Length, offset + length)];
                old.CopyTo(c, 0);
                data.CopyTo(c, offset);
                m.SetContent(path, c);
            });
    }

    /// <summary>What the kernel does for a write that writes nothing: iomap_begin (write) on the first
    /// <paramref name="length"/> bytes, then iomap_end with nothing written. The reservation is released;
    /// the log allocator's cursor has moved on (next fit).</summary>
    private static Op Reserve(string path, long length) => new($"reserve and release {path} 0+{length}",
        p => OnIno(p.Live, path, ino => p.Engine.IomapBegin(ino, 0, length, IomapOp.Write, out var pair) == 0
            && p.Engine.IomapEnd(ino, 0, length, 0, IomapOp.Write, pair.Write) == 0),
        _ => { });

    private static Op Truncate(string path, long size) => new($"truncate {path} {size}",
        p => OnIno(p.Live, path, ino => p.Live.SetAttr(ino, new SetAttrRequest { Size = size }, out _) == 0),
        m =>
        {
            var c = new byte[size];
            var old = m.Content(path);
            old.AsSpan(0, (int)Math.Min(size, old.Length)).CopyTo(c);
            m.SetContent(path, c);
        });

    private static Op Punch(string path, long offset, long length) => new($"punch {path} {offset}+{length}",
        p => OnIno(p.Live, path, ino => p.Live.Fallocate(ino, FallocateMode.PunchHole | FallocateMode.KeepSize, offset, length) == 0),
        m =>
        {
            var c = (byte[])m.Content(path).Clone();
            for (long i = offset; i < Math.Min(c.Length, offset + length); i++) c[i] = 0;
            m.SetContent(path, c);
        });

    private static Op Rename(string from, string to) => new($"rename {from} {to}",
        p => p.Live.ResolveParent(from, out long fp, out string fn) == 0 && p.Live.ResolveParent(to, out long tp, out string tn) == 0
            && p.Live.Rename(fp, fn, tp, tn) == 0,
        m => m.Rename(from, to));

    private static Op Unlink(string path) => new($"unlink {path}",
        p => InParent(p.Live, path, (d, n) => p.Live.Unlink(d, n)), m => m.Remove(path));

    private static Op Link(string existing, string path) => new($"link {existing} {path}",
        p => OnIno(p.Live, existing, ino => InParent(p.Live, path, (d, n) => p.Live.Link(ino, d, n, out _))),
        m => m.Files[path] = m.Files[existing]);

    private static Op Fsync() => new("fsync", p => p.Live.Fsync(p.Live.RootIno) == 0, _ => { }, Durable: true);

    private static Op Snapshot(string name) => new($"snapshot create {name}",
        p => p.Engine.CreateSnapshot(name, out _) == 0,
        m => { m.Snapshots[name] = m.Tree(); m.SnapshotFiles[name] = m.Files.ToDictionary(f => f.Key, f => m.Nodes[f.Value], StringComparer.Ordinal); },
        Durable: true);

    /// <summary>cow snapshot restore of one regular file: the live file (every name of it) gets the snapshot's
    /// contents, sharing its blocks; a file the live tree lacks is made anew. One durable commit.</summary>
    private static Op Restore(string snapshot, string path) => new($"snapshot restore {snapshot} {path}",
        p => p.Engine.RestoreFromSnapshot(snapshot, [path], false, out _, out _) == 0,
        m =>
        {
            if (!m.Files.ContainsKey(path)) m.Create(path);
            m.SetContent(path, m.SnapshotFiles[snapshot][path]);
        },
        Durable: true);

    /// <summary>fallocate KEEP_SIZE: reserves space (persisted with the inode), changes no content.</summary>
    private static Op Reserve(string path, long offset, long length) => new($"fallocate keep-size {path} {offset}+{length}",
        p => OnIno(p.Live, path, ino => p.Live.Fallocate(ino, FallocateMode.KeepSize, offset, length) == 0),
        _ => { });

    private static Op DeleteSnapshot(string name) => new($"snapshot delete {name}",
        p => p.Engine.DeleteSnapshot(name) == 0, m => m.Snapshots.Remove(name), Durable: true);

    private static readonly List<Op> Ops = new()
    {
        Mkdir("/a"), Mkdir("/b"),
        Create("/a/f1"), Write("/a/f1", 0, 10_000, 1),
        Create("/a/big"), Write("/a/big", 0, 300_000, 2),
        Fsync(),
        Write("/a/f1", 5000, 3000, 3),                 // overwrite inside, unaligned
        Create("/b/g"), Write("/b/g", 0, 100, 4),
        Rename("/a/f1", "/b/f1"),
        Fsync(),
        Snapshot("s1"),
        Write("/a/big", 40960, 20_000, 5),             // overwrite blocks s1 shares
        Write("/b/g", 100, 5000, 6),                   // append
        Unlink("/b/f1"),
        Link("/a/big", "/b/biglink"),
        Fsync(),
        Truncate("/a/big", 150_001),
        Create("/a/f3"), Write("/a/f3", 0, 200_000, 7),
        Rename("/a/f3", "/b/g"),                       // replaces /b/g
        Snapshot("s2"),
        DeleteSnapshot("s1"),
        Write("/a/big", 0, 8192, 8),
        Mkdir("/b/sub"), Rename("/b/g", "/b/sub/g"),
        Create("/a/tmp"), Write("/a/tmp", 0, 50_000, 9), Unlink("/a/tmp"),   // born and gone in one commit group
        Punch("/b/sub/g", 10_000, 60_000),
        Fsync(),
        Create("/huge"),
        Reserve("/huge", 4 << 20),                     // the log allocator moves to the end of segment 0 ...
        Write("/huge", 0, 300_000, 10),                // ... so this opens log segment 1 (segment header write)
        Write("/huge", (4 << 20) - 20_000, 100_000, 14),   // across the boundary of extent-map chunks 0 and 1
        Rename("/b/sub", "/a/sub"),
        Fsync(),
        Snapshot("s3"),
        Unlink("/a/big"),                              // still named /b/biglink
        Write("/b/biglink", 150_001, 1000, 11),
        Truncate("/huge", 1_000_000),
        Fsync(),
        Reserve("/huge", 0, 6 << 20),                  // a reservation the restore below gives back
        Restore("s3", "/huge"),                        // the live /huge shares s3's blocks again
        Restore("s3", "/a/big"),                       // a new file with s3's blocks (/b/biglink stays apart)
        DeleteSnapshot("s2"),
        Unlink("/a/sub/g"), Rmdir("/a/sub"),
        Write("/huge", 500_000, 70_000, 12),
        Fsync(),
        DeleteSnapshot("s3"),                          // the restored files keep its blocks
        Create("/c"), Write("/c", 0, 30_000, 13),
        Write("/c", 8192, 5000, 15),                   // partial blocks over an extent written in the same group
        Fsync(),
    };

    /// <summary>States[i]: the model after the first i operations.</summary>
    private static readonly List<string> States = BuildStates();

    private static List<string> BuildStates()
    {
        var m = new FsModel();
        var states = new List<string> { m.Listing() };
        foreach (var op in Ops) { op.Model(m); states.Add(m.Listing()); }
        return states;
    }

    // ------------------------------------------------------------------ one crash run

    /// <summary>The fault of one run; k is a write number of the target device from the start of the
    /// workload, or for <see cref="CutAllBeforeOperation"/> an operation index.</summary>
    public enum Fault { CutAfterWrites, TearWrite, CutAfterWritesKeepRandom, CutAllBeforeOperation }

    private static FaultInjectingBlockDevice Dev(MemoryPool p, string device) => device switch
    {
        "base" => p.BaseFault!,
        "log" => p.LogFault!,
        "meta" => p.MetaFault!,
        "meta-log" => p.MetaLogFault!,
        _ => throw new ArgumentException(device),
    };

    private static readonly string[] DeviceNames = { "base", "log", "meta", "meta-log" };

    private static MemoryPool NewPool()
    {
        var p = new MemoryPool(baseSize: 1 << 20, logSize: 16 << 20, faulty: true);
        p.Engine.CommitInterval = TimeSpan.Zero; // commits only at fsync/snapshot: the model's durable points
        p.Engine.PurgeBatchRecords = 2;          // a snapshot delete purges in several commits: cuts land between them
        return p;
    }

    /// <summary>Writes each device receives during the workload (after mkfs), from a fault-free run
    /// that also checks the workload itself against the model.</summary>
    private static readonly Lazy<Dictionary<string, long>> WritesPerDevice = new(() =>
    {
        using var p = NewPool();
        var before = DeviceNames.ToDictionary(d => d, d => Dev(p, d).TotalWrites);
        for (int i = 0; i < Ops.Count; i++)
            if (!Ops[i].Run(p)) throw new InvalidOperationException($"fault-free run: operation {i} '{Ops[i]}' failed");
        var counts = DeviceNames.ToDictionary(d => d, d => Dev(p, d).TotalWrites - before[d]);
        var header = new byte[4096];
        p.LogFault!.Read(FormatConstants.SegmentBlocks * 4096L, header);
        if (SegmentHeader.TryRead(header) is not { SegmentIndex: 1 })
            throw new InvalidOperationException("the workload no longer opens log segment 1");
        var listing = ReadListing(p);
        if (listing != States[^1]) throw new InvalidOperationException($"fault-free run: the pool differs from the model\n{Diff(States[^1], listing)}");
        var fsck = p.Pool.Fsck();
        if (!fsck.Clean) throw new InvalidOperationException($"fault-free run: fsck: {fsck}");
        return counts;
    });

    /// <summary>
    /// Runs the workload with one fault armed on <paramref name="device"/>, until an operation fails or
    /// a device has lost power; then one more fsync (if it succeeds, that is a promise too); then cuts
    /// power everywhere, reboots and checks. Returns null if all is well, else what went wrong.
    /// </summary>
    private static string? CrashRun(string device, Fault fault, int k, int seedBase = 0)
    {
        using var p = NewPool();
        var target = device == "all" ? p.LogFault! : Dev(p, device);
        var all = DeviceNames.Select(d => Dev(p, d)).ToArray();
        var rebootMode = PowerCutMode.DropUnflushed;
        int seed = k * 7919 + device.Length + seedBase;
        switch (fault)
        {
            case Fault.CutAfterWrites: target.CutPowerAfterWrites(k); break;
            case Fault.TearWrite: target.TearWriteNumber(k); break;
            case Fault.CutAfterWritesKeepRandom: target.CutPowerAfterWrites(k, PowerCutMode.KeepRandomSubset, seed); rebootMode = PowerCutMode.KeepRandomSubset; break;
            case Fault.CutAllBeforeOperation: rebootMode = PowerCutMode.KeepRandomSubset; break;
        }
        string where = $"{fault} k={k} on device '{device}'";

        int lastDurable = 0, last = Ops.Count; // accepted: States[lastDurable..last]
        string stop = "workload completed";
        for (int i = 0; i < Ops.Count; i++)
        {
            if (fault == Fault.CutAllBeforeOperation && i == k)
                foreach (var d in all) d.PowerCut(PowerCutMode.KeepRandomSubset, seed + d.Name.Length);
            bool ok;
            string? error = null;
            try { ok = Ops[i].Run(p); }
            catch (IOException e) { ok = false; error = e.Message; }
            catch (Exception e) { return $"{where}: operation {i} '{Ops[i]}' threw {e.GetType().Name} (only IOException or EIO are acceptable): {e}"; }
            if (ok && Ops[i].Durable) lastDurable = i + 1;
            bool lost = all.Any(d => d.HasLostPower);
            if (!ok && !lost) return $"{where}: operation {i} '{Ops[i]}' failed although no device has lost power ({error ?? "error code"})";
            if (!ok || lost)
            {
                last = i + 1;
                stop = $"stopped at operation {i} '{Ops[i]}' ({(ok ? "succeeded" : "failed: " + (error ?? "error code"))})";
                // A successful fsync after the fault is a promise as well.
                bool again;
                try { again = p.Live.Fsync(p.Live.RootIno) == 0; }
                catch (Exception e) { return $"{where}: {stop}; fsync after the fault threw {e.GetType().Name}: {e.Message}"; }
                if (again) { lastDurable = ok ? i + 1 : i; stop += "; the fsync after it succeeded"; }
                break;
            }
        }

        string stage = "reopening";
        try
        {
            p.PowerCutAndReboot(rebootMode, seed + 1);
            p.Engine.CommitInterval = TimeSpan.Zero;
            stage = "checking";
            return CheckRecovered(p, $"{where}: {stop}", lastDurable, last, ref stage);
        }
        catch (Exception e) { return $"{where}: {stop}; {stage} threw {e}"; }
    }

    /// <summary>After the reboot: fsck, content, and that the pool takes new writes.</summary>
    private static string? CheckRecovered(MemoryPool p, string where, int lastDurable, int last, ref string stage)
    {
        var fsck = p.Pool.Fsck();
        if (!fsck.Clean) return $"{where}; fsck after reboot:\n{fsck}";
        stage = "reading the recovered tree";
        string found = ReadListing(p);
        bool match = false;
        for (int j = lastDurable; j <= last && !match; j++) match = States[j] == found;
        if (!match)
            return $"{where}; after reboot the pool matches no state from the last durable one (after {lastDurable} operations) to {last}.\n"
                + $"Difference from the last durable state (- expected, + found):\n{Diff(States[lastDurable], found)}";

        // The recovered pool takes new writes.
        stage = "writing to the recovered pool";
        long ino = CreateFile(p.Live, "/after-crash");
        WriteAt(p.Live, ino, 0, Pattern(20_000, 99));
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        fsck = p.Pool.Fsck();
        if (!fsck.Clean) return $"{where}; fsck after writing to the recovered pool:\n{fsck}";
        return null;
    }

    private const string HangMarker = "did not finish within";

    /// <summary><see cref="CrashRun"/>, reporting a hang (a deadlock after a fault) as a failure instead of hanging the test run.</summary>
    private static string? CrashRunGuarded(string device, Fault fault, int k, int seedBase = 0)
    {
        var run = Task.Factory.StartNew(() => CrashRun(device, fault, k, seedBase), TaskCreationOptions.LongRunning);
        try { return run.Wait(TimeSpan.FromSeconds(30)) ? run.Result : $"{fault} k={k} on device '{device}': the run {HangMarker} 30 s (hung)"; }
        catch (AggregateException e) { return $"{fault} k={k} on device '{device}': threw (closing the pool?) {e.InnerException}"; }
    }

    private static string Diff(string expected, string found)
    {
        var a = expected.Split('\n');
        var b = found.Split('\n');
        var lines = a.Except(b).Select(l => "- " + l).Concat(b.Except(a).Select(l => "+ " + l)).Take(40);
        return string.Join("\n", lines);
    }

    private void RunAll(string device, Fault fault)
    {
        long writes = WritesPerDevice.Value[device];
        var sw = Stopwatch.StartNew();
        var failures = new List<string>();
        // k = writes + 1 never fires: the fault-free end of the same run.
        for (int k = 1; k <= writes + 1; k++)
        {
            var f = CrashRunGuarded(device, fault, k);
            if (f != null) failures.Add(f);
            if (f != null && f.Contains(HangMarker)) break;
        }
        output.WriteLine($"{fault} on {device}: {writes + 1} cut points, {failures.Count} failed, {sw.ElapsedMilliseconds} ms");
        Assert.True(failures.Count == 0, $"{failures.Count} of {writes + 1} cut points ({fault} on device '{device}') failed; the first:\n"
            + string.Join("\n\n", failures.Take(3)));
    }

    // ------------------------------------------------------------------ the tests

    [Fact]
    public void WorkloadCoversEveryWrittenDevice()
    {
        var w = WritesPerDevice.Value;
        output.WriteLine(string.Join(", ", w.Select(kv => $"{kv.Key}: {kv.Value} writes")));
        Assert.Equal(0, w["base"]); // the log never fills in this workload, so no write reaches the base device (CleanerCrashTests cut there)
        Assert.True(w["log"] >= 20 && w["meta"] >= 20 && w["meta-log"] >= 20, string.Join(", ", w));
    }

    [Theory]
    [InlineData("log")]
    [InlineData("meta")]
    [InlineData("meta-log")]
    public void PowerCutAfterEveryWrite(string device) => RunAll(device, Fault.CutAfterWrites);

    [Theory]
    [InlineData("log")]
    [InlineData("meta")]
    [InlineData("meta-log")]
    public void TornWriteAtEveryWrite(string device) => RunAll(device, Fault.TearWrite);

    [Theory]
    [InlineData("log")]
    [InlineData("meta")]
    [InlineData("meta-log")]
    public void PowerCutKeepingRandomUnflushedWrites(string device) => RunAll(device, Fault.CutAfterWritesKeepRandom);

    /// <summary>All devices lose power together before each operation in turn, each keeping a random
    /// subset of its unflushed writes (two seeds per cut point).</summary>
    [Fact]
    public void PowerCutBetweenOperationsKeepingRandomSubsets()
    {
        var failures = new List<string>();
        for (int k = 0; k <= Ops.Count; k++)
            for (int seed = 0; seed < 2; seed++)
                if (CrashRunGuarded("all", Fault.CutAllBeforeOperation, k, seed) is { } f) failures.Add(f);
        Assert.True(failures.Count == 0, $"{failures.Count} of {2 * (Ops.Count + 1)} cut points failed; the first:\n" + string.Join("\n\n", failures.Take(3)));
    }

    // ------------------------------------------------------------------ I/O errors

    /// <summary>A log write fails once: that write returns EIO and changes nothing; the pool keeps working.</summary>
    [Fact]
    public void FailedLogWriteReturnsEioAndThePoolKeepsWorking()
    {
        using var p = NewPool();
        long ino = CreateFile(p.Live, "/f");
        var content = Pattern(100_000, 1);
        WriteAt(p.Live, ino, 0, content);
        Assert.Equal(0, (int)p.Live.Fsync(ino));

        p.LogFault!.FailWriteNumber(1);
        var patch = Pattern(8192, 2);
        Assert.Equal(Errno.EIO, p.Live.Write(ino, 4096, patch, out int n));
        Assert.Equal(0, n);
        Assert.Equal(content, ReadAll(p.Live, ino));

        WriteAt(p.Live, ino, 4096, patch);
        patch.CopyTo(content, 4096);
        long other = CreateFile(p.Live, "/g");
        WriteAt(p.Live, other, 0, Pattern(5000, 3));
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        Assert.Equal(content, ReadAll(p.Live, ino));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(content, ReadAll(p.Live, Ino(p.Live, "/f")));
        Assert.Equal(Pattern(5000, 3), ReadAll(p.Live, Ino(p.Live, "/g")));
        p.AssertClean();
    }

    /// <summary>
    /// A write whose log space runs from the end of segment 0 into segment 1 (three log writes: data in
    /// segment 0, the header of segment 1, data in segment 1) meets a failing log write at each of them:
    /// the write returns EIO or is short, never throws; retried, it succeeds; the pool stays fsck-clean and
    /// ends with exactly the free space of a run without the fault.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void FailedLogWriteAcrossALogSegmentBoundary(int failingWrite)
    {
        using var p = NewPool();
        long ino = CreateFile(p.Live, "/f");
        var content = Pattern(100_000, 1);
        WriteAt(p.Live, ino, 0, content);
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        // Move the log allocator to 10 blocks before the end of segment 0.
        long pad = CreateFile(p.Live, "/pad");
        long used = p.Engine.Space[FormatConstants.LogCookie].Cursor;
        long reserve = (FormatConstants.SegmentBlocks - 10 - used) * 4096;
        Assert.Equal(0, (int)p.Engine.IomapBegin(pad, 0, reserve, IomapOp.Write, out var pair));
        Assert.Equal(reserve, pair.Write.Length);
        Assert.Equal(0, (int)p.Engine.IomapEnd(pad, 0, reserve, 0, IomapOp.Write, pair.Write));

        long writesBefore = p.LogFault!.TotalWrites;
        if (failingWrite > 0) p.LogFault.FailWriteNumber(failingWrite);
        var data = Pattern(100_000, 2);
        int n = -1;
        Errno e = 0;
        var thrown = Record.Exception(() => e = p.Live.Write(ino, 0, data, out n));
        Assert.True(thrown == null, $"the write threw instead of returning EIO: {thrown}");
        if (failingWrite == 0)
        {
            Assert.Equal(0, (int)e);
            Assert.Equal(3, p.LogFault.TotalWrites - writesBefore); // the premise: three log writes
        }
        else Assert.True(e == Errno.EIO || (e == 0 && n < data.Length), $"failing log write {failingWrite}: {e}, {n} of {data.Length} bytes written");
        var expect = (byte[])content.Clone();
        if (e == 0) data.AsSpan(0, n).CopyTo(expect);
        Assert.Equal(expect, ReadAll(p.Live, ino));

        WriteAt(p.Live, ino, 0, data); // retried in full
        Assert.Equal(0, (int)p.Live.Fsync(ino));
        Assert.Equal(data, ReadAll(p.Live, ino));
        p.AssertClean();
        long free = p.Live.StatFs().FreeBlocks;
        p.Reopen();
        Assert.Equal(data, ReadAll(p.Live, Ino(p.Live, "/f")));
        p.AssertClean();
        Assert.Equal(free, p.Live.StatFs().FreeBlocks); // nothing leaked in memory that a reopen would find free
    }

    /// <summary>
    /// The metadata device (data file or log) fails its flush: the commit fails with EIO, every later
    /// change is refused with EIO (nothing half-done is committed later), closing works, and reopening
    /// gives a consistent pool holding either the last committed state or the failed commit's.
    /// </summary>
    [Theory]
    [InlineData("meta")]
    [InlineData("meta-log")]
    public void FailedMetadataFlushFailsTheCommitAndStopsChanges(string device)
    {
        using var p = NewPool();
        var fs = p.Live;
        long a = CreateFile(fs, "/a");
        WriteAt(fs, a, 0, Pattern(50_000, 1));
        Assert.Equal(0, (int)fs.Mkdir(fs.RootIno, "d", 0x1ED, 0, 0, out var d));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s", out _));
        Assert.Equal(0, (int)fs.Fsync(a));
        string committed = ReadListing(p);

        WriteAt(fs, a, 10_000, Pattern(20_000, 2));
        long b = CreateFile(fs, "/b");
        WriteAt(fs, b, 0, Pattern(9000, 3));
        Assert.Equal(0, (int)fs.Rename(fs.RootIno, "a", d.Ino, "a2"));
        string attempted = ReadListing(p);

        Dev(p, device).FailFlush(true);
        Assert.Equal(Errno.EIO, fs.Fsync(a));
        Assert.Throws<IOException>(() => p.Engine.Commit());
        Assert.Equal(Errno.EIO, fs.Create(fs.RootIno, "c", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EIO, fs.Mkdir(fs.RootIno, "e", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.EIO, fs.Write(b, 0, new byte[10], out _));
        Assert.Equal(Errno.EIO, fs.Unlink(fs.RootIno, "b"));
        Assert.Equal(Errno.EIO, fs.Rename(fs.RootIno, "b", fs.RootIno, "b2"));
        Assert.Equal(Errno.EIO, fs.SetAttr(b, new SetAttrRequest { Size = 1 }, out _));
        Assert.Equal(Errno.EIO, fs.IomapBegin(b, 0, 4096, IomapOp.Write, out _));
        Assert.Equal(Errno.EIO, p.Engine.CreateSnapshot("t", out _));
        Assert.Equal(Errno.EIO, p.Engine.DeleteSnapshot("s"));
        Assert.Equal(Errno.EIO, fs.Fsync(b));

        p.Reopen(); // closes the failed pool (which must not throw) and opens the media again
        p.Engine.CommitInterval = TimeSpan.Zero;
        p.AssertClean();
        string found = ReadListing(p);
        Assert.True(found == committed || found == attempted,
            $"after reopening, the pool holds neither the committed state nor the failed commit's:\n{Diff(committed, found)}");
        output.WriteLine(found == committed ? "reopened at the last committed state" : "reopened with the failed commit (it had reached the metadata log)");
        long c = CreateFile(p.Live, "/c");
        WriteAt(p.Live, c, 0, Pattern(1000, 4));
        Assert.Equal(0, (int)p.Live.Fsync(c));
        p.AssertClean();
    }

    /// <summary>The metadata log stream with a slow flush that fails if the data file's device has lost
    /// power meanwhile (the power cut reaches the log device too): it widens the window in which LiteDB's
    /// checkpoint could copy a transaction into the data file before the log holding it is durable.</summary>
    private sealed class SlowFlushStream(Stream inner, FaultInjectingBlockDevice device, Func<bool> powerLost) : Stream
    {
        public TimeSpan Delay;
        public override bool CanRead => inner.CanRead;
        public override bool CanSeek => inner.CanSeek;
        public override bool CanWrite => inner.CanWrite;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => inner.SetLength(value);
        public override void Flush()
        {
            Thread.Sleep(Delay);
            if (powerLost()) device.PowerCut();
            inner.Flush();
        }
    }

    /// <summary>
    /// The data file's device loses power in the middle of a checkpoint (some of the pages it copied
    /// from the log persist, some not) while the log's flush is slow: the transaction must already be
    /// durable in the log, so that reopening finishes the checkpoint instead of finding a data file
    /// holding half a transaction.
    /// </summary>
    [Fact]
    public void MetadataLogIsDurableBeforeTheCheckpointWritesTheDataFile()
    {
        var failures = new List<string>();
        for (int seed = 0; seed < 6; seed++)
        {
            var mem = new[] { new MemoryBlockDevice("base", 1 << 20), new MemoryBlockDevice("log", 16 << 20),
                new MemoryBlockDevice("meta", 1L << 30), new MemoryBlockDevice("meta-log", 1L << 30) };
            var dev = mem.Select(m => new FaultInjectingBlockDevice(m)).ToArray();
            var devices = dev;
            var slowLog = new SlowFlushStream(new BlockDeviceStream(dev[3]), dev[3], () => devices[2].HasLostPower);
            var pool = Pool.Create(new PoolMedia(dev[0], dev[1], new BlockDeviceStream(dev[2]), slowLog), new PoolCreateOptions());
            pool.Engine.CommitInterval = TimeSpan.Zero;
            var fs = pool.Live;
            long a = CreateFile(fs, "/a");
            WriteAt(fs, a, 0, Pattern(40_000, seed));
            Assert.Equal(0, (int)pool.Engine.CreateSnapshot("s", out _));
            string committed = ReadListing(pool);
            WriteAt(fs, a, 8192, Pattern(20_000, seed + 100));
            for (int i = 0; i < 20; i++) CreateFile(fs, $"/f{i}");
            Assert.Equal(0, (int)fs.Rename(fs.RootIno, "a", fs.RootIno, "b"));
            string attempted = ReadListing(pool);

            slowLog.Delay = TimeSpan.FromMilliseconds(40);
            dev[2].CutPowerAfterWrites(2, PowerCutMode.KeepRandomSubset, seed);
            var e = fs.Fsync(a);
            foreach (var d in dev) if (!d.HasLostPower) d.PowerCut();
            try { pool.Dispose(); } catch (IOException) { }

            dev = mem.Select(m => new FaultInjectingBlockDevice(m)).ToArray();
            try
            {
                using var reopened = Pool.Open(new PoolMedia(dev[0], dev[1], BlockDeviceStream.Open(dev[2]), BlockDeviceStream.Open(dev[3])));
                var fsck = reopened.Fsck();
                string found = ReadListing(reopened);
                if (!fsck.Clean) failures.Add($"seed {seed} (fsync: {e}): fsck after reboot:\n{fsck}");
                else if (found != committed && found != attempted) failures.Add($"seed {seed} (fsync: {e}): the pool holds a mix:\n{Diff(attempted, found)}");
            }
            catch (Exception x) { failures.Add($"seed {seed} (fsync: {e}): reopening threw {x}"); }
        }
        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
    }
}
