using System.Runtime.InteropServices;
using Cow.Fuse.Protocol;
using Xunit;

namespace Cow.Tests.Dispatch;

/// <summary>
/// Open directories and rename flags at the dispatcher: a readdir pass never lists an entry twice while
/// entries are renamed, a directory removed while open still answers GETATTR (nlink 0) until RELEASEDIR,
/// RENAME_WHITEOUT leaves a 0/0 character device at the source in the same change, and TMPFILE makes a
/// nameless open file that LINK can name once.
/// </summary>
[Trait("Tier", "engine")]
public sealed class DirectoryHandleTests : DispatchTestBase
{
    private const uint S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFCHR = 0x2000, S_IFMT = 0xF000;
    private const uint RenameNoReplace = 1, RenameExchange = 2, RenameWhiteout = 4;

    private FuseEntryOut MakeDir(ulong parent, string name)
    {
        var (h, body) = Call(FuseOpcode.Mkdir, parent, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(name));
        Assert.True(h.Error == 0, $"mkdir {name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    private FuseEntryOut MakeFile(ulong parent, string name)
    {
        var (h, body) = Call(FuseOpcode.Mknod, parent, Bytes(new FuseMknodIn { Mode = S_IFREG | 0x1A4 }), Name(name));
        Assert.True(h.Error == 0, $"mknod {name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    private ulong Opendir(ulong node)
    {
        var (h, body) = Call(FuseOpcode.Opendir, node, Bytes(new FuseOpenIn()));
        Assert.Equal(0, h.Error);
        return Read<FuseOpenOut>(body).Fh;
    }

    private List<(string Name, ulong Ino, ulong Off)> Readdir(ulong node, ulong fh, ulong offset, uint size)
    {
        var (h, body) = Call(FuseOpcode.Readdir, node, Bytes(new FuseReadIn { Fh = fh, Offset = offset, Size_ = size }));
        Assert.Equal(0, h.Error);
        return ParseDirents(body);
    }

    private (int Error, FuseAttr Attr) Getattr(ulong node)
    {
        var (h, body) = Call(FuseOpcode.Getattr, node, Bytes(new FuseGetattrIn()));
        return (-h.Error, h.Error == 0 ? Read<FuseAttrOut>(body).Attr : default);
    }

    private static byte[] Rename2In(ulong newDir, uint flags, string from, string to) =>
        [.. Bytes(new FuseRename2In { NewDir = newDir, Flags = flags }), .. Name(from), .. Name(to)];

    private static void AssertClean(Cow.Core.Check.FsckReport r) =>
        Assert.True(r.Clean, string.Join("; ", r.Problems.Select(p => p.ToString())));

    [Fact]
    public void A_readdir_pass_lists_no_entry_twice_while_entries_are_renamed_and_rewind_sees_the_new_names()
    {
        Init();
        var dir = MakeDir(1, "d");
        const int N = 200;
        for (int i = 0; i < N; i++) MakeFile(dir.NodeId, $"f{i:D3}");
        ulong fh = Opendir(dir.NodeId);
        Assert.NotEqual(0ul, fh);

        var seen = new List<string>();
        var part = Readdir(dir.NodeId, fh, 0, 1024);   // a first slice only
        Assert.InRange(part.Count, 10, N / 2);
        seen.AddRange(part.Select(p => p.Name));
        ulong off = part[^1].Off;
        // Renames in both directions: listed entries to new names (new positions, past the pass's end), and
        // entries not listed yet to names of their own; plus a new file.
        var renamed = new HashSet<string>();
        for (int i = 2; i < part.Count; i += 2)
        {
            Assert.Equal(0, Call(FuseOpcode.Rename2, dir.NodeId, Rename2In(dir.NodeId, 0, part[i].Name, part[i].Name + "-moved")).Header.Error);
            renamed.Add(part[i].Name);
        }
        for (int i = N - 1; i > N - 40; i -= 3)
        {
            Assert.Equal(0, Call(FuseOpcode.Rename2, dir.NodeId, Rename2In(dir.NodeId, 0, $"f{i:D3}", $"a{i:D3}")).Header.Error);
            renamed.Add($"f{i:D3}");
        }
        MakeFile(dir.NodeId, "new");
        for (int guard = 0; guard < 1000; guard++)
        {
            part = Readdir(dir.NodeId, fh, off, 1024);
            if (part.Count == 0) break;
            seen.AddRange(part.Select(p => p.Name));
            off = part[^1].Off;
        }
        Assert.Equal(seen.Count, seen.Distinct().Count());
        var files = seen.Where(n => n is not ("." or "..")).ToList();
        Assert.True(files.Count <= N, $"one pass listed {files.Count} entries, the directory never held more than {N + 1} and {N} before the pass");
        // Every entry present throughout the pass is listed.
        foreach (var name in Enumerable.Range(0, N).Select(i => $"f{i:D3}").Where(n => !renamed.Contains(n)))
            Assert.Contains(name, files);

        // rewinddir (offset 0) starts a new pass that sees the directory as it is now.
        var again = new List<string>();
        off = 0;
        for (int guard = 0; guard < 1000; guard++)
        {
            part = Readdir(dir.NodeId, fh, off, 4096);
            if (part.Count == 0) break;
            again.AddRange(part.Select(p => p.Name));
            off = part[^1].Off;
        }
        Assert.Equal(N + 1 + 2, again.Count);
        Assert.Contains("new", again);
        Assert.Contains("f002-moved", again);
        Assert.Equal(0, Call(FuseOpcode.Releasedir, dir.NodeId, Bytes(new FuseReleaseIn { Fh = fh })).Header.Error);
        Assert.Equal(0, _d.Dirs.Count);
    }

    [Fact]
    public void A_directory_removed_or_replaced_while_open_answers_getattr_with_nlink_0_until_releasedir()
    {
        Init();
        var a = MakeDir(1, "a");
        MakeDir(1, "b");
        var c = MakeDir(1, "c");
        ulong fa = Opendir(a.NodeId), fc = Opendir(c.NodeId);
        // rename b over the empty a: a's inode goes, but its handle holds it.
        Assert.Equal(0, Call(FuseOpcode.Rename, 1, [.. Bytes(new FuseRenameIn { NewDir = 1 }), .. Name("b"), .. Name("a")]).Header.Error);
        var (e, attr) = Getattr(a.NodeId);
        Assert.Equal(0, e);
        Assert.Equal(0u, attr.Nlink);
        Assert.Equal(S_IFDIR | 0x1EDu, attr.Mode);
        Assert.Equal((ulong)a.NodeId, attr.Ino);
        // Nothing can be made in it; a listing has only "." and "..".
        Assert.Equal(ENOENT, Error(FuseOpcode.Mkdir, a.NodeId, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("x")));
        Assert.Equal([".", ".."], Readdir(a.NodeId, fa, 0, 4096).Select(p => p.Name).ToArray());
        // rmdir while open: the same.
        Assert.Equal(0, Call(FuseOpcode.Rmdir, 1, Name("c")).Header.Error);
        Assert.Equal(0u, Getattr(c.NodeId).Attr.Nlink);
        Assert.Equal(ENOENT, Error(FuseOpcode.Lookup, 1, Name("c")));
        Assert.Equal(3u, Getattr(1).Attr.Nlink);   // the root: 2 + one subdirectory, a (was b)

        // A commit while they are open keeps the pool consistent (fsck knows removed open directories).
        _pool.Pool.Engine.Commit();
        AssertClean(_pool.Pool.Fsck());

        Assert.Equal(0, Call(FuseOpcode.Releasedir, a.NodeId, Bytes(new FuseReleaseIn { Fh = fa })).Header.Error);
        Assert.Equal(0, Call(FuseOpcode.Releasedir, c.NodeId, Bytes(new FuseReleaseIn { Fh = fc })).Header.Error);
        Assert.Equal(ENOENT, Getattr(a.NodeId).Error);
        Assert.Equal(ENOENT, Getattr(c.NodeId).Error);
        _pool.Pool.Engine.Commit();
        AssertClean(_pool.Pool.Fsck());
    }

    [Fact]
    public void The_end_of_the_connection_releases_the_open_directories()
    {
        Init();
        var a = MakeDir(1, "a");
        Opendir(a.NodeId);
        Opendir(a.NodeId);
        Assert.Equal(0, Call(FuseOpcode.Rmdir, 1, Name("a")).Header.Error);
        Assert.Equal(0u, Getattr(a.NodeId).Attr.Nlink);
        _d.ConnectionEnded();   // no RELEASEDIR will come
        Assert.Equal(0, _d.Dirs.Count);
        Assert.Equal(ENOENT, Getattr(a.NodeId).Error);
        _pool.Pool.Engine.Commit();
        AssertClean(_pool.Pool.Fsck());
    }

    [Fact]
    public void Tmpfile_makes_a_nameless_open_file_that_link_names_and_release_deletes_otherwise()
    {
        Init();
        var dir = MakeDir(1, "d");
        var (h, body) = CallAs(1000, 1001, FuseOpcode.Tmpfile, dir.NodeId, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFREG | 0x180 }), Name("/"));
        Assert.Equal(0, h.Error);
        var t = Read<FuseEntryOut>(body);
        var open = MemoryMarshal.Read<FuseOpenOut>(body.AsSpan(FuseEntryOut.Size));
        Assert.Equal((0u, S_IFREG | 0x180u, 1000u, 1001u), (t.Attr.Nlink, t.Attr.Mode, t.Attr.Uid, t.Attr.Gid));
        Assert.Equal(2, ListDir(dir.NodeId).Count);   // "." and ".." only
        _pool.Pool.Engine.Commit();
        AssertClean(_pool.Pool.Fsck());   // an open orphan, as an unlinked open file
        var (lh, lb) = Call(FuseOpcode.Link, dir.NodeId, Bytes(new FuseLinkIn { OldNodeId = t.NodeId }), Name("named"));
        Assert.Equal(0, lh.Error);
        Assert.Equal(1u, Read<FuseEntryOut>(lb).Attr.Nlink);
        Assert.Equal(t.NodeId, Lookup(dir.NodeId, "named").NodeId);
        Assert.Equal(0, Call(FuseOpcode.Release, t.NodeId, Bytes(new FuseReleaseIn { Fh = open.Fh })).Header.Error);
        Assert.Equal(1u, Getattr(t.NodeId).Attr.Nlink);

        // Never named: deleted at release. Not a regular file: EINVAL. In a removed directory: ENOENT.
        (h, body) = Call(FuseOpcode.Tmpfile, dir.NodeId, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFREG | 0x1A4 }), Name("/"));
        var lost = Read<FuseEntryOut>(body);
        Assert.Equal(0, Call(FuseOpcode.Release, lost.NodeId, Bytes(new FuseReleaseIn { Fh = MemoryMarshal.Read<FuseOpenOut>(body.AsSpan(FuseEntryOut.Size)).Fh })).Header.Error);
        Assert.Equal(ENOENT, Getattr(lost.NodeId).Error);
        Assert.Equal(ENOENT, Error(FuseOpcode.Link, dir.NodeId, Bytes(new FuseLinkIn { OldNodeId = lost.NodeId }), Name("late")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Tmpfile, dir.NodeId, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFDIR | 0x1ED }), Name("/")));
        var gone = MakeDir(1, "gone");
        Assert.Equal(0, Call(FuseOpcode.Rmdir, 1, Name("gone")).Header.Error);
        Assert.Equal(ENOENT, Error(FuseOpcode.Tmpfile, gone.NodeId, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFREG | 0x1A4 }), Name("/")));
        _pool.Pool.Engine.Commit();
        AssertClean(_pool.Pool.Fsck());
    }

    [Fact]
    public void Rename_whiteout_leaves_a_0_0_character_device_owned_by_the_caller_in_the_same_change()
    {
        Init();
        var f = MakeFile(1, "src");
        var dir = MakeDir(1, "dir");
        var (h, _) = CallAs(1000, 1001, FuseOpcode.Rename2, 1, Rename2In(dir.NodeId, RenameWhiteout, "src", "dst"));
        Assert.Equal(0, h.Error);
        Assert.Equal(f.NodeId, Lookup(dir.NodeId, "dst").NodeId);
        var w = Lookup(1, "src");
        Assert.NotEqual(f.NodeId, w.NodeId);
        Assert.Equal(S_IFCHR, w.Attr.Mode);   // S_IFCHR | 0000
        Assert.Equal(0u, w.Attr.Rdev);
        Assert.Equal(1u, w.Attr.Nlink);
        Assert.Equal((1000u, 1001u), (w.Attr.Uid, w.Attr.Gid));

        // With NOREPLACE: refused over an existing name, nothing changes; allowed to a free name.
        MakeFile(1, "x");
        MakeFile(1, "y");
        Assert.Equal(EEXIST, Error(FuseOpcode.Rename2, 1, Rename2In(1, RenameWhiteout | RenameNoReplace, "x", "y")));
        Assert.Equal(S_IFREG, Lookup(1, "x").Attr.Mode & S_IFMT);
        Assert.Equal(0, Call(FuseOpcode.Rename2, 1, Rename2In(1, RenameWhiteout | RenameNoReplace, "x", "z")).Header.Error);
        Assert.Equal(S_IFCHR, Lookup(1, "x").Attr.Mode);
        // Without NOREPLACE it replaces the target; a directory moves too.
        Assert.Equal(0, Call(FuseOpcode.Rename2, 1, Rename2In(1, RenameWhiteout, "z", "y")).Header.Error);
        Assert.Equal(S_IFCHR, Lookup(1, "z").Attr.Mode);
        Assert.Equal(0, Call(FuseOpcode.Rename2, 1, Rename2In(1, RenameWhiteout, "dir", "dir2")).Header.Error);
        Assert.Equal(dir.NodeId, Lookup(1, "dir2").NodeId);
        Assert.Equal(S_IFCHR, Lookup(1, "dir").Attr.Mode);
        // Refused: with EXCHANGE; a missing source (nothing made).
        Assert.Equal(EINVAL, Error(FuseOpcode.Rename2, 1, Rename2In(1, RenameWhiteout | RenameExchange, "y", "z")));
        Assert.Equal(ENOENT, Error(FuseOpcode.Rename2, 1, Rename2In(1, RenameWhiteout, "missing", "m2")));
        Assert.Equal(ENOENT, Error(FuseOpcode.Lookup, 1, Name("missing")));
        // Two names of one inode: nothing happens, no whiteout.
        Assert.Equal(0, Call(FuseOpcode.Link, 1, Bytes(new FuseLinkIn { OldNodeId = Lookup(1, "y").NodeId }), Name("y2")).Header.Error);
        Assert.Equal(0, Call(FuseOpcode.Rename2, 1, Rename2In(1, RenameWhiteout, "y", "y2")).Header.Error);
        Assert.Equal(S_IFREG, Lookup(1, "y").Attr.Mode & S_IFMT);
        _pool.Pool.Engine.Commit();
        AssertClean(_pool.Pool.Fsck());
    }
}
