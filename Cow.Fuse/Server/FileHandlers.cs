using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.OpcodeTable;
using static Cow.Fuse.Server.AttributeHandlers;
using static Cow.Fuse.Server.NamespaceHandlers;

namespace Cow.Fuse.Server;

// Every handler has the OpHandler signature, whether it uses each argument or not.
#pragma warning disable IDE0060

// OPEN, OPENDIR, RELEASE, READ, WRITE, FSYNC, FSYNCDIR, SYNCFS, FALLOCATE, LSEEK, COPY_FILE_RANGE(_64).
internal static class FileHandlers
{
    internal const uint O_ACCMODE = 3, O_TRUNC = 0x200;
    /// <summary>fuse_open_out.fh of a file the engine has counted open (RELEASE pairs only those).</summary>
    internal const ulong EngineOpenFh = 1;

    /// <summary>
    /// OPEN. Snapshot files never change, so their pages stay cached across opens (FOPEN_KEEP_CACHE); live
    /// files opened read-only use the page cache without FOPEN_KEEP_CACHE (the kernel drops its cache on
    /// open), live files opened for writing bypass it (see <see cref="RequestDispatcher.LiveFileOpenFlagsFor"/>).
    /// With FUSE_ATOMIC_O_TRUNC the kernel leaves O_TRUNC to us.
    /// </summary>
    public static Errno Open(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EISDIR;
        var i = MemoryMarshal.Read<FuseOpenIn>(p);
        var view = node.View!;
        e = view.GetAttr(node.Ino, out var attr);
        if (e != 0) return e;
        if (attr.IsDirectory) return Errno.EISDIR;
        uint modeBefore = attr.Mode;
        e = OpenNode(view, node.Ino, i.Flags, (i.OpenFlags & FuseOpenIn.OpenKillSuidgid) != 0, ref attr, out ulong fh);
        if (e != 0) return e;
        if (attr.Mode != modeBefore) InvalidateAttributes(d, h.NodeId);   // O_TRUNC cleared setuid/setgid: OPEN's reply carries no attributes
        var o = new FuseOpenOut { Fh = fh, OpenFlags = view.ReadOnly ? (uint)FuseOpenOutFlags.KeepCache : LiveOpenFlags(d, i.Flags) };
        return Write(reply, in o, out n);
    }

    /// <summary>
    /// fuse_open_out.open_flags for a live file opened with <paramref name="flags"/>: read-only opens go
    /// through the FUSE page cache (the kernel reads ahead with several READs in flight and serves re-reads
    /// without a round trip); opens for writing get <see cref="RequestDispatcher.LiveFileOpenFlags"/>
    /// (direct I/O by default). The two stay coherent: with FUSE_DIRECT_IO_ALLOW_MMAP the kernel writes back
    /// and invalidates the cached pages of the range of every direct write, and an open without
    /// FOPEN_KEEP_CACHE drops the inode's cached pages.
    /// </summary>
    private static uint LiveOpenFlags(RequestDispatcher d, uint flags) =>
        (flags & O_ACCMODE) == 0 && (flags & O_TRUNC) == 0 ? 0 : d.LiveFileOpenFlags;

    /// <summary>Opens a non-directory (EROFS for writing in a read-only tree), truncating on O_TRUNC for
    /// writing; <paramref name="attr"/> is refreshed after a truncation. With <paramref name="killSuidgid"/>
    /// (FUSE_OPEN_KILL_SUIDGID: the opener lacks CAP_FSETID) the truncation also clears setuid, and setgid of a
    /// group-executable file, as truncate(2) does. <paramref name="fh"/> is
    /// <see cref="EngineOpenFh"/> when the engine counted the open (live tree).</summary>
    internal static Errno OpenNode(FileSystemView view, long ino, uint flags, bool killSuidgid, ref InodeAttr attr, out ulong fh)
    {
        fh = 0;
        // O_TRUNC truncates whatever the access mode (Linux does it for O_RDONLY|O_TRUNC too; with
        // atomic_o_trunc the kernel leaves it to OPEN), so it needs a writable tree: EROFS in a snapshot.
        bool truncate = (flags & O_TRUNC) != 0;
        bool writable = (flags & O_ACCMODE) != 0 || truncate;
        var e = view.Open(ino, writable);
        if (e != 0) return e;
        fh = view.ReadOnly ? 0 : EngineOpenFh;
        uint? mode = truncate && killSuidgid ? ModeWithoutSuidgid(attr.Mode) : null;
        if (truncate && attr.IsRegular && (attr.Size != 0 || mode != null))
        {
            e = view.SetAttr(ino, new SetAttrRequest { Size = attr.Size != 0 ? 0 : null, Mode = mode }, out attr);
            if (e != 0)
            {
                if (fh == EngineOpenFh) view.Release(ino);
                fh = 0;
                return e;
            }
        }
        return 0;
    }

