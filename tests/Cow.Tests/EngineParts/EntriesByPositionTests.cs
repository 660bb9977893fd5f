using Cow.Core.Engine;
using Cow.Core.Metadata;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.EngineParts;

/// <summary>A directory's entries by position (<see cref="EntriesByPosition"/>) against a sorted dictionary: seeded random
/// adds (in and out of order, replacing), removals and readdir resumptions.</summary>
[Trait("Tier", "unit")]
public class EntriesByPositionTests(ITestOutputHelper output)
{
    [Fact]
    public void Matches_a_sorted_dictionary_through_random_changes()
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("COW_SEED"), out int s) ? s : Environment.TickCount & 0xFFFF;
        output.WriteLine($"seed {seed} (COW_SEED={seed} to repeat)");
        var rng = new Random(seed);
        var entries = new EntriesByPosition();
        var model = new SortedDictionary<long, string>();
        long next = 3;
        for (int step = 0; step < 20_000; step++)
        {
            int op = rng.Next(10);
            if (op < 5)
            {
                long pos = rng.Next(8) == 0 && model.Count > 0 ? model.Keys.ElementAt(rng.Next(model.Count)) : next++;
                string name = $"e{step}";
                entries.Set(new DirentRecord { Pos = pos, Name = name });
                model[pos] = name;
            }
            else if (op < 8 && model.Count > 0)
            {
                long pos = rng.Next(4) == 0 ? rng.Next((int)next) : model.Keys.ElementAt(rng.Next(model.Count));
                entries.Remove(pos);
                model.Remove(pos);
            }
            else
            {
                long offset = rng.Next(4) == 0 ? long.MaxValue : rng.Next((int)next + 2) - 1;
                Assert.Equal(model.Where(kv => kv.Key > offset).Select(kv => (kv.Key, kv.Value)),
                    entries.After(offset).Select(d => (d.Pos, d.Name)));
            }
            Assert.Equal(model.Count, entries.Count);
        }
        Assert.Equal(model.Select(kv => (kv.Key, kv.Value)), entries.Values.Select(d => (d.Pos, d.Name)));
    }
}
