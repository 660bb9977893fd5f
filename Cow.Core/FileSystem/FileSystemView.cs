using Cow.Core.Devices;
using Cow.Core.Engine;
using Mono.Unix.Native;

namespace Cow.Core.FileSystem;

/// <summary>
/// The inode API over one tree: the live tree (read-write) or a snapshot (read-only: every change is
/// EROFS). Every call returns an errno (0 = success); exceptions mean corruption or a bug. This is what
/// Cow.Fuse calls. Threading: thread-safe (the engine locks).
/// </summary>
public sealed class FileSystemView
{
    private readonly Engine.Engine _e;
    private readonly ITreeReader _tree;

    /// <summary>The snapshot's name, or null for the live tree.</summary>
    public string? SnapshotName { get; }
    public bool ReadOnly => _tree.ReadOnly;
    public long RootIno => Engine.Engine.RootIno;

    internal FileSystemView(Engine.Engine engine, ITreeReader tree, string? snapshotName)
    {
        _e = engine; _tree = tree; SnapshotName = snapshotName;
    }

    /// <summary>An I/O failure under the engine (a dead device, a failed commit) becomes EIO here and is
    /// reported once through the engine's Problem event; the errno API never throws for I/O.</summary>
    private Errno IoFailed(IOException e)
    {
        _e.ReportIoFailure(e);
        return Errno.EIO;
    }

    private Errno Changed(Errno e)
    {
        if (e == 0) _e.MaybeCommit();
        return e;
    }

    /// <summary>True once this view's snapshot has been deleted: every call then fails with ESTALE.</summary>
    public bool Stale => _tree.Gone;

