using Cow.Core.FileSystem;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

/// <summary>
/// <see cref="IPosixTarget"/> over the inode API (<see cref="FileSystemView"/>) of a fresh pool on memory devices
/// (<see cref="MemoryPool"/>): paths are resolved by lookups from the root inode, following symlinks as the
/// kernel's path walk does (40 at most, then ELOOP), and open(2)'s flags are applied here as the VFS applies
/// them before it calls a file system, as are a descriptor's access mode checks: that emulation is the kernel's
/// part, every other answer is the engine's. Paths under "@snapshot/NAME/" are resolved in snapshot NAME's view.
/// The caller is uid 1000, gid 100 (not root, so a case cannot confuse the caller's ids with root's). Owns its
/// pool. Not thread-safe.
/// </summary>
public sealed class EnginePosixTarget : IPosixTarget
{
    private const int MaxSymlinkFollows = 40;
    private readonly MemoryPool _pool = new();

    public string Name => "engine";
    public uint Uid => 1000;
    public uint Gid => 100;
    public uint Umask { get; } = PosixTargets.ProcessUmask();
    /// <summary>The tree the path of the call being served is in: a snapshot's for a path under
    /// <see cref="SnapshotPrefix"/>, else the live tree (set by <see cref="Resolve"/> and <see cref="Parent"/>).</summary>
    private FileSystemView? _view;
    private FileSystemView Fs => _view ?? _pool.Live;
    private long Root => Fs.RootIno;

    /// <summary>"@snapshot/NAME/path" is path in snapshot NAME: the form <see cref="Snapshot"/> answers.</summary>
    private const string SnapshotPrefix = "@snapshot/";

    /// <summary>The tree <paramref name="path"/> is in; <paramref name="path"/> loses the snapshot prefix.</summary>
    private FileSystemView ViewOf(ref string path)
    {
        if (!path.StartsWith(SnapshotPrefix, StringComparison.Ordinal)) return _pool.Live;
        var rest = path[SnapshotPrefix.Length..];
        int slash = rest.IndexOf('/');
        string name = slash < 0 ? rest : rest[..slash];
        path = slash < 0 ? "" : rest[(slash + 1)..];
        return _pool.Pool.Snapshot(name) ?? throw new ArgumentException($"no snapshot {name}");
    }

    public string Snapshot(string name)
    {
        var e = _pool.Engine.CreateSnapshot(name, out _);
        if (e != 0) throw new IOException($"snapshot {name}: {e}");
        return SnapshotPrefix + name;
    }

    public void DeleteSnapshot(string name)
    {
        var e = _pool.Engine.DeleteSnapshot(name);
        if (e != 0) throw new IOException($"delete snapshot {name}: {e}");
    }

    public string AbsolutePath(string path) => "/" + path.TrimStart('/');

    // ---------------------------------------------------------------- the path walk

