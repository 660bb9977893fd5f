using Cow.Fuse.Mounting;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// Seeded random operations through the real mount — writes at random offsets and sizes (unaligned, across
/// 4 KiB and 1 MiB boundaries), appends, truncates, punched holes, creates, renames, unlinks, directories,
/// snapshots — checked byte for byte against an in-memory model of the live tree and of every snapshot
/// (read back through .snapshots/NAME), with remounts in between and a clean fsck at the end.
/// A failure names its seed: rerun it with COW_SEED=&lt;seed&gt; (COW_OPS=&lt;n&gt; changes the operation count).
/// </summary>
[Trait("Tier", "mount")]
public class RandomMountExerciserTests(ITestOutputHelper output)
{
    private const int MaxFileSize = 3 << 20;
    private const int MaxFiles = 14, MaxSnapshots = 5;

    public static IEnumerable<object[]> Seeds()
    {
        var env = Environment.GetEnvironmentVariable("COW_SEED");
        if (!string.IsNullOrWhiteSpace(env))
        {
            yield return new object[] { int.Parse(env), false };
            yield return new object[] { int.Parse(env), true };
            yield break;
        }
        yield return new object[] { 1, false };
        yield return new object[] { 4242, false };
        yield return new object[] { 900_001, true }; // with the kernel's writeback cache
        yield return new object[] { 0, false };      // 0: a fresh random seed, printed
    }

    /// <summary>Live files opened for writing bypass the FUSE page cache (<c>--direct-io</c>): writes arrive
    /// cut at the page boundaries of the writer's buffers.</summary>
    [SkippableFact]
    public void DirectIoWriters() => RunSeed(SeedOr(31_337), false, s => s with { DirectIo = true });

    internal static int SeedOr(int seed) => int.TryParse(Environment.GetEnvironmentVariable("COW_SEED"), out int s) ? s : seed;

    private static int OpsPerSeed => int.TryParse(Environment.GetEnvironmentVariable("COW_OPS"), out int n) && n > 0 ? n : 2000;

    /// <summary>A tree: file contents (never mutated in place, so snapshots share them) and directories.</summary>
    private sealed class Model
    {
        public SortedDictionary<string, byte[]> Files { get; } = new(StringComparer.Ordinal);
        public SortedSet<string> Dirs { get; } = new(StringComparer.Ordinal);

