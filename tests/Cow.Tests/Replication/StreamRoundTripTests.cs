using Cow.Core.FileSystem;
using Cow.Core.Replication;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Replication;

/// <summary>Send and receive between two pools (format.md 9): full and incremental streams across generations of
/// random changes arrive byte for byte and attribute for attribute, with the sender's inode numbers; cut and damaged
/// streams keep what they verified and resume to the same result; a stream that does not fit is refused with nothing
/// changed.</summary>
[Trait("Tier", "engine")]
public class StreamRoundTripTests(ITestOutputHelper output)
{
    private static int Seed() => Environment.GetEnvironmentVariable("COW_SEED") is { } s ? int.Parse(s) : Random.Shared.Next();

    /// <summary>One round of random changes to the live tree of <paramref name="p"/>.</summary>
    internal static void Change(MemoryPool p, Random rng, int round, int ops = 30)
    {
        var fs = p.Live;
        var dirs = new List<string> { "" };
        var files = new List<string>();
        void Scan(string path, long ino)
        {
            var list = new List<DirEntryInfo>();
            Assert.Equal(0, (int)fs.ReadDir(ino, 0, 10_000, list));
            foreach (var e in list.Where(e => e.Name is not ("." or ".." or ".snapshots")))
            {
                if (e.Type == 4) { dirs.Add($"{path}/{e.Name}"); Scan($"{path}/{e.Name}", e.Ino); }
                else if (e.Type == 8) files.Add($"{path}/{e.Name}");
            }
        }
        Scan("", 1);
        for (int k = 0; k < ops; k++)
        {
            string parent = dirs[rng.Next(dirs.Count)];
            long pIno = parent == "" ? 1 : Ino(fs, parent);
            string name = $"r{round}_{k}";
            switch (rng.Next(12))
            {
                case 0:
                    Assert.Equal(0, (int)fs.Mkdir(pIno, name, 0x1ED, (uint)rng.Next(3), 0, out _));
                    dirs.Add($"{parent}/{name}");
                    break;
                case 1 when files.Count > 0:
                    Assert.Equal(0, (int)fs.Link(Ino(fs, files[rng.Next(files.Count)]), pIno, name, out _));
                    files.Add($"{parent}/{name}");
                    break;
                case 2 when files.Count > 1:
                {
                    int v = rng.Next(files.Count);
                    var (vp, vn) = Split(files[v]);
                    Assert.Equal(0, (int)fs.Unlink(vp == "" ? 1 : Ino(fs, vp), vn));
                    files.RemoveAt(v);
                    break;
                }
                case 3 when files.Count > 0:
                {
                    int m = rng.Next(files.Count);
                    var (mp, mn) = Split(files[m]);
                    Assert.Equal(0, (int)fs.Rename(mp == "" ? 1 : Ino(fs, mp), mn, pIno, name));
                    files[m] = $"{parent}/{name}";
                    break;
                }
                case 4:
                    Assert.Equal(0, (int)fs.Symlink(pIno, name, $"../target/{rng.Next(1000)}", 0, 0, out _));
                    break;
                case 5:
                    Assert.Equal(0, (int)fs.Mknod(pIno, name, rng.Next(2) == 0 ? 0x11A4u : 0x21A4u, (ulong)rng.Next(1, 500), 0, 0, out _));
                    break;
                case 6 when files.Count > 0:
                    Assert.Equal(0, (int)fs.SetXattr(Ino(fs, files[rng.Next(files.Count)]), $"user.k{rng.Next(3)}", Pattern(rng.Next(1, 40), rng.Next())));
                    break;
                case 7 when files.Count > 0:
                    Assert.Equal(0, (int)fs.SetAttr(Ino(fs, files[rng.Next(files.Count)]), new SetAttrRequest { Mode = (uint)(0x8000 | rng.Next(0x200)), Uid = (uint)rng.Next(5) }, out _));
                    break;
                case 8 when files.Count > 0:
                    Assert.Equal(0, (int)fs.SetAttr(Ino(fs, files[rng.Next(files.Count)]), new SetAttrRequest { Size = rng.Next(3) * 4096L + rng.Next(100) }, out _));
                    break;
                case 9 when files.Count > 0:
                {
                    long f = Ino(fs, files[rng.Next(files.Count)]);
                    Assert.Equal(0, (int)fs.GetAttr(f, out var a));
                    if (a.Size > 8192) Assert.Equal(0, (int)fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 4096, 4096));
                    break;
                }
                case 10 when files.Count > 0:
                {
                    // A reflink: the copy shares the source's blocks, which a stream sends once.
                    long src = Ino(fs, files[rng.Next(files.Count)]);
                    Assert.Equal(0, (int)fs.GetAttr(src, out var a));
                    long dst = CreateFile(fs, $"{parent}/{name}");
                    if (a.Size > 0) Assert.Equal(0, (int)fs.CopyFileRange(src, 0, dst, 0, a.Size, out _));
                    files.Add($"{parent}/{name}");
                    break;
                }
                default:
                {
                    long f = rng.Next(3) == 0 && files.Count > 0 ? Ino(fs, files[rng.Next(files.Count)]) : CreateFile(fs, $"{parent}/{name}");
                    if (!files.Contains($"{parent}/{name}") && fs.Resolve($"{parent}/{name}", out _) == 0) files.Add($"{parent}/{name}");
                    // Sparse: a write far out leaves a hole before it.
                    WriteAt(fs, f, rng.Next(4) == 0 ? rng.Next(1, 3000) * 4096L : rng.Next(3) * 4096L + rng.Next(2000), Pattern(1 + rng.Next(6 * 4096), rng.Next()));
                    break;
                }
            }
        }
    }

    private static (string Parent, string Name) Split(string path)
    {
        int slash = path.LastIndexOf('/');
        return (path[..slash], path[(slash + 1)..]);
    }

    internal static byte[] Send(MemoryPool p, string name, string? from, out SendSummary summary)
    {
        var ms = new MemoryStream();
        var e = p.Pool.Replication.Send(name, from, ms, out summary, out var problem);
        Assert.True(e == 0, $"send {name}: {e} {problem}");
        return ms.ToArray();
    }

    internal static Errno Receive(MemoryPool p, byte[] stream, out ReceiveResult r, string? name = null) =>
        p.Pool.Replication.Receive(new MemoryStream(stream), name, out r);

    internal static void AssertSame(MemoryPool a, string snapA, MemoryPool b, string snapB)
    {
        var la = TreeListing.Of(a.Pool.Snapshots.Open(snapA)!);
        var lb = TreeListing.Of(b.Pool.Snapshots.Open(snapB)!);
        Assert.Equal(la, lb);
    }

    [Fact]
    public void Full_then_incremental_streams_across_ten_generations_arrive_identical()
    {
        int seed = Seed();
        output.WriteLine($"seed {seed} (COW_SEED={seed} to repeat)");
        var rng = new Random(seed);
        using var a = new MemoryPool();
        using var b = new MemoryPool();
        for (int g = 0; g < 10; g++)
        {
            Change(a, rng, g);
            Assert.Equal(0, (int)a.Engine.CreateSnapshot($"s{g}", out _));
            var stream = Send(a, $"s{g}", g == 0 ? null : $"s{g - 1}", out var sum);
            output.WriteLine($"s{g}: {stream.Length} bytes, {sum.Records} records, {sum.Inodes} inodes, data {sum.DataBytes}, clones {sum.CloneBytes}, holes {sum.HoleBytes}");
            var e = Receive(b, stream, out var r);
            Assert.True(e == 0, $"receive s{g}: {e} {r.Problem}");
            Assert.Equal($"s{g}", r.Snapshot);
            AssertSame(a, $"s{g}", b, $"s{g}");
            Assert.Equal(TreeListing.Of(a.Pool.Snapshots.Open($"s{g}")!), TreeListing.Of(b.Live));
            Assert.Equal(a.Pool.Replication.IdentityOf($"s{g}"), b.Pool.Replication.IdentityOf($"s{g}"));
        }
        a.AssertClean();
        b.AssertClean();
        // Every received snapshot is still what was sent, after the later ones arrived.
        for (int g = 0; g < 10; g++) AssertSame(a, $"s{g}", b, $"s{g}");
        b.ReopenAfter(() => { });
        b.AssertClean();
        AssertSame(a, "s9", b, "s9");
    }

    [Fact]
    public void A_sent_stream_is_the_same_bytes_every_time()
    {
        var rng = new Random(7);
        using var a = new MemoryPool();
        Change(a, rng, 0, 60);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s", out _));
        Assert.Equal(Send(a, "s", null, out _), Send(a, "s", null, out _));
    }

    [Fact]
    public void A_reflinked_file_is_sent_once_and_shared_on_arrival()
    {
        using var a = new MemoryPool();
        using var b = new MemoryPool();
        long f = CreateFile(a.Live, "/big");
        WriteAt(a.Live, f, 0, Pattern(1 << 20, 3));
        long c = CreateFile(a.Live, "/copy");
        Assert.Equal(0, (int)a.Live.CopyFileRange(f, 0, c, 0, 1 << 20, out _));
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s", out _));
        var stream = Send(a, "s", null, out var sum);
        Assert.Equal(1 << 20, sum.DataBytes);
        Assert.Equal(1 << 20, sum.CloneBytes);
        Assert.True(stream.Length < (1 << 20) + 4096, $"{stream.Length} bytes");
        long freeBefore = b.Engine.DeviceUsage().Sum(u => u.FreeBlocks);
        Assert.Equal(0, (int)Receive(b, stream, out _));
        long used = freeBefore - b.Engine.DeviceUsage().Sum(u => u.FreeBlocks);
        Assert.InRange(used, 256, 256 + 8);   // one copy of the 256 blocks (and a segment header or two)
        AssertSame(a, "s", b, "s");
        b.AssertClean();
    }

    [Fact]
    public void An_incremental_stream_of_a_few_changed_blocks_carries_those_blocks()
    {
        using var a = new MemoryPool();
        using var b = new MemoryPool();
        long f = CreateFile(a.Live, "/image");
        WriteAt(a.Live, f, 0, Pattern(16 << 20, 1));
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s0", out _));
        for (int i = 0; i < 40; i++) WriteAt(a.Live, f, i * 100L * 4096, Pattern(4096, i));   // 40 of 4096 blocks
        Assert.Equal(0, (int)a.Live.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 8 << 20, 1 << 20));
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s1", out _));
        Assert.Equal(0, (int)Receive(b, Send(a, "s0", null, out _), out _));
        var inc = Send(a, "s1", "s0", out var sum);
        output.WriteLine($"incremental: {inc.Length} bytes, data {sum.DataBytes}, holes {sum.HoleBytes}");
        Assert.InRange(sum.DataBytes, 37 * 4096, 40 * 4096);   // some of the 40 fall in the punched MiB
        Assert.Equal(1 << 20, sum.HoleBytes);
        Assert.True(inc.Length < 40 * 4096 + 8192, $"{inc.Length} bytes");
        Assert.Equal(0, (int)Receive(b, inc, out var r));
        AssertSame(a, "s1", b, "s1");
        AssertSame(a, "s0", b, "s0");
        b.AssertClean();
    }

    [Fact]
    public void An_incremental_stream_needs_its_base_and_changes_nothing_without_it()
    {
        using var a = new MemoryPool();
        using var b = new MemoryPool();
        Change(a, new Random(1), 0);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s0", out _));
        Change(a, new Random(2), 1);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s1", out _));
        var before = TreeListing.Of(b.Live);
        Assert.Equal(Errno.ENOENT, Receive(b, Send(a, "s1", "s0", out _), out var r));
        output.WriteLine(r.Problem);
        Assert.Contains("base", r.Problem);
        Assert.Empty(b.Pool.Snapshots.List());
        Assert.Null(b.Pool.Replication.PendingToken());
        Assert.Equal(before, TreeListing.Of(b.Live));
        // A full stream into a pool that is not empty is refused too.
        Assert.Equal(0, (int)Receive(b, Send(a, "s0", null, out _), out _));
        Assert.Equal(Errno.EEXIST, Receive(b, Send(a, "s1", null, out _), out r));
        output.WriteLine(r.Problem);
        // The incremental applies once the base is there; a second time it is refused (the snapshot is here).
        Assert.Equal(0, (int)Receive(b, Send(a, "s1", "s0", out _), out _));
        Assert.Equal(Errno.EEXIST, Receive(b, Send(a, "s1", "s0", out _), out _));
        b.AssertClean();
    }

    [Fact]
    public void The_live_tree_is_read_only_while_a_receive_is_pending_and_an_abort_restores_it()
    {
        using var a = new MemoryPool();
        using var b = new MemoryPool();
        Change(a, new Random(3), 0, 40);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s0", out _));
        Change(a, new Random(4), 1, 40);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s1", out _));
        Assert.Equal(0, (int)Receive(b, Send(a, "s0", null, out _), out _));
        var live = TreeListing.Of(b.Live);
        var inc = Send(a, "s1", "s0", out _);
        Assert.Equal(Errno.EIO, Receive(b, inc[..(inc.Length * 2 / 3)], out var r));
        Assert.NotNull(r.Token);
        Assert.Equal(Errno.EROFS, b.Live.Mkdir(1, "x", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.EBUSY, b.Engine.CreateSnapshot("t", out _));
        Assert.Equal(live, TreeListing.Of(b.Live));
        b.AssertClean();
        Assert.Equal(0, (int)b.Pool.Replication.AbortReceive(out var name));
        Assert.Equal("s1", name);
        Assert.Null(b.Pool.Replication.PendingToken());
        Assert.Equal(live, TreeListing.Of(b.Live));
        b.AssertClean();
        Assert.Equal(0, (int)Receive(b, inc, out _));
        AssertSame(a, "s1", b, "s1");
        b.AssertClean();
    }
}

[Trait("Tier", "engine")]
public class StreamFinishLaterTests
{
    [Fact]
    public void A_verified_stream_left_pending_finishes_later_even_after_a_reopen()
    {
        using var a = new MemoryPool();
        using var b = new MemoryPool();
        StreamRoundTripTests.Change(a, new Random(5), 0, 40);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s0", out _));
        var stream = StreamRoundTripTests.Send(a, "s0", null, out _);
        Assert.Equal(0, (int)b.Pool.Replication.Receive(new MemoryStream(stream), null, out var r, finish: false));
        Assert.True(r.Verified);
        Assert.Empty(b.Pool.Snapshots.List());
        b.AssertClean();
        b.ReopenAfter(() => { });
        Assert.Equal(0, (int)b.Pool.Replication.FinishReceive(out var name, out var problem));
        Assert.Equal("s0", name);
        StreamRoundTripTests.AssertSame(a, "s0", b, "s0");
        b.AssertClean();
    }
}
