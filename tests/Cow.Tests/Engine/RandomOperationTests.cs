using System.Diagnostics;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Engine;

/// <summary>
/// Seeded random operations on the live tree, checked against a simple in-memory model: every result
/// and errno as it happens, and at checkpoints every name, type, size, link count and byte of the live
/// tree and of every snapshot, plus fsck. A failure names the seed and the operation index and lists
/// the last operations and how to rerun it: <c>COW_SEED=n [COW_COMMIT_EVERY_BLOCKS=..] [COW_INODE_CACHE_LIMIT=..]
/// [COW_LOG_MIB=..] [COW_OPS=..] [COW_CHECK_EVERY_OP=1] dotnet test --filter "FullyQualifiedName~Random"</c>
/// (the environment row takes these; the fixed rows run too).
/// </summary>
[Trait("Tier", "slow")]
public class RandomOperationTests(ITestOutputHelper output)
{
    /// <summary>Seed placeholder: COW_SEED from the environment if set, else one derived from the time.</summary>
    private const int EnvironmentSeed = -1;

    /// <summary>How a run's pool is set up: 0 keeps the engine's default.</summary>
    private sealed record Config(int CommitEveryBlocks, int InodeCacheLimit, int LogMiB)
    {
        public string Reproduce(int seed) => $"COW_SEED={seed} COW_COMMIT_EVERY_BLOCKS={CommitEveryBlocks} COW_INODE_CACHE_LIMIT={InodeCacheLimit} COW_LOG_MIB={LogMiB}";
    }

    /// <summary>
    /// One seeded run. <paramref name="commitEveryBlocks"/> &gt; 0 makes group commits happen in the middle
    /// of the run; <paramref name="inodeCacheLimit"/> &gt; 0 makes the engine drop and reload its cached
    /// inodes; a small <paramref name="logMiB"/> makes the allocator wrap and reuse freed blocks.
    /// The EnvironmentSeed row takes COW_SEED and, if set, COW_COMMIT_EVERY_BLOCKS, COW_INODE_CACHE_LIMIT,
    /// COW_LOG_MIB and COW_OPS from the environment.
    /// </summary>
    [Theory]
    [InlineData(1, 1500, 0, 0, 256)]
    [InlineData(2, 1500, 0, 0, 256)]
    [InlineData(3, 1500, 64, 0, 256)]
    [InlineData(4, 1500, 0, 3, 256)]
    [InlineData(5, 1500, 0, 0, 4)]
    [InlineData(6, 1500, 64, 3, 4)]
    [InlineData(EnvironmentSeed, 1500, 0, 0, 256)]
    public void RandomOperationsMatchTheModel(int seed, int operations, int commitEveryBlocks, int inodeCacheLimit, int logMiB)
    {
        if (seed == EnvironmentSeed)
        {
            static int? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? int.Parse(v, System.Globalization.CultureInfo.InvariantCulture) : null;
            seed = Env("COW_SEED") ?? (int)(DateTime.UtcNow.Ticks % 1_000_000_000);
            commitEveryBlocks = Env("COW_COMMIT_EVERY_BLOCKS") ?? commitEveryBlocks;
            inodeCacheLimit = Env("COW_INODE_CACHE_LIMIT") ?? inodeCacheLimit;
            logMiB = Env("COW_LOG_MIB") ?? logMiB;
            operations = Env("COW_OPS") ?? operations;
        }
        var config = new Config(commitEveryBlocks, inodeCacheLimit, logMiB);
        output.WriteLine($"seed {seed}, {operations} operations, {config}");
        var sw = Stopwatch.StartNew();
        using var run = new Run(seed, config);
        run.Execute(operations);
        output.WriteLine($"done in {sw.ElapsedMilliseconds} ms: {run.Summary()}");
    }

    // ------------------------------------------------------------------ the model

    private abstract class MNode { public long Ino; }

    private sealed class MDir : MNode
    {
        public readonly SortedDictionary<string, MNode> Children = new(StringComparer.Ordinal);
    }

    /// <summary>A file's content; hard links are two names sharing one MFile. Bytes past Size are zero.</summary>
    private sealed class MFile : MNode
    {
        public byte[] Data = Array.Empty<byte>();
        public long Size;

        private void Reserve(long size)
        {
            if (size <= Data.Length) return;
            var n = new byte[Math.Max(size, Math.Min(Data.Length * 2L, 16L << 20))];
            Data.AsSpan(0, (int)Size).CopyTo(n);
            Data = n;
        }

        public void Resize(long size)
        {
            if (size < Size) Data.AsSpan((int)size, (int)(Size - size)).Clear();
            else Reserve(size);
            Size = size;
        }

        public void Write(long offset, ReadOnlySpan<byte> bytes)
        {
            if (bytes.Length == 0) return;
            if (offset + bytes.Length > Size) Resize(offset + bytes.Length);
            bytes.CopyTo(Data.AsSpan((int)offset));
        }

        public void Zero(long offset, long end)
        {
            end = Math.Min(end, Size);
            if (offset < end) Data.AsSpan((int)offset, (int)(end - offset)).Clear();
        }

        public MFile Copy() => new() { Ino = Ino, Size = Size, Data = Data.AsSpan(0, (int)Size).ToArray() };
    }

    private static MDir DeepCopy(MDir d, Dictionary<MFile, MFile> files)
    {
        var c = new MDir { Ino = d.Ino };
        foreach (var (name, n) in d.Children)
            c.Children[name] = n switch
            {
                MDir sub => DeepCopy(sub, files),
                MFile f => files.TryGetValue(f, out var cf) ? cf : files[f] = f.Copy(),
                _ => throw new InvalidOperationException(),
            };
        return c;
    }

    /// <summary>True if <paramref name="q"/> is <paramref name="x"/> or inside it.</summary>
    private static bool IsInside(MDir x, MDir q)
    {
        if (x == q) return true;
        foreach (var n in x.Children.Values) if (n is MDir d && IsInside(d, q)) return true;
        return false;
    }

    private sealed class ModelMismatch(string message) : Exception(message);

    // ------------------------------------------------------------------ one run

