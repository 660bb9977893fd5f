using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>A run of file blocks that differs between two versions of a file: <see cref="Mapped"/> says whether the
/// newer version maps the blocks (its data changed or appeared) or not (they became a hole).</summary>
internal readonly record struct ChangedRun(long FileBlock, long Blocks, bool Mapped)
{
    public long End => FileBlock + Blocks;
}

/// <summary>
/// Which file blocks differ between two versions of a file's extent map, from the maps alone (no data is read):
/// the change-finder behind <c>snapshot diff --ranges</c> and incremental <c>cow send</c>. A block differs when one
/// version maps it and the other does not, or both map it to different device blocks. Chunk versions with the same
/// record id are the same version and are skipped without looking inside, so the cost follows the chunks that
/// changed. A block rewritten with the same bytes counts as changed (the maps cannot tell).
/// Thread-safe: static and pure; the chunk lists are only read.
/// </summary>
internal static class ChangedRanges
{
    private const int ChunkBlocks = FormatConstants.ChunkBlocks;

    /// <summary>The changed runs from <paramref name="older"/> to <paramref name="newer"/> (each a file's chunks,
    /// sorted by index), ascending and maximal (adjacent runs of one kind are merged).</summary>
    public static List<ChangedRun> Between(IReadOnlyList<ChunkRecord> older, IReadOnlyList<ChunkRecord> newer)
    {
        var result = new List<ChangedRun>();
        int i = 0, j = 0;
        while (i < older.Count || j < newer.Count)
        {
            ChunkRecord? a = null, b = null;
            if (j >= newer.Count || (i < older.Count && older[i].Index < newer[j].Index)) a = older[i++];
            else if (i >= older.Count || newer[j].Index < older[i].Index) b = newer[j++];
            else { a = older[i++]; b = newer[j++]; }
            if (a != null && b != null && a.Rid == b.Rid) continue;
            InChunk(result, a, b);
        }
        return result;
    }

    /// <summary>Adds the changed runs of one chunk (either version may be absent: all hole).</summary>
    private static void InChunk(List<ChangedRun> result, ChunkRecord? a, ChunkRecord? b)
    {
        long index = (a ?? b)!.Index, baseBlock = index * ChunkBlocks;
        long cb = 0;
        while (cb < ChunkBlocks)
        {
            var ra = ExtentMap.FindRun(a, baseBlock + cb, ChunkBlocks);
            var rb = ExtentMap.FindRun(b, baseBlock + cb, ChunkBlocks);
            long n = Math.Min(ra.Blocks, rb.Blocks);
            bool same = ra.IsHole ? rb.IsHole : !rb.IsHole && ra.Device == rb.Device && ra.Address == rb.Address;
            if (!same) Add(result, new ChangedRun(baseBlock + cb, n, !rb.IsHole));
            cb += n;
        }
    }

    private static void Add(List<ChangedRun> result, ChangedRun run)
    {
        if (result.Count > 0 && result[^1] is var last && last.End == run.FileBlock && last.Mapped == run.Mapped)
            result[^1] = last with { Blocks = last.Blocks + run.Blocks };
        else result.Add(run);
    }
}
