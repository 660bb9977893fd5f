using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.OpcodeTable;
using static Cow.Fuse.Server.AttributeHandlers;
using static Cow.Fuse.Server.FileHandlers;
using static Cow.Fuse.Server.SnapshotDirHandlers;

namespace Cow.Fuse.Server;

// Every handler has the OpHandler signature, whether it uses each argument or not.
#pragma warning disable IDE0060

// MKNOD, MKDIR, SYMLINK, LINK, CREATE, TMPFILE, UNLINK, RMDIR, RENAME, RENAME2.
// With FUSE_DONT_MASK (granted with FUSE_POSIX_ACL) modes arrive without the umask: the engine applies the
// umask field of mknod_in / mkdir_in / create_in (TMPFILE too), or the parent's default ACL instead (posix_acl_create). A
// kernel that did not grant it applied the umask already; applying it again changes nothing.
internal static class NamespaceHandlers
{
    internal const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, O_EXCL = 0x80, O_APPEND = 0x400;
    private const int SymlinkMax = 4095;

    /// <summary>Where a new node goes and who owns it: the parent's tree and inode, and the owner from
    /// fuse_in_header — with the setgid-directory rule: in a directory with S_ISGID the new node takes the
    /// directory's group, and a new directory also takes S_ISGID (<paramref name="inheritSetgid"/>).
    /// EROFS inside <c>.snapshots</c> and in snapshots, EEXIST for "." / ".." and for <c>.snapshots</c> in the
    /// root of a live mount, ENOTDIR when the parent is not a directory.</summary>
    private static Errno PrepareNew(RequestDispatcher d, in FuseInHeader h, ulong parentId, string name, out FuseNode parent, out uint gid, out bool inheritSetgid)
    {
        gid = h.Gid;
        inheritSetgid = false;
        var e = d.Nodes.Resolve(parentId, out parent);
        if (e != 0) return e;
        if (parent.IsSnapshotDir) return Errno.EROFS;
        if (IsDotName(name) || IsSnapshotDirEntry(d, in parent, name)) return Errno.EEXIST;
        if (parent.View!.ReadOnly) return Errno.EROFS;
        if (h.Uid == FuseConstants.InvalidUidGid || h.Gid == FuseConstants.InvalidUidGid) return Errno.EOVERFLOW;
        e = parent.View.GetAttr(parent.Ino, out var dir);
        if (e != 0) return e;
        if (!dir.IsDirectory) return Errno.ENOTDIR;
        if ((dir.Mode & S_ISGID) != 0) { gid = dir.Gid; inheritSetgid = true; }
        return 0;
    }

    public static Errno Mknod(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        // fuse_mknod_in gained umask and padding in 7.12; before that it was mode and rdev (8 bytes).
        int size = d.NegotiatedMinor < 12 ? FuseConstants.CompatMknodInSize : FuseMknodIn.Size;
        if (p.Length < size + 2) return Errno.EINVAL;
        uint mode = MemoryMarshal.Read<uint>(p), rdev = MemoryMarshal.Read<uint>(p[4..]);
        uint umask = size == FuseMknodIn.Size ? MemoryMarshal.Read<FuseMknodIn>(p).Umask : 0;
        var e = ReadNewName(p[size..], out string name, out _);
        if (e != 0) return e;
        e = PrepareNew(d, in h, h.NodeId, name, out var parent, out uint gid, out _);
        if (e != 0) return e;
        e = parent.View!.Mknod(parent.Ino, name, mode, DecodeDev(rdev), h.Uid, gid, out var attr, umask);
        if (e != 0) return e;
        return EntryReply(d, parent.Slot, in attr, reply, out n);
    }

    public static Errno Mkdir(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseMkdirIn>(p);
        var e = ReadNewName(p[FuseMkdirIn.Size..], out string name, out _);
        if (e != 0) return e;
        if (d.Nodes.Resolve(h.NodeId, out var where) == 0 && where.IsSnapshotDir) return MakeSnapshot(d, name, reply, out n);
        e = PrepareNew(d, in h, h.NodeId, name, out var parent, out uint gid, out bool setgid);
        if (e != 0) return e;
        uint mode = (i.Mode & 0xFFF) | (setgid ? S_ISGID : 0);
        e = parent.View!.Mkdir(parent.Ino, name, mode, h.Uid, gid, out var attr, i.Umask);
        if (e != 0) return e;
        return EntryReply(d, parent.Slot, in attr, reply, out n);
    }

