using System.Buffers.Binary;
using Cow.Core.Replication;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Replication.StreamFrames;
using static Cow.Tests.Replication.StreamRoundTripTests;

namespace Cow.Tests.Replication;

/// <summary>
/// Cut and damaged streams (format.md 10.5, 10.6): a receive that stops part-way shows nothing (no snapshot, the live
/// tree as it was, fsck clean), keeps every record before the damage, and a resumed send from its token finishes it
/// to the sender's snapshot; a stream cut in its header, or whose end record does not match its records, changes
/// nothing and leaves nothing pending; a resumed stream that is not the pending receive's is refused with the
/// pending receive intact.
/// </summary>
[Trait("Tier", "engine")]
public class StreamDamageTests(ITestOutputHelper output)
{
    private int Seed()
    {
        int seed = Environment.GetEnvironmentVariable("COW_SEED") is { } s ? int.Parse(s) : Random.Shared.Next();
        output.WriteLine($"seed {seed} (COW_SEED={seed} to repeat)");
        return seed;
    }

    /// <summary>What a receiver shows: its snapshots and its live tree.</summary>
    private static (string[] Snapshots, List<string> Live) Visible(MemoryPool b) => (SnapshotNames(b), TreeListing.Of(b.Live));

    private static void AssertUnchanged((string[] Snapshots, List<string> Live) before, MemoryPool b)
    {
        Assert.Equal(before.Snapshots, SnapshotNames(b));
        Assert.Equal(before.Live, TreeListing.Of(b.Live));
    }

