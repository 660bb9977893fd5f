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

    private Errno Rw(Func<Errno> change)
    {
        if (_tree.ReadOnly) return Errno.EROFS;
        var e = change();
        if (e == 0) _e.MaybeCommit();
        return e;
    }

    /// <summary>True once this view's snapshot has been deleted: every call then fails with ESTALE.</summary>
    public bool Stale => _tree.Gone;

    // read-only operations
    public Errno GetAttr(long ino, out InodeAttr attr) { attr = default; return Stale ? Errno.ESTALE : _e.GetAttr(_tree, ino, out attr); }
    public Errno Lookup(long parent, string name, out InodeAttr attr) { attr = default; return Stale ? Errno.ESTALE : _e.Lookup(_tree, parent, name, out attr); }
    public Errno ReadDir(long ino, long offset, int max, List<DirEntryInfo> into) => Stale ? Errno.ESTALE : _e.ReadDir(_tree, ino, offset, max, into);
    public Errno Readlink(long ino, out string target) { target = ""; return Stale ? Errno.ESTALE : _e.Readlink(_tree, ino, out target); }
    public Errno Read(long ino, long offset, Span<byte> buffer, out int count) { count = 0; return Stale ? Errno.ESTALE : _e.Read(_tree, ino, offset, buffer, out count); }
    public Errno GetXattr(long ino, string name, out byte[] value) => _e.GetXattr(_tree, ino, name, out value);
    public Errno ListXattr(long ino, out List<string> names) => _e.ListXattr(_tree, ino, out names);
    public Errno Seek(long ino, long offset, SeekWhence whence, out long result) => _e.Seek(_tree, ino, offset, whence, out result);
    public FsStats StatFs() => _e.StatFs();
    public Errno IomapBegin(long ino, long pos, long count, IomapOp op, out IomapPair pair) => _e.IomapBegin(_tree, ino, pos, count, op, out pair);

    // changes
    public Errno Create(long parent, string name, uint mode, uint uid, uint gid, out InodeAttr attr)
    {
        InodeAttr a = default;
        var e = Rw(() => _e.MakeNode(parent, name, (mode & 0xFFF) | 0x8000, 0, uid, gid, null, out a));
        attr = a; return e;
    }

    public Errno Mknod(long parent, string name, uint mode, ulong rdev, uint uid, uint gid, out InodeAttr attr)
    {
        InodeAttr a = default;
        // mknod(2): a directory is EPERM (mkdir makes those), a symlink EINVAL (symlink makes those)
        var e = Rw(() => (mode & 0xF000) switch
        {
            0x4000 => Errno.EPERM,
            0xA000 => Errno.EINVAL,
            _ => _e.MakeNode(parent, name, mode, rdev, uid, gid, null, out a),
        });
        attr = a; return e;
    }

    public Errno Mkdir(long parent, string name, uint mode, uint uid, uint gid, out InodeAttr attr)
    {
        InodeAttr a = default;
        var e = Rw(() => _e.MakeNode(parent, name, (mode & 0xFFF) | 0x4000, 0, uid, gid, null, out a));
        attr = a; return e;
    }

    public Errno Symlink(long parent, string name, string target, uint uid, uint gid, out InodeAttr attr)
    {
        InodeAttr a = default;
        var e = Rw(() => _e.MakeNode(parent, name, 0xA000 | 0x1FF, 0, uid, gid, target, out a));
        attr = a; return e;
    }

    public Errno Link(long ino, long newParent, string newName, out InodeAttr attr)
    {
        InodeAttr a = default;
        var e = Rw(() => _e.Link(ino, newParent, newName, out a));
        attr = a; return e;
    }

    public Errno Unlink(long parent, string name) => Rw(() => _e.Unlink(parent, name));
    public Errno Rmdir(long parent, string name) => Rw(() => _e.Rmdir(parent, name));
    public Errno Rename(long parent, string name, long newParent, string newName, RenameFlags flags = RenameFlags.None)
        => Rw(() => _e.Rename(parent, name, newParent, newName, flags));

    public Errno SetAttr(long ino, SetAttrRequest req, out InodeAttr attr)
    {
        InodeAttr a = default;
        var e = Rw(() => _e.SetAttr(ino, req, out a));
        attr = a; return e;
    }

    /// <summary>open(2): <paramref name="writable"/> opens on a snapshot are EROFS. Pair with <see cref="Release"/>.</summary>
    public Errno Open(long ino, bool writable)
    {
        if (_tree.ReadOnly) return writable ? Errno.EROFS : GetAttr(ino, out _);
        return _e.Open(ino);
    }

    public Errno Release(long ino) => _tree.ReadOnly ? 0 : _e.Release(ino);

    public Errno Write(long ino, long offset, ReadOnlySpan<byte> data, out int written, bool append = false)
    {
        written = 0;
        if (_tree.ReadOnly) return Errno.EROFS;
        return _e.Write(ino, offset, data, append, out written);
    }

    /// <summary>fsync / fdatasync / syncfs: every change so far becomes durable (one group commit).</summary>
    public Errno Fsync(long ino)
    {
        if (_tree.ReadOnly) return 0;
        try { _e.Commit(); return 0; }
        catch (IOException) { return Errno.EIO; }
    }

    public Errno Fallocate(long ino, FallocateMode mode, long offset, long length) => Rw(() => _e.Fallocate(ino, mode, offset, length));

    public Errno SetXattr(long ino, string name, byte[] value, XattrSetFlags flags = XattrSetFlags.None)
        => Rw(() => _e.SetXattr(ino, name, value, flags));

    public Errno RemoveXattr(long ino, string name) => Rw(() => _e.RemoveXattr(ino, name));

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
