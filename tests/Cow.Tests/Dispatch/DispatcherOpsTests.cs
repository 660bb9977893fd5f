using System.Runtime.InteropServices;
using System.Text;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Cow.Tests.Engine;
using Xunit;

namespace Cow.Tests.Dispatch;

/// <summary>The changing handlers, through raw requests: replies and errors.</summary>
[Trait("Tier", "engine")]
public sealed class DispatcherOpsTests : DispatchTestBase
{
    private const uint S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFIFO = 0x1000, S_IFSOCK = 0xC000, S_IFCHR = 0x2000, S_IFBLK = 0x6000, S_IFLNK = 0xA000;

    private FuseEntryOut MakeDir(ulong parent, string name, uint mode = 0x1ED)
    {
        var (h, body) = Call(FuseOpcode.Mkdir, parent, Bytes(new FuseMkdirIn { Mode = mode }), Name(name));
        Assert.True(h.Error == 0, $"mkdir {name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    private (FuseEntryOut Entry, FuseOpenOut Open) CreateFile(ulong parent, string name, uint flags = 2, uint mode = S_IFREG | 0x1A4, uint uid = 0, uint gid = 0)
    {
        var (h, body) = CallAs(uid, gid, FuseOpcode.Create, parent, Bytes(new FuseCreateIn { Flags = flags, Mode = mode }), Name(name));
        Assert.True(h.Error == 0, $"create {name}: {h.Error}");
        Assert.Equal(FuseEntryOut.Size + FuseOpenOut.Size, body.Length);
        return (Read<FuseEntryOut>(body), MemoryMarshal.Read<FuseOpenOut>(body.AsSpan(FuseEntryOut.Size)));
    }

    private uint WriteFile(ulong node, ulong offset, byte[] data, uint flags = 2, uint writeFlags = 0)
    {
        var (h, body) = Call(FuseOpcode.Write, node, Bytes(new FuseWriteIn { Offset = offset, Size_ = (uint)data.Length, Flags = flags, WriteFlags = writeFlags }), data);
        Assert.True(h.Error == 0, $"write: {h.Error}");
        return Read<FuseWriteOut>(body).Size_;
    }

    private byte[] ReadFile(ulong node, ulong offset, uint size)
    {
        var (h, body) = Call(FuseOpcode.Read, node, ReadIn(offset, size));
        Assert.Equal(0, h.Error);
        return body;
    }

    private FuseAttr GetAttr(ulong node)
    {
        var (h, body) = Call(FuseOpcode.Getattr, node, Bytes(new FuseGetattrIn()));
        Assert.Equal(0, h.Error);
        return Read<FuseAttrOut>(body).Attr;
    }

    private static byte[] RenameIn(ulong newDir, string from, string to) => [.. Bytes(new FuseRenameIn { NewDir = newDir }), .. Name(from), .. Name(to)];

    private static byte[] Rename2In(ulong newDir, uint flags, string from, string to) => [.. Bytes(new FuseRename2In { NewDir = newDir, Flags = flags }), .. Name(from), .. Name(to)];

    // ------------------------------------------------------------------ INIT

    [Fact]
    public void Init_grants_the_new_flags_and_limits()
    {
        var offered = FuseInitFlags.AsyncRead | FuseInitFlags.AsyncDio | FuseInitFlags.SetxattrExt | FuseInitFlags.CacheSymlinks | FuseInitFlags.ParallelDirops
            | FuseInitFlags.AtomicOTrunc | FuseInitFlags.MaxPages | FuseInitFlags.WritebackCache | FuseInitFlags.HandleKillprivV2 | FuseInitFlags.ExportSupport
            | FuseInitFlags.PosixLocks | FuseInitFlags.FlockLocks | FuseInitFlags.DontMask | FuseInitFlags.NoOpendirSupport | FuseInitFlags.InitExt;
        var o = MemoryMarshal.Read<FuseInitOut>(Call(FuseOpcode.Init, 0, Bytes(InitIn(7, 45, offered))).Body);
        Assert.Equal(FuseInitFlags.AsyncRead | FuseInitFlags.AsyncDio | FuseInitFlags.SetxattrExt | FuseInitFlags.CacheSymlinks | FuseInitFlags.ParallelDirops
            | FuseInitFlags.AtomicOTrunc | FuseInitFlags.MaxPages | FuseInitFlags.HandleKillprivV2 | FuseInitFlags.ExportSupport, o.AllFlags);
        Assert.Equal((ushort)256, o.MaxBackground);
        Assert.Equal((ushort)192, o.CongestionThreshold);
        Assert.Equal(1u << 20, o.MaxWrite);
        Assert.False(_d.WritebackCacheGranted);

        _d = new RequestDispatcher(_pool.Pool, new FuseMountOptions { WritebackCache = true });
        o = MemoryMarshal.Read<FuseInitOut>(Call(FuseOpcode.Init, 0, Bytes(InitIn(7, 45, offered))).Body);
        Assert.True((o.AllFlags & FuseInitFlags.WritebackCache) != 0);
        Assert.True(_d.WritebackCacheGranted);
    }

    // ------------------------------------------------------------------ making and removing names

    [Fact]
    public void Mkdir_mknod_symlink_create_make_nodes_owned_by_the_caller()
    {
        Init();
        var (h, body) = CallAs(1000, 100, FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED, Umask = 0x12 }), Name("d"));
        Assert.Equal(0, h.Error);
        var d = Read<FuseEntryOut>(body);
        Assert.Equal(S_IFDIR | 0x1ED, d.Attr.Mode);
        Assert.Equal((1000u, 100u), (d.Attr.Uid, d.Attr.Gid));
        Assert.Equal(d.NodeId, d.Attr.Ino);
        Assert.Equal(2u, d.Attr.Nlink);

        foreach (var (name, mode, rdev) in new[] { ("fifo", S_IFIFO | 0x1A4, 0u), ("sock", S_IFSOCK | 0x1ED, 0u), ("chr", S_IFCHR | 0x1A4, (1u << 8) | 3), ("blk", S_IFBLK | 0x1A4, (8u << 8) | 1), ("reg", S_IFREG | 0x180, 0u) })
        {
            var (hm, bm) = CallAs(7, 8, FuseOpcode.Mknod, d.NodeId, Bytes(new FuseMknodIn { Mode = mode, Rdev = rdev }), Name(name));
            Assert.Equal(0, hm.Error);
            var e = Read<FuseEntryOut>(bm);
            Assert.Equal(mode, e.Attr.Mode);
            Assert.Equal(rdev, e.Attr.Rdev);   // new_encode_dev in, new_encode_dev out
            Assert.Equal((7u, 8u), (e.Attr.Uid, e.Attr.Gid));
        }
        Assert.Equal(EPERM, Error(FuseOpcode.Mknod, d.NodeId, Bytes(new FuseMknodIn { Mode = S_IFDIR | 0x1ED }), Name("x")));
        Assert.Equal(EEXIST, Error(FuseOpcode.Mknod, d.NodeId, Bytes(new FuseMknodIn { Mode = S_IFIFO | 0x1A4 }), Name("fifo")));

        var (hs, bs) = Call(FuseOpcode.Symlink, d.NodeId, Name("ln"), Name("../target"));
        Assert.Equal(0, hs.Error);
        var ln = Read<FuseEntryOut>(bs);
        Assert.Equal(S_IFLNK | 0x1FF, ln.Attr.Mode);
        Assert.Equal("../target", Encoding.UTF8.GetString(Call(FuseOpcode.Readlink, ln.NodeId).Body));
        Assert.Equal(ENOENT, Error(FuseOpcode.Symlink, d.NodeId, Name("empty"), Name("")));
        Assert.Equal(ENAMETOOLONG, Error(FuseOpcode.Symlink, d.NodeId, Name("long"), Name(new string('t', 4096))));

        var (c, o) = CreateFile(d.NodeId, "file", uid: 5, gid: 6);
        Assert.Equal(S_IFREG | 0x1A4, c.Attr.Mode);
        Assert.Equal((5u, 6u), (c.Attr.Uid, c.Attr.Gid));
        Assert.Equal(1ul, o.Fh);
        Assert.Equal(0, Call(FuseOpcode.Release, c.NodeId, Bytes(new FuseReleaseIn { Fh = o.Fh })).Header.Error);
        Assert.Equal([".", "..", "blk", "chr", "fifo", "file", "ln", "reg", "sock"], ListDir(d.NodeId).Select(x => x.Name).Order(StringComparer.Ordinal).ToArray());
    }

