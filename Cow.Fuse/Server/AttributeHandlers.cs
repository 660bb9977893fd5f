using System.Runtime.InteropServices;
using System.Text;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.OpcodeTable;
using static Cow.Fuse.Server.FileHandlers;
using static Cow.Fuse.Server.SnapshotDirHandlers;

namespace Cow.Fuse.Server;

// Every handler has the OpHandler signature, whether it uses each argument or not.
#pragma warning disable IDE0060

// LOOKUP, GETATTR, SETATTR, STATX, ACCESS, STATFS, READLINK.
internal static class AttributeHandlers
{
    internal const uint S_ISUID = 0x800, S_ISGID = 0x400, S_IXGRP = 0x8;

    public static Errno Lookup(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = ReadName(p, Errno.ENOENT, out string name);   // a name that is not UTF-8 cannot exist in Cow
        if (e != 0) return e;
        e = d.Nodes.Resolve(h.NodeId, out var parent);
        if (e != 0) return e;
        if (parent.IsSnapshotDir) return LookupInSnapshotDir(d, name, reply, out n);
        if (IsSnapshotDirEntry(d, in parent, name)) return SnapshotDirEntryReply(d, reply, out n);
        if (parent.Slot != NodeTable.RootSlot && parent.Ino == parent.View!.RootIno && name == "..") return SnapshotDirEntryReply(d, reply, out n);
        // "." names the node itself, whatever its type: with FUSE_EXPORT_SUPPORT the kernel looks up "." in a
        // node id from a file handle whose inode it no longer caches (and ".." in a directory for its parent).
        e = name == "." ? parent.View!.GetAttr(parent.Ino, out var attr) : parent.View!.Lookup(parent.Ino, name, out attr);
        if (e != 0) return e;
        return EntryReply(d, parent.Slot, in attr, reply, out n);
    }

    /// <summary>The attributes of <paramref name="node"/> (node id <paramref name="nodeId"/>) as stat shows
    /// them, and its st_ino.</summary>
    private static Errno NodeAttr(RequestDispatcher d, ulong nodeId, in FuseNode node, out InodeAttr attr, out ulong stIno)
    {
        if (node.IsSnapshotDir)
        {
            attr = SnapshotDirAttr(d);
            stIno = NodeTable.SnapshotDirStIno;
            return 0;
        }
        stIno = d.Nodes.StIno(node.Slot, node.Ino);
        var e = node.View!.GetAttr(node.Ino, out attr);
        if (e == 0) attr = d.Visible(node.Slot, nodeId, in attr);
        return e;
    }

    private static Errno AttrReply(in InodeAttr attr, ulong stIno, uint attrFlags, Span<byte> reply, out int n)
    {
        var o = new FuseAttrOut { AttrValid = RequestDispatcher.AttrTimeoutSeconds, Attr = Attr(in attr, stIno, attrFlags) };
        return Write(reply, in o, out n);
    }