    public static Errno Symlink(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = ReadNewName(p, out string name, out int used);
        if (e != 0) return e;
        var rest = p[used..];
        int nul = rest.IndexOf((byte)0);
        if (nul < 0) return Errno.EINVAL;
        if (nul == 0) return Errno.ENOENT;              // symlink(2) with an empty target
        if (nul > SymlinkMax) return Errno.ENAMETOOLONG;
        if (!Utf8.IsValid(rest[..nul])) return Errno.EILSEQ;
        e = PrepareNew(d, in h, h.NodeId, name, out var parent, out uint gid, out _);
        if (e != 0) return e;
        e = parent.View!.Symlink(parent.Ino, name, Encoding.UTF8.GetString(rest[..nul]), h.Uid, gid, out var attr);
        if (e != 0) return e;
        return EntryReply(d, parent.Slot, in attr, reply, out n);
    }

    public static Errno Link(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseLinkIn>(p);
        var e = ReadNewName(p[FuseLinkIn.Size..], out string name, out _);
        if (e != 0) return e;
        e = d.Nodes.Resolve(i.OldNodeId, out var target);
        if (e != 0) return e;
        e = PrepareNew(d, in h, h.NodeId, name, out var parent, out _, out _);
        if (e != 0) return e;
        if (target.IsSnapshotDir) return Errno.EPERM;   // a directory
        if (target.View != parent.View) return target.View!.ReadOnly ? Errno.EROFS : Errno.EXDEV;
        e = parent.View!.Link(target.Ino, parent.Ino, name, out var attr);
        if (e != 0) return e;
        return EntryReply(d, parent.Slot, in attr, reply, out n);
    }

    /// <summary>CREATE: create and open in one. An existing name (a race with the kernel's own lookup) is
    /// EEXIST with O_EXCL and otherwise opened as OPEN would (O_TRUNC included). The reply is fuse_entry_out
    /// followed by fuse_open_out.</summary>
    public static Errno Create(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        // fuse_create_in is 16 bytes from 7.12; before, CREATE sent fuse_open_in (flags, mode).
        int size = d.NegotiatedMinor < 12 ? FuseOpenIn.Size : FuseCreateIn.Size;
        if (p.Length < size + 2) return Errno.EINVAL;
        uint flags = MemoryMarshal.Read<uint>(p), mode = MemoryMarshal.Read<uint>(p[4..]);
        bool killSuidgid = size == FuseCreateIn.Size && (MemoryMarshal.Read<FuseCreateIn>(p).OpenFlags & FuseOpenIn.OpenKillSuidgid) != 0;
        uint umask = size == FuseCreateIn.Size ? MemoryMarshal.Read<FuseCreateIn>(p).Umask : 0;
        var e = ReadNewName(p[size..], out string name, out _);
        if (e != 0) return e;
        e = PrepareNew(d, in h, h.NodeId, name, out var parent, out uint gid, out _);
        if (e != 0) return e;
        if (reply.Length < FuseEntryOut.Size + FuseOpenOut.Size) return Errno.EIO;
        var view = parent.View!;
        bool writable = (flags & O_ACCMODE) != 0;
        e = view.Create(parent.Ino, name, mode, h.Uid, gid, out var attr, umask);
        if (e == Errno.EEXIST)
        {
            if ((flags & O_EXCL) != 0) return Errno.EEXIST;
            e = view.Lookup(parent.Ino, name, out attr);
            if (e != 0) return e;
            if (attr.IsDirectory) return Errno.EISDIR;
            e = OpenNode(view, attr.Ino, flags, killSuidgid, ref attr, out ulong fh0);
            if (e != 0) return e;
            return CreateReply(d, parent.Slot, in attr, fh0, reply, out n);
        }
        if (e != 0) return e;
        e = view.Open(attr.Ino, writable);
        if (e != 0) return e;
        return CreateReply(d, parent.Slot, in attr, EngineOpenFh, reply, out n);
    }

    /// <summary>TMPFILE (open with O_TMPFILE): a regular file with no name and nlink 0 in the directory of the
    /// node id, opened; linkat(AT_EMPTY_PATH) names it (the VFS refuses that for O_TMPFILE | O_EXCL), the
    /// last close deletes it otherwise. The name the kernel sends ("/") is not used. Reply as CREATE's.</summary>
    public static Errno Tmpfile(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseCreateIn>(p);
        if ((i.Mode & S_IFMT) is not (0 or 0x8000)) return Errno.EINVAL;   // S_IFREG only
        var e = PrepareNew(d, in h, h.NodeId, "", out var parent, out uint gid, out _);   // "": no name to check
        if (e != 0) return e;
        if (reply.Length < FuseEntryOut.Size + FuseOpenOut.Size) return Errno.EIO;
        e = parent.View!.MakeTmpfile(parent.Ino, i.Mode & 0xFFF, h.Uid, gid, out var attr, i.Umask);
        if (e != 0) return e;
        return CreateReply(d, parent.Slot, in attr, EngineOpenFh, reply, out n);
    }