    [Fact]
    public void Creating_names_reports_linux_errors()
    {
        Init();
        var f = CreateFile(1, "file").Entry;
        MakeDir(1, "dir");
        Assert.Equal(EEXIST, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("dir")));
        Assert.Equal(EEXIST, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(".")));
        Assert.Equal(EEXIST, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("..")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("a/b")));
        Assert.Equal(ENAMETOOLONG, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(new string('x', 256))));
        Assert.Equal(EILSEQ, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), [0xFF, 0x41, 0]));
        Assert.Equal(0, Call(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(new string('x', 255))).Header.Error);
        Assert.Equal(ENOTDIR, Error(FuseOpcode.Mkdir, f.NodeId, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("sub")));
        Assert.Equal(ENOTDIR, Error(FuseOpcode.Create, f.NodeId, Bytes(new FuseCreateIn { Mode = S_IFREG | 0x1A4 }), Name("sub")));
        Assert.Equal(ENOENT, Error(FuseOpcode.Mkdir, 424242, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("sub")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Encoding.ASCII.GetBytes("nonul")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1ED }), [0, 0]));

        // CREATE on an existing name: EEXIST with O_EXCL, else opened (and truncated with O_TRUNC).
        Assert.Equal(3u, WriteFile(f.NodeId, 0, [1, 2, 3]));
        Assert.Equal(EEXIST, Error(FuseOpcode.Create, 1, Bytes(new FuseCreateIn { Flags = 2 | 0x80, Mode = S_IFREG | 0x1A4 }), Name("file")));
        var (again, _) = CreateFile(1, "file", flags: 2);
        Assert.Equal(f.NodeId, again.NodeId);
        Assert.Equal(3ul, again.Attr.Size_);
        var (trunc, _) = CreateFile(1, "file", flags: 2 | 0x200);
        Assert.Equal(0ul, trunc.Attr.Size_);
        Assert.Equal(EISDIR, Error(FuseOpcode.Create, 1, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFREG | 0x1A4 }), Name("dir")));
    }

    [Fact]
    public void Setgid_directories_pass_their_group_and_setgid_on()
    {
        Init();
        var (h, body) = CallAs(0, 50, FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x7ED }), Name("shared")); // 02755 minus nothing
        Assert.Equal(0, h.Error);
        var shared = Read<FuseEntryOut>(body);
        Assert.Equal(0x400u, shared.Attr.Mode & 0x400);
        var (hs, bs) = CallAs(1000, 1000, FuseOpcode.Mkdir, shared.NodeId, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("sub"));
        Assert.Equal(0, hs.Error);
        var sub = Read<FuseEntryOut>(bs);
        Assert.Equal((1000u, 50u), (sub.Attr.Uid, sub.Attr.Gid));
        Assert.Equal(S_IFDIR | 0x400 | 0x1ED, sub.Attr.Mode);
        var file = CreateFile(sub.NodeId, "f", uid: 1000, gid: 1000).Entry;
        Assert.Equal((1000u, 50u), (file.Attr.Uid, file.Attr.Gid));
        Assert.Equal(S_IFREG | 0x1A4, file.Attr.Mode);
        var plain = CreateFile(1, "plain", uid: 1000, gid: 1000).Entry;
        Assert.Equal(1000u, plain.Attr.Gid);
    }

    [Fact]
    public void Link_unlink_rmdir_follow_posix()
    {
        Init();
        var f = CreateFile(1, "f").Entry;
        var dir = MakeDir(1, "dir");
        var (hl, bl) = Call(FuseOpcode.Link, dir.NodeId, Bytes(new FuseLinkIn { OldNodeId = f.NodeId }), Name("g"));
        Assert.Equal(0, hl.Error);
        var g = Read<FuseEntryOut>(bl);
        Assert.Equal(f.NodeId, g.NodeId);
        Assert.Equal(2u, g.Attr.Nlink);
        Assert.Equal(EEXIST, Error(FuseOpcode.Link, dir.NodeId, Bytes(new FuseLinkIn { OldNodeId = f.NodeId }), Name("g")));
        Assert.Equal(EPERM, Error(FuseOpcode.Link, 1, Bytes(new FuseLinkIn { OldNodeId = dir.NodeId }), Name("dirlink")));
        Assert.Equal(ENOENT, Error(FuseOpcode.Link, 1, Bytes(new FuseLinkIn { OldNodeId = 424242 }), Name("x")));

        Assert.Equal(ENOTEMPTY, Error(FuseOpcode.Rmdir, 1, Name("dir")));
        Assert.Equal(EISDIR, Error(FuseOpcode.Unlink, 1, Name("dir")));
        Assert.Equal(ENOTDIR, Error(FuseOpcode.Rmdir, 1, Name("f")));
        Assert.Equal(ENOENT, Error(FuseOpcode.Unlink, 1, Name("missing")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Rmdir, dir.NodeId, Name(".")));
        Assert.Equal(ENOTEMPTY, Error(FuseOpcode.Rmdir, dir.NodeId, Name("..")));
        Assert.Equal(ENOTDIR, Error(FuseOpcode.Unlink, f.NodeId, Name("x")));
        Assert.Equal(0, Call(FuseOpcode.Unlink, dir.NodeId, Name("g")).Header.Error);
        Assert.Equal(1u, GetAttr(f.NodeId).Nlink);
        Assert.Equal(0, Call(FuseOpcode.Rmdir, 1, Name("dir")).Header.Error);
        Assert.Equal(ENOENT, Error(FuseOpcode.Getattr, dir.NodeId, Bytes(new FuseGetattrIn())));
        Assert.Equal(0, Call(FuseOpcode.Unlink, 1, Name("f")).Header.Error);
        Assert.Equal(ENOENT, Error(FuseOpcode.Lookup, 1, Name("f")));
    }

    [Fact]
    public void Rename_and_rename2_flags()
    {
        Init();
        var a = CreateFile(1, "a").Entry;
        var b = CreateFile(1, "b").Entry;
        var dir = MakeDir(1, "dir");
        MakeDir(dir.NodeId, "inner");
        Assert.Equal(0, Call(FuseOpcode.Rename, 1, RenameIn(dir.NodeId, "a", "a2")).Header.Error);
        Assert.Equal(a.NodeId, Lookup(dir.NodeId, "a2").NodeId);
        Assert.Equal(ENOENT, Error(FuseOpcode.Rename, 1, RenameIn(1, "a", "x")));

        // RENAME2: NOREPLACE, EXCHANGE, WHITEOUT.
        Assert.Equal(EEXIST, Error(FuseOpcode.Rename2, dir.NodeId, Rename2In(1, 1, "a2", "b")));
        Assert.Equal(0, Call(FuseOpcode.Rename2, dir.NodeId, Rename2In(1, 2, "a2", "b")).Header.Error);
        Assert.Equal(a.NodeId, Lookup(1, "b").NodeId);
        Assert.Equal(b.NodeId, Lookup(dir.NodeId, "a2").NodeId);
        Assert.Equal(ENOENT, Error(FuseOpcode.Rename2, 1, Rename2In(1, 2, "b", "nothing")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Rename2, 1, Rename2In(1, 6, "b", "w")));   // EXCHANGE | WHITEOUT (WHITEOUT: DirectoryHandleTests)
        Assert.Equal(EINVAL, Error(FuseOpcode.Rename2, 1, Rename2In(1, 3, "b", "w")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Rename2, 1, Rename2In(1, 8, "b", "w")));
        Assert.Equal(0, Call(FuseOpcode.Rename2, 1, Rename2In(1, 1, "b", "c")).Header.Error);

        // Directories: over a non-empty one, into itself, over a file.
        Assert.Equal(EISDIR, Error(FuseOpcode.Rename, 1, RenameIn(1, "c", "dir")));
        MakeDir(1, "d2");
        Assert.Equal(ENOTEMPTY, Error(FuseOpcode.Rename, 1, RenameIn(1, "d2", "dir")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Rename, 1, RenameIn(dir.NodeId, "dir", "sub")));
        Assert.Equal(ENOTDIR, Error(FuseOpcode.Rename, 1, RenameIn(1, "d2", "c")));
        Assert.Equal(EBUSY, Error(FuseOpcode.Rename, 1, RenameIn(1, ".", "x")));
        Assert.Equal(EBUSY, Error(FuseOpcode.Rename, 1, RenameIn(1, "c", "..")));
        Assert.Equal(EINVAL, Error(FuseOpcode.Rename, 1, RenameIn(1, "c", "a/b")));
        Assert.Equal(ENAMETOOLONG, Error(FuseOpcode.Rename, 1, RenameIn(1, "c", new string('y', 256))));
        Assert.Equal(EINVAL, Error(FuseOpcode.Rename, 1, [.. Bytes(new FuseRenameIn { NewDir = 1 }), .. Name("c")]));   // one name only
    }

    // ------------------------------------------------------------------ attributes

    [Fact]
    public void Setattr_changes_mode_owner_size_and_times()
    {
        Init();
        var f = CreateFile(1, "f").Entry;
        WriteFile(f.NodeId, 0, MemoryPool.Pattern(10_000, 1));

        var (h, body) = Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn
        {
            Valid = (uint)(FuseSetattrValid.Mode | FuseSetattrValid.Uid | FuseSetattrValid.Gid | FuseSetattrValid.Size | FuseSetattrValid.Fh | FuseSetattrValid.LockOwner),
            Mode = S_IFREG | 0xDFF, Uid = 12, Gid = 34, Size_ = 100, Fh = 1,
        }));
        Assert.Equal(0, h.Error);
        var a = Read<FuseAttrOut>(body).Attr;
        Assert.Equal(S_IFREG | 0xDFF, a.Mode);
        Assert.Equal((12u, 34u, 100ul), (a.Uid, a.Gid, a.Size_));
        Assert.Equal(MemoryPool.Pattern(10_000, 1).AsSpan(0, 100).ToArray(), ReadFile(f.NodeId, 0, 4096));

        // Explicit times (also before 1970), then "now".
        var (ht, bt) = Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn
        {
            Valid = (uint)(FuseSetattrValid.Atime | FuseSetattrValid.Mtime | FuseSetattrValid.Ctime),
            Atime = 1_000_000, Atimensec = 5, Mtime = unchecked((ulong)-10L), Mtimensec = 7, Ctime = 1,
        }));
        Assert.Equal(0, ht.Error);
        var t = Read<FuseAttrOut>(bt).Attr;
        Assert.Equal((1_000_000ul, 5u), (t.Atime, t.Atimensec));
        Assert.Equal((unchecked((ulong)-10L), 7u), (t.Mtime, t.Mtimensec));
        Assert.Equal((1ul, 0u), (t.Ctime, t.Ctimensec));   // FATTR_CTIME: the kernel's own change time (writeback cache)
        var (hn, bn) = Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn
        {
            Valid = (uint)(FuseSetattrValid.Atime | FuseSetattrValid.AtimeNow | FuseSetattrValid.Mtime | FuseSetattrValid.MtimeNow),
        }));
        Assert.Equal(0, hn.Error);
        var now = Read<FuseAttrOut>(bn).Attr;
        long nowSec = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.InRange((long)now.Atime, nowSec - 60, nowSec + 60);
        Assert.InRange((long)now.Mtime, nowSec - 60, nowSec + 60);
        Assert.Equal(EINVAL, Error(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Atime, Atimensec = 1_000_000_000 })));

        // KILL_SUIDGID clears setuid, and setgid with group execute.
        Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Mode, Mode = 0xDED }));
        var (hk, bk) = Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)(FuseSetattrValid.Size | FuseSetattrValid.KillSuidgid), Size_ = 0 }));
        Assert.Equal(0, hk.Error);
        Assert.Equal(S_IFREG | 0x1ED, Read<FuseAttrOut>(bk).Attr.Mode);

        // Nothing to change: the attributes.
        Assert.Equal(0, Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Fh })).Header.Error);
        var dir = MakeDir(1, "d");
        Assert.Equal(EISDIR, Error(FuseOpcode.Setattr, dir.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Size })));
        Assert.Equal(EFBIG, Error(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Size, Size_ = 1UL << 62 })));
        Assert.Equal(ENOENT, Error(FuseOpcode.Setattr, 424242, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Mode })));
    }

    [Fact]
    public void Statx_access_and_no_reply_opcodes()
    {
        Init();
        var f = CreateFile(1, "f").Entry;
        var (h, body) = Call(FuseOpcode.Statx, f.NodeId, Bytes(new FuseStatxIn { SxMask = 0xFFF }));
        Assert.Equal(0, h.Error);
        var sx = Read<FuseStatxOut>(body);
        Assert.Equal(f.Attr.Ino, sx.Stat.Ino);
        Assert.Equal((ushort)f.Attr.Mode, sx.Stat.Mode);
        Assert.Equal(0x800u, sx.Stat.Mask & 0x800);
        Assert.Equal(0, (int)_pool.Live.GetAttr((long)f.NodeId, out var a));
        Assert.Equal(a.BtimeNs / 1_000_000_000, sx.Stat.Btime.TvSec);

        Assert.Equal(0, Call(FuseOpcode.Access, f.NodeId, Bytes(new FuseAccessIn { Mask = 6 })).Header.Error);
        Assert.Equal(ENOENT, Error(FuseOpcode.Access, 424242, Bytes(new FuseAccessIn { Mask = 0 })));

        Assert.Equal(0, _d.Dispatch(Request((uint)FuseOpcode.Interrupt, 500, 0, Bytes(new FuseInterruptIn { Unique = 3 })), _reply));
        Assert.Equal(0, _d.Dispatch(Request((uint)FuseOpcode.NotifyReply, 501, 1, new byte[48]), _reply));
        Assert.Equal(0, Call(FuseOpcode.Flush, f.NodeId, Bytes(new FuseFlushIn { Fh = 1 })).Header.Error);
    }

    // ------------------------------------------------------------------ data

    [Fact]
    public void Write_read_append_and_sync()
    {
        Init();
        var (f, o) = CreateFile(1, "f");
        var data = MemoryPool.Pattern(1 << 20, 3);
        Assert.Equal((uint)data.Length, WriteFile(f.NodeId, 0, data));
        Assert.Equal(data.AsSpan(0, 200_000).ToArray(), ReadFile(f.NodeId, 0, 200_000));
        Assert.Equal(4u, WriteFile(f.NodeId, 0, [9, 9, 9, 9], flags: 2 | 0x400));   // O_APPEND: at the end, whatever the offset
        Assert.Equal((ulong)data.Length + 4, GetAttr(f.NodeId).Size_);
        Assert.Equal(new byte[] { 9, 9, 9, 9 }, ReadFile(f.NodeId, (ulong)data.Length, 100));
        Assert.Equal(data[0], ReadFile(f.NodeId, 0, 1)[0]);

        // Payload shorter than write_in.size: EINVAL. Directories: EISDIR.
        Assert.Equal(EINVAL, Error(FuseOpcode.Write, f.NodeId, Bytes(new FuseWriteIn { Size_ = 10 }), new byte[5]));
        Assert.Equal(EISDIR, Error(FuseOpcode.Write, 1, Bytes(new FuseWriteIn { Size_ = 1 }), new byte[1]));
        Assert.Equal(EISDIR, Error(FuseOpcode.Read, 1, ReadIn(0, 10)));

        // KILL_SUIDGID with a write.
        Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Mode, Mode = 0x9ED }));
        WriteFile(f.NodeId, 0, [1], writeFlags: FuseWriteIn.WriteKillSuidgid);
        Assert.Equal(S_IFREG | 0x1ED, GetAttr(f.NodeId).Mode);

        Assert.Equal(0, Call(FuseOpcode.Fsync, f.NodeId, Bytes(new FuseFsyncIn { Fh = o.Fh, FsyncFlags = 1 })).Header.Error);
        Assert.Equal(0, Call(FuseOpcode.Fsyncdir, 1, Bytes(new FuseFsyncIn())).Header.Error);
        Assert.Equal(0, Call(FuseOpcode.Syncfs, 1, Bytes(new FuseSyncfsIn())).Header.Error);
        Assert.Equal(0, Call(FuseOpcode.Release, f.NodeId, Bytes(new FuseReleaseIn { Fh = o.Fh })).Header.Error);
    }

    [Fact]
    public void With_the_writeback_cache_o_append_is_the_kernels()
    {
        _d = new RequestDispatcher(_pool.Pool, new FuseMountOptions { WritebackCache = true });
        Init(flags: FuseInitFlags.WritebackCache | FuseInitFlags.MaxPages);
        var f = CreateFile(1, "f").Entry;
        WriteFile(f.NodeId, 0, new byte[100]);
        WriteFile(f.NodeId, 10, [7], flags: 2 | 0x400);   // the kernel chose offset 10
        Assert.Equal(100ul, GetAttr(f.NodeId).Size_);
        Assert.Equal(7, ReadFile(f.NodeId, 10, 1)[0]);
        WriteFile(f.NodeId, 8192, [1], writeFlags: FuseWriteIn.WriteCache);   // beyond EOF
        Assert.Equal(8193ul, GetAttr(f.NodeId).Size_);
    }

    [Fact]
    public void Fallocate_modes()
    {
        Init();
        var f = CreateFile(1, "f").Entry;
        WriteFile(f.NodeId, 0, MemoryPool.Pattern(64 << 10, 2));
        Assert.Equal(0, Call(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = 0, Length = 100_000 })).Header.Error);
        Assert.Equal(100_000ul, GetAttr(f.NodeId).Size_);
        Assert.Equal(0, Call(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = 0, Length = 200_000, Mode = 1 })).Header.Error);
        Assert.Equal(100_000ul, GetAttr(f.NodeId).Size_);
        Assert.Equal(0, Call(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = 4096, Length = 8192, Mode = 3 })).Header.Error);   // punch
        Assert.Equal(new byte[8192], ReadFile(f.NodeId, 4096, 8192));
        Assert.Equal(0, Call(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = 20_000, Length = 100, Mode = 0x10 })).Header.Error);  // zero range
        Assert.Equal(new byte[100], ReadFile(f.NodeId, 20_000, 100));
        Assert.Equal(EOPNOTSUPP, Error(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = 0, Length = 4096, Mode = 2 })));      // punch without keep-size
        Assert.Equal(EOPNOTSUPP, Error(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = 0, Length = 4096, Mode = 8 })));      // collapse
        Assert.Equal(EINVAL, Error(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = 0, Length = 0 })));
        Assert.Equal(EINVAL, Error(FuseOpcode.Fallocate, f.NodeId, Bytes(new FuseFallocateIn { Offset = ulong.MaxValue, Length = 1 })));
        Assert.Equal(EISDIR, Error(FuseOpcode.Fallocate, 1, Bytes(new FuseFallocateIn { Offset = 0, Length = 1 })));
    }

    [Fact]
    public void Lseek_data_hole_and_the_simple_whences()
    {
        Init();
        var f = CreateFile(1, "f").Entry;
        WriteFile(f.NodeId, 1 << 20, new byte[4096]);   // hole, then one block of data
        ulong Seek(ulong off, uint whence)
        {
            var (h, body) = Call(FuseOpcode.Lseek, f.NodeId, Bytes(new FuseLseekIn { Offset = off, Whence = whence }));
            Assert.True(h.Error == 0, $"lseek {off} {whence}: {h.Error}");
            return Read<FuseLseekOut>(body).Offset;
        }
        Assert.Equal(1ul << 20, Seek(0, 3));
        Assert.Equal(0ul, Seek(0, 4));
        Assert.Equal((1ul << 20) + 4096, Seek(1 << 20, 4));
        Assert.Equal(77ul, Seek(77, 0));
        Assert.Equal((1ul << 20) + 4096 - 6, Seek(unchecked((ulong)-6L), 2));
        Assert.Equal(ENXIO, Error(FuseOpcode.Lseek, f.NodeId, Bytes(new FuseLseekIn { Offset = 10 << 20, Whence = 3 })));
        Assert.Equal(EINVAL, Error(FuseOpcode.Lseek, f.NodeId, Bytes(new FuseLseekIn { Offset = 0, Whence = 1 })));
        Assert.Equal(EINVAL, Error(FuseOpcode.Lseek, f.NodeId, Bytes(new FuseLseekIn { Offset = 0, Whence = 9 })));
    }

    [Fact]
    public void Copy_file_range_in_one_tree()
    {
        Init();
        var src = CreateFile(1, "src").Entry;
        var dst = CreateFile(1, "dst").Entry;
        var data = MemoryPool.Pattern(3 << 20, 4);
        WriteFile(src.NodeId, 0, data.AsSpan(0, 1 << 20).ToArray());
        WriteFile(src.NodeId, 1 << 20, data.AsSpan(1 << 20, 1 << 20).ToArray());
        WriteFile(src.NodeId, 2 << 20, data.AsSpan(2 << 20).ToArray());
        byte[] CopyIn(ulong offIn, ulong nodeOut, ulong offOut, ulong len, ulong flags = 0) =>
            Bytes(new FuseCopyFileRangeIn { OffIn = offIn, NodeIdOut = nodeOut, OffOut = offOut, Len = len, Flags = flags });

        var (h, body) = Call(FuseOpcode.CopyFileRange, src.NodeId, CopyIn(100, dst.NodeId, 5, 2_500_000));
        Assert.Equal(0, h.Error);
        Assert.Equal(2_500_000u, Read<FuseWriteOut>(body).Size_);
        Assert.Equal(data.AsSpan(100, 1000).ToArray(), ReadFile(dst.NodeId, 5, 1000));
        Assert.Equal(data.AsSpan(2_000_100, 1000).ToArray(), ReadFile(dst.NodeId, 2_000_005, 1000));

        var (h64, b64) = Call(FuseOpcode.CopyFileRange64, src.NodeId, CopyIn((3 << 20) - 10, dst.NodeId, 0, ulong.MaxValue));
        Assert.Equal(0, h64.Error);
        Assert.Equal(8, b64.Length);
        Assert.Equal(10ul, Read<FuseCopyFileRangeOut>(b64).BytesCopied);   // short at the source's end
        Assert.Equal(0ul, Read<FuseCopyFileRangeOut>(Call(FuseOpcode.CopyFileRange64, src.NodeId, CopyIn(5 << 20, dst.NodeId, 0, 10)).Body).BytesCopied);

        Assert.Equal(EINVAL, Error(FuseOpcode.CopyFileRange, src.NodeId, CopyIn(0, dst.NodeId, 0, 10, flags: 1)));
        Assert.Equal(EINVAL, Error(FuseOpcode.CopyFileRange, src.NodeId, CopyIn(0, src.NodeId, 5, 10)));   // overlapping, one file
        Assert.Equal(EISDIR, Error(FuseOpcode.CopyFileRange, src.NodeId, CopyIn(0, 1, 0, 10)));
        Assert.Equal(ENOENT, Error(FuseOpcode.CopyFileRange, src.NodeId, CopyIn(0, 424242, 0, 10)));

        // From a snapshot into the live tree: shared like a copy within the tree (restoring from .snapshots).
        Assert.Equal(0, (int)_pool.Engine.CreateSnapshot("s", out _));
        var snapRoot = Lookup(NodeTable.SnapshotDirNodeId, "s");
        var snapSrc = Lookup(snapRoot.NodeId, "src");
        var restored = CreateFile(1, "restored").Entry;
        var (hs, bs) = Call(FuseOpcode.CopyFileRange64, snapSrc.NodeId, CopyIn(0, restored.NodeId, 0, ulong.MaxValue));
        Assert.Equal(0, hs.Error);
        Assert.Equal((ulong)data.Length, Read<FuseCopyFileRangeOut>(bs).BytesCopied);
        Assert.Equal(data.AsSpan((2 << 20) + 7, 1000).ToArray(), ReadFile(restored.NodeId, (2 << 20) + 7, 1000));
        // Into a snapshot: EXDEV (the kernel then tries splice, which the read-only snapshot refuses).
        Assert.Equal(EXDEV, Error(FuseOpcode.CopyFileRange, dst.NodeId, CopyIn(0, snapSrc.NodeId, 0, 10)));
    }

    // ------------------------------------------------------------------ xattrs

    [Fact]
    public void Setxattr_compat_and_extended_layouts_and_removexattr()
    {
        Init();   // no SETXATTR_EXT: 8-byte fuse_setxattr_in
        var f = CreateFile(1, "f").Entry;
        byte[] Compat(uint size, uint flags) => [.. BitConverter.GetBytes(size), .. BitConverter.GetBytes(flags)];
        Assert.Equal(0, Call(FuseOpcode.Setxattr, f.NodeId, Compat(3, 0), Name("user.a"), [1, 2, 3]).Header.Error);
        Assert.Equal(new byte[] { 1, 2, 3 }, Call(FuseOpcode.Getxattr, f.NodeId, Bytes(new FuseGetxattrIn { Size_ = 10 }), Name("user.a")).Body);
        Assert.Equal(EEXIST, Error(FuseOpcode.Setxattr, f.NodeId, Compat(1, 1), Name("user.a"), [9]));
        Assert.Equal(ENODATA, Error(FuseOpcode.Setxattr, f.NodeId, Compat(1, 2), Name("user.b"), [9]));
        Assert.Equal(EINVAL, Error(FuseOpcode.Setxattr, f.NodeId, Compat(1, 4), Name("user.b"), [9]));
        Assert.Equal(EINVAL, Error(FuseOpcode.Setxattr, f.NodeId, Compat(5, 0), Name("user.b"), [9]));   // value shorter than size
        Assert.Equal(0, Call(FuseOpcode.Setxattr, f.NodeId, Compat(0, 0), Name("user.empty")).Header.Error);
        Assert.Equal(0, Call(FuseOpcode.Removexattr, f.NodeId, Name("user.a")).Header.Error);
        Assert.Equal(ENODATA, Error(FuseOpcode.Removexattr, f.NodeId, Name("user.a")));
        Assert.Equal(ENODATA, Error(FuseOpcode.Getxattr, f.NodeId, Bytes(new FuseGetxattrIn { Size_ = 10 }), Name("user.a")));

        _d = new RequestDispatcher(_pool.Pool);
        Init(flags: FuseInitFlags.SetxattrExt);
        Assert.Equal(0, Call(FuseOpcode.Setxattr, f.NodeId, Bytes(new FuseSetxattrIn { Size_ = 2, Flags = 1 }), Name("user.x"), [4, 5]).Header.Error);
        Assert.Equal(new byte[] { 4, 5 }, Call(FuseOpcode.Getxattr, f.NodeId, Bytes(new FuseGetxattrIn { Size_ = 10 }), Name("user.x")).Body);
        // ACL_KILL_SGID clears setgid.
        Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Mode, Mode = 0x5ED }));
        Assert.Equal(0, Call(FuseOpcode.Setxattr, f.NodeId, Bytes(new FuseSetxattrIn { Size_ = 1, SetxattrFlags = FuseSetxattrIn.AclKillSgid }), Name("user.y"), [1]).Header.Error);
        Assert.Equal(S_IFREG | 0x1ED, GetAttr(f.NodeId).Mode);
    }
}
