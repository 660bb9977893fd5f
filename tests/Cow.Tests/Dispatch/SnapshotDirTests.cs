using System.Runtime.InteropServices;
using System.Text;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Cow.Tests.Engine;
using Xunit;

namespace Cow.Tests.Dispatch;

/// <summary>The virtual .snapshots directory, snapshot node ids and --snapshot mounts.</summary>
[Trait("Tier", "engine")]
public sealed class SnapshotDirTests : DispatchTestBase
{
    private const ulong SnapDir = NodeTable.SnapshotDirNodeId;

    private FuseEntryOut MkSnapshot(string name)
    {
        var (h, body) = Call(FuseOpcode.Mkdir, SnapDir, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(name));
        Assert.True(h.Error == 0, $"mkdir .snapshots/{name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    private FuseAttr GetAttr(ulong node)
    {
        var (h, body) = Call(FuseOpcode.Getattr, node, Bytes(new FuseGetattrIn()));
        Assert.True(h.Error == 0, $"getattr {node:x}: {h.Error}");
        return Read<FuseAttrOut>(body).Attr;
    }

    [Fact]
    public void Lookup_of_snapshots_gives_the_virtual_directory()
    {
        Init();
        var e = Lookup(1, ".snapshots");
        Assert.Equal(SnapDir, e.NodeId);
        Assert.Equal(0x4000u | 0x16D, e.Attr.Mode);
        Assert.Equal((0u, 0u, 2u), (e.Attr.Uid, e.Attr.Gid, e.Attr.Nlink));
        Assert.NotEqual(1ul, e.Attr.Ino);
        Assert.Equal(NodeTable.SnapshotDirStIno, GetAttr(SnapDir).Ino);
        Assert.Equal([".", ".."], ListDir(SnapDir).Select(x => x.Name).ToArray());
        // Not listed in the root unless asked; the name is reserved.
        Assert.DoesNotContain(ListDir(1), x => x.Name == ".snapshots");
        Assert.Equal(EEXIST, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(".snapshots")));
        Assert.Equal(EEXIST, Error(FuseOpcode.Create, 1, Bytes(new FuseCreateIn { Mode = 0x81A4 }), Name(".snapshots")));
        Assert.Equal(EEXIST, Error(FuseOpcode.Symlink, 1, Name(".snapshots"), Name("x")));
        Assert.Equal(EEXIST, Error(FuseOpcode.Mknod, 1, Bytes(new FuseMknodIn { Mode = 0x11A4 }), Name(".snapshots")));
        long f = MemoryPool.CreateFile(_pool.Live, "/f");
        Assert.Equal(EEXIST, Error(FuseOpcode.Rename, 1, [.. Bytes(new FuseRenameIn { NewDir = 1 }), .. Name("f"), .. Name(".snapshots")]));
        Assert.Equal(EEXIST, Error(FuseOpcode.Link, 1, Bytes(new FuseLinkIn { OldNodeId = (ulong)f }), Name(".snapshots")));
        Assert.Equal(EBUSY, Error(FuseOpcode.Rename, 1, [.. Bytes(new FuseRenameIn { NewDir = 1 }), .. Name(".snapshots"), .. Name("x")]));
        Assert.Equal(EBUSY, Error(FuseOpcode.Rmdir, 1, Name(".snapshots")));
        Assert.Equal(EISDIR, Error(FuseOpcode.Unlink, 1, Name(".snapshots")));
        // Only in the root.
        Assert.Equal(0, (int)_pool.Live.Mkdir(1, "sub", 0x1ED, 0, 0, out var sub));
        Assert.Equal(0, Call(FuseOpcode.Mkdir, (ulong)sub.Ino, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(".snapshots")).Header.Error);
    }

    [Fact]
    public void Visible_snapshot_dir_is_listed_last_in_the_root()
    {
        _d = new RequestDispatcher(_pool.Pool, new FuseMountOptions { SnapshotDirVisible = true });
        Init(flags: FuseInitFlags.DoReaddirplus);
        for (int i = 0; i < 30; i++) MemoryPool.CreateFile(_pool.Live, $"/file{i:D2}");
        var all = ListDir(1, 300);   // many calls
        Assert.Equal(33, all.Count);
        Assert.Equal(".snapshots", all[^1].Name);
        Assert.Equal(NodeTable.SnapshotDirStIno, all[^1].Ino);
        Assert.Single(all, x => x.Name == ".snapshots");
        var plus = ParseDirentplus(Call(FuseOpcode.Readdirplus, 1, ReadIn(0, 65536)).Body);
        Assert.Equal(".snapshots", plus[^1].Name);
        Assert.Equal(0ul, plus[^1].Entry.NodeId);
    }

    [Fact]
    public void Mkdir_creates_a_snapshot_that_is_browsable_and_read_only()
    {
        Init();
        long ino = MemoryPool.CreateFile(_pool.Live, "/file");
        MemoryPool.WriteAt(_pool.Live, ino, 0, Encoding.ASCII.GetBytes("before"));
        Assert.Equal(0, (int)_pool.Live.Mkdir(1, "dir", 0x1ED, 0, 0, out var dir));
        long inner = MemoryPool.CreateFile(_pool.Live, "/dir/inner");
        Assert.Equal(0, (int)_pool.Live.SetXattr(ino, "user.k", [7]));

        var root = MkSnapshot("first");
        Assert.Single(_pool.Engine.ListSnapshots());
        Assert.Equal(0x4000u, root.Attr.Mode & 0xF000);
        Assert.Equal(1ul, root.NodeId & NodeTable.InoMask);
        Assert.NotEqual(0ul, root.NodeId >> 48);
        Assert.Equal(NodeTable.SyntheticInoBit, root.Attr.Ino & NodeTable.SyntheticInoBit);
        Assert.Equal(EEXIST, Error(FuseOpcode.Mkdir, SnapDir, Bytes(new FuseMkdirIn()), Name("first")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Mkdir, SnapDir, Bytes(new FuseMkdirIn()), Name("a\tb")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Mkdir, SnapDir, Bytes(new FuseMkdirIn()), Name("a/b")));

        // Changing the live file after the snapshot.
        MemoryPool.WriteAt(_pool.Live, ino, 0, Encoding.ASCII.GetBytes("AFTER!"));

        // Lookup and read inside: st_ino is the live one's with SnapshotTreeInoBit (never the live file's own, which
        // cp, cmp and diff would take for the same file); ctime of unchanged files equals the live one's.
        Assert.Equal(root.NodeId, Lookup(SnapDir, "first").NodeId);
        var file = Lookup(root.NodeId, "file");
        Assert.Equal(root.NodeId >> 48, file.NodeId >> 48);
        Assert.Equal((ulong)ino | NodeTable.SnapshotTreeInoBit, file.Attr.Ino);
        var sdir = Lookup(root.NodeId, "dir");
        var sinner = Lookup(sdir.NodeId, "inner");
        var liveInner = Lookup(Lookup(1, "dir").NodeId, "inner");
        Assert.Equal(liveInner.Attr.Ino | NodeTable.SnapshotTreeInoBit, sinner.Attr.Ino);
        Assert.Equal((liveInner.Attr.Ctime, liveInner.Attr.Ctimensec), (sinner.Attr.Ctime, sinner.Attr.Ctimensec));
        Assert.NotEqual(liveInner.NodeId, sinner.NodeId);
        var (ho, bo) = Call(FuseOpcode.Open, file.NodeId, Bytes(new FuseOpenIn { Flags = 0 }));
        Assert.Equal(0, ho.Error);
        Assert.Equal((uint)FuseOpenOutFlags.KeepCache, Read<FuseOpenOut>(bo).OpenFlags);
        Assert.Equal("before", Encoding.ASCII.GetString(Call(FuseOpcode.Read, file.NodeId, ReadIn(0, 100)).Body));
        Assert.Equal("AFTER!", Encoding.ASCII.GetString(Call(FuseOpcode.Read, (ulong)ino, ReadIn(0, 100)).Body));
        Assert.Equal(new byte[] { 7 }, Call(FuseOpcode.Getxattr, file.NodeId, Bytes(new FuseGetxattrIn { Size_ = 10 }), Name("user.k")).Body);

        // Readdir inside: d_ino are engine inode numbers with SnapshotTreeInoBit, "." of the root synthetic, ".." the .snapshots one.
        var list = ListDir(root.NodeId);
        Assert.Equal(root.Attr.Ino, list.Single(x => x.Name == ".").Ino);
        Assert.Equal(NodeTable.SnapshotDirStIno, list.Single(x => x.Name == "..").Ino);
        Assert.Equal((ulong)ino | NodeTable.SnapshotTreeInoBit, list.Single(x => x.Name == "file").Ino);
        Assert.Equal((ulong)dir.Ino | NodeTable.SnapshotTreeInoBit, list.Single(x => x.Name == "dir").Ino);
        var plus = ParseDirentplus(Call(FuseOpcode.Readdirplus, sdir.NodeId, ReadIn(0, 65536)).Body);
        Assert.Equal(sinner.NodeId, plus.Single(x => x.Name == "inner").Entry.NodeId);
        Assert.Equal((ulong)inner | NodeTable.SnapshotTreeInoBit, plus.Single(x => x.Name == "inner").Entry.Attr.Ino);

        // Every change inside is EROFS.
        Assert.Equal(EROFS, Error(FuseOpcode.Open, file.NodeId, Bytes(new FuseOpenIn { Flags = 1 })));
        Assert.Equal(EROFS, Error(FuseOpcode.Open, file.NodeId, Bytes(new FuseOpenIn { Flags = 2 | 0x200 })));
        Assert.Equal(EROFS, Error(FuseOpcode.Write, file.NodeId, Bytes(new FuseWriteIn { Size_ = 1 }), [1]));
        Assert.Equal(EROFS, Error(FuseOpcode.Setattr, file.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Mode, Mode = 0x1FF })));
        Assert.Equal(EROFS, Error(FuseOpcode.Create, root.NodeId, Bytes(new FuseCreateIn { Flags = 2, Mode = 0x81A4 }), Name("new")));
        Assert.Equal(EROFS, Error(FuseOpcode.Mkdir, root.NodeId, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("new")));
        Assert.Equal(EROFS, Error(FuseOpcode.Mknod, root.NodeId, Bytes(new FuseMknodIn { Mode = 0x11A4 }), Name("new")));
        Assert.Equal(EROFS, Error(FuseOpcode.Symlink, root.NodeId, Name("new"), Name("t")));
        Assert.Equal(EROFS, Error(FuseOpcode.Unlink, root.NodeId, Name("file")));
        Assert.Equal(EROFS, Error(FuseOpcode.Rmdir, sdir.NodeId, Name("x")));
        Assert.Equal(EROFS, Error(FuseOpcode.Rename, root.NodeId, [.. Bytes(new FuseRenameIn { NewDir = root.NodeId }), .. Name("file"), .. Name("x")]));
        Assert.Equal(EROFS, Error(FuseOpcode.Rename, 1, [.. Bytes(new FuseRenameIn { NewDir = root.NodeId }), .. Name("file"), .. Name("x")]));
        Assert.Equal(EROFS, Error(FuseOpcode.Link, root.NodeId, Bytes(new FuseLinkIn { OldNodeId = file.NodeId }), Name("x")));
        Assert.Equal(EROFS, Error(FuseOpcode.Link, 1, Bytes(new FuseLinkIn { OldNodeId = file.NodeId }), Name("x")));
        Assert.Equal(EROFS, Error(FuseOpcode.Setxattr, file.NodeId, [.. BitConverter.GetBytes(1u), .. BitConverter.GetBytes(0u)], Name("user.z"), [1]));
        Assert.Equal(EROFS, Error(FuseOpcode.Removexattr, file.NodeId, Name("user.k")));
        Assert.Equal(EROFS, Error(FuseOpcode.Fallocate, file.NodeId, Bytes(new FuseFallocateIn { Length = 10 })));
        Assert.Equal(EROFS, Error(FuseOpcode.Access, file.NodeId, Bytes(new FuseAccessIn { Mask = 2 })));
        Assert.Equal(0, Call(FuseOpcode.Access, file.NodeId, Bytes(new FuseAccessIn { Mask = 4 })).Header.Error);