    // read-only operations
    public Errno GetAttr(long ino, out InodeAttr attr)
    {
        attr = default;
        if (Stale) return Errno.ESTALE;
        try { return _e.GetAttr(_tree, ino, out attr); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Lookup(long parent, string name, out InodeAttr attr)
    {
        attr = default;
        if (Stale) return Errno.ESTALE;
        try { return _e.Lookup(_tree, parent, name, out attr); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>readdir: up to <paramref name="max"/> entries after <paramref name="offset"/> whose position is
    /// below <paramref name="before"/> (a pass that takes <see cref="DirEnd"/> when it starts and passes it here
    /// never lists an entry twice, whatever renames run meanwhile).</summary>
    public Errno ReadDir(long ino, long offset, int max, List<DirEntryInfo> into, long before = long.MaxValue)
    {
        if (Stale) return Errno.ESTALE;
        try { return _e.ReadDir(_tree, ino, offset, max, into, before); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>Where directory <paramref name="ino"/>'s listing ends now: the position its next entry will get.</summary>
    public Errno DirEnd(long ino, out long end)
    {
        end = 0;
        if (Stale) return Errno.ESTALE;
        try { return _e.DirEnd(_tree, ino, out end); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Readlink(long ino, out string target)
    {
        target = "";
        if (Stale) return Errno.ESTALE;
        try { return _e.Readlink(_tree, ino, out target); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Read(long ino, long offset, Span<byte> buffer, out int count)
    {
        count = 0;
        if (Stale) return Errno.ESTALE;
        try { return _e.Read(_tree, ino, offset, buffer, out count); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>
    /// Reads up to <paramref name="size"/> bytes (at most <paramref name="into"/>'s capacity) into
    /// <paramref name="into"/>, letting devices lend bytes they hold in memory instead of copying them into its
    /// scratch buffer: the read is <paramref name="into"/>'s segments, <paramref name="count"/> bytes. Release
    /// <paramref name="into"/> when done with them, whatever the result.
    /// </summary>
    public unsafe Errno ReadInto(long ino, long offset, int size, ReadSegments into, out int count)
    {
        count = 0;
        if (Stale) { into.Reset(); return Errno.ESTALE; }
        var scratch = new Span<byte>(into.Scratch, Math.Clamp(size, 0, into.Capacity));
        try { return _e.Read(_tree, ino, offset, scratch, out count, into); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>
    /// A read of <paramref name="ino"/> happened (a READ, or a listing of a directory): its atime becomes now
    /// when <paramref name="policy"/> says so (<see cref="AtimePolicy"/>). A metadata change riding the group
    /// commit; nothing at all on a snapshot, or when the policy finds atime recent enough.
    /// </summary>
    public Errno Accessed(long ino, AtimePolicy policy)
    {
        if (ReadOnly || policy == AtimePolicy.Noatime) return 0;
        if (Stale) return Errno.ESTALE;
        try
        {
            var e = _e.NoteAccess(ino, policy, out bool updated);
            if (updated) _e.MaybeCommit();
            return e;
        }
        catch (IOException e) { return IoFailed(e); }
    }

    public Errno GetXattr(long ino, string name, out byte[] value)
    {
        value = Array.Empty<byte>();
        if (Stale) return Errno.ESTALE;
        try { return _e.GetXattr(_tree, ino, name, out value); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno ListXattr(long ino, out List<string> names)
    {
        names = new List<string>();
        if (Stale) return Errno.ESTALE;
        try { return _e.ListXattr(_tree, ino, out names); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Seek(long ino, long offset, SeekWhence whence, out long result)
    {
        result = 0;
        if (Stale) return Errno.ESTALE;
        try { return _e.Seek(_tree, ino, offset, whence, out result); } catch (IOException e) { return IoFailed(e); }
    }

    public FsStats StatFs() => _e.StatFs();

    public Errno IomapBegin(long ino, long pos, long count, IomapOp op, out IomapPair pair)
    {
        pair = default;
        if (Stale) return Errno.ESTALE;
        try
        {
            var e = _e.IomapBegin(_tree, ino, pos, count, op, out pair);
            // The caller (the kernel) reads the read mapping's blocks itself: Cow's own writes to them must be on the device.
            if (e == 0) _e.SettleForExternalIo(pair.Read);
            return e;
        }
        catch (IOException e) { return IoFailed(e); }
    }

    // changes (EROFS on a snapshot)

    // Create, Mknod and Mkdir: the new inode inherits the parent's default ACL, which limits the mode; without
    // one, <umask> clears mode bits (FUSE passes the caller's umask with FUSE_DONT_MASK). Symlinks have neither.
    public Errno Create(long parent, string name, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.MakeNode(parent, name, (mode & 0xFFF) | 0x8000, 0, uid, gid, null, out attr, umask)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Mknod(long parent, string name, uint mode, ulong rdev, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        if (ReadOnly) return Errno.EROFS;
        if ((mode & 0xF000) == 0x4000) return Errno.EPERM;   // mknod(2) does not make directories
        if ((mode & 0xF000) == 0xA000) return Errno.EINVAL;  // nor symbolic links
        try { return Changed(_e.MakeNode(parent, name, mode, rdev, uid, gid, null, out attr, umask)); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>open(O_TMPFILE): a regular file with no name and nlink 0, already counted open (pair with
    /// <see cref="Release"/>); <see cref="Link"/> may name it.</summary>
    public Errno MakeTmpfile(long parent, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.MakeTmpfile(parent, mode, uid, gid, out attr, umask)); } catch (IOException e) { return IoFailed(e); }
    }

        public Errno Mkdir(long parent, string name, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.MakeNode(parent, name, (mode & 0xFFF) | 0x4000, 0, uid, gid, null, out attr, umask)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Symlink(long parent, string name, string target, uint uid, uint gid, out InodeAttr attr)
    {
        attr = default;
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.MakeNode(parent, name, 0xA000 | 0x1FF, 0, uid, gid, target, out attr)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Link(long ino, long newParent, string newName, out InodeAttr attr)
    {
        attr = default;
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.Link(ino, newParent, newName, out attr)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Unlink(long parent, string name)
    {
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.Unlink(parent, name)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Rmdir(long parent, string name)
    {
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.Rmdir(parent, name)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Rename(long parent, string name, long newParent, string newName, RenameFlags flags = RenameFlags.None)
    {
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.Rename(parent, name, newParent, newName, flags)); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>renameat2(RENAME_WHITEOUT [| RENAME_NOREPLACE]): the rename and a whiteout (a 0/0 character
    /// device owned by <paramref name="uid"/>:<paramref name="gid"/>) at the source name, in one change.</summary>
    public Errno RenameWhiteout(long parent, string name, long newParent, string newName, bool noReplace, uint uid, uint gid)
    {
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.RenameWhiteout(parent, name, newParent, newName, noReplace, uid, gid)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno SetAttr(long ino, SetAttrRequest req, out InodeAttr attr)
    {
        attr = default;
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.SetAttr(ino, req, out attr)); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>open(2): <paramref name="writable"/> opens on a snapshot are EROFS. Pair with <see cref="Release"/>.</summary>
    public Errno Open(long ino, bool writable)
    {
        if (ReadOnly) return writable ? Errno.EROFS : GetAttr(ino, out _);
        try { return _e.Open(ino); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno Release(long ino)
    {
        if (ReadOnly) return 0;
        try { return _e.Release(ino); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>write(2). <paramref name="touchTimes"/> false leaves mtime/ctime alone: a FUSE kernel with its
    /// writeback cache keeps the times of the files it writes and sends them with a setattr.</summary>
    public Errno Write(long ino, long offset, ReadOnlySpan<byte> data, out int written, bool append = false, bool touchTimes = true)
    {
        written = 0;
        if (ReadOnly) return Errno.EROFS;
        try { return _e.Write(ino, offset, data, append, out written, touchTimes); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>fsync / fdatasync / syncfs: every change so far becomes durable (one group commit).</summary>
    public Errno Fsync(long ino)
    {
        if (ReadOnly) return 0;
        try { _e.Commit(); return 0; }
        catch (IOException e) { return IoFailed(e); }
        catch (ObjectDisposedException) { return Errno.EIO; }
    }

    public Errno Fallocate(long ino, FallocateMode mode, long offset, long length)
    {
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.Fallocate(ino, mode, offset, length)); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>copy_file_range(2) within this view (EROFS on a snapshot): see <see cref="Engine.Engine.CloneRange"/>.
    /// Mutually block-aligned whole blocks are shared with the source (reflink), the rest is copied.</summary>
    public Errno CopyFileRange(long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied)
    {
        copied = 0;
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.CloneRange(srcIno, srcOffset, dstIno, dstOffset, length, out copied)); } catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>copy_file_range(2) from file <paramref name="srcIno"/> of <paramref name="source"/> (this view, or
    /// a snapshot of the same pool) into file <paramref name="dstIno"/> of this view (EROFS unless this is the
    /// live tree; EXDEV when <paramref name="source"/> belongs to another pool; ESTALE when its snapshot was
    /// deleted). Blocks are shared as <see cref="CopyFileRange(long, long, long, long, long, out long)"/> shares
    /// them, so restoring a file from <c>.snapshots</c> with cp takes no new space.</summary>
    public Errno CopyFileRange(FileSystemView source, long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied)
    {
        copied = 0;
        if (ReadOnly) return Errno.EROFS;
        if (!ReferenceEquals(source._e, _e)) return Errno.EXDEV;
        if (source.Stale) return Errno.ESTALE;
        try { return Changed(_e.CloneRange(source._tree, srcIno, srcOffset, dstIno, dstOffset, length, out copied)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno SetXattr(long ino, string name, byte[] value, XattrSetFlags flags = XattrSetFlags.None)
    {
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.SetXattr(ino, name, value, flags)); } catch (IOException e) { return IoFailed(e); }
    }

    public Errno RemoveXattr(long ino, string name)
    {
        if (ReadOnly) return Errno.EROFS;
        try { return Changed(_e.RemoveXattr(ino, name)); } catch (IOException e) { return IoFailed(e); }
    }

    // ------------------------------------------------------------------ path helpers (CLI, tests)

    /// <summary>Resolves an absolute path ("/a/b") without following a final symlink.</summary>
    public Errno Resolve(string path, out InodeAttr attr)
    {
        attr = default;
        long ino = RootIno;
        var e = GetAttr(ino, out attr);
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (e != 0) return e;
            e = Lookup(ino, part, out attr);
            ino = attr.Ino;
        }
        return e;
    }

    /// <summary>Resolves the parent directory of <paramref name="path"/> and returns its last name.</summary>
    public Errno ResolveParent(string path, out long parent, out string name)
    {
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        parent = RootIno; name = parts.Length > 0 ? parts[^1] : "";
        if (parts.Length == 0) return Errno.EINVAL;
        var e = Resolve("/" + string.Join('/', parts[..^1]), out var attr);
        parent = attr.Ino;
        return e != 0 ? e : attr.IsDirectory ? 0 : Errno.ENOTDIR;
    }
}
