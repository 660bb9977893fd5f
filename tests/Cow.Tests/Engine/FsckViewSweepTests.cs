using Cow.Core.Check;
using Cow.Core.FileSystem;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>fsck's per-view checks in one sweep over the views (<see cref="FsckViewSweep"/>) against the same checks
/// run on each view whole (<see cref="FsckViews.CheckEachViewWhole"/>): on pools made by seeded random operations
/// across snapshots, clean and with their records' facts damaged, both find the same problems (as kind, inode and
/// text without the view's name: the sweep names a problem in the first view that shows it and where it changes).</summary>
[Trait("Tier", "engine")]
public class FsckViewSweepTests(ITestOutputHelper output)
{
    private static int Seed() => int.TryParse(Environment.GetEnvironmentVariable("COW_SEED"), out int s) ? s : Environment.TickCount & 0xFFFF;

    /// <summary>A pool of random files, directories, hard links and renames, with a snapshot after each round.</summary>
    private static void Build(MemoryPool p, Random rng)
    {
        var dirs = new List<string> { "" };
        var files = new List<string>();
        for (int round = 0; round < 6; round++)
        {
            for (int k = 0; k < 25; k++)
            {
                string parent = dirs[rng.Next(dirs.Count)];
                long parentIno = parent == "" ? 1 : Ino(p.Live, parent);
                string name = $"n{round}_{k}";
                switch (rng.Next(6))
                {
                    case 0:
                        Assert.Equal(0, (int)p.Live.Mkdir(parentIno, name, 0x1ED, 0, 0, out _));
                        dirs.Add($"{parent}/{name}");
                        break;
                    case 1 when files.Count > 0:
                        string target = files[rng.Next(files.Count)];
                        Assert.Equal(0, (int)p.Live.Link(Ino(p.Live, target), parentIno, name, out _));
                        files.Add($"{parent}/{name}");
                        break;
                    case 2 when files.Count > 0:
                        int victim = rng.Next(files.Count);
                        var (vp, vn) = Split(files[victim]);
                        Assert.Equal(0, (int)p.Live.Unlink(vp == "" ? 1 : Ino(p.Live, vp), vn));
                        files.RemoveAt(victim);
                        break;
                    case 3 when files.Count > 0:
                        int moved = rng.Next(files.Count);
                        var (mp, mn) = Split(files[moved]);
                        Assert.Equal(0, (int)p.Live.Rename(mp == "" ? 1 : Ino(p.Live, mp), mn, parentIno, name));
                        files[moved] = $"{parent}/{name}";
                        break;
                    default:
                        long f = CreateFile(p.Live, $"{parent}/{name}");
                        WriteAt(p.Live, f, rng.Next(4) * 4096L, Pattern(1 + rng.Next(3 * 4096), rng.Next()));
                        files.Add($"{parent}/{name}");
                        break;
                }
            }
            // Some files written again: new versions of their inodes and chunks.
            foreach (var path in files.Where(_ => rng.Next(4) == 0).ToList())
                WriteAt(p.Live, Ino(p.Live, path), 0, Pattern(4096, rng.Next()));
            Assert.Equal(0, (int)p.Engine.CreateSnapshot($"s{round}", out _));
        }
        p.Engine.Commit();
    }

    private static (string Parent, string Name) Split(string path)
    {
        int slash = path.LastIndexOf('/');
        return (path[..slash], path[(slash + 1)..]);
    }

    /// <summary>Problems as kind, inode and text without the view's name.</summary>
    private static SortedSet<string> Found(FsckReport r) =>
        new(r.Problems.Select(x => $"{x.Kind} {x.Ino} {x.Message[(x.Message.IndexOf(": ", StringComparison.Ordinal) + 2)..]}"), StringComparer.Ordinal);

