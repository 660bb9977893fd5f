using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// rename and renameat2 (RENAME_NOREPLACE, RENAME_EXCHANGE).
public abstract partial class PosixCases
{
    [SkippableFact]
    public void RenameMovesNamesAndReplacesFiles()
    {
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        var data = Pattern(9000, 4);
        WriteAt("a", 0, data);
        long a = Ino("a");
        // plain, same directory
        Ok(T.Rename("a", "b"), "rename a b");
        Fails(Errno.ENOENT, StatErrno("a"), "stat the old name");
        Assert.Equal(a, Ino("b"));
        // across directories
        Ok(T.Rename("b", "d/c"), "rename b d/c");
        Assert.Equal(a, Ino("d/c"));
        Assert.Equal(data, ReadAll("d/c"));
        Assert.Equal(1u, St("d/c").Nlink);
        // over an existing file: the old one is gone, with its blocks
        using (var victim = Open("victim", O_RDWR | O_CREAT))
        {
            WriteAt(victim, 0, Pattern(100_000, 5));
            Ok(victim.Fsync(), "fsync");
        }
        long free = T.FreeBlocks();
        Ok(T.Rename("d/c", "victim"), "rename over a file");
        Assert.Equal(a, Ino("victim"));
        Fails(Errno.ENOENT, StatErrno("d/c"), "stat the old name");
        AssertFreeBlocks(free + 25, "the replaced file's blocks are free");
        // over a file that has another name: it loses one link
        long h = Touch("h");
        Ok(T.Link("h", "d/h2"), "link");
        Ok(T.Rename("victim", "h"), "rename over a linked file");
        Assert.Equal(1u, St("d/h2").Nlink);
        Assert.Equal(h, Ino("d/h2"));
        // two names of one inode: nothing happens
        Ok(T.Link("h", "d/a2"), "link a");
        Ok(T.Rename("h", "d/a2"), "rename onto another name of the same inode");
        Assert.Equal(a, Ino("h"));
        Assert.Equal(a, Ino("d/a2"));
        Assert.Equal(2u, St("h").Nlink);
        // onto itself
        Ok(T.Rename("h", "h"), "rename onto itself");
        Assert.Equal(a, Ino("h"));
        // errors
        Fails(Errno.ENOENT, T.Rename("missing", "x"), "rename a missing name");
        Fails(Errno.ENOENT, T.Rename("h", "nodir/z"), "rename into a missing directory");
        Fails(Errno.ENOTDIR, T.Rename("h", "d/h2/y"), "rename under a file");
        Fails(Errno.EINVAL, T.Rename("h", "y", RenameFlags.NoReplace | RenameFlags.Exchange), "RENAME_NOREPLACE | RENAME_EXCHANGE");
        Assert.Equal(data, ReadAll("h"));
        T.AssertClean();
    }