    private sealed class Run : IDisposable
    {
        private const long MaxOffset = 6L << 20;        // files stay below ~6.2 MiB: chunks 0 and 1
        private const int MaxSnapshots = 5, MaxDirs = 10, MaxFiles = 20;
        private static readonly string[] Names = { "a", "b", "c", "d", "e", "f", "g", "längerer Name ✓", new string('n', 255) };

        /// <summary>COW_CHECK_EVERY_OP=1 runs a full checkpoint after every operation (slow; pins a failure to its operation).</summary>
        private static readonly bool CheckEveryOperation = Environment.GetEnvironmentVariable("COW_CHECK_EVERY_OP") == "1";

        private readonly int _seed;
        private readonly Config _config;
        private readonly Random _rnd;
        private readonly MemoryPool _p;
        private MDir _root = new() { Ino = 1 };
        private readonly Dictionary<string, MDir> _snaps = new(StringComparer.Ordinal);
        private readonly Queue<string> _history = new();
        private readonly Dictionary<string, int> _counts = new();
        /// <summary>Open handles (a file may be open several times); an unlinked file lives on while open.</summary>
        private readonly List<MFile> _open = new();
        private int _op, _snapCounter, _checkpoints, _sharingClones;
        private string _current = "";

        public Run(int seed, Config config)
        {
            _seed = seed; _config = config;
            _rnd = new Random(seed);
            _p = new MemoryPool(baseSize: 64 << 20, logSize: (long)config.LogMiB << 20);
            _lowWater = ((long)config.LogMiB << 20) / 4096 / 4;
            Configure();
        }

        private FileSystemView Live => _p.Live;

        /// <summary>No commit timer (runs must be reproducible); optionally tiny group commits.</summary>
        private void Configure()
        {
            _p.Engine.CommitInterval = TimeSpan.Zero;
            if (_config.CommitEveryBlocks > 0) _p.Engine.CommitEveryBlocks = _config.CommitEveryBlocks;
            if (_config.InodeCacheLimit > 0) _p.Engine.InodeCacheLimit = _config.InodeCacheLimit;
        }

        public void Dispose() => _p.Dispose();

        public string Summary() =>
            $"log allocator wrapped {_wraps} times, {_sharingClones} clones sharing blocks, {_checkpoints} checkpoints ({_checkpointTime.ElapsedMilliseconds} ms, fsck {_fsckTime.ElapsedMilliseconds} ms), {_p.Engine.CommitCount} commits since last open; ops: " +
            string.Join(", ", _counts.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value} ({_kindTime.GetValueOrDefault(kv.Key):F0} ms)"));

        public void Execute(int operations)
        {
            try
            {
                for (_op = 0; _op < operations; _op++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    RelieveSpacePressure();
                    Step();
                    long cursor = _p.Engine.Space[Cow.Core.Format.FormatConstants.LogCookie].Cursor;
                    if (cursor < _lastCursor) _wraps++;
                    _lastCursor = cursor;
                    _kindTime[_lastKind] = _kindTime.GetValueOrDefault(_lastKind) + Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                    if ((_op + 1) % 200 == 0 || CheckEveryOperation) Checkpoint();
                }
                _current = "final checkpoint";
                Checkpoint();
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException(
                    $"seed {_seed} op {_op}: {_current}: {e.GetType().Name}: {e.Message}\n" +
                    $"reproduce: {_config.Reproduce(_seed)} (add COW_CHECK_EVERY_OP=1 to check after every operation)\n" +
                    $"last operations (oldest first):\n  {string.Join("\n  ", _history)}\n{e.StackTrace}");
            }
        }

        private void Log(string what)
        {
            _current = what;
            _history.Enqueue($"#{_op} {what}");
            while (_history.Count > 40) _history.Dequeue();
        }

        private readonly Dictionary<string, double> _kindTime = new();
        private string _lastKind = "";
        private void Count(string kind) { _counts[kind] = _counts.GetValueOrDefault(kind) + 1; _lastKind = kind; }

        private static void Check(bool ok, string message)
        {
            if (!ok) throw new ModelMismatch(message);
        }

        private static void Expect(Errno expected, Errno actual, string what) =>
            Check(expected == actual, $"{what}: expected {(expected == 0 ? "success" : expected.ToString())}, got {(actual == 0 ? "success" : actual.ToString())}");

        // ---------------------------------------------------------- model walks

        private List<MDir> Dirs()
        {
            var l = new List<MDir>();
            void Walk(MDir d) { l.Add(d); foreach (var n in d.Children.Values) if (n is MDir s) Walk(s); }
            Walk(_root);
            return l;
        }

        private List<(MDir Parent, string Name, MNode Node)> Entries()
        {
            var l = new List<(MDir, string, MNode)>();
            void Walk(MDir d) { foreach (var (name, n) in d.Children) { l.Add((d, name, n)); if (n is MDir s) Walk(s); } }
            Walk(_root);
            return l;
        }

        /// <summary>Files with a name, and files unlinked while open (reachable through their handle).</summary>
        private List<MFile> Files() => Entries().Select(e => e.Node).OfType<MFile>().Concat(_open).Distinct().ToList();

        private string PathOf(MNode target)
        {
            string? Find(MDir d, string prefix)
            {
                foreach (var (name, n) in d.Children)
                {
                    var p = prefix + "/" + Short(name);
                    if (n == target) return p;
                    if (n is MDir s && Find(s, p) is { } r) return r;
                }
                return null;
            }
            return target == _root ? "" : Find(_root, "") ?? $"(unlinked ino {target.Ino})";
        }

        private static string Short(string name) => name.Length > 20 ? name[..8] + $"…({name.Length})" : name;

        private T Pick<T>(IReadOnlyList<T> list) => list[_rnd.Next(list.Count)];
        private string PickName() => _rnd.Next(10) == 0 ? Names[_rnd.Next(7, Names.Length)] : Names[_rnd.Next(7)];

        // ---------------------------------------------------------- operations

