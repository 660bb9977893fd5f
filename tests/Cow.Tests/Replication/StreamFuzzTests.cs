using System.Buffers.Binary;
using System.Diagnostics;
using Cow.Core.Replication;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;
using static Cow.Tests.Replication.StreamFrames;
using static Cow.Tests.Replication.StreamRoundTripTests;

namespace Cow.Tests.Replication;

/// <summary>
/// Mutated streams (format.md 10): random byte flips, truncations, inserted and removed bytes, and mutations whose
/// frame CRCs are recomputed (so the decoder and the receiver see garbage fields, other record types and lengths,
/// records dropped, repeated or reordered, all with valid CRCs). <see cref="Cow.Core.Replication.StreamReader"/> only ever throws
/// <see cref="StreamDamagedException"/>; a receive only ever returns an errno, shows nothing (no snapshot, the live
/// tree as it was), leaves a pending receive that aborts cleanly, and fsck stays clean; the pools then receive the
/// good stream. Where only bytes were damaged (no CRC recomputed), a resume finishes the receive to the sender's
/// snapshot.
/// </summary>
public abstract class StreamFuzzCases(ITestOutputHelper output)
{
    private int Seed()
    {
        int seed = Environment.GetEnvironmentVariable("COW_SEED") is { } s ? int.Parse(s) : Random.Shared.Next();
        output.WriteLine($"seed {seed} (COW_SEED={seed} to repeat)");
        return seed;
    }

    private enum Kind { Flip, Truncate, Insert, Remove, FieldWithCrc, TypeWithCrc, LengthWithCrc, Frames, HeaderWithCrc }

    /// <summary>Kinds that damage bytes only: every frame before the damage is the sender's, so a resume finishes.</summary>
    private static bool BytesOnly(Kind k) => k is Kind.Flip or Kind.Truncate or Kind.Insert or Kind.Remove;

    private static readonly long[] Interesting =
    [
        0, 1, -1, 2, 7, 4095, 4096, 4097, 1 << 20, int.MaxValue, uint.MaxValue, 1L << 32, 1L << 40, 1L << 50, (1L << 50) - 4096,
        1L << 62, long.MaxValue, long.MaxValue & ~4095L, long.MinValue, long.MinValue + 4096,
    ];

    /// <summary>A mutation of <paramref name="s"/> (never the same bytes).</summary>
    private static byte[] Mutate(byte[] s, Random rng, out Kind kind, out string what)
    {
        var frames = Of(s);
        while (true)
        {
            kind = (Kind)rng.Next(9);
            var m = Mutate(s, frames, rng, kind, out what);
            if (!m.AsSpan().SequenceEqual(s)) return m;
        }
    }

