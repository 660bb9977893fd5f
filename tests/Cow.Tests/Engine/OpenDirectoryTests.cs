using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>
/// The engine side of open directories: a directory removed while open keeps its inode (nlink 0) until its
/// last release, in commits, snapshots, fsck, rollback and the next open of the pool; a readdir pass bounded
/// by <see cref="FileSystemView.DirEnd"/> never lists a renamed entry twice.
/// </summary>
[Trait("Tier", "engine")]
public class OpenDirectoryTests
{
    private const long Root = 1;

    private static void Ok(Errno e, string what) => Assert.True(e == 0, $"{what}: {e}");

    private static long Mkdir(FileSystemView fs, long parent, string name)
    {
        Ok(fs.Mkdir(parent, name, 0x1ED, 0, 0, out var a), $"mkdir {name}");
        return a.Ino;
    }

    [Fact]
    public void A_directory_removed_while_open_lives_until_its_last_release()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = Mkdir(fs, Root, "d");
        Ok(fs.Open(d, writable: false), "open d");
        Ok(fs.Rmdir(Root, "d"), "rmdir d");
        Ok(fs.GetAttr(d, out var a), "getattr of the removed directory");
        Assert.Equal(0u, a.Nlink);
        Assert.True(a.IsDirectory);
        Assert.Equal(Errno.ENOENT, fs.Mkdir(d, "x", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Create(d, "x", 0x81A4, 0, 0, out _));
        var list = new List<DirEntryInfo>();
        Ok(fs.ReadDir(d, 0, 100, list), "readdir");
        Assert.Equal([".", ".."], list.Select(x => x.Name).ToArray());

        // Committed while open, and a snapshot taken now: both consistent.
        p.Engine.Commit();
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        p.AssertClean();
        // Rollback is refused while the directory is open, as for an open file.
        Assert.Equal(Errno.EBUSY, p.Engine.RollbackToSnapshot("s"));

        Ok(fs.Release(d), "release");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(d, out _));
        p.Engine.Commit();
        p.AssertClean();
        Ok(p.Engine.RollbackToSnapshot("s"), "rollback");   // the snapshot's nameless directory is not brought back
        Assert.Equal(Errno.ENOENT, p.Live.GetAttr(d, out _));
        p.AssertClean();
    }

    [Fact]
    public void A_directory_still_open_when_the_pool_closes_is_deleted_at_the_next_open()
    {
        using var p = new MemoryPool();
        long a = Mkdir(p.Live, Root, "a");
        Mkdir(p.Live, Root, "b");
        Ok(p.Live.Open(a, writable: false), "open a");
        Ok(p.Live.Rename(Root, "b", Root, "a"), "rename b over a");
        Ok(p.Live.GetAttr(a, out var attr), "getattr of the replaced directory");
        Assert.Equal(0u, attr.Nlink);
        p.Reopen();   // closed with the handle never released (a server that died)
        Assert.Equal(Errno.ENOENT, p.Live.GetAttr(a, out _));
        p.AssertClean();
    }

    [Fact]
    public void A_pass_bounded_by_the_directory_end_lists_no_renamed_entry_twice()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = Mkdir(fs, Root, "d");
        for (int i = 0; i < 10; i++) Ok(fs.Create(d, $"f{i}", 0x81A4, 0, 0, out _), "create");
        Ok(fs.DirEnd(d, out long end), "dirend");
        var first = new List<DirEntryInfo>();
        Ok(fs.ReadDir(d, 0, 7, first, end), "readdir");   // ".", "..", f0..f4
        Ok(fs.Rename(d, "f0", d, "f0-renamed"), "rename a listed entry");
        Ok(fs.Rename(d, "f9", d, "f9-renamed"), "rename an entry not listed yet");
        Ok(fs.Create(d, "new", 0x81A4, 0, 0, out _), "create");
        var rest = new List<DirEntryInfo>();
        Ok(fs.ReadDir(d, first[^1].NextOffset, 100, rest, end), "readdir");
        var names = first.Concat(rest).Select(x => x.Name).ToList();
        Assert.Equal([".", "..", "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8"], names);
        // Unbounded (the old behaviour): the renamed entries come again under their new names.
        var unbounded = new List<DirEntryInfo>();
        Ok(fs.ReadDir(d, first[^1].NextOffset, 100, unbounded), "readdir");
        Assert.Contains("f0-renamed", unbounded.Select(x => x.Name));
    }
}