        private void Step()
        {
            int r = _rnd.Next(1000);
            if (r < 280) DoWrite();
            else if (r < 380) DoRead();
            else if (r < 440) DoTruncate();
            else if (r < 490) DoPunchOrZero(punch: true);
            else if (r < 530) DoPunchOrZero(punch: false);
            else if (r < 600) DoCreate();
            else if (r < 630) DoMkdir();
            else if (r < 670) DoUnlink();
            else if (r < 690) DoRmdir();
            else if (r < 760) DoRename();
            else if (r < 790) DoLink();
            else if (r < 820) DoSnapshotCreate();
            else if (r < 840) DoSnapshotDelete();
            else if (r < 870) DoSnapshotRead();
            else if (r < 900) DoFsync();
            else if (r < 906) DoReopen();
            else if (r < 926) DoOpen();
            else if (r < 946) DoClose();
            else if (r < 986) DoClone();
            else if (r < 993) DoRollback();
            else DoSnapshotClone();
        }

        private MFile? PickFile()
        {
            var files = Files();
            return files.Count == 0 ? null : Pick(files);
        }

        private int WriteLength() => _rnd.Next(5) switch
        {
            0 => _rnd.Next(1, 100),
            1 => _rnd.Next(1, 8193),
            2 => 4096 * _rnd.Next(1, 17),
            3 => _rnd.Next(0, 200 * 1024 + 1),
            _ => _rnd.Next(1, 40_000),
        };

        private long Offset(MFile f) => _rnd.Next(6) switch
        {
            0 => Math.Min(f.Size, MaxOffset),                                 // at EOF
            1 => 4096L * _rnd.NextInt64(0, MaxOffset / 4096),                 // aligned anywhere
            2 => (4L << 20) + _rnd.Next(-70_000, 70_000),                     // across the chunk boundary
            3 => _rnd.NextInt64(0, Math.Min(f.Size, MaxOffset) + 1),          // inside the file
            4 => Math.Max(0, Math.Min(f.Size, MaxOffset) - _rnd.Next(0, 5000)), // near EOF
            _ => _rnd.NextInt64(0, MaxOffset),                                // anywhere, unaligned
        };

        private void DoWrite()
        {
            var f = PickFile();
            if (f == null) { DoCreate(); return; }
            int len = WriteLength();
            bool append = _rnd.Next(8) == 0 && f.Size < MaxOffset;
            long off = append ? f.Size : Offset(f);
            var data = new byte[len];
            _rnd.NextBytes(data);
            Log($"write {PathOf(f)} (ino {f.Ino}, size {f.Size}) {(append ? "append" : $"at {off}")} {len} bytes");
            Count("write");
            var e = Live.Write(f.Ino, append ? _rnd.NextInt64(0, MaxOffset) : off, data, out int n, append);
            Expect(0, e, "write");
            Check(n == len, $"write wrote {n} of {len} bytes");
            f.Write(off, data);
            if (_rnd.Next(4) == 0) CompareRange(Live, f, "live", Math.Max(0, off - 100), len + 200);
        }

        /// <summary>copy_file_range: mostly mutually block-aligned offsets (whole blocks shared), sometimes
        /// within one file, sometimes reaching both files' ends (a partial last block shared), sometimes
        /// unaligned (copied), and now and then an error.</summary>
        private void DoClone()
        {
            var f = PickFile();
            if (f == null) { DoCreate(); return; }
            var g = _rnd.Next(5) == 0 ? f : PickFile()!;
            if (_rnd.Next(40) == 0)
            {
                var d = PickDir();
                bool dirIsSource = _rnd.Next(2) == 0;
                Log($"clone with directory {PathOf(d)} (ino {d.Ino}) as {(dirIsSource ? "source" : "destination")}");
                Count("clone");
                var err = dirIsSource ? Live.CopyFileRange(d.Ino, 0, g.Ino, 0, 4096, out _) : Live.CopyFileRange(f.Ino, 0, d.Ino, 0, 4096, out _);
                Expect(Errno.EISDIR, err, "clone with a directory");
                return;
            }
            long srcOff, dstOff, length;
            bool unaligned = false;
            switch (_rnd.Next(8))
            {
                case 0 or 1 or 2: // both block-aligned
                    srcOff = 4096L * _rnd.NextInt64(0, f.Size / 4096 + 2);
                    dstOff = 4096L * _rnd.NextInt64(0, MaxOffset / 4096);
                    length = _rnd.Next(3) == 0 ? 1L << 40 : 4096L * _rnd.Next(1, 1200) + (_rnd.Next(2) == 0 ? 0 : _rnd.Next(1, 4096));
                    break;
                case 3 or 4: // mutually aligned, same remainder
                    int rem = _rnd.Next(1, 4096);
                    srcOff = 4096L * _rnd.NextInt64(0, f.Size / 4096 + 1) + rem;
                    dstOff = 4096L * _rnd.NextInt64(0, MaxOffset / 4096) + rem;
                    length = _rnd.Next(2) == 0 ? 1L << 40 : _rnd.Next(1, 3 << 20);
                    break;
                case 5: // the whole source onto the destination's last block: both ranges end at end of file
                    srcOff = 0;
                    dstOff = 4096L * (Math.Min(g.Size, MaxOffset) / 4096);
                    length = 1L << 40;
                    break;
                default: // anything (copied through read and write when not mutually aligned)
                    srcOff = _rnd.NextInt64(0, f.Size + 5000);
                    dstOff = Offset(g);
                    length = _rnd.Next(1, 200_000);
                    unaligned = true;
                    break;
            }
            // Keep files small, and byte copies within what one write could allocate.
            long limit = (unaligned || ((srcOff ^ dstOff) & 4095) != 0 ? 200_000 : MaxOffset + 200_000 - dstOff);
            length = Math.Max(1, Math.Min(length, limit));
            if (_rnd.Next(60) == 0) { srcOff = -1; }
            long len = srcOff < 0 || srcOff >= f.Size ? 0 : Math.Min(length, f.Size - srcOff);
            Errno expected = srcOff < 0 ? Errno.EINVAL
                : f == g && len > 0 && srcOff < dstOff + len && dstOff < srcOff + len ? Errno.EINVAL : 0;
            Log($"clone {PathOf(f)} (ino {f.Ino}, size {f.Size}) at {srcOff} to {PathOf(g)} (ino {g.Ino}, size {g.Size}) at {dstOff} length {length}");
            Count("clone");
            var e = Live.CopyFileRange(f.Ino, srcOff, g.Ino, dstOff, length, out long copied);
            Expect(expected, e, "clone");
            if (e != 0) return;
            Check(copied == len, $"clone copied {copied} bytes, the model has {len}");
            if (len == 0) return;
            if (((srcOff ^ dstOff) & 4095) == 0 && len >= 4096 + ((4096 - (srcOff & 4095)) & 4095)) _sharingClones++;
            var bytes = f.Data.AsSpan((int)srcOff, (int)len).ToArray();
            g.Write(dstOff, bytes);
            if (_rnd.Next(3) == 0) CompareRange(Live, g, "live", Math.Max(0, dstOff - 5000), (int)Math.Min(len + 10_000, 1 << 20));
        }

