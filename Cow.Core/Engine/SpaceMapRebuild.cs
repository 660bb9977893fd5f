using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The space maps of a pool computed from its extent maps alone: for every mapped block, how many chunk versions map
/// it (<c>refs</c>), how many of them are live (death forever), the least birth and the greatest death among them
/// (format.md 5.7). Used at open for a pool whose space maps are <c>refs</c> documents (versions 1 and 2, which carry
/// no live counts or generations). Holds a dictionary entry per mapped block while it runs: those pools are the small
/// ones made before version 3. Stateless; the caller holds the engine's locks (or is its constructor).
/// </summary>
internal static class SpaceMapRebuild
{
    /// <param name="snapshotGens">The snapshots' generations, ascending: a block's versions' intervals with no snapshot
    /// between them make one era.</param>
    public static void FromExtentMaps(MetadataStore store, SpaceAllocator space, IReadOnlyList<long> snapshotGens)
    {
        var blocks = new Dictionary<(uint Device, long Block), (uint Refs, uint Live, List<(long Birth, long Death)> Versions)>();
        foreach (var c in store.AllChunks())
            foreach (var e in c.Extents)
                for (long b = e.Address; b < e.Address + e.Count; b++)
                {
                    var key = (e.Device, b);
                    bool live = c.Death == FormatConstants.Forever;
                    if (!blocks.TryGetValue(key, out var u)) u = (0, 0, new List<(long, long)>(1));
                    u.Versions.Add((c.Birth, c.Death));
                    blocks[key] = (u.Refs + 1, u.Live + (live ? 1u : 0), u.Versions);
                }
        bool AnyIn(long from, long to) => snapshotGens.Any(g => g >= from && g < to);
        foreach (var group in blocks.GroupBy(kv => (kv.Key.Device, Segment: kv.Key.Block / FormatConstants.SegmentBlocks)))
        {
            if (!space.TryGet(group.Key.Device, out var sp)) throw new InvalidDataException($"metadata: an extent names unknown device cookie {group.Key.Device}");
            var runs = new List<RefRun>();
            foreach (var (key, u) in group.OrderBy(kv => kv.Key.Block))
            {
                // Eras: the versions' intervals in birth order, joined where no snapshot lies between.
                var eras = new List<(long From, long To)>();
                foreach (var (b, d) in u.Versions.OrderBy(v => v.Birth))
                {
                    if (eras.Count > 0 && !AnyIn(eras[^1].To, b)) eras[^1] = (eras[^1].From, Math.Max(eras[^1].To, d));
                    else eras.Add((b, d));
                }
                EraGaps? gaps = null;
                for (int i = 0; i + 1 < eras.Count; i++) gaps = EraGaps.Append(gaps, eras[i].To, eras[i + 1].From);
                long death = u.Live > 0 ? 0 : eras[^1].To;
                var r = new RefRun((int)(key.Block % FormatConstants.SegmentBlocks), 1, u.Refs, u.Live, eras[0].From, death, gaps);
                if (runs.Count > 0 && runs[^1].End == r.First && runs[^1].SameClass(r)) runs[^1] = runs[^1] with { Count = runs[^1].Count + 1 };
                else runs.Add(r);
            }
            sp.Load(group.Key.Segment, runs.ToArray());
        }
    }
}
