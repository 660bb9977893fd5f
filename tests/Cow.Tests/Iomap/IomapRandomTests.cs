using System.Diagnostics;
using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Cow.Tests.Engine;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Iomap.IomapPeer;

namespace Cow.Tests.Iomap;

/// <summary>
/// Seeded random operations through the test kernel (<see cref="IomapPeer"/>): direct, buffered and
/// userspace writes (some short, some failing), truncates, hole punches, range clones, unlinks, snapshots
/// taken and deleted, malformed ioends — checked against a model of every file and every snapshot, read
/// back through mappings (cached ones included, so a missing invalidation shows), then fsck and no
/// allocation left over. A failure names its seed: rerun with
/// <c>COW_SEED=n [COW_OPS=n] dotnet test tests/Cow.Tests --filter "FullyQualifiedName~IomapRandom"</c>.
/// </summary>
[Trait("Tier", "engine")]
public sealed class IomapRandomTests(ITestOutputHelper output)
{
    private const int EnvironmentSeed = -1;

    [Theory]
    [InlineData(11, 500, 64)]
    [InlineData(12, 500, 64)]
    [InlineData(13, 800, 6)]     // a small log: the allocator wraps, freed blocks are reused within the run
    [InlineData(14, 800, 6)]
    [InlineData(EnvironmentSeed, 800, 6)]
    public void RandomIomapOperationsMatchTheModel(int seed, int operations, int logMiB)
    {
        if (seed == EnvironmentSeed)
        {
            static int? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? int.Parse(v, System.Globalization.CultureInfo.InvariantCulture) : null;
            seed = Env("COW_SEED") ?? (int)(DateTime.UtcNow.Ticks % 1_000_000_000);
            operations = Env("COW_OPS") ?? operations;
        }
        output.WriteLine($"COW_SEED={seed}, {operations} operations, log {logMiB} MiB");
        var sw = Stopwatch.StartNew();
        var run = new Run(seed, logMiB);
        try
        {
            run.Execute(operations);
        }
        catch (Exception ex)
        {
            throw new Xunit.Sdk.XunitException($"COW_SEED={seed}: op #{run.OpIndex} ({run.Current}) failed: {ex.Message}\nlast operations:\n  "
                + string.Join("\n  ", run.History.TakeLast(15)) + $"\n{ex.StackTrace}");
        }
        finally { run.Dispose(); }
        output.WriteLine($"done in {sw.ElapsedMilliseconds} ms: {run.Summary()}");
    }

    private sealed class Run(int seed, int logMiB) : IDisposable
    {
        private const int Files = 3, MaxSize = 256 << 10, MaxSnapshots = 3;
        private readonly Random _rnd = new(seed);
        private readonly IomapPeer _k = new IomapPeer(logSize: (long)logMiB << 20).Start();
        private readonly Dictionary<string, (ulong Node, ulong Ino)> _nodes = new();
        private readonly Dictionary<string, byte[]> _live = new();
        private readonly Dictionary<string, Dictionary<string, byte[]>> _snaps = new();
        private readonly Dictionary<string, int> _counts = new();
        private int _snapSerial, _pattern = seed * 1000;
        public int OpIndex;
        public string Current = "";
        public readonly List<string> History = new();
        private int Bs => _k.BlockSize;

        public void Dispose() => _k.Dispose();

        public string Summary() => string.Join(", ", _counts.OrderBy(c => c.Key).Select(c => $"{c.Key} {c.Value}"))
            + $"; {_k.Invalidations.Count} invalidations, {_k.CacheHits} cached-mapping reads";

        private void Note(string what)
        {
            Current = what;
            History.Add($"#{OpIndex} {what}");
            string kind = what.Split(' ')[0];
            _counts[kind] = _counts.GetValueOrDefault(kind) + 1;
        }

        private byte[] Data(int n) => MemoryPool.Pattern(n, ++_pattern);

        private static void Put(ref byte[] file, long pos, ReadOnlySpan<byte> data)
        {
            if (pos + data.Length > file.Length) Array.Resize(ref file, (int)(pos + data.Length));
            data.CopyTo(file.AsSpan((int)pos));
        }