    /// <summary>OPENDIR: snapshot directories never change, so the kernel may cache their listings
    /// (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE). A live directory is counted open in the engine and gets a handle
    /// in <see cref="RequestDispatcher.Dirs"/> (see <see cref="DirHandles"/>).</summary>
    public static Errno Opendir(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        var o = new FuseOpenOut();
        if (!node.IsSnapshotDir)
        {
            e = node.View!.GetAttr(node.Ino, out var attr);
            if (e != 0) return e;
            if (!attr.IsDirectory) return Errno.ENOTDIR;
            if (node.View.ReadOnly) o.OpenFlags = (uint)(FuseOpenOutFlags.CacheDir | FuseOpenOutFlags.KeepCache);
            else
            {
                e = node.View.Open(node.Ino, writable: false);
                if (e != 0) return e;
                e = node.View.DirEnd(node.Ino, out long end);
                if (e != 0) { node.View.Release(node.Ino); return e; }
                o.Fh = d.Dirs.Add(node.View, node.Ino, end);
            }
        }
        e = Write(reply, in o, out n);
        if (e != 0 && o.Fh != 0) d.Dirs.Release(o.Fh);
        return e;
    }

    /// <summary>RELEASEDIR: forgets the handle and releases its engine open.</summary>
    public static Errno Releasedir(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        d.Dirs.Release(MemoryMarshal.Read<FuseReleaseIn>(p).Fh);
        return 0;
    }

    public static Errno Release(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseReleaseIn>(p);
        if (i.Fh != EngineOpenFh || d.Nodes.Resolve(h.NodeId, out var node) != 0 || node.IsSnapshotDir) return 0;
        node.View!.Release(node.Ino);   // RELEASE cannot fail from the kernel's point of view
        return 0;
    }

    /// <summary>
    /// READ: with the worker's <see cref="ReadSegments"/> (a /dev/fuse worker) the data may stay in the read-ahead
    /// buffers it came into from the device, and the reply is gathered from them (writev) instead of copied
    /// together first; the buffers' checksums were computed as they were loaded.
    /// </summary>
    internal static unsafe Errno Read(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EISDIR;
        var i = MemoryMarshal.Read<FuseReadIn>(p);
        if (i.Offset > long.MaxValue) return Errno.EINVAL;
        int size = (int)Math.Min(i.Size_, (uint)reply.Length);
        int count;
        var segments = RequestDispatcher.ReadSegmentsOfThisWorker;
        if (segments != null && segments.Scratch == (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(reply)) && size <= segments.Capacity)
            e = node.View!.ReadInto(node.Ino, (long)i.Offset, size, segments, out count);
        else
            e = node.View!.Read(node.Ino, (long)i.Offset, reply[..size], out count);
        if (e != 0) return e;
        n = Math.Clamp(count, 0, size);
        NoteRead(d, node.View, node.Ino, directory: false);
        return 0;
    }

    /// <summary>
    /// WRITE: the data follows fuse_write_in. O_APPEND in the file's flags appends at the engine's end of
    /// file — except with the write-back cache (and for page-cache write-back, FUSE_WRITE_CACHE), where the
    /// kernel has already placed the data and its offsets, possibly past our end of file, are the truth.
    /// FUSE_WRITE_KILL_SUIDGID clears setuid/setgid after the write.
    /// </summary>
    public static Errno WriteData(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EISDIR;
        var i = MemoryMarshal.Read<FuseWriteIn>(p);
        var data = p[FuseWriteIn.Size..];
        if (i.Size_ > (uint)data.Length) return Errno.EINVAL;
        if (i.Offset > long.MaxValue) return Errno.EFBIG;
        bool append = (i.Flags & O_APPEND) != 0 && (i.WriteFlags & FuseWriteIn.WriteCache) == 0 && !d.WritebackCacheGranted;
        // With the writeback cache the kernel owns mtime/ctime of written files (it sends them with SETATTR,
        // possibly before writes it had queued): a write must not overwrite them with the server's clock.
        // With the writeback cache the kernel keeps the attributes it has (the written bytes are its own), so st_blocks
        // would stay as it was before writeback placed them: when a write changes it, the attributes are dropped.
        long blocksBefore = d.WritebackCacheGranted && node.View!.GetAttr(node.Ino, out var before) == 0 ? before.Blocks512 : -1;
        e = node.View!.Write(node.Ino, (long)i.Offset, data[..(int)i.Size_], out int written, append, touchTimes: !d.WritebackCacheGranted);
        if (e != 0) return e;
        if (blocksBefore >= 0 && node.View.GetAttr(node.Ino, out var after) == 0 && after.Blocks512 != blocksBefore)
            InvalidateAttributes(d, h.NodeId);
        if ((i.WriteFlags & FuseWriteIn.WriteKillSuidgid) != 0 && written > 0 && KillSuidgid(node.View, node.Ino))
            InvalidateAttributes(d, h.NodeId);
        var o = new FuseWriteOut { Size_ = (uint)written };
        return Write(reply, in o, out n);
    }

