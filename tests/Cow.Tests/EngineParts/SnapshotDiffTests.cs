using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Xunit;

namespace Cow.Tests.EngineParts;

/// <summary><see cref="SnapshotDiff"/> is pure: two trees in, changes out. Both ways in (a whole walk, and the
/// candidates the record indexes name) on hand-built trees.</summary>
[Trait("Tier", "unit")]
public class SnapshotDiffTests
{
    private const uint Dir = 0x41ED, File = 0x81A4, Link = 0xA1FF;

    /// <summary>A tree built in memory: inodes by number, each directory's entries.</summary>
    private sealed class Tree(long gen) : ITreeReader
    {
        private readonly Dictionary<long, InodeRecord> _inodes = new();
        private readonly Dictionary<long, DirState> _dirs = new();
        private readonly Dictionary<long, List<ChunkRecord>> _chunks = new();
        private long _rid = 1000 * gen;
        public bool ReadOnly => true;
        public long Gen => gen;
        public bool Gone => false;
        public InodeRecord? Inode(long ino) => _inodes.GetValueOrDefault(ino);
        public ChunkRecord? Chunk(long ino, long index) => Chunks(ino).FirstOrDefault(c => c.Index == index);
        public List<ChunkRecord> Chunks(long ino) => _chunks.GetValueOrDefault(ino) ?? new();
        public DirState? Dir(long ino) => _dirs.GetValueOrDefault(ino);

        public Tree Put(long ino, uint mode, long size = 0, string? target = null, long? rid = null)
        {
            _inodes[ino] = new InodeRecord { Rid = rid ?? ++_rid, Ino = ino, Mode = mode, Nlink = 1, Size = size, Target = target };
            if ((mode & 0xF000) == 0x4000 && !_dirs.ContainsKey(ino)) _dirs[ino] = new DirState();
            return this;
        }

        public Tree Name(long dir, string name, long child, long? rid = null)
        {
            _dirs[dir].Add(new DirentRecord { Rid = rid ?? ++_rid, Dir = dir, Name = name, Child = child, Pos = _dirs[dir].Count + 3 });
            return this;
        }

        /// <summary>The same tree as seen by the index-driven diff: lookups by inode and by name.</summary>
        public SnapshotDiff.Generation AsGeneration() => new(
            Inode,
            ino => _dirs.Values.SelectMany(d => d.ByName.Values).Where(d => d.Child == ino).ToList(),
            Chunks);
    }

    private static Tree Base() => new Tree(1)
        .Put(1, Dir, rid: 1).Put(2, Dir, rid: 2).Put(3, File, 10, rid: 3).Put(4, Link, target: "a", rid: 4)
        .Name(1, "d", 2, rid: 11).Name(2, "f", 3, rid: 12).Name(1, "l", 4, rid: 13);

    private static List<(string, ChangeKind, string?)> Diff(Tree a, Tree b) =>
        SnapshotDiff.OfTrees(a, b).Select(c => (c.Path, c.Kind, c.OldPath)).ToList();

    [Fact]
    public void Identical_trees_have_no_changes()
    {
        Assert.Empty(Diff(Base(), Base()));
    }

    [Fact]
    public void A_moved_file_is_one_rename_and_a_new_file_is_added()
    {
        var b = new Tree(2).Put(1, Dir, rid: 1).Put(2, Dir, rid: 2).Put(3, File, 10, rid: 3).Put(4, Link, target: "a", rid: 4).Put(5, File, rid: 5)
            .Name(1, "d", 2, rid: 11).Name(1, "g", 3).Name(1, "l", 4, rid: 13).Name(2, "new", 5);
        Assert.Equal([("/d/new", ChangeKind.Added, null), ("/g", ChangeKind.Renamed, "/d/f")], Diff(Base(), b));
    }

    [Fact]
    public void Data_and_metadata_changes_of_one_inode_are_told_apart()
    {
        var b = new Tree(2).Put(1, Dir, rid: 1).Put(2, Dir, rid: 2).Put(3, File, 20).Put(4, Link, target: "b")
            .Name(1, "d", 2, rid: 11).Name(2, "f", 3, rid: 12).Name(1, "l", 4, rid: 13);
        b.Inode(3)!.Mode = 0x81C0;                       // chmod too
        Assert.Equal([("/d/f", ChangeKind.ModifiedData, null), ("/d/f", ChangeKind.ModifiedMetadata, null), ("/l", ChangeKind.ModifiedData, null)],
            Diff(Base(), b));
    }

    [Fact]
    public void A_path_that_names_another_file_type_is_a_type_change_and_the_index_driven_diff_agrees()
    {
        var b = new Tree(2).Put(1, Dir, rid: 1).Put(2, Dir, rid: 2).Put(4, Link, target: "a", rid: 4).Put(6, Dir)
            .Name(1, "d", 2, rid: 11).Name(2, "f", 6).Name(1, "l", 4, rid: 13);
        var walked = SnapshotDiff.OfTrees(Base(), b);
        Assert.Equal([("/d/f", ChangeKind.TypeChanged, (string?)null)], walked.Select(c => (c.Path, c.Kind, c.OldPath)).ToList());
        var indexed = SnapshotDiff.OfCandidates(Base().AsGeneration(), b.AsGeneration(), [2, 3, 6], new HashSet<long> { 2 });
        Assert.Equal(walked, indexed);
    }
}
