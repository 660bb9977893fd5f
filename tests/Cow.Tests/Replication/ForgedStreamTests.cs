using Cow.Core.Replication;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Replication.StreamFrames;
using StreamWriter = Cow.Core.Replication.StreamWriter;

namespace Cow.Tests.Replication;

/// <summary>
/// Streams written with the stream writer itself (valid CRCs, a valid chain and end record) whose records do not fit
/// a tree: ranges past the largest file (whose end overflows a 64-bit sum), an inode number the pool cannot count
/// past, and records that contradict the tree built so far. The receive applies records before it can check the
/// digest, so each must be refused as it is applied: EBADMSG within seconds, nothing kept or pending, no snapshot,
/// fsck clean, and the live tree makes new inodes with fresh numbers.
/// </summary>
[Trait("Tier", "engine")]
public class ForgedStreamTests(ITestOutputHelper output)
{
    private static StreamInode Dir(long ino, long parent) => new(ino, 0x41ED, 0, 0, 2, 0, 0, 1, 1, 1, 1, parent, 5, null, []);
    private static StreamInode File(long ino, long size = 8192) => new(ino, 0x81A4, 0, 0, 1, size, 0, 1, 1, 1, 1, 1, 0, null, []);

    /// <summary>A full stream of a root with files 'a' (inode 2) and 'b' (inode 3, 8 KiB of data), then
    /// <paramref name="records"/>.</summary>
    private static byte[] Forge(Action<StreamWriter> records)
    {
        var ms = new MemoryStream();
        var w = new StreamWriter(ms);
        w.WriteHeader(new StreamHeader(4096, new SnapshotIdentity(Guid.NewGuid(), 5), default, 0, 0, new byte[StreamFormat.ChainBytes], "forged"));
        w.Write(StreamRecordType.Inode, StreamCodec.Inode(Dir(1, 1)));
        w.Write(StreamRecordType.Inode, StreamCodec.Inode(File(2)));
        w.Write(StreamRecordType.Inode, StreamCodec.Inode(File(3)));
        w.Write(StreamRecordType.Entry, StreamCodec.Entry(1, 3, 2, 8, "a"));
        w.Write(StreamRecordType.Entry, StreamCodec.Entry(1, 4, 3, 8, "b"));
        w.Write(StreamRecordType.Data, [.. StreamCodec.Longs(3, 0), .. MemoryPool.Pattern(8192, 1)]);
        records(w);
        w.WriteEnd();
        return ms.ToArray();
    }

    private const long Huge = long.MaxValue & ~4095L;

    private static readonly Dictionary<string, Action<StreamWriter>> Hostile = new()
    {
        ["a clone whose end overflows"] = w => w.Write(StreamRecordType.Clone, StreamCodec.Longs(2, 4096, Huge, 3, 4096)),
        ["a clone from a source whose end overflows"] = w => w.Write(StreamRecordType.Clone, StreamCodec.Longs(2, 0, 4096, 3, Huge)),
        ["data whose end overflows"] = w => w.Write(StreamRecordType.Data, [.. StreamCodec.Longs(2, Huge), .. new byte[4096]]),
        ["data past the largest file"] = w => w.Write(StreamRecordType.Data, [.. StreamCodec.Longs(2, 1L << 50), .. new byte[4096]]),
        ["a hole whose end overflows"] = w => w.Write(StreamRecordType.Hole, StreamCodec.Longs(2, 1L << 40, Huge)),
        ["inode number long.MaxValue"] = w => w.Write(StreamRecordType.Inode, StreamCodec.Inode(File(long.MaxValue))),
        ["data into a directory"] = w => w.Write(StreamRecordType.Data, [.. StreamCodec.Longs(1, 0), .. new byte[4096]]),
        ["a clone from a directory"] = w => w.Write(StreamRecordType.Clone, StreamCodec.Longs(2, 0, 4096, 1, 0)),
        ["a file turned into a directory"] = w => w.Write(StreamRecordType.Inode, StreamCodec.Inode(Dir(2, 1))),
        ["the root removed"] = w => w.Write(StreamRecordType.InodeGone, StreamCodec.Longs(1)),
        ["a missing entry removed"] = w => w.Write(StreamRecordType.EntryGone, StreamCodec.EntryGone(1, "nope")),
        ["an entry in a file"] = w => w.Write(StreamRecordType.Entry, StreamCodec.Entry(2, 3, 3, 8, "x")),
        ["an entry naming a missing inode"] = w => w.Write(StreamRecordType.Entry, StreamCodec.Entry(1, 5, 99, 8, "ghost")),
    };

    public static TheoryData<string> Cases() => [.. Hostile.Keys];

    [Fact]
    public void A_well_formed_forged_stream_is_received()
    {
        using var b = Receiver(null);
        var e = b.Pool.Replication.Receive(new MemoryStream(Forge(_ => { })), null, out var r);
        Assert.True(e == 0, $"{e} {r.Problem}");
        Assert.Equal(["forged"], SnapshotNames(b));
        b.AssertClean();
    }

    /// <summary>A clone is legal up to the largest file, holes and all: a petabyte clone of an 8 KiB file costs what its
    /// two chunks cost, not a visit to each of the 2^28 chunks the range spans (which took hours, and held the commit
    /// lock).</summary>
    [Fact]
    public async Task A_clone_of_a_petabyte_mostly_holes_is_received_in_seconds()
    {
        var stream = Forge(w => w.Write(StreamRecordType.Clone, StreamCodec.Longs(2, 0, (1L << 50) - 4096, 3, 4096)));
        var b = Receiver(null);
        var run = Task.Run(() => (b.Pool.Replication.Receive(new MemoryStream(stream), null, out var r), r));
        var (e, r) = await run.WaitAsync(TimeSpan.FromSeconds(30));
        using (b)
        {
            Assert.True(e == 0, $"{e} {r.Problem}");
            var snap = b.Pool.Snapshots.Open("forged")!;
            var a = MemoryPool.ReadAll(snap, MemoryPool.Ino(snap, "/a"));
            Assert.Equal(MemoryPool.Pattern(8192, 1).AsSpan(4096, 4096).ToArray(), a.AsSpan(0, 4096).ToArray());
            Assert.All(a.AsSpan(4096).ToArray(), x => Assert.Equal(0, x));
            b.AssertClean();
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task A_record_that_does_not_fit_is_refused_as_it_is_applied(string what)
    {
        var stream = Forge(Hostile[what]);
        var b = Receiver(null);
        var run = Task.Run(() => (b.Pool.Replication.Receive(new MemoryStream(stream), null, out var r), r));
        // A receive that does not return holds the pool's commit lock: the pool is left undisposed then.
        var (e, r) = await run.WaitAsync(TimeSpan.FromSeconds(30));
        using (b)
        {
            output.WriteLine($"{what}: {e} ({r.Problem})");
            Assert.Equal(Errno.EBADMSG, e);
            Assert.Null(r.Token);
            Assert.Null(b.Pool.Replication.PendingToken());
            Assert.Empty(SnapshotNames(b));
            b.AssertClean();
            long ino = MemoryPool.CreateFile(b.Live, "/new");
            Assert.InRange(ino, 2, 1000);
            Assert.Equal(0, (int)b.Live.Fsync(ino));
            b.AssertClean();
        }
    }
}
