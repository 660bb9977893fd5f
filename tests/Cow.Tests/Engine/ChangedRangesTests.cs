using Cow.Core.Engine;
using Cow.Core.Metadata;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary><see cref="ChangedRanges.Between"/> on hand-built extent maps: what differs, what is skipped, how runs merge.</summary>
[Trait("Tier", "unit")]
public class ChangedRangesTests
{
    private const long C = Core.Format.FormatConstants.ChunkBlocks;

    private static ChunkRecord Chunk(long rid, long index, params Extent[] extents) =>
        new() { Rid = rid, Ino = 5, Index = index, Extents = extents.ToList() };

    private static Extent E(uint first, uint count, long address, uint device = 1) => new(first, count, device, address);

    [Fact]
    public void Versions_with_the_same_record_id_are_skipped_without_looking_inside()
    {
        // The same rid with other extents cannot happen; it shows the maps are not compared.
        Assert.Empty(ChangedRanges.Between([Chunk(7, 0, E(0, 10, 100))], [Chunk(7, 0, E(0, 10, 900))]));
        Assert.Empty(ChangedRanges.Between([], []));
    }

    [Fact]
    public void One_block_rewritten_in_the_middle_of_an_extent_is_one_block()
    {
        var older = Chunk(1, 2, E(0, 10, 100));
        var newer = Chunk(2, 2, E(0, 4, 100), E(4, 1, 500), E(5, 5, 105));
        Assert.Equal([new ChangedRun(2 * C + 4, 1, true)], ChangedRanges.Between([older], [newer]));
    }

    [Fact]
    public void The_same_blocks_on_another_device_differ()
    {
        Assert.Equal([new ChangedRun(0, 10, true)], ChangedRanges.Between([Chunk(1, 0, E(0, 10, 100))], [Chunk(2, 0, E(0, 10, 100, device: 2))]));
    }

    [Fact]
    public void A_chunk_on_one_side_only_is_data_when_new_and_hole_when_gone()
    {
        var shared = Chunk(1, 0, E(0, 4, 100));
        Assert.Equal([new ChangedRun(3 * C + 10, 5, true)], ChangedRanges.Between([shared], [shared, Chunk(2, 3, E(10, 5, 700))]));
        Assert.Equal([new ChangedRun(3 * C + 10, 5, false)], ChangedRanges.Between([shared, Chunk(2, 3, E(10, 5, 700))], [shared]));
    }

    [Fact]
    public void A_punched_hole_is_an_unmapped_run()
    {
        var older = Chunk(1, 0, E(0, 10, 100));
        var newer = Chunk(2, 0, E(0, 3, 100), E(7, 3, 107));
        Assert.Equal([new ChangedRun(3, 4, false)], ChangedRanges.Between([older], [newer]));
    }

    [Fact]
    public void Adjacent_runs_of_one_kind_merge_even_across_extents_and_chunks_but_data_and_hole_do_not()
    {
        // Two new extents side by side: one run.
        Assert.Equal([new ChangedRun(0, 4, true)],
            ChangedRanges.Between([Chunk(1, 0, E(0, 4, 100))], [Chunk(2, 0, E(0, 2, 200), E(2, 2, 300))]));
        // The end of chunk 0 and the start of chunk 1: one run.
        Assert.Equal([new ChangedRun(C - 4, 8, true)],
            ChangedRanges.Between([], [Chunk(1, 0, E((uint)C - 4, 4, 100)), Chunk(2, 1, E(0, 4, 104))]));
        // Rewritten then cut short: data then hole.
        Assert.Equal([new ChangedRun(0, 2, true), new ChangedRun(2, 2, false)],
            ChangedRanges.Between([Chunk(1, 0, E(0, 4, 100))], [Chunk(2, 0, E(0, 2, 200))]));
        // Unchanged blocks between two changes keep them apart.
        Assert.Equal([new ChangedRun(1, 1, true), new ChangedRun(3, 1, true)],
            ChangedRanges.Between([Chunk(1, 0, E(0, 5, 100))], [Chunk(2, 0, E(0, 1, 100), E(1, 1, 600), E(2, 1, 102), E(3, 1, 601), E(4, 1, 104))]));
    }
}
