using System.Buffers.Binary;
using Cow.Core.Format;
using Cow.Core.Replication;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;
using static Cow.Tests.Replication.StreamRoundTripTests;

namespace Cow.Tests.Replication;

/// <summary>A stream's bytes seen as frames (format.md 10.1: u32 type, u32 length, payload, u32 CRC-32C), for tests
/// that cut, damage or forge streams; and the pools those tests send from and receive into.</summary>
internal static class StreamFrames
{
    internal readonly record struct Frame(int Offset, StreamRecordType Type, int Length)
    {
        /// <summary>Where the payload starts.</summary>
        public int Payload => Offset + 8;
        /// <summary>Where the CRC starts.</summary>
        public int Crc => Offset + 8 + Length;
        /// <summary>Where the next frame starts.</summary>
        public int End => Offset + StreamFormat.FrameBytes + Length;
    }

    /// <summary>The whole frames of <paramref name="s"/>, in order (a frame cut short is left out).</summary>
    public static List<Frame> Of(byte[] s)
    {
        var frames = new List<Frame>();
        int p = 0;
        while (p + 8 <= s.Length)
        {
            var type = (StreamRecordType)BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(p));
            long len = BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(p + 4));
            if (p + StreamFormat.FrameBytes + len > s.Length) break;
            frames.Add(new Frame(p, type, (int)len));
            p += StreamFormat.FrameBytes + (int)len;
        }
        return frames;
    }

    /// <summary>Writes the CRC of frame <paramref name="f"/> over its (changed) type, length and payload.</summary>
    public static void FixCrc(byte[] s, Frame f) =>
        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(f.Crc), Crc32C.Compute(s.AsSpan(f.Offset, 8 + f.Length)));

    /// <summary>A pool with two snapshots of random trees: s0, and s1 after more changes (a 3 MiB file, of which a
    /// MiB changes, and a new 2 MiB file make data records of a full MiB); <paramref name="full"/> is s0's full stream,
    /// <paramref name="incremental"/> s1's from s0.</summary>
    public static MemoryPool Sender(Random rng, out byte[] full, out byte[] incremental, int ops = 40)
    {
        var a = new MemoryPool();
        Change(a, rng, 0, ops);
        long big = CreateFile(a.Live, "/big");
        WriteAt(a.Live, big, 0, Pattern(3 << 20, rng.Next()));
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s0", out _));
        WriteAt(a.Live, big, 1 << 20, Pattern(1 << 20, rng.Next()));
        Change(a, rng, 1, ops);
        // The changes may have cut or removed the big file: a new one is data the incremental stream carries for sure.
        WriteAt(a.Live, CreateFile(a.Live, "/late"), 0, Pattern((2 << 20) + 5000, rng.Next()));
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s1", out _));
        full = Send(a, "s0", null, out _);
        incremental = Send(a, "s1", "s0", out _);
        return a;
    }

    /// <summary>A pool to receive into: empty, or (for an incremental stream) holding s0 from <paramref name="full"/>.</summary>
    public static MemoryPool Receiver(byte[]? full, bool faulty = false, int batchRecords = 16)
    {
        var b = new MemoryPool(faulty: faulty);
        b.Engine.CommitInterval = TimeSpan.Zero;
        if (full != null)
        {
            var e = Receive(b, full, out var r);
            Assert.True(e == 0, $"receive s0: {e} {r.Problem}");
        }
        b.Engine.Receiver.BatchRecords = batchRecords;
        return b;
    }

    /// <summary>The sender's stream for <paramref name="token"/> (a receiver's).</summary>
    public static byte[] Resumed(MemoryPool sender, string token)
    {
        var t = ResumeToken.Parse(token, out var problem);
        Assert.True(t != null, $"token {token}: {problem}");
        return Resumed(sender, t);
    }

    public static byte[] Resumed(MemoryPool sender, ResumeToken t)
    {
        var ms = new MemoryStream();
        var e = sender.Pool.Replication.Resume(t, ms, out _, out var problem);
        Assert.True(e == 0, $"resume send at {t.Offset}: {e} {problem}");
        return ms.ToArray();
    }

    /// <summary>Resumes the receive pending on <paramref name="b"/> from <paramref name="a"/> and checks that it
    /// finishes with snapshot <paramref name="snap"/> as the sender has it (and the live tree too), fsck clean.</summary>
    public static void ResumeToTheEnd(MemoryPool a, MemoryPool b, string snap)
    {
        var token = b.Pool.Replication.PendingToken();
        Assert.NotNull(token);
        var e = Receive(b, Resumed(a, token), out var r);
        Assert.True(e == 0, $"resumed receive: {e} {r.Problem}");
        Assert.Equal(snap, r.Snapshot);
        AssertReceived(a, b, snap);
    }

    /// <summary><paramref name="b"/> holds <paramref name="snap"/> as <paramref name="a"/> does, its live tree is that
    /// snapshot's, no receive is pending and fsck is clean.</summary>
    public static void AssertReceived(MemoryPool a, MemoryPool b, string snap)
    {
        Assert.Null(b.Pool.Replication.PendingToken());
        AssertSame(a, snap, b, snap);
        Assert.Equal(TreeListing.Of(a.Pool.Snapshots.Open(snap)!), TreeListing.Of(b.Live));
        b.AssertClean();
    }

    public static string[] SnapshotNames(MemoryPool p) => p.Pool.Snapshots.List().Select(s => s.Name).Order(StringComparer.Ordinal).ToArray();

    /// <summary>Runs a receive of <paramref name="stream"/> that must not throw.</summary>
    public static Errno ReceiveQuietly(MemoryPool b, byte[] stream, out ReceiveResult r)
    {
        try { return Receive(b, stream, out r); }
        catch (Exception e) { Assert.Fail($"receive threw {e}"); throw; }
    }

    public static SnapshotIdentity Identity(MemoryPool p, string snap) => p.Pool.Replication.IdentityOf(snap) ?? throw new InvalidOperationException(snap);
}