        public void Execute(int operations)
        {
            for (int i = 0; i < Files; i++) CreateFile($"f{i}");
            for (OpIndex = 0; OpIndex < operations; OpIndex++)
            {
                string name = $"f{_rnd.Next(Files)}";
                var (node, ino) = _nodes[name];
                var file = _live[name];
                int roll = _rnd.Next(100);
                if (roll < 18)
                {
                    long pos = (long)_rnd.Next(0, MaxSize / Bs) * Bs;
                    int len = _rnd.Next(1, 17) * Bs;
                    if (pos + len > MaxSize) len = (int)((MaxSize - pos) / Bs) * Bs;
                    if (len == 0) continue;
                    var data = Data(len);
                    int mode = _rnd.Next(10);
                    if (mode == 0)
                    {
                        Note($"direct-fail {name} {pos}+{len}");
                        _k.DirectWrite(node, ino, pos, data, stopAfter: _rnd.Next(0, len / Bs + 1) * Bs, fail: true);
                    }
                    else if (mode == 1)
                    {
                        long stop = _rnd.Next(1, len / Bs + 1) * Bs;
                        Note($"direct-short {name} {pos}+{len} stops at {stop}");
                        Assert.Equal(stop, _k.DirectWrite(node, ino, pos, data, stopAfter: stop));
                        Put(ref file, pos, data.AsSpan(0, (int)stop));
                    }
                    else
                    {
                        Note($"direct {name} {pos}+{len}");
                        _k.DirectWrite(node, ino, pos, data);
                        Put(ref file, pos, data);
                    }
                }
                else if (roll < 38)
                {
                    long pos = _rnd.Next(0, Math.Min(MaxSize - 1, file.Length + 20_000));
                    int len = _rnd.Next(1, Math.Min(40_000, MaxSize - (int)pos) + 1);
                    var data = Data(len);
                    Note($"buffered {name} {pos}+{len}");
                    _k.BufferedWrite(node, ino, pos, data);
                    Put(ref file, pos, data);
                }
                else if (roll < 45)
                {
                    long pos = _rnd.Next(0, Math.Min(MaxSize - 1, file.Length + 8000));
                    int len = _rnd.Next(1, Math.Min(20_000, MaxSize - (int)pos) + 1);
                    var data = Data(len);
                    Note($"userspace-write {name} {pos}+{len}");
                    _k.UserspaceWrite(node, pos, data);
                    Put(ref file, pos, data);
                }
                else if (roll < 51)
                {
                    long size = _rnd.Next(0, MaxSize);
                    Note($"truncate {name} {file.Length} -> {size}");
                    _k.Truncate(node, ino, size);
                    Array.Resize(ref file, (int)size);
                }
                else if (roll < 56)
                {
                    if (file.Length == 0) continue;
                    long off = _rnd.Next(0, file.Length), len = _rnd.Next(1, 64 << 10);
                    Note($"punch {name} {off}+{len}");
                    _k.Punch(node, off, len);
                    file.AsSpan((int)off, (int)Math.Min(len, file.Length - off)).Clear();
                }
                else if (roll < 61)
                {
                    string other = $"f{(int.Parse(name[1..]) + 1 + _rnd.Next(Files - 1)) % Files}";
                    var src = _live[other];
                    if (src.Length == 0) continue;
                    bool aligned = _rnd.Next(2) == 0;
                    long so = aligned ? _rnd.Next(0, src.Length / Bs + 1) * (long)Bs : _rnd.Next(0, src.Length);
                    long dof = aligned ? _rnd.Next(0, MaxSize / Bs / 2) * (long)Bs : _rnd.Next(0, MaxSize / 2);
                    long len = _rnd.Next(1, 96 << 10);
                    long expect = Math.Max(0, Math.Min(len, src.Length - so));
                    if (dof + expect > MaxSize) continue;
                    Note($"clone {other}@{so} -> {name}@{dof} {len}");
                    Assert.Equal(expect, _k.CopyRange(_nodes[other].Node, so, node, dof, len));
                    if (expect > 0) Put(ref file, dof, src.AsSpan((int)so, (int)expect));
                }
                else if (roll < 64)
                {
                    Note($"recreate {name}");
                    _k.Unlink(RootNode, name);
                    _live.Remove(name);
                    CreateFile(name);
                    continue;
                }
                else if (roll < 69)
                {
                    if (_snaps.Count >= MaxSnapshots)
                    {
                        string victim = _snaps.Keys.ElementAt(_rnd.Next(_snaps.Count));
                        Note($"snapshot-delete {victim}");
                        _k.SnapshotDelete(victim);
                        _snaps.Remove(victim);
                    }
                    else
                    {
                        string s = $"s{++_snapSerial}";
                        Note($"snapshot {s}");
                        _k.SnapshotCreate(s);
                        _snaps[s] = _live.ToDictionary(kv => kv.Key, kv => (byte[])kv.Value.Clone());
                    }
                }
                else if (roll < 72)
                {
                    Note("syncfs");
                    _k.Syncfs();
                }
                else if (roll < 75)
                {
                    // A malformed completion: an allocation, an ioend naming the wrong place (EINVAL, nothing
                    // changes), then the right one for nothing written (released).
                    long pos = (long)_rnd.Next(0, MaxSize / Bs) * Bs;
                    Note($"bad-ioend {name} {pos}");
                    var (_, w) = _k.Begin(node, ino, pos, Bs, IomapOp.Write | IomapOp.Direct);
                    var flags = FuseIomapIoendFlags.Direct | FuseIomapIoendFlags.Shared;
                    Assert.Equal(22, _k.Ioend(node, ino, flags, 0, pos, Bs, w.Dev, w.Addr + (ulong)Bs).Error);
                    Assert.Equal(22, _k.Ioend(node, ino, flags, 0, pos, Bs, w.Dev == 9 ? 5u : 9u, w.Addr).Error);
                    Assert.Equal(0, _k.End(node, ino, pos, Bs, 0, IomapOp.Write | IomapOp.Direct, w));
                }
                else if (roll < 88)
                {
                    if (file.Length == 0) continue;
                    long off = _rnd.Next(0, file.Length);
                    int len = _rnd.Next(1, file.Length - (int)off + 1);
                    Note($"read {name} {off}+{len}");
                    AssertBytes(file.AsSpan((int)off, len).ToArray(), _k.Read(node, ino, off, len, direct: _rnd.Next(2) == 0), name);
                }
                else
                {
                    if (_snaps.Count == 0) continue;
                    string s = _snaps.Keys.ElementAt(_rnd.Next(_snaps.Count));
                    if (!_snaps[s].TryGetValue(name, out var content) || content.Length == 0) continue;
                    Note($"read-snapshot {s}/{name}");
                    var sf = _k.SnapshotFile(s, name);
                    Assert.Equal(0u, sf.Attr.Flags);
                    Assert.Equal((ulong)content.Length, sf.Attr.Size_);
                    AssertBytes(content, _k.Read(sf.NodeId, sf.Attr.Ino, 0, content.Length), $"{s}/{name}");
                }
                _live[name] = file;
                if (OpIndex % 50 == 49) CheckAll();
            }
            Note("final check");
            _k.Syncfs();
            CheckAll();
            var report = _k.Pool.Fsck();
            Assert.True(report.Clean, report.ToString());
            int leaked = _k.Pool.Engine.Exclusive(() => _k.Pool.Engine.ReservedBlocks().Count);
            Assert.Equal(0, leaked);
            foreach (var (name, content) in _live)
                Assert.Equal(content, MemoryPool.ReadAll(_k.Pool.Live, (long)_nodes[name].Ino));
        }