    [SkippableFact]
    public void RenameReplacesAndRefuses()
    {
        WriteFile("a", "A"u8);
        WriteFile("b", "B"u8);
        long inoA = Ino("a");
        Ok(T.Rename("a", "b"), "rename over a file");
        Assert.Equal("A"u8.ToArray(), ReadAll("b"));
        Assert.Equal(inoA, Ino("b"));
        Fails(Errno.ENOENT, StatErrno("a"), "stat the old name");
        Ok(T.Rename("b", "b"), "rename to itself");
        Assert.Equal("A"u8.ToArray(), ReadAll("b"));

        Ok(T.Mkdir("d1", 0x1ED), "mkdir d1");
        WriteFile("d1/x", "x"u8);
        Ok(T.Mkdir("empty", 0x1ED), "mkdir empty");
        Ok(T.Rename("d1", "empty"), "rename a directory over an empty directory");
        Assert.Equal("x"u8.ToArray(), ReadAll("empty/x"));
        Fails(Errno.ENOENT, StatErrno("d1"), "stat the old name");

        Ok(T.Mkdir("e2", 0x1ED), "mkdir e2");
        Fails(Errno.EISDIR, T.Rename("b", "e2"), "rename a file over a directory");
        Fails(Errno.ENOTDIR, T.Rename("e2", "b"), "rename a directory over a file");
        Ok(T.Mkdir("full", 0x1ED), "mkdir full");
        WriteFile("full/y", "y"u8);
        Fails(Errno.ENOTEMPTY, T.Rename("e2", "full"), "rename a directory onto a non-empty directory");
        Assert.Equal("y"u8.ToArray(), ReadAll("full/y"));
        Fails(Errno.ENOENT, T.Rename("missing", "z"), "rename a missing name");
        Fails(Errno.ENOENT, T.Rename("b", "nodir/z"), "rename into a missing directory");

        Ok(T.Mkdir("p", 0x1ED), "mkdir p");
        Ok(T.Mkdir("p/q", 0x1ED), "mkdir p/q");
        Ok(T.Mkdir("p/q/r", 0x1ED), "mkdir p/q/r");
        Fails(Errno.EINVAL, T.Rename("p", "p/q/r/p"), "rename a directory into its own subdirectory");
        Fails(Errno.EINVAL, T.Rename("p", "p/q/p"), "rename a directory into its own child");

        Ok(T.Mkdir("src", 0x1ED), "mkdir src");
        Ok(T.Mkdir("dst", 0x1ED), "mkdir dst");
        Ok(T.Mkdir("src/moving", 0x1ED), "mkdir src/moving");
        Assert.Equal(3u, St("src").Nlink);
        Ok(T.Rename("src/moving", "dst/moved"), "rename a directory across directories");
        Assert.Equal(2u, St("src").Nlink);
        Assert.Equal(3u, St("dst").Nlink);
        Assert.Equal(S_IFDIR, St("dst/moved").Type);

        T.Reopen();
        Assert.Equal(new HashSet<string> { "b", "empty", "e2", "full", "p", "src", "dst" }, Names("."));
        T.AssertClean();
    }

    [SkippableFact]
    public void RenameDirectoriesFollowsLinuxRules()
    {
        foreach (var d in new[] { "src", "dst", "src/moving", "src/moving/inner", "dst/empty", "dst/full" }) Ok(T.Mkdir(d, 0x1ED), $"mkdir {d}");
        Touch("src/moving/inner/file");
        Touch("dst/full/x");
        long file = Touch("dst/file");
        long src = Ino("src"), dst = Ino("dst"), moving = Ino("src/moving"), inner = Ino("src/moving/inner");
        Assert.Equal(3u, St("src").Nlink);
        Assert.Equal(4u, St("dst").Nlink);
        // dir over non-empty dir, dir over file, file over dir
        Fails(Errno.ENOTEMPTY, T.Rename("src/moving", "dst/full"), "dir over a non-empty dir");
        Fails(Errno.ENOTDIR, T.Rename("src/moving", "dst/file"), "dir over a file");
        Fails(Errno.EISDIR, T.Rename("dst/file", "dst/empty"), "file over an empty dir");
        Fails(Errno.EISDIR, T.Rename("dst/file", "src/moving"), "file over a dir");
        // a directory into itself or its own subdirectory
        Fails(Errno.EINVAL, T.Rename("src/moving", "src/moving/x"), "dir into itself");
        Fails(Errno.EINVAL, T.Rename("src/moving", "src/moving/inner/x"), "dir into its subdirectory");
        Fails(Errno.EINVAL, T.Rename("src", "src/moving/inner/x"), "dir into its grandchild");
        Assert.Equal(moving, Ino("src/moving"));
        // RENAME_NOREPLACE
        Fails(Errno.EEXIST, T.Rename("src/moving", "dst/empty", RenameFlags.NoReplace), "noreplace onto a dir");
        Fails(Errno.EEXIST, T.Rename("dst/file", "dst/full", RenameFlags.NoReplace), "noreplace onto a dir");
        Ok(T.Rename("dst/file", "dst/file2", RenameFlags.NoReplace), "noreplace to a free name");
        Assert.Equal(file, Ino("dst/file2"));
        // dir over an empty dir in another parent: link counts and ".." follow
        Ok(T.Rename("src/moving", "dst/empty"), "dir over empty dir");
        Assert.Equal(moving, Ino("dst/empty"));
        Assert.Equal(dst, Ino("dst/empty/.."));
        Assert.Equal(2u, St("src").Nlink);
        Assert.Equal(4u, St("dst").Nlink);
        Assert.Equal(3u, St("dst/empty").Nlink);
        Assert.Equal(moving, Ino("dst/empty/inner/.."));
        Assert.Contains(Entries("dst/empty"), e => e.Name == ".." && e.Ino == dst);
        // dir into another parent without a victim
        Ok(T.Rename("dst/empty", "src/back"), "dir move");
        Assert.Equal(3u, St("src").Nlink);
        Assert.Equal(3u, St("dst").Nlink);
        Assert.Equal(src, Ino("src/back/.."));
        // dir rename inside one parent keeps the counts
        Ok(T.Rename("src/back", "src/renamed"), "dir rename");
        Assert.Equal(3u, St("src").Nlink);
        // a directory up into its grandparent over an empty directory there
        Ok(T.Mkdir("e2", 0x1ED), "mkdir e2");
        Ok(T.Rename("src/renamed/inner", "e2"), "dir up over empty dir");
        Assert.Equal(inner, Ino("e2"));
        Assert.Equal(Ino("."), Ino("e2/.."));
        Assert.Equal(2u, St("src/renamed").Nlink);
        Assert.Equal(5u, St(".").Nlink); // src, dst, e2 (now inner) + 2
        T.Reopen();
        Assert.Equal(Ino("."), Ino("e2/.."));
        Assert.Equal(5u, St(".").Nlink);
        T.AssertClean();
    }