    private static byte[] Mutate(byte[] s, List<Frame> frames, Random rng, Kind kind, out string what)
    {
        var m = (byte[])s.Clone();
        var f = frames[rng.Next(1, frames.Count)];   // a record after the header (the end record too)
        switch (kind)
        {
            case Kind.Flip:
            {
                var at = new List<int>();
                for (int i = rng.Next(1, 5); i > 0; i--) { at.Add(rng.Next(m.Length)); m[at[^1]] ^= (byte)rng.Next(1, 256); }
                what = $"bytes {string.Join(",", at)} flipped";
                return m;
            }
            case Kind.Truncate:
            {
                int at = rng.Next(4) == 0 ? f.Offset + rng.Next(f.End - f.Offset) : rng.Next(m.Length);
                what = $"cut at {at}";
                return m[..at];
            }
            case Kind.Insert:
            {
                int at = rng.Next(2) == 0 ? f.Offset : rng.Next(m.Length + 1);
                var ins = new byte[rng.Next(1, 17)];
                rng.NextBytes(ins);
                what = $"{ins.Length} bytes inserted at {at}";
                return [.. m.AsSpan(0, at), .. ins, .. m.AsSpan(at)];
            }
            case Kind.Remove:
            {
                int n = Math.Min(rng.Next(1, 17), m.Length - 1), at = rng.Next(m.Length - n + 1);
                what = $"{n} bytes removed at {at}";
                return [.. m.AsSpan(0, at), .. m.AsSpan(at + n)];
            }
            case Kind.FieldWithCrc:
            {
                if (f.Length == 0) { what = "nothing"; return m; }
                int width = new[] { 1, 2, 4, 8 }[rng.Next(4)];
                while (width > f.Length) width /= 2;
                int at = f.Payload + rng.Next((f.Length - width) / Math.Min(width, 4) + 1) * Math.Min(width, 4);
                long v = rng.Next(3) switch
                {
                    0 => Interesting[rng.Next(Interesting.Length)],
                    1 => rng.NextInt64(),
                    _ => BinaryPrimitives.ReadInt64LittleEndian(Padded(m, at)) + (rng.Next(2) == 0 ? 1 : -1) * (rng.Next(2) == 0 ? 1 : 4096),
                };
                Span<byte> b = stackalloc byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(b, v);
                b[..width].CopyTo(m.AsSpan(at));
                FixCrc(m, f);
                what = $"{width} bytes at {at} (record {f.Type} at {f.Offset}) set to {v}, CRC recomputed";
                return m;
            }
            case Kind.TypeWithCrc:
            {
                uint t = rng.Next(3) == 0 ? (uint)rng.Next() : (uint)rng.Next(0, 11);
                BinaryPrimitives.WriteUInt32LittleEndian(m.AsSpan(f.Offset), t);
                FixCrc(m, f);
                what = $"record {f.Type} at {f.Offset} made type {t}, CRC recomputed";
                return m;
            }
            case Kind.LengthWithCrc:
            {
                int len = Math.Max(0, f.Length + rng.Next(-Math.Min(f.Length, 40), 41));
                var payload = new byte[len];
                rng.NextBytes(payload);
                s.AsSpan(f.Payload, Math.Min(len, f.Length)).CopyTo(payload);
                var frame = Build(BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(f.Offset)), payload);
                what = $"record {f.Type} at {f.Offset} made {len} bytes (was {f.Length}), CRC recomputed";
                return [.. s.AsSpan(0, f.Offset), .. frame, .. s.AsSpan(f.End)];
            }
            case Kind.Frames:
            {
                // Whole frames, each with a valid CRC: one dropped, repeated or moved.
                var list = frames.Select(x => s.AsSpan(x.Offset, x.End - x.Offset).ToArray()).ToList();
                int i = rng.Next(1, list.Count), j = rng.Next(1, list.Count);
                switch (rng.Next(3))
                {
                    case 0: list.RemoveAt(i); what = $"frame {i} dropped"; break;
                    case 1: list.Insert(j, list[i]); what = $"frame {i} repeated before frame {j}"; break;
                    default: var x = list[i]; list.RemoveAt(i); list.Insert(Math.Min(j, list.Count), x); what = $"frame {i} moved to {j}"; break;
                }
                return list.SelectMany(x => x).ToArray();
            }
            default:
            {
                // The header's checked fields (magic, version, block size, both identities, resume offset), CRC recomputed.
                // Its name and creation time are not chained (a resumed stream's header differs anyway): a changed one is
                // a stream of the same snapshot, under another name.
                var h = frames[0];
                int at = h.Payload + (rng.Next(6) == 0 ? 72 + rng.Next(8) : rng.Next(64));
                m[at] ^= (byte)rng.Next(1, 256);
                FixCrc(m, h);
                what = $"header byte {at - h.Payload} changed, CRC recomputed";
                return m;
            }
        }
    }

    private static byte[] Padded(byte[] m, int at)
    {
        var b = new byte[8];
        m.AsSpan(at, Math.Min(8, m.Length - at)).CopyTo(b);
        return b;
    }

    private static byte[] Build(uint type, byte[] payload)
    {
        var b = new byte[StreamFormat.FrameBytes + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, type);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)payload.Length);
        payload.CopyTo(b, 8);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8 + payload.Length), Cow.Core.Format.Crc32C.Compute(b.AsSpan(0, 8 + payload.Length)));
        return b;
    }

    /// <summary>A small sender: s0 and s1 of random trees (a few dozen inodes, files of a few blocks, some sparse).</summary>
    private static MemoryPool SmallSender(Random rng, out byte[] full, out byte[] inc)
    {
        var a = new MemoryPool();
        Change(a, rng, 0, 25);
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s0", out _));
        Change(a, rng, 1, 25);
        WriteAt(a.Live, CreateFile(a.Live, "/late"), 0, Pattern(20000, rng.Next()));
        Assert.Equal(0, (int)a.Engine.CreateSnapshot("s1", out _));
        full = Send(a, "s0", null, out _);
        inc = Send(a, "s1", "s0", out _);
        return a;
    }

    /// <summary>Reads <paramref name="m"/> to its end: null when it passed, "damaged" when the reader said so, or what
    /// else it threw.</summary>
    private static string? Read(byte[] m)
    {
        var r = new Cow.Core.Replication.StreamReader(new MemoryStream(m));
        try
        {
            while (r.Next() != null) { }
            return null;
        }
        catch (StreamDamagedException e) when (e.Offset >= 0 && e.Offset <= m.Length) { return "damaged"; }
        catch (Exception e) { return $"threw {e}"; }
    }

    protected void ReaderFuzz(int cases)
    {
        var rng = new Random(Seed());
        using var a = SmallSender(rng, out var full, out var inc);
        output.WriteLine($"streams: full {full.Length} bytes, incremental {inc.Length} bytes");
        Assert.Null(Read(full));
        Assert.Null(Read(inc));
        var clock = Stopwatch.StartNew();
        var byKind = new Dictionary<Kind, int>();
        for (int i = 0; i < cases; i++)
        {
            var s = i % 2 == 0 ? full : inc;
            var m = Mutate(s, rng, out var kind, out string what);
            byKind[kind] = byKind.GetValueOrDefault(kind) + 1;
            string? outcome = Read(m);
            Assert.True(outcome == "damaged" || (outcome == null && kind == Kind.HeaderWithCrc),
                $"case {i} ({(s == full ? "full" : "incremental")}, {what}): the reader {outcome ?? "passed it"}");
        }
        output.WriteLine($"{cases} mutations ({string.Join(", ", byKind.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}"))}) in {clock.ElapsedMilliseconds} ms");
    }

    protected async Task ReceiveFuzz(int cases, TimeSpan budget)
    {
        var rng = new Random(Seed());
        using var a = SmallSender(rng, out var full, out var inc);
        output.WriteLine($"streams: full {full.Length} bytes, incremental {inc.Length} bytes");
        using var bFull = Receiver(null, batchRecords: 4);
        using var bInc = Receiver(full, batchRecords: 4);
        var before = new[] { (SnapshotNames(bFull), TreeListing.Of(bFull.Live)), (SnapshotNames(bInc), TreeListing.Of(bInc.Live)) };
        var outcomes = new Dictionary<string, int>();
        var clock = Stopwatch.StartNew();
        int done = 0, resumed = 0;
        for (; done < cases && clock.Elapsed < budget; done++)
        {
            int which = done % 2;
            var (s, b, snap) = which == 0 ? (full, bFull, "s0") : (inc, bInc, "s1");
            var m = Mutate(s, rng, out var kind, out string what);
            string where = $"case {done} ({(which == 0 ? "full" : "incremental")}, {what})";
            var (e, r) = await Receive(b, m, where);
            string? token = b.Pool.Replication.PendingToken();
            string key = $"{kind} {e}{(token != null ? " (pending)" : "")}";
            outcomes[key] = outcomes.GetValueOrDefault(key) + 1;
            Assert.True(e != 0, $"{where}: received as '{r.Snapshot}'");
            Assert.True(before[which].Item1.AsSpan().SequenceEqual(SnapshotNames(b)), $"{where}: {e} ({r.Problem}), the snapshots are {string.Join(",", SnapshotNames(b))}");
            Assert.True(token == null || e is Errno.EIO or Errno.ENOSPC, $"{where}: {e} ({r.Problem}) left a receive pending");
            Assert.Equal(r.Token, token);
            if (token != null && BytesOnly(kind) && done % 8 < 2)
            {
                // On a pool of its own: the same damaged stream, then the rest from the sender, to the sender's snapshot.
                using var side = Receiver(which == 0 ? null : full, batchRecords: 4);
                var (se, _) = await Receive(side, m, where + " on a fresh pool");
                Assert.Equal(e, se);
                var (re, rr) = await Receive(side, Resumed(a, side.Pool.Replication.PendingToken()!), where + ", resumed");
                Assert.True(re == 0, $"{where}: the resumed receive: {re} ({rr.Problem})");
                AssertReceived(a, side, snap);
                resumed++;
            }
            if (token != null) Assert.Equal(0, (int)b.Pool.Replication.AbortReceive(out _));
            if (done % 50 == 49)
            {
                Assert.Equal(before[which].Item2, TreeListing.Of(b.Live));
                b.AssertClean();
            }
        }
        output.WriteLine($"{done} mutated streams received in {clock.ElapsedMilliseconds} ms ({resumed} resumed to the end on a fresh pool)");
        foreach (var (k, n) in outcomes.OrderBy(o => o.Key, StringComparer.Ordinal)) output.WriteLine($"  {k}: {n}");
        Assert.True(done >= Math.Min(cases, 100), $"only {done} cases in {budget}");
        // Both pools are as they were, and take the good streams.
        for (int which = 0; which < 2; which++)
        {
            var (s, b, snap) = which == 0 ? (full, bFull, "s0") : (inc, bInc, "s1");
            Assert.Equal(before[which].Item1, SnapshotNames(b));
            Assert.Equal(before[which].Item2, TreeListing.Of(b.Live));
            b.AssertClean();
            var (e, r) = await Receive(b, s, $"the good {snap}");
            Assert.True(e == 0, $"the good {snap}: {e} {r.Problem}");
            AssertReceived(a, b, snap);
            // The live tree takes new files, numbered past every inode received.
            long ino = CreateFile(b.Live, "/after-fuzz");
            Assert.True(TreeListing.Of(a.Pool.Snapshots.Open(snap)!).All(l => !l.Contains($" ino={ino} ")), $"new inode {ino} is taken");
            Assert.Equal(0, (int)b.Live.Fsync(ino));
            b.AssertClean();
        }
    }

    /// <summary>A receive that must return (an errno) within a minute, and not throw.</summary>
    private static async Task<(Errno, ReceiveResult)> Receive(MemoryPool b, byte[] stream, string where)
    {
        var run = Task.Run(() => (b.Pool.Replication.Receive(new MemoryStream(stream), null, out var r), r));
        try { return await run.WaitAsync(TimeSpan.FromMinutes(1)); }
        catch (TimeoutException) { Assert.Fail($"{where}: the receive did not return within a minute"); throw; }
        catch (Exception e) { Assert.Fail($"{where}: the receive threw {e}"); throw; }
    }
}

/// <summary>The quick fuzz of <see cref="StreamFuzzCases"/>: thousands of reader cases, hundreds of receives.</summary>
[Trait("Tier", "engine")]
public class StreamFuzzTests(ITestOutputHelper output) : StreamFuzzCases(output)
{
    [Fact]
    public void The_reader_throws_only_stream_damage_for_thousands_of_mutations() => ReaderFuzz(4000);

    [Fact]
    public Task A_receive_of_a_mutated_stream_returns_an_errno_and_shows_nothing() => ReceiveFuzz(300, TimeSpan.FromSeconds(15));
}

/// <summary>The long fuzz of <see cref="StreamFuzzCases"/>.</summary>
[Trait("Tier", "slow")]
public class StreamFuzzSlowTests(ITestOutputHelper output) : StreamFuzzCases(output)
{
    [Fact]
    public void The_reader_throws_only_stream_damage_for_a_hundred_thousand_mutations() => ReaderFuzz(100_000);

    [Fact]
    public Task A_receive_of_any_of_thousands_of_mutated_streams_returns_an_errno_and_shows_nothing() => ReceiveFuzz(5000, TimeSpan.FromMinutes(10));
}