        private void CreateFile(string name)
        {
            var e = _k.Create(RootNode, name);
            _nodes[name] = (e.NodeId, e.Attr.Ino);
            _live[name] = [];
        }

        private void CheckAll()
        {
            foreach (var (name, content) in _live)
            {
                var (node, ino) = _nodes[name];
                var a = _k.GetAttr(node);
                Assert.True((ulong)content.Length == a.Size_, $"{name}: size {a.Size_}, model {content.Length}");
                Assert.Equal(ExperimentalConstants.AttrIomap | ExperimentalConstants.AttrExclusive, a.Flags);
                if (content.Length > 0) AssertBytes(content, _k.Read(node, ino, 0, content.Length), name);
            }
            foreach (var (s, files) in _snaps)
                foreach (var (name, content) in files)
                {
                    if (content.Length == 0) continue;
                    var sf = _k.SnapshotFile(s, name);
                    AssertBytes(content, _k.Read(sf.NodeId, sf.Attr.Ino, 0, content.Length), $"{s}/{name}");
                }
        }

        private static void AssertBytes(byte[] expect, byte[] actual, string what)
        {
            Assert.True(expect.Length == actual.Length, $"{what}: {actual.Length} bytes, model {expect.Length}");
            int i = expect.AsSpan().CommonPrefixLength(actual);
            Assert.True(i == expect.Length, $"{what}: first difference at byte {i}");
        }
    }
}