    /// <summary>A READ or READDIR was served: the atime update the mount's options ask for
    /// (<see cref="FuseMountOptions.Atime"/>). None while the mount is frozen (Linux's touch_atime waits for a
    /// thaw; Cow skips it rather than stall a read). The read stands whatever this answers.</summary>
    internal static void NoteRead(RequestDispatcher d, FileSystemView view, long ino, bool directory)
    {
        var a = d.Options.Atime;
        if (a.Policy == AtimePolicy.Noatime || (directory && a.NoDirAtime) || view.ReadOnly || d.Frozen) return;
        view.Accessed(ino, a.Policy);
    }

    /// <summary>Clears S_ISUID, and S_ISGID of a group-executable file, as a write by an unprivileged user does.
    /// True when a bit was cleared.</summary>
    private static bool KillSuidgid(FileSystemView view, long ino)
    {
        if (view.GetAttr(ino, out var a) != 0) return false;
        return ModeWithoutSuidgid(a.Mode) is uint m && view.SetAttr(ino, new SetAttrRequest { Mode = m }, out _) == 0;
    }

    /// <summary>
    /// FUSE_NOTIFY_INVAL_INODE with a negative offset: the kernel drops the cached attributes of
    /// <paramref name="nodeId"/> (fuse_reverse_inval_inode: attributes and ACLs only, the page cache is kept).
    /// For a change the reply does not carry — a WRITE or an OPEN with O_TRUNC that cleared setuid/setgid:
    /// without it, stat would show the old mode until the attribute timeout. Sent before the reply, so the change is visible by the time
    /// the write returns. A kernel that no longer holds the inode (ENOENT) had nothing cached.
    /// </summary>
    internal static void InvalidateAttributes(RequestDispatcher d, ulong nodeId)
    {
        Span<byte> msg = stackalloc byte[FuseOutHeader.Size + FuseNotifyInvalInodeOut.Size];
        var hdr = new FuseOutHeader { Len = (uint)msg.Length, Error = (int)FuseNotifyCode.InvalInode, Unique = 0 };
        var body = new FuseNotifyInvalInodeOut { Ino = nodeId, Off = -1, Len = 0 };
        MemoryMarshal.Write(msg, in hdr);
        MemoryMarshal.Write(msg[FuseOutHeader.Size..], in body);
        var e = d.SendNotification(msg);
        if (e != 0 && e is not (Errno.ENOENT or Errno.ENOTCONN or Errno.ENODEV))
            d.LogLine($"FUSE_NOTIFY_INVAL_INODE for node {nodeId} refused: {e}");
    }

    /// <summary>The permission bits of <paramref name="mode"/> without S_ISUID, and without S_ISGID when the
    /// file is group-executable (a setgid bit without group execute marks mandatory locking and stays), as
    /// Linux clears them on a write, truncate or chown; null when there is nothing to clear. With
    /// FUSE_HANDLE_KILLPRIV_V2 this is the server's job, not the kernel's.</summary>
    internal static uint? ModeWithoutSuidgid(uint mode)
    {
        uint kill = S_ISUID | ((mode & S_IXGRP) != 0 ? S_ISGID : 0);
        return (mode & kill) != 0 ? mode & 0xFFF & ~kill : null;
    }

    /// <summary>FSYNC / FSYNCDIR: every change so far becomes durable (one group commit; fdatasync alike).</summary>
    public static Errno Fsync(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        return node.IsSnapshotDir ? 0 : node.View!.Fsync(node.Ino);
    }

    /// <summary>SYNCFS: one group commit of the pool.</summary>
    public static Errno Syncfs(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        return d.Pool.Live.Fsync(d.Root.RootIno);
    }