    public static Errno Getattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        e = NodeAttr(d, h.NodeId, in node, out var attr, out ulong stIno);
        if (e != 0) return e;
        return AttrReply(in attr, stIno, node.IsSnapshotDir ? 0 : d.AttrFlags(node.Slot), reply, out n);
    }

    /// <summary>
    /// SETATTR: mode, uid, gid, size, atime and mtime (FATTR_ATIME_NOW / FATTR_MTIME_NOW: the current time).
    /// FATTR_CTIME sets the change time the kernel sends (with its writeback cache the kernel keeps the
    /// times of a file it writes and flushes them here; otherwise every change sets ctime to now), FATTR_FH and FATTR_LOCKOWNER carry nothing
    /// Cow needs, FATTR_KILL_SUIDGID, and a chown of a non-directory, clear setuid, and setgid of a group-executable
    /// file, as the kernel would (with FUSE_HANDLE_KILLPRIV_V2 it leaves that to the server). A request that changes nothing answers the current attributes.
    /// </summary>
    public static Errno Setattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir || node.View!.ReadOnly) return Errno.EROFS;
        var view = node.View;
        var i = MemoryMarshal.Read<FuseSetattrIn>(p);
        var v = (FuseSetattrValid)i.Valid;
        uint? mode = null;
        if ((v & FuseSetattrValid.Mode) != 0) mode = i.Mode & 0xFFF;
        else if ((v & (FuseSetattrValid.KillSuidgid | FuseSetattrValid.Uid | FuseSetattrValid.Gid)) != 0)
        {
            // FATTR_KILL_SUIDGID (a truncate by a caller without CAP_FSETID), or a chown of a non-directory,
            // which clears them whoever calls (with FUSE_HANDLE_KILLPRIV_V2 the kernel leaves both to us).
            e = view.GetAttr(node.Ino, out var cur);
            if (e != 0) return e;
            if ((v & FuseSetattrValid.KillSuidgid) != 0 || !cur.IsDirectory) mode = ModeWithoutSuidgid(cur.Mode);
        }
        long? size = null;
        if ((v & FuseSetattrValid.Size) != 0)
        {
            if (i.Size_ > long.MaxValue) return Errno.EFBIG;
            size = (long)i.Size_;
        }
        bool atimeNow = (v & FuseSetattrValid.AtimeNow) != 0, mtimeNow = (v & FuseSetattrValid.MtimeNow) != 0;
        long? atime = null, mtime = null;
        if ((v & FuseSetattrValid.Atime) != 0 && !atimeNow)
        {
            if (!TimeNs(i.Atime, i.Atimensec, out long a)) return Errno.EINVAL;
            atime = a;
        }
        if ((v & FuseSetattrValid.Mtime) != 0 && !mtimeNow)
        {
            if (!TimeNs(i.Mtime, i.Mtimensec, out long m)) return Errno.EINVAL;
            mtime = m;
        }
        long? ctime = null;
        if ((v & FuseSetattrValid.Ctime) != 0)
        {
            if (!TimeNs(i.Ctime, i.Ctimensec, out long c)) return Errno.EINVAL;
            ctime = c;
        }
        uint? uid = (v & FuseSetattrValid.Uid) != 0 ? i.Uid : null;
        uint? gid = (v & FuseSetattrValid.Gid) != 0 ? i.Gid : null;
        if (uid == FuseConstants.InvalidUidGid || gid == FuseConstants.InvalidUidGid) return Errno.EINVAL;

        InodeAttr attr;
        if (mode == null && uid == null && gid == null && size == null && atime == null && mtime == null && ctime == null && !atimeNow && !mtimeNow)
            e = view.GetAttr(node.Ino, out attr);
        else
            e = view.SetAttr(node.Ino, new SetAttrRequest
            {
                Mode = mode, Uid = uid, Gid = gid, Size = size, AtimeNs = atime, MtimeNs = mtime, CtimeNs = ctime, AtimeNow = atimeNow, MtimeNow = mtimeNow,
            }, out attr);
        if (e == Errno.ENOENT && mode == null && uid == null && gid == null && size == null && (d.WritebackCacheGranted || d.IomapGranted))
        {
            // With the writeback cache (and for fuse-iomap inodes, whose c/mtime the kernel caches the same way)
            // the kernel flushes the times of an inode it still caches after the
            // file was unlinked and closed (syncfs, writeback); the inode is gone here, so there is nothing
            // to keep. Failing would fail the caller's syncfs. The kernel ignores this reply's attributes.
            var none = new FuseAttrOut();
            return Write(reply, in none, out n);
        }
        if (e != 0) return e;
        if (size is long newSize) d.Iomap?.Delalloc.Truncate(h.NodeId, newSize);   // pages past the new end are gone
        attr = d.Visible(node.Slot, h.NodeId, in attr);
        return AttrReply(in attr, d.Nodes.StIno(node.Slot, node.Ino), d.AttrFlags(node.Slot), reply, out n);
    }

    /// <summary>Seconds (two's complement in a u64) and nanoseconds → ns since the epoch; false when out of range.</summary>
    private static bool TimeNs(ulong sec, uint nsec, out long ns)
    {
        ns = 0;
        if (nsec >= 1_000_000_000) return false;
        long s = (long)sec;
        if (s > long.MaxValue / 1_000_000_000 - 1 || s < long.MinValue / 1_000_000_000 + 1) return false;
        ns = s * 1_000_000_000 + nsec;
        return true;
    }

    /// <summary>STATX: the attributes with the birth time (STATX_BASIC_STATS | STATX_BTIME, whatever was asked).</summary>
    public static Errno Statx(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        e = NodeAttr(d, h.NodeId, in node, out var a, out ulong stIno);
        if (e != 0) return e;
        const uint StatxBasicStats = 0x7FF, StatxBtime = 0x800;
        uint rdev = EncodeDev(a.Rdev);
        var o = new FuseStatxOut { AttrValid = RequestDispatcher.AttrTimeoutSeconds };
        o.Stat = new FuseStatx
        {
            Mask = StatxBasicStats | StatxBtime, Blksize = (uint)a.BlockSize, Nlink = a.Nlink, Uid = a.Uid, Gid = a.Gid,
            Mode = (ushort)a.Mode, Ino = stIno, Size_ = (ulong)a.Size, Blocks = (ulong)a.Blocks512,
            Atime = SxTime(a.AtimeNs), Btime = SxTime(a.BtimeNs), Ctime = SxTime(a.CtimeNs), Mtime = SxTime(a.MtimeNs),
            RdevMajor = (rdev >> 8) & 0xFFF, RdevMinor = (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00),
        };
        return Write(reply, in o, out n);
    }

    private static FuseSxTime SxTime(long ns)
    {
        long sec = Math.DivRem(ns, 1_000_000_000L, out long rem);
        if (rem < 0) { sec--; rem += 1_000_000_000L; }
        return new FuseSxTime { TvSec = sec, TvNsec = (uint)rem };
    }

    /// <summary>
    /// ACCESS (sent only without default_permissions): Cow does not enforce permissions itself, so the answer
    /// is whether the node exists, and EROFS for W_OK in a read-only tree (as access(2) on a read-only mount).
    /// </summary>
    public static Errno Access(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        const uint W_OK = 2;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        var i = MemoryMarshal.Read<FuseAccessIn>(p);
        if (node.IsSnapshotDir) return 0;   // writable in the sense that mkdir and rmdir work in it
        e = node.View!.GetAttr(node.Ino, out _);
        if (e != 0) return e;
        return (i.Mask & W_OK) != 0 && node.View.ReadOnly ? Errno.EROFS : 0;
    }

    public static Errno Statfs(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        var s = d.Root.StatFs();
        var o = new FuseStatfsOut
        {
            St = new FuseKstatfs
            {
                Blocks = (ulong)Math.Max(0, s.Blocks), Bfree = (ulong)Math.Max(0, s.FreeBlocks), Bavail = (ulong)Math.Max(0, s.AvailableBlocks),
                Files = (ulong)Math.Max(0, s.Files), Ffree = (ulong)Math.Max(0, s.FreeFiles),
                Bsize = (uint)s.BlockSize, Frsize = (uint)s.BlockSize, NameLen = (uint)s.NameMax,
            },
        };
        return Write(reply, in o, out n);
    }

    public static Errno Readlink(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EINVAL;
        e = node.View!.Readlink(node.Ino, out string target);
        if (e != 0) return e;
        if (!Encoding.UTF8.TryGetBytes(target, reply, out n)) { n = 0; return Errno.ENAMETOOLONG; }
        return 0;
    }
}
