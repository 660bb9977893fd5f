using Cow.Core.Devices;
using Cow.Core.Engine;
using Mono.Unix.Native;

namespace Cow.Core.FileSystem;

/// <summary>
/// The inode API over one tree: the live tree (read-write) or a snapshot (read-only: every change is
/// EROFS). Every call returns an errno (0 = success): an I/O failure under the engine is EIO, in one place
/// (<see cref="Run{TArgs}"/>); exceptions mean corruption or a bug. This is what Cow.Fuse calls. Owns nothing
/// (the pool owns the engine and the tree). Threading: thread-safe (the engine locks).
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

    /// <summary>True once this view's snapshot has been deleted: every call then fails with ESTALE.</summary>
    public bool Stale => _tree.Gone;

    // ------------------------------------------------------------------ the one errno convention
    // Every engine call goes through Run, so no operation can forget it: an IOException under the engine (a dead
    // device, a failed commit) becomes EIO and is reported once through the engine's Problem event; the errno
    // API never throws for I/O. Query adds ESTALE on a deleted snapshot; Change adds EROFS on a snapshot and a
    // group commit (MaybeCommit, inside the guard) after a success. Operations are static lambdas that take
    // their arguments by `in` (a tuple, or a ref struct when a span rides along) and write their result through
    // the caller's own variable, so no call allocates.

    private delegate Errno Op<TArgs>(Engine.Engine engine, ITreeReader tree, in TArgs args)
        where TArgs : allows ref struct;
    private delegate Errno Op<TArgs, TResult>(Engine.Engine engine, ITreeReader tree, in TArgs args, out TResult result)
        where TArgs : allows ref struct;

    private Errno Run<TArgs>(in TArgs args, Op<TArgs> op, bool commit = false) where TArgs : allows ref struct
    {
        try
        {
            var e = op(_e, _tree, in args);
            if (commit && e == 0) _e.MaybeCommit();
            return e;
        }
        catch (IOException e) { return IoFailed(e); }
    }

    /// <summary>As <see cref="Run{TArgs}"/>; <paramref name="result"/> keeps the caller's initial value when
    /// the operation throws before setting it.</summary>
    private Errno Run<TArgs, TResult>(in TArgs args, ref TResult result, Op<TArgs, TResult> op, bool commit = false)
        where TArgs : allows ref struct
    {
        try
        {
            var e = op(_e, _tree, in args, out result);
            if (commit && e == 0) _e.MaybeCommit();
            return e;
        }
        catch (IOException e) { return IoFailed(e); }
    }

    private Errno IoFailed(IOException e)
    {
        _e.ReportIoFailure(e);
        return Errno.EIO;
    }

    /// <summary>A read: ESTALE once the snapshot is gone.</summary>
    private Errno Query<TArgs>(in TArgs args, Op<TArgs> op) where TArgs : allows ref struct =>
        Stale ? Errno.ESTALE : Run(in args, op);

    private Errno Query<TArgs, TResult>(in TArgs args, ref TResult result, Op<TArgs, TResult> op) where TArgs : allows ref struct =>
        Stale ? Errno.ESTALE : Run(in args, ref result, op);

    /// <summary>A change: EROFS on a snapshot; a success may start a group commit.</summary>
    private Errno Change<TArgs>(in TArgs args, Op<TArgs> op) where TArgs : allows ref struct =>
        Unchangeable ? Errno.EROFS : Run(in args, op, commit: true);

    private Errno Change<TArgs, TResult>(in TArgs args, ref TResult result, Op<TArgs, TResult> op) where TArgs : allows ref struct =>
        Unchangeable ? Errno.EROFS : Run(in args, ref result, op, commit: true);

    /// <summary>A snapshot, or the live tree while a stream is being received into the pool (format.md 10.5): its
    /// staged versions take the place of live ones at the end, so the live tree does not change meanwhile.</summary>
    private bool Unchangeable => ReadOnly || _e.ReceivePending;

    /// <summary>The arguments of a read into a span (<see cref="Read"/>, <see cref="ReadInto"/>).</summary>
    private readonly ref struct ReadArgs(long ino, long offset, Span<byte> buffer, ReadSegments? lend)
    {
        public readonly long Ino = ino, Offset = offset;
        public readonly Span<byte> Buffer = buffer;
        public readonly ReadSegments? Lend = lend;
    }

    /// <summary>The arguments of <see cref="Write"/>.</summary>
    private readonly ref struct WriteArgs(long ino, long offset, ReadOnlySpan<byte> data, bool append, bool touchTimes)
    {
        public readonly long Ino = ino, Offset = offset;
        public readonly ReadOnlySpan<byte> Data = data;
        public readonly bool Append = append, TouchTimes = touchTimes;
    }

    // read-only operations
    public Errno GetAttr(long ino, out InodeAttr attr)
    {
        attr = default;
        return Query(ino, ref attr, static (e, t, in ino, out attr) => e.GetAttr(t, ino, out attr));
    }

    public Errno Lookup(long parent, string name, out InodeAttr attr)
    {
        attr = default;
        return Query((parent, name), ref attr, static (e, t, in a, out attr) => e.Lookup(t, a.parent, a.name, out attr));
    }

    /// <summary>readdir: up to <paramref name="max"/> entries after <paramref name="offset"/> whose position is
    /// below <paramref name="before"/> (a pass that takes <see cref="DirEnd"/> when it starts and passes it here
    /// never lists an entry twice, whatever renames run meanwhile).</summary>
    public Errno ReadDir(long ino, long offset, int max, List<DirEntryInfo> into, long before = long.MaxValue) =>
        Query((ino, offset, max, into, before), static (e, t, in a) => e.ReadDir(t, a.ino, a.offset, a.max, a.into, a.before));

    /// <summary>Where directory <paramref name="ino"/>'s listing ends now: the position its next entry will get.</summary>
    public Errno DirEnd(long ino, out long end)
    {
        end = 0;
        return Query(ino, ref end, static (e, t, in ino, out end) => e.DirEnd(t, ino, out end));
    }

    public Errno Readlink(long ino, out string target)
    {
        target = "";
        return Query(ino, ref target, static (e, t, in ino, out target) => e.Readlink(t, ino, out target));
    }

    public Errno Read(long ino, long offset, Span<byte> buffer, out int count)
    {
        count = 0;
        return Query(new ReadArgs(ino, offset, buffer, null), ref count,
            static (e, t, in a, out count) => e.Read(t, a.Ino, a.Offset, a.Buffer, out count));
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
        return Run(new ReadArgs(ino, offset, scratch, into), ref count,
            static (e, t, in a, out count) => e.Read(t, a.Ino, a.Offset, a.Buffer, out count, a.Lend));
    }

    /// <summary>
    /// A read of <paramref name="ino"/> happened (a READ, or a listing of a directory): its atime becomes now
    /// when <paramref name="policy"/> says so (<see cref="AtimePolicy"/>). A metadata change riding the group
    /// commit; nothing at all on a snapshot, or when the policy finds atime recent enough.
    /// </summary>
    public Errno Accessed(long ino, AtimePolicy policy)
    {
        if (Unchangeable || policy == AtimePolicy.Noatime) return 0;
        return Query((ino, policy), static (e, _, in a) =>
        {
            var err = e.NoteAccess(a.ino, a.policy, out bool updated);
            if (updated) e.MaybeCommit();
            return err;
        });
    }

    public Errno GetXattr(long ino, string name, out byte[] value)
    {
        value = Array.Empty<byte>();
        return Query((ino, name), ref value, static (e, t, in a, out value) => e.GetXattr(t, a.ino, a.name, out value));
    }

    public Errno ListXattr(long ino, out List<string> names)
    {
        names = new List<string>();
        return Query(ino, ref names, static (e, t, in ino, out names) => e.ListXattr(t, ino, out names));
    }

    public Errno Seek(long ino, long offset, SeekWhence whence, out long result)
    {
        result = 0;
        return Query((ino, offset, whence), ref result,
            static (e, t, in a, out result) => e.Seek(t, a.ino, a.offset, a.whence, out result));
    }

    /// <summary>statfs: figures the engine keeps in memory (no I/O, so no guard).</summary>
    public FsStats StatFs() => _e.StatFs();

    public Errno IomapBegin(long ino, long pos, long count, IomapOp op, out IomapPair pair)
    {
        pair = default;
        return Query((ino, pos, count, op), ref pair, static (e, t, in a, out pair) =>
        {
            var err = e.IomapBegin(t, a.ino, a.pos, a.count, a.op, out pair);
            // The caller (the kernel) reads the read mapping's blocks itself: Cow's own writes to them must be on the device.
            if (err == 0) e.SettleForExternalIo(pair.Read);
            return err;
        });
    }

    // changes (EROFS on a snapshot)

    // Create, Mknod and Mkdir: the new inode inherits the parent's default ACL, which limits the mode; without
    // one, <umask> clears mode bits (FUSE passes the caller's umask with FUSE_DONT_MASK). Symlinks have neither.
    public Errno Create(long parent, string name, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        return Change((parent, name, mode, uid, gid, umask), ref attr, static (e, _, in a, out attr) =>
            e.MakeNode(a.parent, a.name, (a.mode & 0xFFF) | 0x8000, 0, a.uid, a.gid, null, out attr, a.umask));
    }

    public Errno Mknod(long parent, string name, uint mode, ulong rdev, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        return Change((parent, name, mode, rdev, uid, gid, umask), ref attr, static (e, _, in a, out attr) =>
        {
            attr = default;
            if ((a.mode & 0xF000) == 0x4000) return Errno.EPERM;   // mknod(2) does not make directories
            if ((a.mode & 0xF000) == 0xA000) return Errno.EINVAL;  // nor symbolic links
            return e.MakeNode(a.parent, a.name, a.mode, a.rdev, a.uid, a.gid, null, out attr, a.umask);
        });
    }

    /// <summary>open(O_TMPFILE): a regular file with no name and nlink 0, already counted open (pair with
    /// <see cref="Release"/>); <see cref="Link"/> may name it.</summary>
    public Errno MakeTmpfile(long parent, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        return Change((parent, mode, uid, gid, umask), ref attr,
            static (e, _, in a, out attr) => e.MakeTmpfile(a.parent, a.mode, a.uid, a.gid, out attr, a.umask));
    }

    public Errno Mkdir(long parent, string name, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        return Change((parent, name, mode, uid, gid, umask), ref attr, static (e, _, in a, out attr) =>
            e.MakeNode(a.parent, a.name, (a.mode & 0xFFF) | 0x4000, 0, a.uid, a.gid, null, out attr, a.umask));
    }

    public Errno Symlink(long parent, string name, string target, uint uid, uint gid, out InodeAttr attr)
    {
        attr = default;
        return Change((parent, name, target, uid, gid), ref attr, static (e, _, in a, out attr) =>
            e.MakeNode(a.parent, a.name, 0xA000 | 0x1FF, 0, a.uid, a.gid, a.target, out attr));
    }

    public Errno Link(long ino, long newParent, string newName, out InodeAttr attr)
    {
        attr = default;
        return Change((ino, newParent, newName), ref attr,
            static (e, _, in a, out attr) => e.Link(a.ino, a.newParent, a.newName, out attr));
    }

    public Errno Unlink(long parent, string name) =>
        Change((parent, name), static (e, _, in a) => e.Unlink(a.parent, a.name));

    public Errno Rmdir(long parent, string name) =>
        Change((parent, name), static (e, _, in a) => e.Rmdir(a.parent, a.name));

    public Errno Rename(long parent, string name, long newParent, string newName, RenameFlags flags = RenameFlags.None) =>
        Change((parent, name, newParent, newName, flags),
            static (e, _, in a) => e.Rename(a.parent, a.name, a.newParent, a.newName, a.flags));

    /// <summary>renameat2(RENAME_WHITEOUT [| RENAME_NOREPLACE]): the rename and a whiteout (a 0/0 character
    /// device owned by <paramref name="uid"/>:<paramref name="gid"/>) at the source name, in one change.</summary>
    public Errno RenameWhiteout(long parent, string name, long newParent, string newName, bool noReplace, uint uid, uint gid) =>
        Change((parent, name, newParent, newName, noReplace, uid, gid),
            static (e, _, in a) => e.RenameWhiteout(a.parent, a.name, a.newParent, a.newName, a.noReplace, a.uid, a.gid));

    public Errno SetAttr(long ino, SetAttrRequest req, out InodeAttr attr)
    {
        attr = default;
        return Change((ino, req), ref attr, static (e, _, in a, out attr) => e.SetAttr(a.ino, a.req, out attr));
    }

    /// <summary>open(2): <paramref name="writable"/> opens on a snapshot are EROFS. Pair with <see cref="Release"/>.</summary>
    public Errno Open(long ino, bool writable)
    {
        if (ReadOnly) return writable ? Errno.EROFS : GetAttr(ino, out _);
        if (writable && _e.ReceivePending) return Errno.EROFS;
        return Run(ino, static (e, _, in ino) => e.Open(ino));
    }

    public Errno Release(long ino)
    {
        if (ReadOnly) return 0;
        return Run(ino, static (e, _, in ino) => e.Release(ino));
    }

    /// <summary>write(2). <paramref name="touchTimes"/> false leaves mtime/ctime alone: a FUSE kernel with its
    /// writeback cache keeps the times of the files it writes and sends them with a setattr.</summary>
    public Errno Write(long ino, long offset, ReadOnlySpan<byte> data, out int written, bool append = false, bool touchTimes = true)
    {
        written = 0;
        if (Unchangeable) return Errno.EROFS;
        // The engine's write path starts its own group commits.
        return Run(new WriteArgs(ino, offset, data, append, touchTimes), ref written,
            static (e, _, in a, out written) => e.Write(a.Ino, a.Offset, a.Data, a.Append, out written, a.TouchTimes));
    }

    /// <summary>fsync / fdatasync / syncfs: every change so far becomes durable (one group commit).</summary>
    public Errno Fsync(long ino)
    {
        if (ReadOnly) return 0;
        return Run(ino, static (e, _, in _) =>
        {
            try { e.Commit(); return 0; }
            catch (ObjectDisposedException) { return Errno.EIO; }   // the pool closed under a late fsync
        });
    }

    public Errno Fallocate(long ino, FallocateMode mode, long offset, long length) =>
        Change((ino, mode, offset, length), static (e, _, in a) => e.Fallocate(a.ino, a.mode, a.offset, a.length));

    /// <summary>copy_file_range(2) within this view (EROFS on a snapshot): see <see cref="Engine.Engine.CloneRange"/>.
    /// Mutually block-aligned whole blocks are shared with the source (reflink), the rest is copied.</summary>
    public Errno CopyFileRange(long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied)
    {
        copied = 0;
        return Change((srcIno, srcOffset, dstIno, dstOffset, length), ref copied, static (e, _, in a, out copied) =>
            e.CloneRange(a.srcIno, a.srcOffset, a.dstIno, a.dstOffset, a.length, out copied));
    }

    /// <summary>copy_file_range(2) from file <paramref name="srcIno"/> of <paramref name="source"/> (this view, or
    /// a snapshot of the same pool) into file <paramref name="dstIno"/> of this view (EROFS unless this is the
    /// live tree; EXDEV when <paramref name="source"/> belongs to another pool; ESTALE when its snapshot was
    /// deleted). Blocks are shared as <see cref="CopyFileRange(long, long, long, long, long, out long)"/> shares
    /// them, so restoring a file from <c>.snapshots</c> with cp takes no new space.</summary>
    public Errno CopyFileRange(FileSystemView source, long srcIno, long srcOffset, long dstIno, long dstOffset, long length, out long copied)
    {
        copied = 0;
        return Change((source, srcIno, srcOffset, dstIno, dstOffset, length), ref copied, static (e, _, in a, out copied) =>
        {
            copied = 0;
            if (!ReferenceEquals(a.source._e, e)) return Errno.EXDEV;
            if (a.source.Stale) return Errno.ESTALE;
            return e.CloneRange(a.source._tree, a.srcIno, a.srcOffset, a.dstIno, a.dstOffset, a.length, out copied);
        });
    }

    public Errno SetXattr(long ino, string name, byte[] value, XattrSetFlags flags = XattrSetFlags.None) =>
        Change((ino, name, value, flags), static (e, _, in a) => e.SetXattr(a.ino, a.name, a.value, a.flags));

    public Errno RemoveXattr(long ino, string name) =>
        Change((ino, name), static (e, _, in a) => e.RemoveXattr(a.ino, a.name));

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