    [SkippableFact]
    public void RenameExchangeSwapsAFileAndADirectoryAcrossParents()
    {
        foreach (var dir in new[] { "p1", "p2", "p2/d", "p2/d/child" }) Ok(T.Mkdir(dir, 0x1ED), $"mkdir {dir}");
        WriteAt("p1/f", 0, Pattern(5000, 6));
        long p1 = Ino("p1"), p2 = Ino("p2"), f = Ino("p1/f"), d = Ino("p2/d");
        Assert.Equal(2u, St("p1").Nlink);
        Assert.Equal(3u, St("p2").Nlink);
        var fBefore = St("p1/f");
        Tick();
        Ok(T.Rename("p1/f", "p2/d", RenameFlags.Exchange), "exchange");
        Assert.Equal(d, Ino("p1/f"));
        Assert.Equal(f, Ino("p2/d"));
        Assert.Equal(3u, St("p1").Nlink);
        Assert.Equal(2u, St("p2").Nlink);
        Assert.Equal(p1, Ino("p1/f/.."));
        Assert.Equal(d, Ino("p1/f/child/.."));
        Assert.True(St("p2/d").CtimeNs > fBefore.CtimeNs);
        Assert.Equal(1u, St("p2/d").Nlink);
        Assert.Equal(3u, St("p1/f").Nlink);
        Assert.Equal(4u, Entries("p1").Single(e => e.Name == "f").Type);
        Assert.Equal(8u, Entries("p2").Single(e => e.Name == "d").Type);
        Assert.Equal(Pattern(5000, 6), ReadAll("p2/d"));
        // exchange needs both names; it cannot put a directory inside itself
        Fails(Errno.ENOENT, T.Rename("p1/f", "p2/missing", RenameFlags.Exchange), "exchange with a missing target");
        Fails(Errno.ENOENT, T.Rename("p1/missing", "p2/d", RenameFlags.Exchange), "exchange a missing source");
        Fails(Errno.ENOENT, T.Rename("p1", "p1/f/child/x", RenameFlags.Exchange), "no target: ENOENT comes first");
        long g = Touch("p1/f/child/g");
        Fails(Errno.EINVAL, T.Rename("p1", "p1/f/child/g", RenameFlags.Exchange), "exchange a dir with a name below it");
        Fails(Errno.EINVAL, T.Rename("p1/f/child/g", "p1", RenameFlags.Exchange), "exchange a name with a dir above it");
        Assert.Equal(g, Ino("p1/f/child/g"));
        // exchange in one directory, and back across: counts stay right
        Ok(T.Mkdir("p1/p3", 0x1ED), "mkdir p1/p3");
        long p3 = Ino("p1/p3");
        Ok(T.Rename("p1/f", "p1/p3", RenameFlags.Exchange), "exchange two dirs in one parent");
        Assert.Equal(4u, St("p1").Nlink);
        Assert.Equal(p3, Ino("p1/f"));
        Ok(T.Rename("p1/p3", "p2/d", RenameFlags.Exchange), "exchange back");
        Assert.Equal(3u, St("p1").Nlink);
        Assert.Equal(3u, St("p2").Nlink);
        Assert.Equal(p2, Ino("p2/d/.."));
        Assert.Equal(d, Ino("p2/d"));
        Assert.Equal(f, Ino("p1/p3"));
        // exchanging a name with itself, or two names of one inode, changes nothing
        Ok(T.Rename("p1/p3", "p1/p3", RenameFlags.Exchange), "exchange with itself");
        Assert.Equal(f, Ino("p1/p3"));
        Ok(T.Link("p1/p3", "p2/f2"), "link");
        Ok(T.Rename("p1/p3", "p2/f2", RenameFlags.Exchange), "exchange two links");
        Assert.Equal(f, Ino("p1/p3"));
        Assert.Equal(f, Ino("p2/f2"));
        Assert.Equal(2u, St("p1/p3").Nlink);
        T.Reopen();
        Assert.Equal(p2, Ino("p2/d/.."));
        Assert.Equal(3u, St("p2").Nlink);
        T.AssertClean();
    }