    /// <summary>FALLOCATE: allocate (reserves the space: FallocateReservations.cs; Cow allocates blocks on write), keep-size,
    /// punch-hole and zero-range; other modes EOPNOTSUPP (the engine's answer).</summary>
    public static Errno Fallocate(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EISDIR;
        var i = MemoryMarshal.Read<FuseFallocateIn>(p);
        if (i.Offset > long.MaxValue || i.Length > long.MaxValue) return Errno.EINVAL;   // negative as loff_t
        var mode = (FallocateMode)(int)i.Mode;
        e = node.View!.Fallocate(node.Ino, mode, (long)i.Offset, (long)i.Length);
        // fuse-iomap: the kernel wrote the range back before a punch or zero (its pages are gone). Its iomap
        // fallocate path then keeps the cached attributes (st_blocks) but for an extending one: drop them.
        if (e == 0 && (mode & (FallocateMode.PunchHole | FallocateMode.ZeroRange)) != 0 && d.Iomap is { } io)
        {
            io.Delalloc.Remove(h.NodeId, (long)i.Offset, (long)i.Length);
            InvalidateAttributes(d, h.NodeId);
        }
        return e;
    }

    /// <summary>LSEEK: SEEK_DATA and SEEK_HOLE through the engine. The kernel answers SEEK_SET/CUR/END
    /// itself; if asked anyway, SEEK_SET and SEEK_END are answered, SEEK_CUR (whose position only the
    /// kernel knows) is EINVAL.</summary>
    public static Errno Lseek(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        const uint SeekSet = 0, SeekEnd = 2, SeekData = 3, SeekHole = 4;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EINVAL;
        // With the writeback cache the kernel holds dirty pages of a writable file the engine has not seen and
        // does not flush them before LSEEK: an answer from the extent map could call fresh data a hole. ENOSYS
        // makes the kernel use its generic lseek (all data up to the size, the hole at EOF), which is always
        // true — but for the whole connection from then on. A read-only (snapshot) file has no dirty pages: its
        // answer comes from the engine. Under fuse-iomap (which asks for the writeback cache) only such files send
        // LSEEK at all: the kernel answers SEEK_DATA/SEEK_HOLE of iomap inodes with IOMAP_BEGIN.
        if (d.WritebackCacheGranted && !node.View!.ReadOnly) return Errno.ENOSYS;
        var i = MemoryMarshal.Read<FuseLseekIn>(p);
        long offset = (long)i.Offset, result;
        switch (i.Whence)
        {
            case SeekSet:
                if (offset < 0) return Errno.EINVAL;
                e = node.View!.GetAttr(node.Ino, out _);
                result = offset;
                break;
            case SeekEnd:
                e = node.View!.GetAttr(node.Ino, out var a);
                if (e != 0) return e;
                if (offset > long.MaxValue - a.Size) return Errno.EOVERFLOW;
                result = a.Size + offset;
                if (result < 0) return Errno.EINVAL;
                break;
            case SeekData:
            case SeekHole:
                e = node.View!.Seek(node.Ino, offset, (SeekWhence)i.Whence, out result);
                break;
            default:
                return Errno.EINVAL;
        }
        if (e != 0) return e;
        var o = new FuseLseekOut { Offset = (ulong)result };
        return Write(reply, in o, out n);
    }

    /// <summary>COPY_FILE_RANGE (reply fuse_write_out, so at most 4 GiB − 4 KiB per call) and
    /// COPY_FILE_RANGE_64 (reply fuse_copy_file_range_out). The destination is in the mounted tree; the source
    /// is in the same tree or in a snapshot under <c>.snapshots</c> (blocks are shared either way: restoring a
    /// file with <c>cp .snapshots/S/f f</c> takes no new space). Anything else is EXDEV (the kernel then copies
    /// through splice itself).</summary>
    public static Errno CopyFileRange(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseCopyFileRangeIn>(p);
        var e = d.Nodes.Resolve(h.NodeId, out var src);
        if (e != 0) return e;
        e = d.Nodes.Resolve(i.NodeIdOut, out var dst);
        if (e != 0) return e;
        if (src.IsSnapshotDir || dst.IsSnapshotDir) return Errno.EISDIR;
        if (i.Flags != 0) return Errno.EINVAL;
        if (src.View != dst.View && (dst.View != d.Root || !src.View!.ReadOnly)) return Errno.EXDEV;
        if (i.OffIn > long.MaxValue || i.OffOut > long.MaxValue) return Errno.EINVAL;
        bool wide = h.Opcode == (uint)FuseOpcode.CopyFileRange64;
        ulong len = Math.Min(i.Len, wide ? (ulong)long.MaxValue : (ulong)(uint.MaxValue & ~0xFFFu));
        e = dst.View!.CopyFileRange(src.View!, src.Ino, (long)i.OffIn, dst.Ino, (long)i.OffOut, (long)len, out long copied);
        if (e != 0) return e;
        if (wide)
        {
            var o = new FuseCopyFileRangeOut { BytesCopied = (ulong)copied };
            return Write(reply, in o, out n);
        }
        var w = new FuseWriteOut { Size_ = (uint)copied };
        return Write(reply, in w, out n);
    }
}