        private void DoRead()
        {
            var f = PickFile();
            if (f == null) { DoCreate(); return; }
            long off = _rnd.Next(3) == 0 ? _rnd.NextInt64(0, f.Size + 10_000) : Offset(f);
            int len = _rnd.Next(2) == 0 ? _rnd.Next(1, 9000) : _rnd.Next(1, 300_000);
            Log($"read {PathOf(f)} (ino {f.Ino}, size {f.Size}) at {off} {len} bytes");
            Count("read");
            CompareRange(Live, f, "live", off, len);
        }

        /// <summary>Reads [off, off+len) through <paramref name="fs"/> and compares with the model.</summary>
        private static void CompareRange(FileSystemView fs, MFile f, string view, long off, int len)
        {
            var buf = new byte[len];
            var e = fs.Read(f.Ino, off, buf, out int n);
            Expect(0, e, $"{view}: read ino {f.Ino} at {off} length {len}");
            int expect = (int)Math.Clamp(f.Size - off, 0, len);
            Check(n == expect, $"{view}: read ino {f.Ino} at {off} length {len} returned {n} bytes, the model has {expect} (size {f.Size})");
            var want = f.Data.AsSpan((int)Math.Min(off, f.Size), expect);
            if (!want.SequenceEqual(buf.AsSpan(0, n)))
            {
                int i = 0;
                while (want[i] == buf[i]) i++;
                throw new ModelMismatch($"{view}: ino {f.Ino} byte {off + i} is {buf[i]}, the model has {want[i]} (read at {off} length {len}, size {f.Size})");
            }
        }

        private void DoTruncate()
        {
            var f = PickFile();
            if (f == null) { DoCreate(); return; }
            long size = _rnd.Next(6) switch
            {
                0 => 0,
                1 or 2 => _rnd.NextInt64(0, f.Size + 1),                          // shrink, unaligned
                3 => 4096L * _rnd.NextInt64(0, f.Size / 4096 + 1),               // shrink, aligned
                4 => f.Size + _rnd.Next(0, 1 << 20),                             // grow
                _ => _rnd.NextInt64(0, MaxOffset + 1),
            };
            Log($"truncate {PathOf(f)} (ino {f.Ino}) from {f.Size} to {size}");
            Count("truncate");
            var e = Live.SetAttr(f.Ino, new SetAttrRequest { Size = size }, out var a);
            Expect(0, e, "truncate");
            Check(a.Size == size, $"truncate returned size {a.Size}, wanted {size}");
            f.Resize(size);
        }

        private void DoPunchOrZero(bool punch)
        {
            var f = PickFile();
            if (f == null) { DoCreate(); return; }
            long off = _rnd.Next(4) switch
            {
                0 => 4096L * _rnd.NextInt64(0, f.Size / 4096 + 2),
                1 => 0,
                2 => (4L << 20) + _rnd.Next(-70_000, 70_000),
                _ => _rnd.NextInt64(0, f.Size + 8192),
            };
            long len = _rnd.Next(7) switch
            {
                0 or 1 => _rnd.Next(1, 5000),
                2 or 3 => 4096L * _rnd.Next(1, 64),
                4 => _rnd.Next(1, 8 << 20),                                      // whole chunks too
                _ => _rnd.Next(1, 400_000),
            };
            bool keep = punch || _rnd.Next(2) == 0;
            var mode = punch ? FallocateMode.PunchHole | FallocateMode.KeepSize
                : FallocateMode.ZeroRange | (keep ? FallocateMode.KeepSize : 0);
            Log($"fallocate {mode} {PathOf(f)} (ino {f.Ino}, size {f.Size}) at {off} length {len}");
            Count(punch ? "punch" : "zero-range");
            var e = Live.Fallocate(f.Ino, mode, off, len);
            Expect(0, e, "fallocate");
            f.Zero(off, off + len);
            if (!keep && off + len > f.Size) f.Resize(off + len);
            var check = Math.Max(0, off - 5000);
            CompareRange(Live, f, "live", check, (int)Math.Min(len + 10_000, 500_000));
        }

        private MDir PickDir() => Pick(Dirs());

        private void DoCreate()
        {
            var d = PickDir();
            string name = PickName();
            bool exists = d.Children.ContainsKey(name);
            if (!exists && Files().Count >= MaxFiles) { DoUnlink(); return; }
            Log($"create {PathOf(d)}/{Short(name)}");
            Count("create");
            var e = Live.Create(d.Ino, name, 0x1A4, 0, 0, out var a);
            if (exists) { Expect(Errno.EEXIST, e, "create over an existing name"); return; }
            Expect(0, e, "create");
            Check(a.IsRegular && a.Size == 0 && a.Nlink == 1, $"create returned {a}");
            d.Children[name] = new MFile { Ino = a.Ino };
        }

        private void DoMkdir()
        {
            var d = PickDir();
            string name = PickName();
            bool exists = d.Children.ContainsKey(name);
            if (!exists && Dirs().Count >= MaxDirs) { DoCreate(); return; }
            Log($"mkdir {PathOf(d)}/{Short(name)}");
            Count("mkdir");
            var e = Live.Mkdir(d.Ino, name, 0x1ED, 0, 0, out var a);
            if (exists) { Expect(Errno.EEXIST, e, "mkdir over an existing name"); return; }
            Expect(0, e, "mkdir");
            Check(a.IsDirectory && a.Nlink == 2, $"mkdir returned {a}");
            d.Children[name] = new MDir { Ino = a.Ino };
        }