    /// <summary>The record offset (bytes after the header) of the last record boundary at or before stream byte
    /// <paramref name="at"/>: what a receive of the stream cut there has applied.</summary>
    private static long KeptBefore(List<Frame> frames, int at) =>
        frames.Skip(1).SkipLast(1).Where(f => f.End <= at).Select(f => f.End).DefaultIfEmpty(frames[0].End).Max() - frames[0].End;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_cut_stream_shows_nothing_and_its_token_resumes_it_to_the_same_snapshot(bool incremental)
    {
        var rng = new Random(Seed());
        using var a = Sender(rng, out var full, out var inc);
        var stream = incremental ? inc : full;
        string snap = incremental ? "s1" : "s0";
        var frames = Of(stream);
        int header = frames[0].End;
        var data = frames.Where(f => f.Type == StreamRecordType.Data).ToList();
        Assert.NotEmpty(data);
        var end = frames[^1];
        Assert.Equal(StreamRecordType.End, end.Type);
        Assert.Equal(stream.Length, end.End);
        var d = data[rng.Next(data.Count)];
        var cuts = new List<(string What, int At)>
        {
            ("empty", 0),
            ("inside the header", rng.Next(1, header)),
            ("right after the header", header),
            ("inside a data record", d.Offset + rng.Next(1, d.End - d.Offset)),
            ("inside a data record's frame head", d.Offset + rng.Next(1, 8)),
            ("right after the first record", frames[1].End),
            ("just before the end record", end.Offset),
            ("inside the end record", end.Offset + rng.Next(1, end.End - end.Offset)),
            ("one byte short", stream.Length - 1),
        };
        for (int i = 0; i < 3; i++) cuts.Add(("at random", rng.Next(1, stream.Length)));
        output.WriteLine($"{(incremental ? "incremental" : "full")} stream: {stream.Length} bytes, {frames.Count} frames, header {header} bytes");
        foreach (var (what, at) in cuts)
        {
            using var b = Receiver(incremental ? full : null);
            var before = Visible(b);
            var e = Receive(b, stream[..at], out var r);
            output.WriteLine($"cut {what} at {at}: {e} ({r.Problem}), damage at {r.DamageOffset}, token {(r.Token == null ? "none" : "given")}");
            AssertUnchanged(before, b);
            b.AssertClean();
            if (at < header)
            {
                // Refused at the header: nothing pending.
                Assert.Equal(Errno.EBADMSG, e);
                Assert.Null(r.Token);
                Assert.Null(b.Pool.Replication.PendingToken());
                continue;
            }
            Assert.Equal(Errno.EIO, e);
            Assert.NotNull(r.Token);
            Assert.Equal(r.Token, b.Pool.Replication.PendingToken());
            var t = ResumeToken.Parse(r.Token, out _)!;
            Assert.Equal(KeptBefore(frames, at), t.Offset);
            Assert.Equal(Identity(a, snap), t.Snapshot);
            // The resumed stream is the original's records from the token's offset on, behind a header of the same size.
            var resumed = Resumed(a, r.Token);
            Assert.Equal(stream.AsSpan(header + (int)t.Offset).ToArray(), resumed.AsSpan(Of(resumed)[0].End).ToArray());
            e = Receive(b, resumed, out r);
            Assert.True(e == 0, $"resumed receive after the cut {what} at {at}: {e} {r.Problem}");
            Assert.Equal(snap, r.Snapshot);
            AssertReceived(a, b, snap);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_stream_cut_twice_resumes_twice_to_the_same_snapshot(bool incremental)
    {
        var rng = new Random(Seed());
        using var a = Sender(rng, out var full, out var inc);
        var stream = incremental ? inc : full;
        string snap = incremental ? "s1" : "s0";
        int header = Of(stream)[0].End;
        using var b = Receiver(incremental ? full : null);
        var before = Visible(b);

        int first = rng.Next(header + 1, header + (stream.Length - header) / 2);
        Assert.Equal(Errno.EIO, Receive(b, stream[..first], out var r1));
        AssertUnchanged(before, b);
        var t1 = ResumeToken.Parse(r1.Token!, out _)!;

        var resumed = Resumed(a, r1.Token!);
        int rh = Of(resumed)[0].End;
        // A resumed stream cut in its header changes nothing: the same receive is pending.
        Assert.Equal(Errno.EBADMSG, Receive(b, resumed[..rng.Next(1, rh)], out _));
        Assert.Equal(r1.Token, b.Pool.Replication.PendingToken());
        AssertUnchanged(before, b);

        int second = rng.Next(rh + 1, resumed.Length);
        var e = Receive(b, resumed[..second], out var r2);
        output.WriteLine($"cut at {first} of {stream.Length}, then at {second} of the resumed {resumed.Length}: {e} ({r2.Problem})");
        Assert.Equal(Errno.EIO, e);
        var t2 = ResumeToken.Parse(r2.Token!, out _)!;
        Assert.Equal(t1.Offset + KeptBefore(Of(resumed), second), t2.Offset);
        Assert.True(t2.Records >= t1.Records);
        Assert.Equal(r2.Token, b.Pool.Replication.PendingToken());
        AssertUnchanged(before, b);
        b.AssertClean();

        e = Receive(b, Resumed(a, r2.Token!), out var r3);
        Assert.True(e == 0, $"second resume: {e} {r3.Problem}");
        AssertReceived(a, b, snap);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_flipped_byte_stops_the_receive_at_or_before_it_and_a_resume_finishes_it(bool incremental)
    {
        var rng = new Random(Seed());
        using var a = Sender(rng, out var full, out var inc);
        var stream = incremental ? inc : full;
        string snap = incremental ? "s1" : "s0";
        var frames = Of(stream);
        int header = frames[0].End;
        for (int i = 0; i < 6; i++)
        {
            using var b = Receiver(incremental ? full : null);
            var before = Visible(b);
            var damaged = (byte[])stream.Clone();
            // The first rounds flip a byte of the frame heads (type, length) and of the end record; the rest anywhere.
            int at = i switch
            {
                0 => frames[rng.Next(1, frames.Count)].Offset + rng.Next(8),
                1 => frames[^1].Offset + rng.Next(frames[^1].End - frames[^1].Offset),
                _ => rng.Next(header, stream.Length),
            };
            damaged[at] ^= (byte)rng.Next(1, 256);
            var e = Receive(b, damaged, out var r);
            output.WriteLine($"byte {at} flipped: {e} ({r.Problem}), damage at {r.DamageOffset}");
            Assert.Equal(Errno.EIO, e);
            Assert.NotNull(r.DamageOffset);
            Assert.InRange(r.DamageOffset.Value, header, at);
            // Every record before the damaged one was kept.
            var t = ResumeToken.Parse(r.Token!, out _)!;
            Assert.Equal(r.DamageOffset.Value - header, t.Offset);
            Assert.Equal(KeptBefore(frames, (int)r.DamageOffset.Value), t.Offset);
            AssertUnchanged(before, b);
            b.AssertClean();
            ResumeToTheEnd(a, b, snap);
        }
    }

    [Theory]
    [InlineData(false, "digest")]
    [InlineData(true, "digest")]
    [InlineData(false, "count")]
    [InlineData(true, "count")]
    [InlineData(true, "trailing bytes")]
    public void A_stream_whose_end_record_does_not_match_is_refused_whole(bool incremental, string damage)
    {
        var rng = new Random(Seed());
        using var a = Sender(rng, out var full, out var inc);
        var stream = incremental ? inc : full;
        string snap = incremental ? "s1" : "s0";
        var end = Of(stream)[^1];
        var damaged = (byte[])stream.Clone();
        switch (damage)
        {
            case "digest":
                damaged[end.Payload + 8 + rng.Next(StreamFormat.ChainBytes)] ^= (byte)(1 << rng.Next(8));
                FixCrc(damaged, end);
                break;
            case "count":
                BinaryPrimitives.WriteInt64LittleEndian(damaged.AsSpan(end.Payload), BinaryPrimitives.ReadInt64LittleEndian(damaged.AsSpan(end.Payload)) + (rng.Next(2) == 0 ? 1 : -1));
                FixCrc(damaged, end);
                break;
            default:
                damaged = [.. stream, (byte)rng.Next(256)];
                break;
        }
        using var b = Receiver(incremental ? full : null);
        var before = Visible(b);
        var e = Receive(b, damaged, out var r);
        output.WriteLine($"{damage}: {e} ({r.Problem})");
        Assert.Equal(Errno.EBADMSG, e);
        Assert.Null(r.Token);
        Assert.Null(b.Pool.Replication.PendingToken());
        Assert.Equal(Errno.ENOENT, b.Pool.Replication.AbortReceive(out _));
        AssertUnchanged(before, b);
        b.AssertClean();
        // Nothing of it stays in the way: the good stream is received.
        Assert.Equal(0, (int)Receive(b, stream, out _));
        AssertReceived(a, b, snap);
    }

    [Fact]
    public void A_resumed_stream_that_is_not_the_pending_receives_is_refused_with_nothing_changed()
    {
        var rng = new Random(Seed());
        using var a = Sender(rng, out var full, out var inc);
        Change(a, rng, 2, 30);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s2", out _));
        var inc2 = Send(a, "s2", "s0", out _);
        var fullS1 = Send(a, "s1", null, out _);
        var frames = Of(inc);
        int header = frames[0].End;
        using var b = Receiver(full);
        var before = Visible(b);
        // Cut at a record boundary in the middle, so that there are boundaries before and after the pending offset.
        int mid = frames.Count / 2;
        Assert.Equal(Errno.EIO, Receive(b, inc[..(frames[mid].Offset + 3)], out var r));
        string token = r.Token!;
        var t = ResumeToken.Parse(token, out _)!;
        Assert.Equal(frames[mid].Offset - header, t.Offset);

        static long Boundary(byte[] s, int i) { var f = Of(s); return f[i].Offset - f[0].End; }
        var wrong = new List<(string What, ResumeToken Token, Errno Expected)>
        {
            ("another snapshot", t with { Snapshot = Identity(a, "s2"), Offset = Boundary(inc2, Math.Min(mid, Of(inc2).Count - 2)) }, Errno.EINVAL),
            ("the same snapshot from no base", t with { Base = default, Offset = Boundary(fullS1, mid) }, Errno.EINVAL),
            ("an earlier offset", t with { Offset = Boundary(inc, mid - 1) }, Errno.EINVAL),
            ("a later offset", t with { Offset = Boundary(inc, mid + 1) }, Errno.EINVAL),
            ("the right offset with another chain", t with { Chain = [.. t.Chain.Select(x => (byte)~x)] }, Errno.EINVAL),
        };
        foreach (var (what, wt, expected) in wrong)
        {
            var e = Receive(b, Resumed(a, wt), out var wr);
            output.WriteLine($"{what}: {e} ({wr.Problem})");
            Assert.Equal(expected, e);
            Assert.Equal(token, b.Pool.Replication.PendingToken());
            AssertUnchanged(before, b);
        }
        // A new stream (not a resumed one) waits for the pending receive to be resumed or aborted.
        Assert.Equal(Errno.EBUSY, Receive(b, inc2, out var br));
        output.WriteLine($"a new stream: {br.Problem}");
        Assert.Equal(token, b.Pool.Replication.PendingToken());
        AssertUnchanged(before, b);
        b.AssertClean();
        ResumeToTheEnd(a, b, "s1");
    }
}

/// <summary>Resume tokens (format.md 10.6): printed and parsed back field for field; anything else is refused with a
/// reason, never an exception.</summary>
[Trait("Tier", "unit")]
public class ResumeTokenTests
{
    private static ResumeToken RandomToken(Random rng)
    {
        var chain = new byte[StreamFormat.ChainBytes];
        rng.NextBytes(chain);
        var g = new byte[16];
        rng.NextBytes(g);
        var snap = new SnapshotIdentity(new Guid(g), rng.NextInt64(1, long.MaxValue));
        var bas = rng.Next(3) == 0 ? default : new SnapshotIdentity(Guid.NewGuid(), rng.NextInt64(1, snap.Gen));
        return new ResumeToken(snap, bas, rng.NextInt64(0, long.MaxValue), rng.NextInt64(0, long.MaxValue), chain);
    }

    [Fact]
    public void A_token_parses_back_to_its_fields()
    {
        var rng = new Random(5);
        for (int i = 0; i < 200; i++)
        {
            var t = RandomToken(rng);
            string s = t.ToString();
            Assert.StartsWith("1-", s);
            Assert.DoesNotContain("=", s);
            Assert.DoesNotContain("+", s);
            Assert.DoesNotContain("/", s);
            var p = ResumeToken.Parse(s, out var problem);
            Assert.True(p != null, problem);
            Assert.Equal(t.Snapshot, p!.Snapshot);
            Assert.Equal(t.Base, p.Base);
            Assert.Equal(t.Offset, p.Offset);
            Assert.Equal(t.Records, p.Records);
            Assert.Equal(t.Chain, p.Chain);
            Assert.Equal(s, p.ToString());
        }
        var zero = new ResumeToken(default, default, 0, 0, new byte[StreamFormat.ChainBytes]);
        Assert.Equal(zero.ToString(), ResumeToken.Parse(zero.ToString(), out _)!.ToString());
    }

    [Fact]
    public void A_malformed_token_is_refused_with_a_reason()
    {
        var good = RandomToken(new Random(9));
        string s = good.ToString();
        var bad = new List<string>
        {
            "", "1", "1-", "2-" + s[2..], "x" + s, s[2..], " " + s,
            s + "A", s + "AAAA", s[..^1], s[..^4], s[..40],
            "1-" + new string('!', s.Length - 2), "1-" + s[2..10] + "*" + s[11..],
            new ResumeToken(good.Snapshot, good.Base, -1, 0, good.Chain).ToString(),
            new ResumeToken(good.Snapshot, good.Base, 0, -5, good.Chain).ToString(),
            new ResumeToken(good.Snapshot, good.Base, long.MinValue, long.MinValue, good.Chain).ToString(),
        };
        foreach (var text in bad)
        {
            ResumeToken? t = null;
            string? problem = null;
            var ex = Record.Exception(() => t = ResumeToken.Parse(text, out problem));
            Assert.True(ex == null, $"'{text}' threw {ex}");
            Assert.True(t == null, $"'{text}' parsed as {t}");
            Assert.False(string.IsNullOrEmpty(problem), $"'{text}': no reason given");
        }
    }
}
