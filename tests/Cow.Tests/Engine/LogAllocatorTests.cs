using Cow.Core.Engine;
using Cow.Core.Format;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>The log allocator (<see cref="DeviceSpace.Allocate"/>): sequential runs while free segments
/// last, scattered free blocks only when no segment is free.</summary>
[Trait("Tier", "unit")]
public class LogAllocatorTests
{
    private const int Seg = FormatConstants.SegmentBlocks;

    [Fact]
    public void Fills_the_current_segment_then_moves_to_a_free_one_not_to_holes_left_behind()
    {
        var sp = new DeviceSpace(FormatConstants.LogCookie, 8L * Seg) { Cursor = 1 };
        // Fill segments 0..2 completely, then free every other block of segment 1 (as random overwrites do).
        long filled = 0;
        while (filled < 3L * Seg - 3) { long n = sp.Allocate(Seg, out long s); Assert.True(n > 0); sp.AddRef(s, n, 1); filled += n; }
        for (long b = Seg + 1; b < 2 * Seg; b += 2) sp.Release(b, 1, 1);
        sp.ReleasePendingFrees(sp.TakePendingFrees());
        Assert.Equal(3L * Seg, sp.Cursor);

        // 256 blocks: one run in segment 3, not 256 single blocks in segment 1.
        long got = sp.Allocate(256, out long start);
        Assert.Equal(256, got);
        Assert.Equal(3L * Seg + 1, start);
    }

    [Fact]
    public void Without_free_segments_it_reuses_the_segment_with_most_free_blocks()
    {
        var sp = new DeviceSpace(FormatConstants.LogCookie, 4L * Seg) { Cursor = 1 };
        while (sp.FreeBlocks > 0) { long n = sp.Allocate(Seg, out long s); Assert.True(n > 0); sp.AddRef(s, n, 1); }
        Assert.Equal(0, sp.Allocate(1, out _));
        sp.Release(Seg + 10, 5, 1);          // segment 1: 5 free
        sp.Release(2L * Seg + 100, 50, 1);   // segment 2: 50 free
        sp.ReleasePendingFrees(sp.TakePendingFrees());
        Assert.Equal(50, sp.Allocate(64, out long a));
        Assert.Equal(2L * Seg + 100, a);
        Assert.Equal(5, sp.Allocate(64, out long b));
        Assert.Equal(Seg + 10, b);
        Assert.Equal(0, sp.Allocate(1, out _));
    }

    [Fact]
    public void Never_hands_out_segment_headers_or_busy_blocks_and_runs_stay_inside_one_segment()
    {
        var rng = new Random(7);
        var sp = new DeviceSpace(FormatConstants.LogCookie, 5L * Seg + 300) { Cursor = 1 };
        var held = new List<(long S, long N)>();
        for (int i = 0; i < 4000; i++)
        {
            if (held.Count > 0 && rng.Next(3) == 0)
            {
                var (s, n) = held[rng.Next(held.Count)]; held.Remove((s, n));
                sp.Release(s, n, 1); sp.ReleasePendingFrees(sp.TakePendingFrees());
                continue;
            }
            long got = sp.Allocate(rng.Next(1, 600), out long start);
            if (got == 0) { Assert.Equal(0, sp.FreeBlocks); continue; }
            Assert.Equal(start / Seg, (start + got - 1) / Seg);
            for (long b = start; b < start + got; b++) Assert.False(DeviceSpace.IsReservedByFormat(b));
            foreach (var (s, n) in held) Assert.True(start + got <= s || s + n <= start, $"overlap at {start}");
            sp.AddRef(start, got, 1); held.Add((start, got));
        }
    }
}

/// <summary>The userspace write path rewrites a fragmented file in one run per request.</summary>
[Trait("Tier", "unit")]
public class FragmentedRewriteTests
{
    [Fact]
    public void Rewriting_a_fragmented_range_maps_it_as_one_extent_with_the_same_bytes()
    {
        using var p = new MemoryPool(faulty: true);
        var fs = p.Live;
        Assert.Equal(0, (int)fs.Create(fs.RootIno, "f", 0x81A4, 0, 0, out var attr));
        long ino = attr.Ino;
        var model = new byte[1 << 20];
        new Random(1).NextBytes(model);
        Assert.Equal(0, (int)fs.Write(ino, 0, model, out _));
        // Every other block rewritten: 256 blocks in 129+ extents.
        var rng = new Random(2);
        for (int b = 0; b < 256; b += 2)
        {
            var blk = new byte[4096]; rng.NextBytes(blk);
            Assert.Equal(0, (int)fs.Write(ino, b * 4096L, blk, out _));
            blk.CopyTo(model, b * 4096);
        }
        Assert.Equal(0, (int)fs.IomapBegin(ino, 0, 1 << 20, Cow.Core.Engine.IomapOp.Report, out var before));
        Assert.Equal(4096, before.Read.Length);

        // One unaligned rewrite over the fragments (partial first and last blocks).
        var patch = new byte[(1 << 20) - 3000];
        rng.NextBytes(patch);
        long logWrites = p.LogFault!.TotalWrites;
        Assert.Equal(0, (int)fs.Write(ino, 1000, patch, out int n));
        // One data write (plus at most a segment header), not one per old extent.
        Assert.InRange(p.LogFault.TotalWrites - logWrites, 1, 2);
        Assert.Equal(patch.Length, n);
        patch.CopyTo(model, 1000);

        Assert.Equal(0, (int)fs.IomapBegin(ino, 0, 1 << 20, Cow.Core.Engine.IomapOp.Report, out var after));
        Assert.Equal(1 << 20, after.Read.Length);
        var back = new byte[1 << 20];
        Assert.Equal(0, (int)fs.Read(ino, 0, back, out int got));
        Assert.Equal(model.Length, got);
        Assert.Equal(model, back);
        Assert.Empty(p.Pool.Fsck().Problems);
    }
}