        private void DoUnlink()
        {
            var entries = Entries();
            if (entries.Count == 0 || _rnd.Next(15) == 0)
            {
                var d = PickDir();
                string name = PickName();
                Log($"unlink {PathOf(d)}/{Short(name)} (maybe missing)");
                Count("unlink");
                var e = Live.Unlink(d.Ino, name);
                Expect(d.Children.TryGetValue(name, out var n) ? n is MDir ? Errno.EISDIR : 0 : Errno.ENOENT, e, "unlink");
                if (e == 0) d.Children.Remove(name);
                return;
            }
            // Mostly files: directories only to check EISDIR.
            var files = entries.Where(x => x.Node is MFile).ToList();
            var (parent, nm, node) = files.Count > 0 && _rnd.Next(8) != 0 ? Pick(files) : Pick(entries);
            Log($"unlink {PathOf(parent)}/{Short(nm)}");
            Count("unlink");
            var err = Live.Unlink(parent.Ino, nm);
            if (node is MDir) { Expect(Errno.EISDIR, err, "unlink of a directory"); return; }
            Expect(0, err, "unlink");
            parent.Children.Remove(nm);
        }

        private void DoRmdir()
        {
            var entries = Entries();
            var dirs = entries.Where(x => x.Node is MDir).ToList();
            if (dirs.Count == 0) { DoMkdir(); return; }
            var (parent, nm, node) = _rnd.Next(8) == 0 ? Pick(entries) : Pick(dirs);
            Log($"rmdir {PathOf(parent)}/{Short(nm)}");
            Count("rmdir");
            var err = Live.Rmdir(parent.Ino, nm);
            if (node is MFile) { Expect(Errno.ENOTDIR, err, "rmdir of a file"); return; }
            if (((MDir)node).Children.Count > 0) { Expect(Errno.ENOTEMPTY, err, "rmdir of a non-empty directory"); return; }
            Expect(0, err, "rmdir");
            parent.Children.Remove(nm);
        }

        private void DoRename()
        {
            var entries = Entries();
            if (entries.Count == 0) { DoCreate(); return; }
            var (p, n, x) = Pick(entries);
            MDir q; string m;
            switch (_rnd.Next(4))
            {
                case 0: // onto an existing entry
                    var (q2, m2, _) = Pick(entries);
                    q = q2; m = m2;
                    break;
                case 1: // within the same directory
                    q = p; m = _rnd.Next(6) == 0 ? n : PickName();
                    break;
                default:
                    q = PickDir(); m = PickName();
                    break;
            }
            var flags = _rnd.Next(10) switch { < 6 => RenameFlags.None, < 8 => RenameFlags.NoReplace, _ => RenameFlags.Exchange };
            q.Children.TryGetValue(m, out var y);
            Log($"rename {PathOf(p)}/{Short(n)} -> {PathOf(q)}/{Short(m)} {flags}{(y != null ? $" (target exists: {(y is MDir ? "dir" : "file")} ino {y.Ino})" : "")}");
            Count("rename-" + flags);
            var e = Live.Rename(p.Ino, n, q.Ino, m, flags);

            Errno expected = 0;
            if (flags == RenameFlags.Exchange)
            {
                if (y == null) expected = Errno.ENOENT;
                else if (x is MDir xd && IsInside(xd, q)) expected = Errno.EINVAL;
                else if (y is MDir yd && IsInside(yd, p)) expected = Errno.EINVAL;
            }
            else
            {
                if (y != null && flags == RenameFlags.NoReplace) expected = Errno.EEXIST;
                else if (x is MDir xd && IsInside(xd, q)) expected = Errno.EINVAL;
                else if (y != null && y != x)
                {
                    if (x is MDir && y is not MDir) expected = Errno.ENOTDIR;
                    else if (x is not MDir && y is MDir) expected = Errno.EISDIR;
                    else if (y is MDir yd2 && yd2.Children.Count > 0) expected = Errno.ENOTEMPTY;
                }
            }
            Expect(expected, e, "rename");
            if (e != 0) return;
            if (flags == RenameFlags.Exchange)
            {
                p.Children[n] = y!;
                q.Children[m] = x;
            }
            else if (y != x)
            {
                p.Children.Remove(n);
                q.Children[m] = x;
            }
        }

        private void DoLink()
        {
            var entries = Entries();
            var files = entries.Where(x => x.Node is MFile).ToList();
            if (files.Count == 0) { DoCreate(); return; }
            var (_, _, node) = _rnd.Next(15) == 0 ? Pick(entries) : Pick(files);
            bool orphan = false;
            var orphans = _open.Where(f => !entries.Any(x => x.Node == f)).ToList();
            if (orphans.Count > 0 && _rnd.Next(4) == 0) { node = Pick(orphans); orphan = true; }
            var q = PickDir();
            string m = PickName();
            Log($"link {PathOf(node)} (ino {node.Ino}) as {PathOf(q)}/{Short(m)}");
            Count("link");
            var e = Live.Link(node.Ino, q.Ino, m, out var a);
            if (node is MDir) { Expect(Errno.EPERM, e, "link of a directory"); return; }
            if (orphan && !q.Children.ContainsKey(m)) { Expect(Errno.ENOENT, e, "link of a file unlinked while open"); return; }
            if (q.Children.ContainsKey(m)) { Expect(Errno.EEXIST, e, "link over an existing name"); return; }
            Expect(0, e, "link");
            Check(a.Ino == node.Ino, $"link returned ino {a.Ino}, wanted {node.Ino}");
            q.Children[m] = node;
        }

        private void DoSnapshotCreate()
        {
            if (_snaps.Count > 0 && _rnd.Next(10) == 0)
            {
                var dup = Pick(_snaps.Keys.ToList());
                Log($"snapshot create {dup} (exists)");
                Count("snapshot-create");
                Expect(Errno.EEXIST, _p.Engine.CreateSnapshot(dup, out _), "snapshot over an existing name");
                return;
            }
            if (_snaps.Count >= MaxSnapshots) { DoSnapshotDelete(); return; }
            string name = $"s{++_snapCounter}";
            Log($"snapshot create {name}");
            Count("snapshot-create");
            Expect(0, _p.Engine.CreateSnapshot(name, out _), "snapshot create");
            _snaps[name] = DeepCopy(_root, new Dictionary<MFile, MFile>());
        }