    private (SortedSet<string> Sweep, SortedSet<string> Whole) BothOn(MemoryPool p, FsckViews.Facts facts)
    {
        var snaps = p.Engine.SnapshotList;
        long[] views = snaps.Select(s => s.Gen).Append(p.Engine.PoolState.LiveGen).ToArray();
        var sweep = new FsckReport();
        FsckViewSweep.Check(p.Engine, facts, sweep, views, snaps);
        var whole = new FsckReport();
        FsckViews.CheckEachViewWhole(p.Engine, facts, whole, views, snaps);
        Assert.Equal(whole.Directories, sweep.Directories);
        Assert.Equal(whole.Files, sweep.Files);
        return (Found(sweep), Found(whole));
    }

    [Fact]
    public void A_clean_pool_has_no_problems_in_either()
    {
        int seed = Seed();
        output.WriteLine($"seed {seed} (COW_SEED={seed} to repeat)");
        using var p = new MemoryPool();
        Build(p, new Random(seed));
        var (sweep, whole) = BothOn(p, FsckViews.Load(p.Engine, new FsckReport()));
        Assert.Empty(whole);
        Assert.Empty(sweep);
    }

    [Theory]
    [InlineData("nlink")]
    [InlineData("blocks")]
    [InlineData("size")]
    [InlineData("entry-lost")]
    [InlineData("entry-twice")]
    [InlineData("inode-twice")]
    [InlineData("position")]
    [InlineData("chunk-owner")]
    [InlineData("parent")]
    public void Damaged_facts_give_the_same_problems_in_both(string damage)
    {
        int seed = Seed();
        output.WriteLine($"seed {seed} (COW_SEED={seed} to repeat)");
        var rng = new Random(seed);
        using var p = new MemoryPool();
        Build(p, rng);
        var f = FsckViews.Load(p.Engine, new FsckReport());
        for (int n = 0; n < 3; n++) Damage(f, damage, rng);
        var (sweep, whole) = BothOn(p, f);
        output.WriteLine(string.Join("\n", whole));
        Assert.NotEmpty(whole);
        Assert.Equal(whole, sweep);
    }

    private static void Damage(FsckViews.Facts f, string damage, Random rng)
    {
        int Pick<T>(List<T> l, Func<T, bool> ok)
        {
            var candidates = Enumerable.Range(0, l.Count).Where(i => ok(l[i])).ToList();
            return candidates[rng.Next(candidates.Count)];
        }
        int i;
        switch (damage)
        {
            case "nlink": i = Pick(f.Inodes, _ => true); f.Inodes[i] = f.Inodes[i] with { Nlink = f.Inodes[i].Nlink + 1 }; break;
            case "blocks": i = Pick(f.Inodes, x => x.IsRegular); f.Inodes[i] = f.Inodes[i] with { Blocks = f.Inodes[i].Blocks + 1 }; break;
            case "size": i = Pick(f.Inodes, x => x.IsRegular && x.Size > 4096); f.Inodes[i] = f.Inodes[i] with { Size = 1 }; break;
            case "entry-lost": f.Dirents.RemoveAt(Pick(f.Dirents, _ => true)); break;
            case "entry-twice": i = Pick(f.Dirents, _ => true); f.Dirents.Add(f.Dirents[i] with { Rid = -1 - i }); break;
            case "inode-twice": i = Pick(f.Inodes, x => x.Ino != 1); f.Inodes.Add(f.Inodes[i] with { Rid = -1 - i, Nlink = f.Inodes[i].Nlink + 5 }); break;
            case "position": i = Pick(f.Dirents, _ => true); f.Dirents[i] = f.Dirents[i] with { Pos = 1 }; break;
            case "chunk-owner":
                i = Pick(f.Chunks, _ => true);
                f.Chunks[i] = f.Chunks[i] with { Ino = f.Inodes.First(x => x.IsDir).Ino };
                break;
            case "parent": i = Pick(f.Inodes, x => x.IsDir && x.Ino != 1); f.Inodes[i] = f.Inodes[i] with { Extra = f.Inodes[i].Extra! with { Parent = 424242 } }; break;
            default: throw new ArgumentException(damage);
        }
    }
}