    /// <summary>Resolves <paramref name="path"/> from <paramref name="start"/> (absolute paths from the root),
    /// following every symlink on the way and the last one too when <paramref name="followLast"/>.</summary>
    private Errno Walk(long start, string path, bool followLast, ref int follows, out InodeAttr attr)
    {
        var e = Fs.GetAttr(path.StartsWith('/') ? Root : start, out attr);
        if (e != 0) return e;
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < parts.Length; i++)
        {
            if (!attr.IsDirectory) return Errno.ENOTDIR;
            long dir = attr.Ino;
            e = Fs.Lookup(dir, parts[i], out attr);
            if (e != 0) return e;
            if (attr.IsSymlink && (i < parts.Length - 1 || followLast))
            {
                if (++follows > MaxSymlinkFollows) return Errno.ELOOP;
                e = Fs.Readlink(attr.Ino, out var target);
                if (e != 0) return e;
                e = Walk(dir, target, followLast: true, ref follows, out attr);
                if (e != 0) return e;
            }
        }
        return 0;
    }

    /// <summary>Resolves <paramref name="path"/> in its tree, which becomes the tree of this call.</summary>
    private Errno Resolve(string path, bool follow, out InodeAttr attr)
    {
        _view = ViewOf(ref path);
        int follows = 0;
        return Walk(Root, path, follow, ref follows, out attr);
    }

    /// <summary>The directory that holds <paramref name="path"/>'s last name, and that name; its tree becomes
    /// the tree of this call.</summary>
    private Errno Parent(string path, out long dir, out string name)
    {
        _view = ViewOf(ref path);
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        dir = Root;
        name = parts.Length == 0 ? "" : parts[^1];
        if (parts.Length == 0) return Errno.ENOENT;
        int follows = 0;
        var e = Walk(Root, string.Join('/', parts[..^1]), followLast: true, ref follows, out var a);
        if (e != 0) return e;
        dir = a.Ino;
        return a.IsDirectory ? 0 : Errno.ENOTDIR;
    }

    internal static PosixStat ToStat(in InodeAttr a) => new(a.Ino, a.Mode, a.Nlink, a.Uid, a.Gid, a.Rdev, a.Size, a.Blocks512,
        a.BlockSize, a.AtimeNs, a.MtimeNs, a.CtimeNs, a.BtimeNs);

    // ---------------------------------------------------------------- IPosixTarget

    public Errno Stat(string path, out PosixStat st)
    {
        var e = Resolve(path, follow: true, out var a);
        st = e == 0 ? ToStat(a) : default;
        return e;
    }

    public Errno Lstat(string path, out PosixStat st)
    {
        var e = Resolve(path, follow: false, out var a);
        st = e == 0 ? ToStat(a) : default;
        return e;
    }

    public Errno Mkdir(string path, uint mode) =>
        Parent(path, out long dir, out string name) is var e && e != 0 ? e : Fs.Mkdir(dir, name, mode, Uid, Gid, out _, Umask);

    public Errno Mknod(string path, uint mode, ulong rdev) =>
        Parent(path, out long dir, out string name) is var e && e != 0 ? e : Fs.Mknod(dir, name, mode, rdev, Uid, Gid, out _, Umask);

    public Errno Symlink(string target, string path) =>
        Parent(path, out long dir, out string name) is var e && e != 0 ? e : Fs.Symlink(dir, name, target, Uid, Gid, out _);

    public Errno Readlink(string path, out string target)
    {
        target = "";
        var e = Resolve(path, follow: false, out var a);
        return e != 0 ? e : Fs.Readlink(a.Ino, out target);
    }

    public Errno Link(string from, string to)
    {
        var e = Resolve(from, follow: false, out var a);   // link(2) does not follow the last symlink of its source
        if (e != 0) return e;
        var source = Fs;
        e = Parent(to, out long dir, out string name);
        return e != 0 ? e : source.SnapshotName != Fs.SnapshotName ? Errno.EXDEV : Fs.Link(a.Ino, dir, name, out _);
    }

    public Errno Unlink(string path) =>
        Parent(path, out long dir, out string name) is var e && e != 0 ? e : Fs.Unlink(dir, name);

    public Errno Rmdir(string path) =>
        Parent(path, out long dir, out string name) is var e && e != 0 ? e : Fs.Rmdir(dir, name);

    public Errno Rename(string from, string to, RenameFlags flags = RenameFlags.None)
    {
        var e = Parent(from, out long d1, out string n1);
        if (e != 0) return e;
        var source = Fs;
        e = Parent(to, out long d2, out string n2);
        return e != 0 ? e : source.SnapshotName != Fs.SnapshotName ? Errno.EXDEV : Fs.Rename(d1, n1, d2, n2, flags);
    }

    private Errno SetAttr(string path, bool follow, SetAttrRequest req)
    {
        var e = Resolve(path, follow, out var a);
        return e != 0 ? e : Fs.SetAttr(a.Ino, req, out _);
    }

    public Errno Chmod(string path, uint mode) => SetAttr(path, true, new SetAttrRequest { Mode = mode });

    public Errno Chown(string path, uint uid, uint gid) => SetAttr(path, true, new SetAttrRequest
    {
        Uid = uid == uint.MaxValue ? null : uid,
        Gid = gid == uint.MaxValue ? null : gid,
    });

    public Errno Utimens(string path, PosixTime atime, PosixTime mtime, bool noFollow = false) => SetAttr(path, !noFollow, new SetAttrRequest
    {
        AtimeNs = atime.IsNow || atime.IsOmit ? null : atime.Ns,
        AtimeNow = atime.IsNow,
        MtimeNs = mtime.IsNow || mtime.IsOmit ? null : mtime.Ns,
        MtimeNow = mtime.IsNow,
    });

    public Errno Truncate(string path, long size) => SetAttr(path, true, new SetAttrRequest { Size = size });

    public Errno ReadDir(string path, out List<PosixDirEntry> entries)
    {
        entries = new List<PosixDirEntry>();
        var e = Resolve(path, follow: true, out var a);
        if (e != 0) return e;
        long off = 0;
        while (true)
        {
            var page = new List<DirEntryInfo>();
            e = Fs.ReadDir(a.Ino, off, 100, page);
            if (e != 0) return e;
            if (page.Count == 0) return 0;
            entries.AddRange(page.Select(d => new PosixDirEntry(d.Name, d.Ino, d.Type)));
            off = page[^1].NextOffset;
        }
    }

    public Errno Open(string path, int flags, uint mode, out IPosixFile? file)
    {
        file = null;
        bool created = false, noFollow = (flags & O_NOFOLLOW) != 0;
        InodeAttr a;
        Errno e;
        if ((flags & O_CREAT) != 0)
        {
            e = Parent(path, out long dir, out string name);
            if (e != 0) return e;
            e = Fs.Lookup(dir, name, out a);
            if (e == Errno.ENOENT)
            {
                e = Fs.Create(dir, name, mode, Uid, Gid, out a, Umask);
                created = true;
            }
            else if (e == 0 && (flags & O_EXCL) != 0) return Errno.EEXIST;   // even a dangling symlink
            else if (e == 0 && a.IsSymlink && !noFollow) e = Resolve(path, follow: true, out a);
            if (e != 0) return e;
        }
        else
        {
            e = Resolve(path, follow: !noFollow, out a);
            if (e != 0) return e;
        }
        if (a.IsSymlink) return Errno.ELOOP;
        if ((flags & O_DIRECTORY) != 0 && !a.IsDirectory) return Errno.ENOTDIR;
        int access = flags & 3;
        if (a.IsDirectory && (access != O_RDONLY || (flags & (O_CREAT | O_TRUNC)) != 0)) return Errno.EISDIR;
        if ((flags & O_TRUNC) != 0 && !created && a.IsRegular)
        {
            e = Fs.SetAttr(a.Ino, new SetAttrRequest { Size = 0 }, out _);
            if (e != 0) return e;
        }
        e = Fs.Open(a.Ino, writable: access != O_RDONLY);
        if (e != 0) return e;
        file = new EngineFile(this, Fs, a.Ino, flags);
        return 0;
    }

    private Errno Xattr(string path, bool noFollow, Func<long, Errno> op) =>
        Resolve(path, follow: !noFollow, out var a) is var e && e != 0 ? e : op(a.Ino);

    public Errno SetXattr(string path, string name, byte[] value, int flags = 0, bool noFollow = false) =>
        Xattr(path, noFollow, ino => Fs.SetXattr(ino, name, value, (XattrSetFlags)flags));

    public Errno GetXattr(string path, string name, out byte[] value, bool noFollow = false)
    {
        byte[] got = Array.Empty<byte>();
        var e = Xattr(path, noFollow, ino => Fs.GetXattr(ino, name, out got));
        value = got;
        return e;
    }

    public Errno ListXattr(string path, out List<string> names)
    {
        var got = new List<string>();
        var e = Xattr(path, false, ino => Fs.ListXattr(ino, out got));
        names = got;
        return e;
    }

    public Errno RemoveXattr(string path, string name) => Xattr(path, false, ino => Fs.RemoveXattr(ino, name));

    public PosixStatFs StatFs()
    {
        var s = _pool.Live.StatFs();
        return new PosixStatFs(s.BlockSize, s.BlockSize, s.Blocks, s.FreeBlocks, s.AvailableBlocks, s.Files, s.FreeFiles, s.NameMax);
    }

    public long FreeBlocks() => _pool.Live.StatFs().FreeBlocks;

    public void Sync()
    {
        var live = _pool.Live;
        var e = live.Fsync(live.RootIno);
        if (e != 0) throw new IOException($"fsync of the root: {e}");
    }

    public void Reopen()
    {
        _view = null;
        _pool.Reopen();
    }

    public void AssertClean() => _pool.AssertClean();

    public void Dispose() => _pool.Dispose();

    /// <summary>An open inode: the access mode is checked here, as the kernel checks it on the descriptor.</summary>
    private sealed class EngineFile(EnginePosixTarget target, FileSystemView fs, long ino, int flags) : IPosixFile
    {
        private long _position;
        private bool _closed;
        private FileSystemView Fs => fs;
        private bool Readable => (flags & 3) != O_WRONLY;
        private bool Writable => (flags & 3) != O_RDONLY;
        private bool Append => (flags & O_APPEND) != 0;

        public Errno Pread(Span<byte> buffer, long offset, out int count)
        {
            count = 0;
            return Readable ? Fs.Read(ino, offset, buffer, out count) : Errno.EBADF;
        }

        public Errno Pwrite(ReadOnlySpan<byte> data, long offset, out int count)
        {
            count = 0;
            return Writable ? Fs.Write(ino, offset, data, out count, append: Append) : Errno.EBADF;
        }

        public Errno Write(ReadOnlySpan<byte> data, out int count)
        {
            var e = Pwrite(data, _position, out count);
            if (e == 0) _position = Append && Fs.GetAttr(ino, out var a) == 0 ? a.Size : _position + count;
            return e;
        }

        public Errno Fstat(out PosixStat st)
        {
            var e = Fs.GetAttr(ino, out var a);
            st = e == 0 ? ToStat(a) : default;
            return e;
        }

        public Errno Ftruncate(long size) =>
            Writable ? Fs.SetAttr(ino, new SetAttrRequest { Size = size }, out _) : Errno.EINVAL;

        public Errno Fallocate(FallocateMode mode, long offset, long length) =>
            Writable ? Fs.Fallocate(ino, mode, offset, length) : Errno.EBADF;

        public Errno Seek(long offset, SeekWhence whence, out long result) => Fs.Seek(ino, offset, whence, out result);

        public Errno Fsync() => Fs.Fsync(ino);

        public Errno Fdatasync() => Fs.Fsync(ino);

        public Errno Fchmod(uint mode) => Fs.SetAttr(ino, new SetAttrRequest { Mode = mode }, out _);

        public Errno CreateAt(string name, uint mode)
        {
            var e = Fs.Create(ino, name, mode, target.Uid, target.Gid, out var a, target.Umask);
            if (e == 0) e = Fs.Open(a.Ino, writable: true);
            return e == 0 ? Fs.Release(a.Ino) : e;
        }

        public Errno MkdirAt(string name, uint mode) => Fs.Mkdir(ino, name, mode, target.Uid, target.Gid, out _, target.Umask);
        public Errno MknodAt(string name, uint mode, ulong rdev) => Fs.Mknod(ino, name, mode, rdev, target.Uid, target.Gid, out _, target.Umask);
        public Errno SymlinkAt(string link, string name) => Fs.Symlink(ino, name, link, target.Uid, target.Gid, out _);

        public Errno LinkInto(string from, string name) =>
            target.Resolve(from, follow: false, out var a) is var e && e != 0 ? e : Fs.Link(a.Ino, ino, name, out _);

        public Errno RenameInto(string from, string name, RenameFlags flags = RenameFlags.None) =>
            target.Parent(from, out long dir, out string old) is var e && e != 0 ? e : Fs.Rename(dir, old, ino, name, flags);

        public Errno LinkTo(string path) =>
            target.Parent(path, out long dir, out string name) is var e && e != 0 ? e : Fs.Link(ino, dir, name, out _);

        public void Dispose()
        {
            if (_closed) return;
            _closed = true;
            Fs.Release(ino);
        }
    }
}