        private void DoSnapshotDelete()
        {
            if (_snaps.Count == 0 || _rnd.Next(12) == 0)
            {
                Log("snapshot delete nosuch");
                Count("snapshot-delete");
                Expect(Errno.ENOENT, _p.Engine.DeleteSnapshot("nosuch"), "delete of a missing snapshot");
                return;
            }
            var name = Pick(_snaps.Keys.ToList());
            if (_rnd.Next(6) == 0)
            {
                Log($"snapshot hold {name}, delete refused, release");
                Count("snapshot-hold");
                Expect(0, _p.Engine.HoldSnapshot(name, "keep"), "hold");
                Expect(Errno.EBUSY, _p.Engine.DeleteSnapshot(name), "delete of a held snapshot");
                Check(_p.Engine.SnapshotHolds(name)!.SequenceEqual(new[] { "keep" }), "holds listed");
                Expect(0, _p.Engine.ReleaseSnapshot(name, "keep"), "release");
            }
            Log($"snapshot delete {name}");
            Count("snapshot-delete");
            Expect(0, _p.Engine.DeleteSnapshot(name), "snapshot delete");
            _snaps.Remove(name);
            Check(_p.Pool.Snapshot(name) == null, $"deleted snapshot {name} still opens");
        }

        private void DoSnapshotRead()
        {
            if (_snaps.Count == 0) { DoSnapshotCreate(); return; }
            var name = Pick(_snaps.Keys.ToList());
            var model = _snaps[name];
            var files = new List<MFile>();
            void Walk(MDir d) { foreach (var n in d.Children.Values) if (n is MFile f) files.Add(f); else Walk((MDir)n); }
            Walk(model);
            var view = _p.Pool.Snapshot(name) ?? throw new ModelMismatch($"snapshot {name} does not open");
            if (files.Count == 0) { Log($"snapshot read {name}: compare whole (no files)"); CompareTree(view, model, name); return; }
            var f = Pick(files);
            long off = _rnd.NextInt64(0, f.Size + 5000);
            int len = _rnd.Next(1, 300_000);
            Log($"snapshot read {name} ino {f.Ino} (size {f.Size}) at {off} {len} bytes");
            Count("snapshot-read");
            CompareRange(view, f, $"snapshot {name}", off, len);
            Expect(Errno.EROFS, view.Write(f.Ino, 0, new byte[1], out _), $"write to snapshot {name}");
        }

        /// <summary>Rollback to a snapshot: refused while a handle is open; else the live model becomes the snapshot's.</summary>
        private void DoRollback()
        {
            if (_snaps.Count == 0) { DoSnapshotCreate(); return; }
            var name = Pick(_snaps.Keys.ToList());
            if (_open.Count > 0)
            {
                if (_rnd.Next(2) == 0)
                {
                    Log($"rollback {name} with {_open.Count} handles open (refused)");
                    Count("rollback-busy");
                    Expect(Errno.EBUSY, _p.Engine.RollbackToSnapshot(name), "rollback with open files");
                    return;
                }
                foreach (var f in _open.ToList()) { Log($"close ino {f.Ino} before rollback"); Expect(0, Live.Release(f.Ino), "release"); }
                _open.Clear();
            }
            Log($"rollback {name}");
            Count("rollback");
            Expect(0, _p.Engine.RollbackToSnapshot(name), "rollback");
            _root = DeepCopy(_snaps[name], new Dictionary<MFile, MFile>());
            Expect(0, _p.Engine.DiffSnapshots(name, null, out var diff), "diff after rollback");
            Check(diff.Count == 0, $"diff of {name} against the rolled-back live tree: {string.Join("; ", diff.Take(5))}");
        }

        /// <summary>Clone of a snapshot's tree (or of one of its entries) to a new live name; inode numbers are
        /// learned from the live tree afterwards.</summary>
        private void DoSnapshotClone()
        {
            if (_snaps.Count == 0) { DoSnapshotCreate(); return; }
            var name = Pick(_snaps.Keys.ToList());
            var model = _snaps[name];
            var sources = new List<(string Path, MNode Node)> { ("/", model) };
            void Walk(MDir d, string prefix) { foreach (var (n, c) in d.Children) { sources.Add((prefix + "/" + n, c)); if (c is MDir s) Walk(s, prefix + "/" + n); } }
            Walk(model, "");
            var (srcPath, src) = Pick(sources);
            int dirs = 0, files = 0;
            void CountNodes(MNode n) { if (n is MDir d) { dirs++; foreach (var c in d.Children.Values) CountNodes(c); } else files++; }
            CountNodes(src);
            var parent = Pick(Dirs());
            string newName = PickName();
            string parentPath = FullPath(parent);
            Count("snapshot-clone");
            if (parent.Children.ContainsKey(newName))
            {
                Log($"clone snapshot {name}:{srcPath} to existing {PathOf(parent)}/{Short(newName)}");
                Expect(Errno.EEXIST, _p.Engine.CloneSnapshot(name, parentPath + "/" + newName, srcPath), "clone onto an existing name");
                return;
            }
            if (Dirs().Count + dirs > MaxDirs || Files().Count + files > MaxFiles)
            {
                Log($"clone snapshot {name}:{srcPath} under a missing parent");
                Expect(Errno.ENOENT, _p.Engine.CloneSnapshot(name, parentPath + "/nosuch/" + newName, srcPath), "clone under a missing parent");
                return;
            }
            Log($"clone snapshot {name}:{srcPath} to {PathOf(parent)}/{Short(newName)} ({dirs} dirs, {files} files)");
            Expect(0, _p.Engine.CloneSnapshot(name, parentPath + "/" + newName, srcPath), "clone of a snapshot");
            var files2 = new Dictionary<MFile, MFile>();
            MNode copy = src is MDir sd ? DeepCopy(sd, files2) : ((MFile)src).Copy();
            parent.Children[newName] = copy;
            // The copy has new inode numbers: learn them by name.
            void Learn(MNode n, long parentIno, string entry)
            {
                Expect(0, Live.Lookup(parentIno, entry, out var a), $"lookup of cloned {Short(entry)}");
                n.Ino = a.Ino;
                if (n is MDir d) foreach (var (cn, c) in d.Children) Learn(c, a.Ino, cn);
            }
            Learn(copy, parent.Ino, newName);
        }