        public Model Clone()
        {
            var c = new Model();
            foreach (var (k, v) in Files) c.Files[k] = v;
            foreach (var d in Dirs) c.Dirs.Add(d);
            return c;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Seeds))]
    public void RandomOperationsMatchTheModel(int seed, bool writebackCache) => RunSeed(seed, writebackCache, null);

    internal void RunSeed(int seed, bool writebackCache, Func<MountSettings, MountSettings>? adjust, Action<MountedPool>? atEnd = null)
    {
        MountedPool.RequireRootAndFuse();   // before the catch below, which would turn the skip into a failure
        if (seed == 0) seed = Random.Shared.Next(1, int.MaxValue);
        output.WriteLine($"COW_SEED={seed} (writeback cache {(writebackCache ? "on" : "off")})");
        var run = new Run(seed, OpsPerSeed, writebackCache, adjust, atEnd);
        try { run.Go(); }
        catch (Exception ex)
        {
            throw new Xunit.Sdk.XunitException($"COW_SEED={seed}{(writebackCache ? " (writeback cache)" : "")}: op #{run.OpIndex} ({run.Current}) failed: {ex.Message}\n" +
                $"last operations:\n  {string.Join("\n  ", run.History)}\n{ex}");
        }
        output.WriteLine(run.Summary());
    }

    private sealed class Run(int seed, int ops, bool writebackCache, Func<MountSettings, MountSettings>? adjust, Action<MountedPool>? atEnd)
    {
        private readonly Random _r = new(seed);
        private readonly Model _live = new();
        private readonly Dictionary<string, Model> _snaps = new();
        private readonly Dictionary<string, int> _counts = new();
        private MountedPool _m = null!;
        private int _nameCounter, _snapCounter;

        public int OpIndex { get; private set; }
        public string Current { get; private set; } = "setup";
        public Queue<string> History { get; } = new();

        public string Summary() => $"COW_SEED={seed}: {ops} operations: " + string.Join(", ", _counts.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}"));

        private void Note(string what)
        {
            Current = what;
            History.Enqueue($"#{OpIndex} {what}");
            while (History.Count > 25) History.Dequeue();
            var kind = what.Split(' ')[0];
            _counts[kind] = _counts.GetValueOrDefault(kind) + 1;
        }

        public void Go()
        {
            using var m = new MountedPool(writebackCache: writebackCache, adjust: adjust);
            _m = m;
            for (OpIndex = 0; OpIndex < ops; OpIndex++)
            {
                if (OpIndex > 0 && (OpIndex == ops / 3 || OpIndex == 2 * ops / 3))
                {
                    Note("remount");
                    m.Remount();
                    VerifyAll();
                }
                Step();
            }
            OpIndex = ops;
            Note("final-verify");
            VerifyAll();
            atEnd?.Invoke(m);
            Note("fsck");
            m.UnmountNow();
            using (var p = Cow.Core.Pool.Open(m.PoolDir))
            {
                var report = p.Fsck();
                if (!report.Clean) throw new Xunit.Sdk.XunitException("fsck not clean: " + report);
            }
            Note("reopen-verify");
            m.MountNow();
            VerifyAll();
        }

        // ------------------------------------------------------------ choosing

        private string P(string rel) => _m.P(rel);
        private string RandomDir() { int k = _r.Next(_live.Dirs.Count + 2); return k >= _live.Dirs.Count ? "" : _live.Dirs.ElementAt(k); }
        private static string Join(string dir, string name) => dir.Length == 0 ? name : dir + "/" + name;
        private string NewName(string prefix) => prefix + (_nameCounter++).ToString() + (_r.Next(4) == 0 ? "-" + new string('x', _r.Next(1, 60)) : "");
        private string? RandomFile() => _live.Files.Count == 0 ? null : _live.Files.Keys.ElementAt(_r.Next(_live.Files.Count));

        private byte[] RandomBytes(int n)
        {
            var b = new byte[n];
            // Mostly random, sometimes a run of zeros (zero bytes written must still read back as written).
            if (_r.Next(8) == 0) return b;
            _r.NextBytes(b);
            return b;
        }

        /// <summary>An offset biased towards 4 KiB and 1 MiB boundaries, the file's end, and unaligned spots.</summary>
        private long PickOffset(long size)
        {
            return _r.Next(6) switch
            {
                0 => 0,
                1 => Math.Max(0, (long)_r.Next(0, (int)(size / 4096) + 2) * 4096 + _r.Next(-300, 300)),
                2 => Math.Max(0, (long)_r.Next(1, 3) * (1 << 20) + _r.Next(-6000, 6000)),
                3 => Math.Max(0, size + _r.Next(-2000, 20000)),
                _ => _r.NextInt64(0, size + 70_000),
            };
        }

        private int PickLength()
        {
            return _r.Next(6) switch
            {
                0 => _r.Next(1, 64),
                1 => 4096 * _r.Next(1, 9),
                2 => _r.Next(1, 5000),
                3 => _r.Next(60_000, 300_000),
                _ => _r.Next(1, 40_000),
            };
        }

        // ------------------------------------------------------------ model edits (copy on write)

        private static byte[] WriteModel(byte[] old, long offset, ReadOnlySpan<byte> data)
        {
            long end = Math.Max(old.Length, offset + data.Length);
            var n = new byte[end];
            old.CopyTo(n, 0);
            data.CopyTo(n.AsSpan((int)offset));
            return n;
        }

        private static byte[] ResizeModel(byte[] old, long size)
        {
            var n = new byte[size];
            old.AsSpan(0, (int)Math.Min(old.Length, size)).CopyTo(n);
            return n;
        }

        // ------------------------------------------------------------ one operation

        private void Step()
        {
            int roll = _r.Next(100);
            var f = RandomFile();
            if (f == null || roll < 8) { if (_live.Files.Count < MaxFiles) Create(); else Unlink(f!); return; }
            var cur = _live.Files[f];
            switch (roll)
            {
                case < 34: Write(f, cur); break;
                case < 38: Append(f, cur); break;
                case < 54: ReadCheck(f, cur); break;
                case < 61: TruncateOp(f, cur); break;
                case < 66: Punch(f, cur); break;
                case < 72: RenameFile(f); break;
                case < 77: Unlink(f); break;
                case < 80: MkdirOp(); break;
                case < 82: RmdirOp(); break;
                case < 84: RenameDir(); break;
                case < 88: VerifyFile(f, cur); break;
                case < 90: SnapshotOp(); break;
                case < 96: SnapshotCheck(); break;
                default: ListCheck(); break;
            }
        }

        private void Create()
        {
            var path = Join(RandomDir(), NewName("f"));
            int size = _r.Next(4) switch { 0 => 0, 1 => _r.Next(1, 4096), 2 => _r.Next(4096, 300_000), _ => _r.Next(1, 20_000) };
            Note($"create {path} {size}");
            var data = RandomBytes(size);
            using (var fd = Fd.Open(P(path), O_WRONLY | O_CREAT | O_EXCL, 0x1A4)) if (size > 0) fd.WriteAt(0, data);
            _live.Files[path] = data;
        }

        private void Write(string f, byte[] cur)
        {
            long off = PickOffset(cur.Length);
            int len = PickLength();
            if (off + len > MaxFileSize) { off = Math.Max(0, MaxFileSize - len - _r.Next(5000)); }
            Note($"write {f} at {off} len {len} (size {cur.Length})");
            var data = RandomBytes(len);
            using (var fd = Fd.Open(P(f), _r.Next(2) == 0 ? O_WRONLY : O_RDWR)) fd.WriteAt(off, data);
            _live.Files[f] = WriteModel(cur, off, data);
        }

        private void Append(string f, byte[] cur)
        {
            int len = PickLength();
            if (cur.Length + len > MaxFileSize) { TruncateTo(f, cur, _r.Next(0, 100_000)); return; }
            Note($"append {f} len {len} (size {cur.Length})");
            var data = RandomBytes(len);
            using (var fd = Fd.Open(P(f), O_WRONLY | O_APPEND))
            {
                int done = 0;
                while (done < len)
                {
                    long n = Check(Native.Write(fd.Handle, data.AsSpan(done)), "append");
                    done += (int)n;
                }
            }
            _live.Files[f] = WriteModel(cur, cur.Length, data);
        }

        private void ReadCheck(string f, byte[] cur)
        {
            long off = _r.Next(3) == 0 ? PickOffset(cur.Length) : _r.NextInt64(0, cur.Length + 1);
            int len = PickLength();
            Note($"read {f} at {off} len {len} (size {cur.Length})");
            byte[] got;
            using (var fd = Fd.Open(P(f), O_RDONLY)) got = fd.ReadAt(off, len);
            int expectLen = (int)Math.Max(0, Math.Min(len, cur.Length - off));
            if (got.Length != expectLen) throw new Xunit.Sdk.XunitException($"read {f} at {off} len {len}: got {got.Length} bytes, expected {expectLen}");
            int diff = FirstDiff(got, cur.AsSpan((int)Math.Min(off, cur.Length), expectLen));
            if (diff >= 0) throw new Xunit.Sdk.XunitException($"read {f} at {off} len {len}: first difference at file offset {off + diff}");
        }

        private void TruncateOp(string f, byte[] cur)
        {
            long size = _r.Next(5) switch
            {
                0 => 0,
                1 => _r.NextInt64(0, cur.Length + 1),
                2 => cur.Length + _r.Next(1, 300_000),
                3 => Math.Max(0, (long)_r.Next(0, 4) * (1 << 20) + _r.Next(-5000, 5000)),
                _ => _r.Next(0, 4096 * 10),
            };
            TruncateTo(f, cur, Math.Min(size, MaxFileSize));
        }

        private void TruncateTo(string f, byte[] cur, long size)
        {
            bool viaFd = _r.Next(2) == 0;
            Note($"truncate {f} to {size} (size {cur.Length}{(viaFd ? ", ftruncate" : "")})");
            if (viaFd) using (var fd = Fd.Open(P(f), O_RDWR)) Check(Ftruncate(fd.Handle, size), "ftruncate");
            else Check(Truncate(P(f), size), "truncate");
            _live.Files[f] = ResizeModel(cur, size);
        }

        private void Punch(string f, byte[] cur)
        {
            long off = PickOffset(cur.Length);
            long len = _r.Next(3) == 0 ? 4096L * _r.Next(1, 300) : _r.Next(1, 200_000);
            Note($"punch {f} at {off} len {len} (size {cur.Length})");
            using (var fd = Fd.Open(P(f), O_RDWR)) Check(Fallocate(fd.Handle, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len), "punch hole");
            if (off < cur.Length)
            {
                var n = (byte[])cur.Clone();
                n.AsSpan((int)off, (int)Math.Min(len, cur.Length - off)).Clear();
                _live.Files[f] = n;
            }
        }

        private void RenameFile(string f)
        {
            string to;
            if (_r.Next(3) == 0 && _live.Files.Count > 1)
            {
                to = RandomFile()!; // replace another file (or itself: a no-op)
            }
            else to = Join(RandomDir(), NewName("r"));
            Note($"rename {f} -> {to}");
            Check(Syscall.rename(P(f), P(to)), "rename");
            if (to == f) return;
            var data = _live.Files[f];
            _live.Files.Remove(f);
            _live.Files[to] = data;
        }

        private void Unlink(string f)
        {
            Note($"unlink {f}");
            Check(Syscall.unlink(P(f)), "unlink");
            _live.Files.Remove(f);
        }

        private void MkdirOp()
        {
            if (_live.Dirs.Count >= 8) { RmdirOp(); return; }
            var d = Join(RandomDir(), NewName("d"));
            Note($"mkdir {d}");
            Check(Syscall.mkdir(P(d), (FilePermissions)0x1ED), "mkdir");
            _live.Dirs.Add(d);
        }

        private bool IsEmptyDir(string d) =>
            !_live.Files.Keys.Any(k => k.StartsWith(d + "/", StringComparison.Ordinal)) && !_live.Dirs.Any(k => k.StartsWith(d + "/", StringComparison.Ordinal));

        private void RmdirOp()
        {
            var empty = _live.Dirs.Where(IsEmptyDir).ToList();
            var nonEmpty = _live.Dirs.Where(d => !IsEmptyDir(d)).ToList();
            if (nonEmpty.Count > 0 && _r.Next(4) == 0)
            {
                var d = nonEmpty[_r.Next(nonEmpty.Count)];
                Note($"rmdir-nonempty {d}");
                if (Syscall.rmdir(P(d)) == 0 || LastErrno() != Errno.ENOTEMPTY)
                    throw new Xunit.Sdk.XunitException($"rmdir of non-empty {d} did not fail with ENOTEMPTY ({LastErrno()})");
                return;
            }
            if (empty.Count == 0) { MkdirOp(); return; }
            var e = empty[_r.Next(empty.Count)];
            Note($"rmdir {e}");
            Check(Syscall.rmdir(P(e)), "rmdir");
            _live.Dirs.Remove(e);
        }

        private void RenameDir()
        {
            if (_live.Dirs.Count == 0) { MkdirOp(); return; }
            var d = _live.Dirs.ElementAt(_r.Next(_live.Dirs.Count));
            var parent = RandomDir();
            if (parent == d || parent.StartsWith(d + "/", StringComparison.Ordinal))
            {
                Note($"rename-into-self {d} -> {parent}");
                if (Syscall.rename(P(d), P(Join(parent, "x"))) == 0 || LastErrno() != Errno.EINVAL)
                    throw new Xunit.Sdk.XunitException($"rename of {d} into itself did not fail with EINVAL ({LastErrno()})");
                return;
            }
            var to = Join(parent, NewName("d"));
            Note($"rename-dir {d} -> {to}");
            Check(Syscall.rename(P(d), P(to)), "rename dir");
            string Move(string k) => k == d ? to : k.StartsWith(d + "/", StringComparison.Ordinal) ? to + k[d.Length..] : k;
            var dirs = _live.Dirs.Select(Move).ToList();
            _live.Dirs.Clear();
            foreach (var x in dirs) _live.Dirs.Add(x);
            var files = _live.Files.ToList();
            _live.Files.Clear();
            foreach (var (k, v) in files) _live.Files[Move(k)] = v;
        }

        private void VerifyFile(string f, byte[] cur)
        {
            Note($"verify {f} (size {cur.Length})");
            CompareFile(P(f), cur, f);
        }

        private void SnapshotOp()
        {
            if (_snaps.Count >= MaxSnapshots || (_snaps.Count > 0 && _r.Next(4) == 0))
            {
                var victim = _snaps.Keys.ElementAt(_r.Next(_snaps.Count));
                Note($"snapshot-delete {victim}");
                Check(Syscall.rmdir(P(".snapshots/" + victim)), "rmdir snapshot");
                _snaps.Remove(victim);
                if (StatErrno(P(".snapshots/" + victim)) != Errno.ENOENT) throw new Xunit.Sdk.XunitException($"snapshot {victim} still there after rmdir");
                return;
            }
            var name = "s" + (_snapCounter++);
            Note($"snapshot {name}");
            Check(Syscall.mkdir(P(".snapshots/" + name), (FilePermissions)0x1ED), "mkdir snapshot");
            _snaps[name] = _live.Clone();
        }

        private void SnapshotCheck()
        {
            if (_snaps.Count == 0) { SnapshotOp(); return; }
            var name = _snaps.Keys.ElementAt(_r.Next(_snaps.Count));
            var model = _snaps[name];
            if (model.Files.Count == 0 || _r.Next(5) == 0)
            {
                Note($"snapshot-list {name}");
                CompareTree(P(".snapshots/" + name), model, ".snapshots/" + name);
                return;
            }
            var f = model.Files.Keys.ElementAt(_r.Next(model.Files.Count));
            Note($"snapshot-read {name}/{f} (size {model.Files[f].Length})");
            CompareFile(P(".snapshots/" + name + "/" + f), model.Files[f], $"{name}/{f}");
        }

        private void ListCheck()
        {
            Note("list");
            CompareNames(_m.MountPoint, _live);
        }

        // ------------------------------------------------------------ comparing

        private void VerifyAll()
        {
            CompareTree(_m.MountPoint, _live, "live");
            foreach (var (name, model) in _snaps) CompareTree(P(".snapshots/" + name), model, ".snapshots/" + name);
            var listed = Directory.EnumerateDirectories(P(".snapshots")).Select(Path.GetFileName).ToHashSet();
            if (!listed.SetEquals(_snaps.Keys)) throw new Xunit.Sdk.XunitException($".snapshots lists [{string.Join(",", listed)}], expected [{string.Join(",", _snaps.Keys)}]");
        }

        private static void CompareNames(string root, Model model)
        {
            var files = new SortedSet<string>(StringComparer.Ordinal);
            var dirs = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var e in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
            {
                var rel = Path.GetRelativePath(root, e);
                if (rel == ".snapshots" || rel.StartsWith(".snapshots/", StringComparison.Ordinal)) continue;
                if (Directory.Exists(e)) dirs.Add(rel); else files.Add(rel);
            }
            if (!files.SetEquals(model.Files.Keys))
                throw new Xunit.Sdk.XunitException($"files under {root}: extra [{string.Join(",", files.Except(model.Files.Keys))}] missing [{string.Join(",", model.Files.Keys.Except(files))}]");
            if (!dirs.SetEquals(model.Dirs))
                throw new Xunit.Sdk.XunitException($"directories under {root}: extra [{string.Join(",", dirs.Except(model.Dirs))}] missing [{string.Join(",", model.Dirs.Except(dirs))}]");
        }

        private static void CompareTree(string root, Model model, string label)
        {
            CompareNames(root, model);
            foreach (var (rel, data) in model.Files) CompareFile(Path.Combine(root, rel), data, $"{label}/{rel}");
        }

        private static void CompareFile(string path, byte[] expected, string label)
        {
            var st = StatOf(path);
            if (st.st_size != expected.Length) throw new Xunit.Sdk.XunitException($"{label}: st_size {st.st_size}, expected {expected.Length}");
            if (st.st_blocks * 512 > (long)expected.Length + (2L << 20) && expected.Length > 0)
                throw new Xunit.Sdk.XunitException($"{label}: st_blocks {st.st_blocks} is far more than the size {expected.Length}");
            var got = File.ReadAllBytes(path);
            if (got.Length != expected.Length) throw new Xunit.Sdk.XunitException($"{label}: read {got.Length} bytes, expected {expected.Length}");
            int diff = FirstDiff(got, expected);
            if (diff >= 0)
            {
                int end = Math.Min(expected.Length, diff + 16);
                throw new Xunit.Sdk.XunitException($"{label}: first difference at offset {diff} of {expected.Length}: got {Convert.ToHexString(got, diff, end - diff)}, expected {Convert.ToHexString(expected, diff, end - diff)}");
            }
        }

        private static int FirstDiff(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        {
            int i = a.CommonPrefixLength(b);
            return i == a.Length && i == b.Length ? -1 : i;
        }
    }
}
