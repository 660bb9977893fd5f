using System.Text;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Hard links, symlinks, and files that live on after their last name is gone.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void LinkAddsNamesToFilesOnly()
    {
        WriteAt("f", 0, Pattern(3000, 7));
        long f = Ino("f");
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        var before = St("f");
        Tick();
        Ok(T.Link("f", "d/g"), "link");
        var la = St("d/g");
        Assert.Equal(f, la.Ino);
        Assert.Equal(2u, la.Nlink);
        Assert.True(la.CtimeNs > before.CtimeNs);
        Assert.Equal(2u, St("f").Nlink);
        Ok(T.Link("f", "h"), "link 3");
        Assert.Equal(3u, St("h").Nlink);
        Fails(Errno.EPERM, T.Link("d", "dlink"), "link a directory");
        Fails(Errno.EPERM, T.Link(".", "d/rootlink"), "link the root");
        Fails(Errno.EEXIST, T.Link("f", "d"), "link onto a directory's name");
        Fails(Errno.EEXIST, T.Link("f", "d/g"), "link onto an existing name");
        Fails(Errno.ENOENT, T.Link("missing", "x"), "link a missing file");
        Fails(Errno.ENOENT, T.Link("f", "nodir/x"), "link into a missing directory");
        Fails(Errno.ENOTDIR, T.Link("f", "f/x"), "link under a file");
        Fails(Errno.ENAMETOOLONG, T.Link("f", new string('x', 256)), "link to a 256-byte name");
        Assert.Equal(3u, St("f").Nlink);
        // a write through one name is seen through the others
        using (var w = Open("d/g", O_WRONLY)) WriteAt(w, 0, "TWO"u8);
        Assert.Equal("TWO"u8.ToArray(), ReadRange("f", 0, 3));
        // symlinks and special files can be linked (link(2) does not follow the symlink)
        Ok(T.Symlink("f", "l"), "symlink");
        Ok(T.Link("l", "d/l2"), "link a symlink");
        Assert.Equal(2u, Lst("d/l2").Nlink);
        Assert.Equal(S_IFLNK, Lst("d/l2").Type);
        Ok(T.Mknod("fifo", S_IFIFO | 0x1A4, 0), "mkfifo");
        Ok(T.Link("fifo", "d/fifo2"), "link a fifo");
        Assert.Equal(2u, Lst("fifo").Nlink);
        // every name reads the same data; removing names counts down
        var data = Pattern(3000, 7);
        "TWO"u8.CopyTo(data);
        Ok(T.Unlink("f"), "unlink f");
        Assert.Equal(2u, St("h").Nlink);
        Assert.Equal(data, ReadAll("h"));
        Ok(T.Unlink("d/g"), "unlink g");
        Assert.Equal(1u, St("h").Nlink);
        Assert.Equal(f, Ino("h"));
        Ok(T.Unlink("h"), "unlink h");
        Fails(Errno.ENOENT, StatErrno("h"), "stat the last name");
        // directory link counts: 2 + subdirectories
        Ok(T.Mkdir("top", 0x1ED), "mkdir top");
        Assert.Equal(2u, St("top").Nlink);
        Ok(T.Mkdir("top/s1", 0x1ED), "mkdir");
        Ok(T.Mkdir("top/s2", 0x1ED), "mkdir");
        Touch("top/file");
        Assert.Equal(4u, St("top").Nlink);
        Ok(T.Rmdir("top/s1"), "rmdir");
        Assert.Equal(3u, St("top").Nlink);
        T.Reopen();
        Assert.Equal(3u, St("top").Nlink);
        Assert.Equal(2u, Lst("d/l2").Nlink);
        T.AssertClean();
    }

    [SkippableFact]
    public void SymlinkAndReadlink()
    {
        Touch("f");
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        string target = "../dir/ünïcode/file";
        Ok(T.Symlink(target, "d/l"), "symlink");
        var la = Lst("d/l");
        Assert.Equal(S_IFLNK | 0x1FF, la.Mode);
        Assert.Equal(Encoding.UTF8.GetByteCount(target), la.Size);
        Assert.Equal(T.Uid, la.Uid);
        Assert.Equal(T.Gid, la.Gid);
        Assert.Equal(1u, la.Nlink);
        Ok(T.Readlink("d/l", out var t), "readlink");
        Assert.Equal(target, t);
        Assert.Equal(10u, Entries("d").Single(e => e.Name == "l").Type);
        Fails(Errno.EINVAL, T.Readlink("f", out _), "readlink a file");
        Fails(Errno.EINVAL, T.Readlink("d", out _), "readlink a directory");
        Fails(Errno.ENOENT, T.Readlink("missing", out _), "readlink a missing name");
        Fails(Errno.EEXIST, T.Symlink("x", "d/l"), "symlink onto an existing name");
        Fails(Errno.ENOENT, T.Symlink("", "d/empty"), "symlink to an empty target");
        Fails(Errno.ENAMETOOLONG, T.Symlink(new string('x', 4096), "d/long"), "symlink to a 4096-byte target");
        Ok(T.Symlink(new string('x', 4095), "d/longest"), "4095-byte target");
        Assert.Equal(4095, Lst("d/longest").Size);
        Fails(Errno.ENOTDIR, T.Symlink("y", "f/x"), "symlink under a file");
        T.Reopen();
        Ok(T.Readlink("d/l", out t), "readlink after reopen");
        Assert.Equal(target, t);
        Ok(T.Readlink("d/longest", out t), "readlink after reopen");
        Assert.Equal(4095, t.Length);
        T.AssertClean();
    }

    [SkippableFact]
    public void SymlinksAreFollowed()
    {
        WriteFile("target", "T"u8);
        Ok(T.Symlink("target", "rel"), "symlink relative");
        Ok(T.Symlink(T.AbsolutePath("target"), "abs"), "symlink absolute");
        Ok(T.Readlink("rel", out var t), "readlink");
        Assert.Equal("target", t);
        var l = Lst("rel");
        Assert.Equal(S_IFLNK, l.Type);
        Assert.Equal("target".Length, l.Size);
        var s = St("rel");
        Assert.Equal(S_IFREG, s.Type);
        Assert.Equal(Ino("target"), s.Ino);
        Assert.NotEqual(l.Ino, s.Ino);
        Assert.Equal("T"u8.ToArray(), ReadAll("abs"));
        Fails(Errno.ELOOP, OpenErrno("rel", O_RDONLY | O_NOFOLLOW), "O_NOFOLLOW on a symlink");
        // through a symlink to a directory
        Ok(T.Mkdir("dir", 0x1ED), "mkdir");
        WriteFile("dir/inner", "I"u8);
        Ok(T.Symlink("dir", "dirlink"), "symlink to a directory");
        Assert.Equal("I"u8.ToArray(), ReadAll("dirlink/inner"));
        Assert.Equal(Ino("dir/inner"), Ino("dirlink/inner"));

        Ok(T.Symlink("no/such/thing", "dangling"), "dangling symlink");
        Fails(Errno.ENOENT, StatErrno("dangling"), "stat a dangling symlink");
        Ok(T.Lstat("dangling", out _), "lstat a dangling symlink");
        Ok(T.Readlink("dangling", out t), "readlink dangling");
        Assert.Equal("no/such/thing", t);

        var longTarget = string.Join('/', Enumerable.Repeat(new string('t', 200), 15)); // 3014 bytes
        Ok(T.Symlink(longTarget, "long"), "symlink with a long target");
        Ok(T.Readlink("long", out t), "readlink long");
        Assert.Equal(longTarget, t);

        Fails(Errno.EEXIST, T.Symlink("x", "rel"), "symlink onto an existing name");
        Fails(Errno.EINVAL, T.Readlink("target", out _), "readlink a regular file");
        Ok(T.Symlink("loop2", "loop1"), "symlink loop1");
        Ok(T.Symlink("loop1", "loop2"), "symlink loop2");
        Fails(Errno.ELOOP, StatErrno("loop1"), "stat a symlink loop");

        T.Reopen();
        Ok(T.Readlink("rel", out t), "readlink after reopen");
        Assert.Equal("target", t);
        Assert.Equal("T"u8.ToArray(), ReadAll("rel"));
        T.AssertClean();
    }

    [SkippableFact]
    public void UnlinkedOpenFileLivesUntilTheLastClose()
    {
        T.Sync();
        long free0 = T.FreeBlocks();
        var data = Pattern(100_000, 8);
        WriteAt("f", 0, data);
        var more = Pattern(5000, 9);
        using (var f1 = Open("f", O_RDWR))
        {
            using (var f2 = Open("f", O_RDONLY))
            {
                Ok(T.Unlink("f"), "unlink");
                Fails(Errno.ENOENT, StatErrno("f"), "stat an unlinked name");
                Assert.Empty(Names("."));
                Ok(f1.Fstat(out var a), "fstat");
                Assert.Equal(0u, a.Nlink);
                Assert.Equal(100_000, a.Size);
                Assert.Equal(data, ReadRange(f2, 0, data.Length));
                // still writable and resizable
                WriteAt(f1, 100_000, more);
                Ok(f1.Fchmod(0x180), "chmod unlinked");
                Ok(f1.Fsync(), "fsync unlinked");
                Assert.Equal(more, ReadRange(f2, 100_000, 5000));
                Fails(Errno.ENOENT, f1.LinkTo("back"), "link an unlinked file back"); // no resurrection without O_TMPFILE
                Ok(f1.Fstat(out a), "fstat");
                Assert.Equal(S_IFREG | 0x180, a.Mode);
                // a new file with the same name is a different file
                WriteFile("f", "new"u8);
                Assert.NotEqual(a.Ino, Ino("f"));
                Assert.Equal(more, ReadRange(f2, 100_000, 5000));
                Ok(f1.Ftruncate(300_000), "ftruncate unlinked");
                Ok(f1.Fstat(out a), "fstat");
                Assert.Equal(300_000, a.Size);
            }
            Assert.Equal(data, ReadRange(f1, 0, data.Length));
        }
        Assert.Equal("new"u8.ToArray(), ReadAll("f"));
        Ok(T.Unlink("f"), "unlink the new file");
        AssertFreeBlocks(free0, "every block of the unlinked files is free again");
        // an open file that is not unlinked stays after the close
        long g = Touch("g");
        using (Open("g", O_RDWR)) { }
        Assert.Equal(g, Ino("g"));
        T.AssertClean();
    }

    [SkippableFact]
    public void UnlinkedOpenFileReplacedByRenameLivesUntilClose()
    {
        WriteAt("f", 0, Pattern(9000, 10));
        long g = Touch("g");
        using (var f = Open("f", O_RDONLY))
        {
            Ok(T.Rename("g", "f"), "rename over the open file");
            Assert.Equal(Pattern(9000, 10), ReadRange(f, 0, 9000));
            Ok(f.Fstat(out var a), "fstat");
            Assert.Equal(0u, a.Nlink);
        }
        Assert.Equal(g, Ino("f"));
        Assert.Equal(0, St("f").Size);
        T.AssertClean();
    }
}