        private string FullPath(MDir target)
        {
            string? Find(MDir d, string prefix)
            {
                if (d == target) return prefix;
                foreach (var (name, n) in d.Children)
                    if (n is MDir s && Find(s, prefix + "/" + name) is { } r) return r;
                return null;
            }
            return Find(_root, "") ?? throw new ModelMismatch("directory not in the live model");
        }

        private void DoFsync()
        {
            var files = Files();
            long ino = files.Count > 0 ? Pick(files).Ino : 1;
            Log($"fsync ino {ino}");
            Count("fsync");
            Expect(0, Live.Fsync(ino), "fsync");
        }

        /// <summary>Before the log fills up (the model has no ENOSPC), frees space the way an administrator
        /// would: commit (freed blocks become reusable), delete the oldest snapshots, close handles of
        /// unlinked files, truncate the largest files. On a small log this makes the allocator reuse blocks.</summary>
        private void RelieveSpacePressure()
        {
            long Free() => Live.StatFs().FreeBlocks;
            if (Free() >= _lowWater) return;
            Log($"space low ({Free()} free blocks): fsync");
            Count("space-relief");
            Expect(0, Live.Fsync(1), "fsync");
            foreach (var name in _snaps.Keys.OrderBy(n => int.Parse(n[1..], System.Globalization.CultureInfo.InvariantCulture)).ToList())
            {
                if (Free() >= _lowWater) return;
                Log($"space low ({Free()} free blocks): snapshot delete {name}");
                Expect(0, _p.Engine.DeleteSnapshot(name), "snapshot delete");
                _snaps.Remove(name);
            }
            var named = Entries().Select(e => e.Node).OfType<MFile>().ToHashSet();
            while (Free() < _lowWater && _open.FirstOrDefault(f => !named.Contains(f)) is { } orphan)
            {
                Log($"space low ({Free()} free blocks): close ino {orphan.Ino}");
                Expect(0, Live.Release(orphan.Ino), "release");
                _open.Remove(orphan);
                Expect(0, Live.Fsync(1), "fsync");
            }
            while (Free() < _lowWater)
            {
                var big = Files().OrderByDescending(f => f.Size).FirstOrDefault(f => f.Size > 0)
                    ?? throw new ModelMismatch($"the log is full ({Free()} free blocks) with no snapshot and every file empty");
                long size = big.Size / 4;
                Log($"space low ({Free()} free blocks): truncate {PathOf(big)} (ino {big.Ino}) from {big.Size} to {size}");
                Expect(0, Live.SetAttr(big.Ino, new SetAttrRequest { Size = size }, out _), "truncate");
                big.Resize(size);
                Expect(0, Live.Fsync(1), "fsync");
            }
        }

        private readonly long _lowWater;
        private long _lastCursor, _wraps;

        private void DoReopen()
        {
            Log("reopen");
            Count("reopen");
            _p.Reopen();
            Configure();
            _open.Clear(); // handles die with the mount; files unlinked while open are deleted at open
        }

        private void DoOpen()
        {
            var files = Entries().Select(e => e.Node).OfType<MFile>().Distinct().ToList();
            if (files.Count == 0 || _open.Count >= 6) { DoClose(); return; }
            var f = Pick(files);
            Log($"open {PathOf(f)} (ino {f.Ino})");
            Count("open");
            Expect(0, Live.Open(f.Ino, writable: true), "open");
            _open.Add(f);
        }

        private void DoClose()
        {
            if (_open.Count == 0) { Count("close"); Log("close of a handle never opened"); Expect(Errno.EBADF, Live.Release(1 << 30), "release"); return; }
            int i = _rnd.Next(_open.Count);
            var f = _open[i];
            Log($"close {PathOf(f)} (ino {f.Ino})");
            Count("close");
            Expect(0, Live.Release(f.Ino), "release");
            _open.RemoveAt(i);
        }

        // ---------------------------------------------------------- checkpoints

        private readonly Stopwatch _checkpointTime = new(), _fsckTime = new();

        private void Checkpoint()
        {
            _checkpoints++;
            _checkpointTime.Start();
            try { CheckpointBody(); } finally { _checkpointTime.Stop(); }
        }

        private void CheckpointBody()
        {
            _current = $"checkpoint after op {_op}: live tree";
            CompareTree(Live, _root, "live");
            var listed = _p.Engine.ListSnapshots().Select(s => s.Name).OrderBy(s => s, StringComparer.Ordinal).ToList();
            var want = _snaps.Keys.OrderBy(s => s, StringComparer.Ordinal).ToList();
            Check(listed.SequenceEqual(want), $"snapshots listed: [{string.Join(", ", listed)}], the model has [{string.Join(", ", want)}]");
            foreach (var (name, model) in _snaps)
            {
                _current = $"checkpoint after op {_op}: snapshot {name}";
                CompareTree(_p.Pool.Snapshot(name) ?? throw new ModelMismatch($"snapshot {name} does not open"), model, $"snapshot {name}");
            }
            _current = $"checkpoint after op {_op}: diff";
            var names = _snaps.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
            foreach (var a in names)
                foreach (var b in names.Where(b => b != a).Append(null).Take(3))
                {
                    Expect(0, _p.Engine.DiffSnapshots(a, b, out var byIndex), $"diff {a} {b ?? "live"}");
                    Expect(0, _p.Engine.DiffSnapshotsByWalk(a, b, out var byWalk), $"diff by walk {a} {b ?? "live"}");
                    Check(byIndex.SequenceEqual(byWalk), $"diff {a} -> {b ?? "live"} by the indexes [{string.Join("; ", byIndex)}] differs from the diff by walking both trees [{string.Join("; ", byWalk)}]");
                }
            _current = $"checkpoint after op {_op}: sizes";
            var scanned = _p.Engine.SpaceReportByScan();
            var kept = _p.Engine.SpaceReport();
            Check(scanned.SequenceEqual(kept), $"snapshot sizes from the generation histogram [{string.Join("; ", kept)}] differ from a scan of every extent map [{string.Join("; ", scanned)}]");
            _current = $"checkpoint after op {_op}: fsck";
            _fsckTime.Start();
            try { _p.AssertClean(); } finally { _fsckTime.Stop(); }
            // Fsck committed and nothing is in flight: every busy block is referenced or the format's.
            _current = $"checkpoint after op {_op}: space maps";
            foreach (var (cookie, sp) in _p.Engine.Space)
                for (long b = 0; b < sp.Blocks; b++)
                    if (sp.IsBusy(b) != (sp.RefCount(b) > 0 || Cow.Core.Engine.DeviceSpace.IsReservedByFormat(b)))
                        throw new ModelMismatch($"device {cookie} block {b}: busy {sp.IsBusy(b)} but {sp.RefCount(b)} references (a leaked reservation or a lost free)");
        }

