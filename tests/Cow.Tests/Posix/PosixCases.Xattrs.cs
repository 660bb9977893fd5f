using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Extended attributes and directory listings.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void ExtendedAttributes()
    {
        Touch("f");
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        Ok(T.Symlink("f", "l"), "symlink");
        Ok(T.ListXattr("f", out var names), "listxattr");
        Assert.Empty(names);
        var v1 = Pattern(100, 22);
        var input = v1.ToArray();
        Ok(T.SetXattr("f", "user.one", input), "setxattr");
        input[0] ^= 0xFF; // the caller's buffer is not kept
        Ok(T.GetXattr("f", "user.one", out var got), "getxattr");
        Assert.Equal(v1, got);
        Ok(T.SetXattr("f", "user.empty", Array.Empty<byte>()), "empty value");
        Ok(T.GetXattr("f", "user.empty", out got), "get empty");
        Assert.Empty(got);
        Ok(T.SetXattr("f", "trusted.a.b.c", new byte[] { 1 }), "dotted name");
        Ok(T.SetXattr("f", "user.ünï", new byte[] { 2 }), "unicode name");
        Ok(T.ListXattr("f", out names), "listxattr");
        Assert.Equal(new[] { "trusted.a.b.c", "user.empty", "user.one", "user.ünï" }.OrderBy(x => x, StringComparer.Ordinal), names);
        // XATTR_CREATE and XATTR_REPLACE
        Fails(Errno.EEXIST, T.SetXattr("f", "user.one", new byte[] { 9 }, XATTR_CREATE), "XATTR_CREATE on an existing name");
        Fails(Errno.ENODATA, T.SetXattr("f", "user.none", new byte[] { 9 }, XATTR_REPLACE), "XATTR_REPLACE on a missing name");
        Fails(Errno.ENODATA, T.GetXattr("f", "user.none", out _), "getxattr a missing name");
        Ok(T.SetXattr("f", "user.one", new byte[] { 9 }, XATTR_REPLACE), "replace");
        Ok(T.SetXattr("f", "user.two", new byte[] { 8 }, XATTR_CREATE), "create");
        Ok(T.GetXattr("f", "user.one", out got), "get replaced");
        Assert.Equal(new byte[] { 9 }, got);
        Ok(T.SetXattr("f", "user.one", new byte[] { 7, 7 }), "overwrite");
        Ok(T.GetXattr("f", "user.one", out got), "get overwritten");
        Assert.Equal(new byte[] { 7, 7 }, got);
        // remove
        Ok(T.RemoveXattr("f", "user.two"), "removexattr");
        Fails(Errno.ENODATA, T.RemoveXattr("f", "user.two"), "removexattr twice");
        Fails(Errno.ENODATA, T.GetXattr("f", "user.two", out _), "getxattr after remove");
        Fails(Errno.ENODATA, T.RemoveXattr("d", "user.none"), "removexattr a missing name");
        // limits and missing files
        Fails(Errno.ERANGE, T.SetXattr("f", "user." + new string('x', 251), new byte[1]), "a 256-byte name");
        Ok(T.SetXattr("f", "user." + new string('x', 250), new byte[1]), "255-byte name");
        Fails(Errno.E2BIG, T.SetXattr("f", "user.big", new byte[65537]), "a value over 64 KiB");
        Ok(T.SetXattr("f", "user.big", Pattern(65536, 23)), "64 KiB value");
        Assert.NotEqual(0, (int)T.SetXattr("f", "", new byte[1])); // the kernel answers ERANGE itself
        Fails(Errno.ENOENT, T.SetXattr("missing", "user.x", new byte[1]), "setxattr a missing file");
        Fails(Errno.ENOENT, T.GetXattr("missing", "user.x", out _), "getxattr a missing file");
        Fails(Errno.ENOENT, T.ListXattr("missing", out _), "listxattr a missing file");
        Fails(Errno.ENOENT, T.RemoveXattr("missing", "user.x"), "removexattr a missing file");
        // directories and symlinks have xattrs too
        Ok(T.SetXattr("d", "user.dir", new byte[] { 3 }), "dir xattr");
        Ok(T.SetXattr("l", "trusted.link", new byte[] { 4 }, noFollow: true), "symlink xattr");
        Fails(Errno.ENODATA, T.GetXattr("l", "trusted.link", out _), "getxattr through the symlink reads the file's");
        // everything survives a reopen
        T.Reopen();
        Ok(T.ListXattr("f", out names), "listxattr after reopen");
        Assert.Equal(new[] { "trusted.a.b.c", "user." + new string('x', 250), "user.big", "user.empty", "user.one", "user.ünï" }.OrderBy(x => x, StringComparer.Ordinal), names);
        Ok(T.GetXattr("f", "user.big", out got), "big after reopen");
        Assert.Equal(Pattern(65536, 23), got);
        Ok(T.GetXattr("f", "user.ünï", out got), "unicode after reopen");
        Assert.Equal(new byte[] { 2 }, got);
        Ok(T.GetXattr("d", "user.dir", out got), "dir xattr after reopen");
        Assert.Equal(new byte[] { 3 }, got);
        Ok(T.GetXattr("l", "trusted.link", out got, noFollow: true), "symlink xattr after reopen");
        Assert.Equal(new byte[] { 4 }, got);
        // removing every xattr leaves an empty list
        foreach (var n in names) Ok(T.RemoveXattr("f", n), $"remove {n}");
        Ok(T.ListXattr("f", out names), "listxattr");
        Assert.Empty(names);
        T.Reopen();
        Ok(T.ListXattr("f", out names), "listxattr");
        Assert.Empty(names);
        T.AssertClean();
    }

    [SkippableFact]
    public void ReadDirOfTheRootAndOfEmptyDirectories()
    {
        var root = Entries(".");
        Assert.Equal(2, root.Count);
        Assert.Equal((".", Ino("."), 4u), (root[0].Name, root[0].Ino, root[0].Type));
        Assert.Equal(("..", Ino(".."), 4u), (root[1].Name, root[1].Ino, root[1].Type));
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        long f = Touch("f");
        var list = Entries(".");
        Assert.Equal(new[] { ".", "..", "d", "f" }, list.Select(e => e.Name));
        Assert.Equal(Ino("d"), list[2].Ino);
        Assert.Equal(4u, list[2].Type);
        Assert.Equal(f, list[3].Ino);
        Assert.Equal(8u, list[3].Type);
        var inner = Entries("d");
        Assert.Equal(new[] { (".", Ino("d")), ("..", Ino(".")) }, inner.Select(e => (e.Name, e.Ino)));
        Fails(Errno.ENOTDIR, T.ReadDir("f", out _), "readdir a file");
        Fails(Errno.ENOENT, T.ReadDir("missing", out _), "readdir a missing name");
        T.AssertClean();
    }
}