        // Changes to .snapshots itself other than mkdir / rmdir: EROFS.
        Assert.Equal(EROFS, Error(FuseOpcode.Create, SnapDir, Bytes(new FuseCreateIn { Flags = 2, Mode = 0x81A4 }), Name("x")));
        Assert.Equal(EROFS, Error(FuseOpcode.Mknod, SnapDir, Bytes(new FuseMknodIn { Mode = 0x11A4 }), Name("x")));
        Assert.Equal(EROFS, Error(FuseOpcode.Symlink, SnapDir, Name("x"), Name("t")));
        Assert.Equal(EROFS, Error(FuseOpcode.Unlink, SnapDir, Name("first")));
        Assert.Equal(EROFS, Error(FuseOpcode.Rename, SnapDir, [.. Bytes(new FuseRenameIn { NewDir = SnapDir }), .. Name("first"), .. Name("second")]));
        Assert.Equal(EROFS, Error(FuseOpcode.Setattr, SnapDir, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Mode, Mode = 0x1FF })));
        Assert.Equal(EROFS, Error(FuseOpcode.Link, SnapDir, Bytes(new FuseLinkIn { OldNodeId = (ulong)ino }), Name("x")));
        Assert.Equal(EISDIR, Error(FuseOpcode.Open, SnapDir, Bytes(new FuseOpenIn())));
        Assert.Equal(0, Call(FuseOpcode.Opendir, SnapDir, Bytes(new FuseOpenIn())).Header.Error);
    }

    [Fact]
    public void Readdir_of_snapshots_lists_every_snapshot_with_stable_offsets()
    {
        Init(flags: FuseInitFlags.DoReaddirplus);
        for (int i = 0; i < 5; i++) MkSnapshot($"s{i}");
        Assert.Equal(0, (int)_pool.Engine.CreateSnapshot("from-cli", out _));
        var all = ListDir(SnapDir);
        Assert.Equal([".", "..", "s0", "s1", "s2", "s3", "s4", "from-cli"], all.Select(x => x.Name).ToArray());
        Assert.Equal(all.Count, all.Select(x => x.Off).Distinct().Count());

        // Resume after s1 while s0 and s2 go away and s5 comes: s3, s4, from-cli, s5.
        ulong afterS1 = all.Single(x => x.Name == "s1").Off;
        Assert.Equal(0, Call(FuseOpcode.Rmdir, SnapDir, Name("s0")).Header.Error);
        Assert.Equal(0, Call(FuseOpcode.Rmdir, SnapDir, Name("s2")).Header.Error);
        MkSnapshot("s5");
        var rest = ParseDirents(Call(FuseOpcode.Readdir, SnapDir, ReadIn(afterS1, 65536)).Body);
        Assert.Equal(["s3", "s4", "from-cli", "s5"], rest.Select(x => x.Name).ToArray());

        // READDIRPLUS: node id 0 (looked up on use), synthetic inode numbers.
        var plus = ParseDirentplus(Call(FuseOpcode.Readdirplus, SnapDir, ReadIn(0, 65536)).Body);
        Assert.All(plus, x => Assert.Equal(0ul, x.Entry.NodeId));
        Assert.All(plus.Skip(2), x => Assert.Equal(NodeTable.SyntheticInoBit, x.Entry.Attr.Ino & NodeTable.SyntheticInoBit));
        Assert.Equal(Lookup(SnapDir, "s3").Attr.Ino, plus.Single(x => x.Name == "s3").Entry.Attr.Ino);

        // Small buffers: one entry per call still gets through all of them.
        Assert.Equal(7, ListDir(SnapDir, 48).Count);
    }

    [Fact]
    public void Rmdir_deletes_the_snapshot_and_its_node_ids_go_stale()
    {
        Init();
        long ino = MemoryPool.CreateFile(_pool.Live, "/file");
        var root = MkSnapshot("doomed");
        var file = Lookup(root.NodeId, "file");
        Assert.Equal(ENOENT, Error(FuseOpcode.Rmdir, SnapDir, Name("missing")));
        Assert.Equal(0, Call(FuseOpcode.Rmdir, SnapDir, Name("doomed")).Header.Error);
        Assert.Empty(_pool.Engine.ListSnapshots());
        Assert.Equal(ESTALE, Error(FuseOpcode.Getattr, file.NodeId, Bytes(new FuseGetattrIn())));
        Assert.Equal(ESTALE, Error(FuseOpcode.Getattr, root.NodeId, Bytes(new FuseGetattrIn())));
        Assert.Equal(ESTALE, Error(FuseOpcode.Lookup, root.NodeId, Name("file")));
        Assert.Equal(ESTALE, Error(FuseOpcode.Read, file.NodeId, ReadIn(0, 10)));
        Assert.Equal(ENOENT, Error(FuseOpcode.Lookup, SnapDir, Name("doomed")));

        // The same name again: a new slot, the old node ids stay stale.
        var again = MkSnapshot("doomed");
        Assert.NotEqual(root.NodeId, again.NodeId);
        Assert.Equal(ESTALE, Error(FuseOpcode.Getattr, file.NodeId, Bytes(new FuseGetattrIn())));
        Assert.Equal((ulong)ino | NodeTable.SnapshotTreeInoBit, Lookup(again.NodeId, "file").Attr.Ino);

        // Unknown slots and virtual nodes: ENOENT.
        Assert.Equal(ENOENT, Error(FuseOpcode.Getattr, (77UL << 48) | 1, Bytes(new FuseGetattrIn())));
        Assert.Equal(ENOENT, Error(FuseOpcode.Getattr, (0xFFFFUL << 48) | 2, Bytes(new FuseGetattrIn())));
        Assert.Equal(ENOENT, Error(FuseOpcode.Getattr, 1UL << 48, Bytes(new FuseGetattrIn())));
    }

    [Fact]
    public void Snapshot_mount_serves_the_snapshot_read_only_without_a_snapshot_dir()
    {
        long ino = MemoryPool.CreateFile(_pool.Live, "/file");
        MemoryPool.WriteAt(_pool.Live, ino, 0, [1, 2, 3]);
        Assert.Equal(0, (int)_pool.Engine.CreateSnapshot("snap", out _));
        MemoryPool.WriteAt(_pool.Live, ino, 0, [9, 9, 9, 9]);
        var ex = Assert.Throws<ArgumentException>(() => new RequestDispatcher(_pool.Pool, new FuseMountOptions { Snapshot = "nope" }));
        Assert.Contains("nope", ex.Message);

        _d = new RequestDispatcher(_pool.Pool, new FuseMountOptions { Snapshot = "snap", WritebackCache = true });
        var o = Init(flags: FuseInitFlags.WritebackCache | FuseInitFlags.MaxPages);
        Assert.Equal(FuseInitFlags.MaxPages, o.AllFlags);   // no write-back cache on a read-only tree
        Assert.Equal(1ul, GetAttr(1).Ino);
        var f = Lookup(1, "file");
        Assert.Equal((ulong)ino, f.NodeId);
        Assert.Equal(new byte[] { 1, 2, 3 }, Call(FuseOpcode.Read, f.NodeId, ReadIn(0, 10)).Body);
        Assert.Equal(ENOENT, Error(FuseOpcode.Lookup, 1, Name(".snapshots")));
        Assert.Equal(ENOENT, Error(FuseOpcode.Getattr, SnapDir, Bytes(new FuseGetattrIn())));
        Assert.Equal(EROFS, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(".snapshots")));
        Assert.Equal(EROFS, Error(FuseOpcode.Write, f.NodeId, Bytes(new FuseWriteIn { Size_ = 1 }), [1]));
        Assert.Equal(EROFS, Error(FuseOpcode.Open, f.NodeId, Bytes(new FuseOpenIn { Flags = 1 })));
        Assert.Equal(0, Call(FuseOpcode.Fsync, f.NodeId, Bytes(new FuseFsyncIn())).Header.Error);

        // Deleting the mounted snapshot: everything goes stale.
        Assert.Equal(0, (int)_pool.Engine.DeleteSnapshot("snap"));
        Assert.Equal(ESTALE, Error(FuseOpcode.Getattr, 1, Bytes(new FuseGetattrIn())));
    }

    [Fact]
    public void Snapshot_dir_lookups_of_dot_and_dotdot()
    {
        Init();
        MkSnapshot("s");
        Assert.Equal(SnapDir, Lookup(SnapDir, ".").NodeId);
        Assert.Equal(1ul, Lookup(SnapDir, "..").NodeId);
        var root = Lookup(SnapDir, "s");
        Assert.Equal(SnapDir, Lookup(root.NodeId, "..").NodeId);
        Assert.Equal(ENOENT, Error(FuseOpcode.Lookup, SnapDir, Name("nope")));
        Assert.Equal(0, Call(FuseOpcode.Listxattr, SnapDir, Bytes(new FuseGetxattrIn())).Header.Error);
        Assert.Equal(ENODATA, Error(FuseOpcode.Getxattr, SnapDir, Bytes(new FuseGetxattrIn { Size_ = 10 }), Name("user.x")));
        var (hx, bx) = Call(FuseOpcode.Statx, root.NodeId, Bytes(new FuseStatxIn()));
        Assert.Equal(0, hx.Error);
        Assert.Equal(root.Attr.Ino, Read<FuseStatxOut>(bx).Stat.Ino);
    }
}