        /// <summary>Walks the file with SEEK_DATA / SEEK_HOLE: every hole must be zeros in the model, and the
        /// offsets must be sane (inside the file, block aligned unless they are the start or the end).</summary>
        private static void CompareHoles(FileSystemView fs, MFile f, string where)
        {
            long off = 0;
            for (int guard = 0; off < f.Size && guard < 100_000; guard++)
            {
                var e = fs.Seek(f.Ino, off, SeekWhence.Data, out long data);
                if (e == Errno.ENXIO) data = f.Size;
                else
                {
                    Expect(0, e, $"{where}: SEEK_DATA from {off}");
                    Check(data >= off && data < f.Size && (data == off || data % 4096 == 0), $"{where}: SEEK_DATA from {off} gave {data} (size {f.Size})");
                }
                int nz = f.Data.AsSpan((int)off, (int)(data - off)).IndexOfAnyExcept((byte)0);
                if (nz >= 0) throw new ModelMismatch($"{where}: [{off}, {data}) is a hole, but the model has byte {off + nz} = {f.Data[off + nz]}");
                if (data >= f.Size) break;
                Expect(0, fs.Seek(f.Ino, data, SeekWhence.Hole, out long hole), $"{where}: SEEK_HOLE from {data}");
                Check(hole > data && hole <= f.Size && (hole == f.Size || hole % 4096 == 0), $"{where}: SEEK_HOLE from {data} gave {hole} (size {f.Size})");
                off = hole;
            }
        }

        /// <summary>Every name, type, inode number, link count, size and byte of one view against the model.</summary>
        private static void CompareTree(FileSystemView fs, MDir root, string view)
        {
            var links = new Dictionary<MFile, int>();
            void CountLinks(MDir d) { foreach (var n in d.Children.Values) if (n is MFile f) links[f] = links.GetValueOrDefault(f) + 1; else CountLinks((MDir)n); }
            CountLinks(root);
            var compared = new HashSet<MFile>();
            CompareDir(fs, root, root.Ino, "", view, links, compared);
        }

        private static void CompareDir(FileSystemView fs, MDir d, long parentIno, string path, string view, Dictionary<MFile, int> links, HashSet<MFile> compared)
        {
            string where = $"{view} {(path == "" ? "/" : path)}";
            Expect(0, fs.GetAttr(d.Ino, out var da), $"{where}: getattr");
            Check(da.IsDirectory, $"{where}: ino {d.Ino} is not a directory: mode {Convert.ToString(da.Mode, 8)}");
            uint subdirs = (uint)d.Children.Values.Count(n => n is MDir);
            Check(da.Nlink == 2 + subdirs, $"{where}: nlink {da.Nlink}, the model has {2 + subdirs}");

            // readdir in one go, and again in pages (positions must be stable).
            var all = new List<DirEntryInfo>();
            Expect(0, fs.ReadDir(d.Ino, 0, int.MaxValue, all), $"{where}: readdir");
            Check(all.Count >= 2 && all[0].Name == "." && all[0].Ino == d.Ino && all[1].Name == ".." && all[1].Ino == parentIno,
                $"{where}: readdir starts with {string.Join(", ", all.Take(2).Select(x => $"{x.Name}={x.Ino}"))}, wanted .={d.Ino}, ..={parentIno}");
            var paged = new List<DirEntryInfo>();
            long offset = 0;
            for (int guard = 0; guard < 1000; guard++)
            {
                var page = new List<DirEntryInfo>();
                Expect(0, fs.ReadDir(d.Ino, offset, 3, page), $"{where}: readdir from {offset}");
                if (page.Count == 0) break;
                paged.AddRange(page);
                offset = page[^1].NextOffset;
            }
            Check(paged.Select(x => (x.Name, x.Ino)).SequenceEqual(all.Select(x => (x.Name, x.Ino))), $"{where}: paged readdir differs from one-go readdir");
            var names = all.Skip(2).Select(x => x.Name).OrderBy(x => x, StringComparer.Ordinal).ToList();
            Check(names.SequenceEqual(d.Children.Keys),
                $"{where}: entries [{string.Join(", ", names.Select(Short))}], the model has [{string.Join(", ", d.Children.Keys.Select(Short))}]");

            foreach (var ent in all.Skip(2))
            {
                var node = d.Children[ent.Name];
                string p = path + "/" + Short(ent.Name);
                Check(ent.Ino == node.Ino, $"{view} {p}: readdir says ino {ent.Ino}, the model has {node.Ino}");
                Check(ent.Type == (node is MDir ? 4u : 8u), $"{view} {p}: readdir type {ent.Type}");
                Expect(0, fs.Lookup(d.Ino, ent.Name, out var a), $"{view} {p}: lookup");
                Check(a.Ino == node.Ino, $"{view} {p}: lookup says ino {a.Ino}, the model has {node.Ino}");
                if (node is MDir sub)
                {
                    CompareDir(fs, sub, d.Ino, p, view, links, compared);
                    continue;
                }
                var f = (MFile)node;
                Check(a.IsRegular, $"{view} {p}: not a regular file: mode {Convert.ToString(a.Mode, 8)}");
                Check(a.Nlink == links[f], $"{view} {p}: nlink {a.Nlink}, the model has {links[f]}");
                Check(a.Size == f.Size, $"{view} {p}: size {a.Size}, the model has {f.Size}");
                if (!compared.Add(f)) continue;
                for (long off = 0; off < f.Size + 1; off += 1 << 20)
                    CompareRange(fs, f, $"{view} {p}", off, 1 << 20);
                CompareHoles(fs, f, $"{view} {p}");
            }
        }
    }
}