    [SkippableFact]
    public void RenameNoReplaceAndExchange()
    {
        WriteFile("a", "A"u8);
        WriteFile("b", "B"u8);
        Fails(Errno.EEXIST, T.Rename("a", "b", RenameFlags.NoReplace), "RENAME_NOREPLACE onto an existing name");
        Assert.Equal("A"u8.ToArray(), ReadAll("a"));
        Assert.Equal("B"u8.ToArray(), ReadAll("b"));
        Ok(T.Rename("a", "c", RenameFlags.NoReplace), "RENAME_NOREPLACE onto a new name");
        Assert.Equal("A"u8.ToArray(), ReadAll("c"));
        Fails(Errno.ENOENT, StatErrno("a"), "stat the old name");

        long inoB = Ino("b"), inoC = Ino("c");
        Ok(T.Rename("b", "c", RenameFlags.Exchange), "RENAME_EXCHANGE two files");
        Assert.Equal("A"u8.ToArray(), ReadAll("b"));
        Assert.Equal("B"u8.ToArray(), ReadAll("c"));
        Assert.Equal(inoC, Ino("b"));
        Assert.Equal(inoB, Ino("c"));

        // a file and a directory in different parents swap
        Ok(T.Mkdir("d", 0x1ED), "mkdir d");
        Ok(T.Mkdir("d/sub", 0x1ED), "mkdir d/sub");
        WriteFile("d/sub/inside", "i"u8);
        uint rootLinks = St(".").Nlink;
        Ok(T.Rename("b", "d/sub", RenameFlags.Exchange), "RENAME_EXCHANGE file and directory");
        Assert.Equal("A"u8.ToArray(), ReadAll("d/sub"));
        Assert.Equal("i"u8.ToArray(), ReadAll("b/inside"));
        Assert.Equal(rootLinks + 1, St(".").Nlink); // the root gained a subdirectory
        Assert.Equal(2u, St("d").Nlink); // d lost its subdirectory
        Fails(Errno.ENOENT, T.Rename("c", "nothere", RenameFlags.Exchange), "RENAME_EXCHANGE with a missing target");
        Fails(Errno.EINVAL, T.Rename("c", "b", RenameFlags.Exchange | RenameFlags.NoReplace), "EXCHANGE|NOREPLACE");
        T.Reopen();
        Assert.Equal("B"u8.ToArray(), ReadAll("c"));
        Assert.Equal("A"u8.ToArray(), ReadAll("d/sub"));
        Assert.Equal("i"u8.ToArray(), ReadAll("b/inside"));
        T.AssertClean();
    }
}
