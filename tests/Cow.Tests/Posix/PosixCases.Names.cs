using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Names: lookup, name lengths, create, mknod, mkdir, unlink, rmdir.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void LookupFindsEntriesAndReportsErrors()
    {
        long f = Touch("file");
        Ok(T.Mkdir("dir", 0x1ED), "mkdir dir");
        Ok(T.Mkdir("dir/sub", 0x1ED), "mkdir dir/sub");
        long d = Ino("dir");
        Assert.Equal(f, Ino("file"));
        Fails(Errno.ENOENT, StatErrno("missing"), "stat a missing name");
        Fails(Errno.ENOENT, StatErrno("dir/file"), "stat a name of another directory");
        Fails(Errno.ENOTDIR, StatErrno("file/x"), "stat under a file");
        // names are at most 255 bytes (NAME_MAX), counted in UTF-8 bytes, not characters
        Fails(Errno.ENAMETOOLONG, StatErrno(new string('a', 256)), "stat a 256-byte name");
        Fails(Errno.ENOENT, StatErrno(new string('a', 255)), "stat a missing 255-byte name");
        Fails(Errno.ENAMETOOLONG, StatErrno(new string('é', 128)), "stat a 256-byte UTF-8 name");
        Fails(Errno.ENAMETOOLONG, OpenErrno(new string('a', 256), O_RDWR | O_CREAT), "create a 256-byte name");
        Fails(Errno.ENAMETOOLONG, T.Mkdir(new string('é', 128), 0x1ED), "mkdir a 256-byte UTF-8 name");
        long longest = Touch(new string('é', 127) + "a"); // 255 bytes
        Assert.Equal(longest, Ino(new string('é', 127) + "a"));
        var n255 = new string('a', 255);
        var n256 = new string('b', 256);
        WriteFile(n255, "ok"u8);
        Assert.Equal("ok"u8.ToArray(), ReadAll(n255));
        Fails(Errno.ENAMETOOLONG, T.Mkdir(n256, 0x1ED), "mkdir a 256-byte name");
        Fails(Errno.ENAMETOOLONG, T.Symlink("x", n256), "symlink a 256-byte name");
        Fails(Errno.ENAMETOOLONG, T.Rename(n255, n256), "rename to a 256-byte name");
        Fails(Errno.ENAMETOOLONG, StatErrno(n256), "stat a 256-byte name");
        // 255 bytes of UTF-8 (85 three-byte characters) is fine, 258 is not
        var utf = new string('€', 85);
        Touch(utf);
        Fails(Errno.ENAMETOOLONG, OpenErrno(utf + "€", O_RDWR | O_CREAT), "create a 258-byte UTF-8 name");
        Assert.Contains(utf, Names("."));
        Assert.Contains(n255, Names("."));
        // "." and ".."
        Assert.Equal(d, Ino("dir/."));
        Assert.Equal(Ino("."), Ino("dir/.."));
        Assert.Equal(d, Ino("dir/sub/.."));
        // names are case-sensitive, and that survives a reopen
        long upper = Touch("File");
        Assert.NotEqual(f, upper);
        T.Reopen();
        Assert.Equal(f, Ino("file"));
        Assert.Equal(upper, Ino("File"));
        Fails(Errno.ENOENT, StatErrno("FILE"), "stat another case");
        T.AssertClean();
    }

    [SkippableFact]
    public void CreateRefusesExistingNamesAndBadParents()
    {
        long f = Touch("f", S_IFDIR | 0x1ED); // the type in the mode is ignored: always a file
        Assert.Equal(S_IFREG | 0x1ED, St("f").Mode);
        WriteFile("f", "x"u8);
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        Fails(Errno.EEXIST, OpenErrno("f", O_RDWR | O_CREAT | O_EXCL), "O_EXCL on an existing file");
        Fails(Errno.EEXIST, OpenErrno("d", O_RDWR | O_CREAT | O_EXCL), "O_EXCL on an existing directory");
        Fails(Errno.EEXIST, T.Mkdir("f", 0x1ED), "mkdir over a file");
        Fails(Errno.EEXIST, T.Mknod("d", S_IFIFO | 0x1A4, 0), "mknod over a directory");
        Fails(Errno.EEXIST, T.Symlink("x", "f"), "symlink over a file");
        Fails(Errno.ENOTDIR, OpenErrno("f/x", O_RDWR | O_CREAT), "create under a file");
        Fails(Errno.ENOENT, OpenErrno("nodir/f", O_RDWR | O_CREAT), "create in a missing directory");
        Fails(Errno.ENOENT, OpenErrno("missing", O_RDONLY), "open a missing name without O_CREAT");
        Fails(Errno.EISDIR, OpenErrno("d", O_WRONLY), "open a directory for writing");
        Fails(Errno.EISDIR, OpenErrno("d", O_WRONLY | O_TRUNC), "O_TRUNC on a directory");
        Fails(Errno.ENOTDIR, OpenErrno("f", O_RDONLY | O_DIRECTORY), "O_DIRECTORY on a file");
        // O_EXCL does not follow a symlink, even a dangling one
        Ok(T.Symlink("nowhere", "dangling"), "symlink");
        Fails(Errno.EEXIST, OpenErrno("dangling", O_RDWR | O_CREAT | O_EXCL), "O_EXCL on a dangling symlink");
        Fails(Errno.ENOENT, StatErrno("nowhere"), "the symlink's target was made");
        Ok(T.Unlink("dangling"), "unlink");
        // the failed creates changed nothing
        Assert.Equal(new HashSet<string> { "f", "d" }, Names("."));
        Assert.Empty(Names("d"));
        Assert.Equal(1u, St("f").Nlink);
        Assert.Equal(f, Ino("f"));
        Assert.Equal("x"u8.ToArray(), ReadAll("f"));
        T.AssertClean();
    }

    [SkippableFact]
    public void MknodMakesFifosSocketsAndDevices()
    {
        const ulong Chr = 0x0103, Blk = 0x0801; // 1:3 and 8:1
        Ok(T.Mknod("fifo", S_IFIFO | 0x1A4, 5), "mkfifo");
        Ok(T.Mknod("sock", S_IFSOCK | 0x1ED, 0), "mknod socket");
        Ok(T.Mknod("null", S_IFCHR | 0x1B6, Chr), "mknod char");
        Ok(T.Mknod("disk", S_IFBLK | 0x1B0, Blk), "mknod block");
        Ok(T.Mknod("plain", 0x1A4, 0), "mknod without a type"); // a regular file
        var fifo = St("fifo");
        Assert.Equal(S_IFIFO | Masked(0x1A4), fifo.Mode);
        Assert.Equal(0ul, fifo.Rdev); // like ext4: only device nodes keep rdev
        Assert.Equal(T.Uid, fifo.Uid);
        Assert.Equal(T.Gid, fifo.Gid);
        Assert.Equal(S_IFSOCK | Masked(0x1ED), St("sock").Mode);
        var cdev = Lst("null");
        Assert.Equal(S_IFCHR | Masked(0x1B6), cdev.Mode);
        Assert.Equal(Chr, cdev.Rdev);
        var bdev = Lst("disk");
        Assert.Equal(S_IFBLK | Masked(0x1B0), bdev.Mode);
        Assert.Equal(Blk, bdev.Rdev);
        Assert.Equal(S_IFREG | Masked(0x1A4), St("plain").Mode);
        foreach (var n in new[] { "fifo", "sock", "null", "disk" }) Assert.Equal(1u, Lst(n).Nlink);
        Fails(Errno.EPERM, T.Mknod("dir", S_IFDIR | 0x1ED, 0), "mknod a directory"); // as mknod(2): EPERM
        Fails(Errno.EINVAL, T.Mknod("lnk", S_IFLNK | 0x1FF, 0), "mknod a symlink");
        Fails(Errno.EINVAL, T.Mknod("bad", 0xE000 | 0x1A4, 0), "mknod an unknown type");
        Fails(Errno.EEXIST, T.Mknod("null", S_IFCHR | 0x1B6, Chr), "mknod an existing name");
        Fails(Errno.EEXIST, T.Mknod("fifo", S_IFIFO | 0x1A4, 0), "mknod an existing fifo");
        Fails(Errno.ENOENT, StatErrno("dir"), "stat the refused directory");
        // readdir types are mode >> 12 (DT_*)
        var types = Entries(".").ToDictionary(e => e.Name, e => e.Type);
        Assert.Equal(1u, types["fifo"]);
        Assert.Equal(12u, types["sock"]);
        Assert.Equal(2u, types["null"]);
        Assert.Equal(6u, types["disk"]);
        Assert.Equal(8u, types["plain"]);
        // chmod keeps the type and rdev
        Ok(T.Chmod("null", 0x180), "chmod char");
        var c2 = Lst("null");
        Assert.Equal(S_IFCHR | 0x180, c2.Mode);
        Assert.Equal(Chr, c2.Rdev);
        T.Reopen();
        Assert.Equal(Chr, Lst("null").Rdev);
        Assert.Equal(Blk, Lst("disk").Rdev);
        Assert.Equal(S_IFSOCK | Masked(0x1ED), Lst("sock").Mode);
        Assert.Equal(S_IFIFO, Lst("fifo").Type);
        Ok(T.Unlink("null"), "unlink char");
        Ok(T.Unlink("fifo"), "unlink fifo");
        T.AssertClean();
    }

    [SkippableFact]
    public void MkdirGrowsTheParentLinkCount()
    {
        Assert.Equal(2u, St(".").Nlink);
        Ok(T.Mkdir("a", 0x1ED), "mkdir a");
        Assert.Equal(3u, St(".").Nlink);
        var aa = St("a");
        Assert.Equal(2u, aa.Nlink);
        Assert.Equal(S_IFDIR | Masked(0x1ED), aa.Mode);
        Ok(T.Mkdir("a/b", 0x1ED), "mkdir a/b");
        Ok(T.Mkdir("a/c", 0x1ED), "mkdir a/c");
        Assert.Equal(4u, St("a").Nlink);
        Assert.Equal(3u, St(".").Nlink);
        Touch("a/file");
        Assert.Equal(4u, St("a").Nlink); // files do not count
        Assert.Equal(aa.Ino, Ino("a/b/.."));
        Fails(Errno.EEXIST, T.Mkdir("a/b", 0x1ED), "mkdir an existing directory");
        Fails(Errno.ENOTDIR, T.Mkdir("a/file/x", 0x1ED), "mkdir under a file");
        Fails(Errno.ENOENT, T.Mkdir("no/such", 0x1ED), "mkdir in a missing directory");
        Assert.Equal(4u, St("a").Nlink);
        // mode type bits given to mkdir are ignored
        Ok(T.Mkdir("typed", S_IFREG | 0x1C0), "mkdir with a type");
        Assert.Equal(S_IFDIR | 0x1C0, St("typed").Mode);
        T.Reopen();
        Assert.Equal(4u, St(".").Nlink);
        Assert.Equal(4u, St("a").Nlink);
        T.AssertClean();
    }

    [SkippableFact]
    public void MkdirAndRmdirWithManyEntries()
    {
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        var st = St("d");
        Assert.Equal(S_IFDIR, st.Type);
        Assert.Equal(Masked(0x1ED), st.Perm);
        Fails(Errno.EEXIST, T.Mkdir("d", 0x1ED), "mkdir an existing directory");
        Touch("d/inner");
        Fails(Errno.ENOTEMPTY, T.Rmdir("d"), "rmdir a non-empty directory");
        Ok(T.Unlink("d/inner"), "unlink");
        Ok(T.Rmdir("d"), "rmdir");
        Fails(Errno.ENOENT, StatErrno("d"), "stat a removed directory");
        Assert.DoesNotContain("d", Names("."));
        Fails(Errno.ENOENT, T.Rmdir("d"), "rmdir twice");
        // many entries: readdir sees exactly what was made, also after a reopen
        Ok(T.Mkdir("big", 0x1ED), "mkdir big");
        var names = Enumerable.Range(0, 300).Select(i => $"entry-{i:D4}-{new string('n', i % 40)}").ToHashSet();
        foreach (var n in names) WriteFile("big/" + n, System.Text.Encoding.UTF8.GetBytes(n));
        Assert.Equal(names, Names("big"));
        T.Reopen();
        Assert.Equal(names, Names("big"));
        Assert.Equal("entry-0007-nnnnnnn"u8.ToArray(), ReadAll("big/entry-0007-nnnnnnn"));
        T.AssertClean();
    }

    [SkippableFact]
    public void UnlinkRemovesNamesAndRefusesDirectories()
    {
        WriteAt("f", 0, Pattern(10_000, 3));
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        long d = Ino("d");
        Fails(Errno.EISDIR, T.Unlink("d"), "unlink a directory");
        Fails(Errno.ENOENT, T.Unlink("missing"), "unlink a missing name");
        Fails(Errno.ENOTDIR, T.Unlink("f/x"), "unlink under a file");
        Fails(Errno.ENOENT, T.Unlink("nodir/x"), "unlink in a missing directory");
        Fails(Errno.EISDIR, T.Unlink("d/."), "unlink .");
        Fails(Errno.EISDIR, T.Unlink("d/.."), "unlink ..");
        Assert.Equal(d, Ino("d"));
        Ok(T.Unlink("f"), "unlink");
        Fails(Errno.ENOENT, StatErrno("f"), "stat an unlinked name");
        Fails(Errno.ENOENT, T.Unlink("f"), "unlink twice");
        // symlinks and special files unlink like files
        Ok(T.Symlink("/nowhere", "d/l"), "symlink");
        Ok(T.Mknod("d/s", S_IFSOCK | 0x1ED, 0), "mknod");
        Ok(T.Unlink("d/l"), "unlink symlink");
        Ok(T.Unlink("d/s"), "unlink socket");
        Assert.Empty(Names("d"));
        Assert.Equal(new HashSet<string> { "d" }, Names("."));
        WriteFile("g", "g"u8);
        Assert.Equal("g"u8.ToArray(), ReadAll("g"));
        T.AssertClean();
    }

    [SkippableFact]
    public void RmdirRemovesOnlyEmptyDirectories()
    {
        Ok(T.Mkdir("a", 0x1ED), "mkdir a");
        Ok(T.Mkdir("b", 0x1ED), "mkdir b");
        Ok(T.Mkdir("a/c", 0x1ED), "mkdir a/c");
        Touch("b/f");
        Assert.Equal(4u, St(".").Nlink);
        Fails(Errno.ENOTEMPTY, T.Rmdir("a"), "rmdir a directory holding only a subdirectory");
        Fails(Errno.ENOTEMPTY, T.Rmdir("b"), "rmdir a directory holding only a file");
        Fails(Errno.ENOTDIR, T.Rmdir("b/f"), "rmdir a file");
        Fails(Errno.ENOENT, T.Rmdir("missing"), "rmdir a missing name");
        Fails(Errno.ENOTDIR, T.Rmdir("b/f/x"), "rmdir under a file");
        Fails(Errno.EINVAL, T.Rmdir("a/."), "rmdir .");
        Fails(Errno.ENOTEMPTY, T.Rmdir("a/c/.."), "rmdir ..");
        Assert.Equal(3u, St("a").Nlink);
        Ok(T.Rmdir("a/c"), "rmdir a/c");
        Assert.Equal(2u, St("a").Nlink);
        Fails(Errno.ENOENT, StatErrno("a/c"), "stat a removed directory");
        Ok(T.Rmdir("a"), "rmdir a");
        Assert.Equal(3u, St(".").Nlink);
        Fails(Errno.ENOENT, T.Rmdir("a"), "rmdir twice");
        Ok(T.Unlink("b/f"), "unlink b/f");
        Ok(T.Rmdir("b"), "rmdir b");
        Assert.Equal(2u, St(".").Nlink);
        Assert.Empty(Names("."));
        T.Reopen();
        Assert.Equal(2u, St(".").Nlink);
        T.AssertClean();
    }

    [SkippableFact]
    public void RemovedOpenDirectoryTakesNoNewEntries()
    {
        // Linux marks a removed directory dead: nothing can be created in, linked or renamed into it (ENOENT).
        long f = Touch("f");
        long g = Touch("g");
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        using (var d = Open("d", O_RDONLY | O_DIRECTORY))
        {
            Ok(T.Rmdir("d"), "rmdir");
            Ok(d.Fstat(out var st), "fstat");
            Assert.Equal(0u, st.Nlink);
            Assert.Equal(2u, St(".").Nlink);
            Fails(Errno.ENOENT, d.CreateAt("x", 0x1A4), "create in a removed directory");
            Fails(Errno.ENOENT, d.MkdirAt("x", 0x1ED), "mkdir in a removed directory");
            Fails(Errno.ENOENT, d.MknodAt("x", S_IFIFO | 0x1A4, 0), "mknod in a removed directory");
            Fails(Errno.ENOENT, d.SymlinkAt("f", "x"), "symlink in a removed directory");
            Fails(Errno.ENOENT, d.LinkInto("f", "x"), "link into a removed directory");
            Fails(Errno.ENOENT, d.RenameInto("f", "x"), "rename into a removed directory");
            Fails(Errno.ENOENT, d.RenameInto("f", "x", RenameFlags.NoReplace), "rename noreplace into a removed directory");
            Assert.Equal(f, Ino("f"));
            Assert.Equal(1u, St("f").Nlink);
        }
        Fails(Errno.ENOENT, StatErrno("d"), "stat the removed directory");
        Assert.Equal(g, Ino("g"));
        Assert.Equal(new HashSet<string> { "f", "g" }, Names("."));
        T.AssertClean();
    }
}