    private static Errno CreateReply(RequestDispatcher d, int slot, in InodeAttr attr, ulong fh, Span<byte> reply, out int n)
    {
        var e = EntryReply(d, slot, in attr, reply, out n);
        if (e != 0) return e;
        var o = new FuseOpenOut { Fh = fh, OpenFlags = d.LiveFileOpenFlags };
        e = Write(reply[n..], in o, out int m);
        n += m;
        return e;
    }

    public static Errno Unlink(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n) => Remove(d, in h, p, directory: false, out n);

    public static Errno Rmdir(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n) => Remove(d, in h, p, directory: true, out n);

    private static Errno Remove(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, bool directory, out int n)
    {
        n = 0;
        var e = ReadName(p, Errno.ENOENT, out string name);
        if (e != 0) return e;
        e = d.Nodes.Resolve(h.NodeId, out var parent);
        if (e != 0) return e;
        if (parent.IsSnapshotDir) return directory ? DeleteSnapshot(d, name) : Errno.EROFS;
        // .snapshots behaves like a mount point: it cannot be removed.
        if (IsSnapshotDirEntry(d, in parent, name)) return directory ? Errno.EBUSY : Errno.EISDIR;
        return directory ? parent.View!.Rmdir(parent.Ino, name) : parent.View!.Unlink(parent.Ino, name);
    }

    public static Errno Rename(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseRenameIn>(p);
        return RenameCore(d, in h, i.NewDir, 0, p[FuseRenameIn.Size..]);
    }

    public static Errno Rename2(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseRename2In>(p);
        return RenameCore(d, in h, i.NewDir, i.Flags, p[FuseRename2In.Size..]);
    }

    /// <summary>rename / renameat2: RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT (overlayfs upper
    /// layers; alone or with NOREPLACE: the whiteout left at the source is owned by the caller, with the
    /// setgid-directory rule for its group); EXCHANGE with either other flag, and unknown flags, are EINVAL.
    /// "." or ".." is EBUSY (EEXIST as the target of NOREPLACE), as the VFS says;
    /// <c>.snapshots</c> cannot be moved (EBUSY) nor replaced (EEXIST); across trees EXDEV.</summary>
    private static Errno RenameCore(RequestDispatcher d, in FuseInHeader h, ulong newDir, uint flags, ReadOnlySpan<byte> names)
    {
        const uint NoReplace = 1, Exchange = 2, Whiteout = 4;
        if ((flags & ~(NoReplace | Exchange | Whiteout)) != 0) return Errno.EINVAL;
        if ((flags & Exchange) != 0 && (flags & (NoReplace | Whiteout)) != 0) return Errno.EINVAL;
        var e = ReadName(names, Errno.ENOENT, out string oldName, out int used);
        if (e != 0) return e;
        e = ReadNewName(names[used..], out string newName, out _);
        if (e != 0) return e;
        e = d.Nodes.Resolve(h.NodeId, out var from);
        if (e != 0) return e;
        e = d.Nodes.Resolve(newDir, out var to);
        if (e != 0) return e;
        if (from.IsSnapshotDir || to.IsSnapshotDir) return Errno.EROFS;
        if (IsDotName(oldName)) return Errno.EBUSY;
        if (IsDotName(newName)) return (flags & NoReplace) != 0 ? Errno.EEXIST : Errno.EBUSY;
        if (IsSnapshotDirEntry(d, in from, oldName)) return Errno.EBUSY;
        if (IsSnapshotDirEntry(d, in to, newName)) return (flags & Exchange) != 0 ? Errno.EBUSY : Errno.EEXIST;
        if (from.View!.ReadOnly || to.View!.ReadOnly) return Errno.EROFS;
        if (from.View != to.View) return Errno.EXDEV;
        if ((flags & Whiteout) == 0) return from.View.Rename(from.Ino, oldName, to.Ino, newName, (RenameFlags)flags);
        if (h.Uid == FuseConstants.InvalidUidGid || h.Gid == FuseConstants.InvalidUidGid) return Errno.EOVERFLOW;
        e = from.View.GetAttr(from.Ino, out var dir);
        if (e != 0) return e;
        uint gid = (dir.Mode & S_ISGID) != 0 ? dir.Gid : h.Gid;
        return from.View.RenameWhiteout(from.Ino, oldName, to.Ino, newName, (flags & NoReplace) != 0, h.Uid, gid);
    }
}
