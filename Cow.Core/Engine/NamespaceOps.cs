using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>
/// Namespace operations of the live tree: lookup, readlink, create (mknod, mkdir, symlink, O_TMPFILE), link,
/// unlink, rmdir, rename (with RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT for overlayfs), readdir,
/// open and release (an inode unlinked while open is deleted at its last release, or at the next open of the
/// pool: <see cref="RemoveOrphans"/>). Every change goes through the <see cref="RecordVersioner"/>.
/// <para>readdir lists entries by position: each directory gives every entry it gains (a create, a link, a
/// rename into it or within it) the next number of its NextPos counter, so positions only grow and an entry
/// keeps its position until it is removed. A pass that lists only positions below the directory's end as it
/// was when the pass began (what btrfs does with its dir_index since 6.5) therefore never returns an entry
/// twice, whatever renames run meanwhile: a renamed entry's new position is past that end.</para>
/// <para>State: none of its own. Threading: thread-safe; each operation runs under the engine's <c>_lock</c>
/// (a delete that punches a file's blocks takes nothing more).</para>
/// </summary>
internal sealed class NamespaceOps(EngineContext context) : EnginePart(context)
{
    internal Errno Lookup(ITreeReader tree, long parent, string name, out InodeAttr attr)
    {
        attr = default;
        if (Encoding.UTF8.GetByteCount(name) > NameMax) return Errno.ENAMETOOLONG;
        lock (StateLock)
        {
            var p = tree.Inode(parent);
            if (p == null) return Errno.ENOENT;
            if (!IsDir(p)) return Errno.ENOTDIR;
            if (name == ".") { attr = Attr(p); return 0; }
            if (name == "..") { var pp = tree.Inode(p.Parent); if (pp == null) return Errno.ENOENT; attr = Attr(pp); return 0; }
            if (!tree.Dir(parent)!.ByName.TryGetValue(name, out var d)) return Errno.ENOENT;
            var c = tree.Inode(d.Child) ?? throw new InvalidDataException($"directory {parent} entry '{name}' names inode {d.Child}, which does not exist");
            attr = Attr(c);
            return 0;
        }
    }

    internal Errno Readlink(ITreeReader tree, long ino, out string target)
    {
        target = "";
        lock (StateLock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if ((r.Mode & S_IFMT) != S_IFLNK) return Errno.EINVAL;
            target = r.Target ?? "";
            return 0;
        }
    }

    // ---------------------------------------------------------------- changes (live tree only)

    internal LiveInode? LiveDir(long ino, out Errno e)
    {
        var d = Live(ino);
        e = d == null ? Errno.ENOENT : !IsDir(d.Rec) ? Errno.ENOTDIR : 0;
        return e == 0 ? d : null;
    }

    /// <summary>Creates a regular file, directory, symlink, fifo, socket or device node. Unless it is a symlink,
    /// it inherits the parent's default ACL, which then limits <paramref name="mode"/>; without one
    /// <paramref name="umask"/> clears bits of <paramref name="mode"/> (see <see cref="InheritAclsLocked"/>).</summary>
    public Errno MakeNode(long parent, string name, uint mode, ulong rdev, uint uid, uint gid, string? symlinkTarget, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        var e = CheckName(name);
        if (e != 0) return e;
        uint type = mode & S_IFMT;
        if (type == 0) { type = S_IFREG; mode |= S_IFREG; }
        if (type is not (S_IFREG or S_IFDIR or S_IFLNK or S_IFIFO or S_IFSOCK or S_IFCHR or S_IFBLK)) return Errno.EINVAL;
        if (type == S_IFLNK && (symlinkTarget == null || symlinkTarget.Length == 0)) return Errno.ENOENT;
        if (symlinkTarget != null && Encoding.UTF8.GetByteCount(symlinkTarget) > SymlinkMax) return Errno.ENAMETOOLONG;
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var dir = LiveDir(parent, out e);
            if (dir == null) return e;
            if (dir.Rec.Nlink == 0) return Errno.ENOENT; // removed directory
            if (DirOf(dir).ByName.ContainsKey(name)) return Errno.EEXIST;
            var xattrs = InodeAttributes.InheritAclsLocked(dir.Rec, ref mode, umask);
            long now = NowNs();
            var rec = new InodeRecord
            {
                Rid = Versions.NewRid(), Birth = PoolState.LiveGen, Ino = PoolState.NextIno++, Mode = mode, Uid = uid, Gid = gid,
                Nlink = type == S_IFDIR ? 2u : 1u, Rdev = type is S_IFCHR or S_IFBLK ? rdev : 0,
                AtimeNs = now, MtimeNs = now, CtimeNs = now, BtimeNs = now, Target = type == S_IFLNK ? symlinkTarget : null,
                Size = type == S_IFLNK ? Encoding.UTF8.GetByteCount(symlinkTarget!) : 0,
                NextPos = type == S_IFDIR ? 3 : 0, Parent = type == S_IFDIR ? parent : 0, Xattrs = xattrs,
            };
            var li = new LiveInode(rec) { AllChunksLoaded = true };
            if (type == S_IFDIR) li.Dir = new DirState();
            Versions.AddInode(li);
            Versions.AddDirent(dir, name, rec.Ino, type >> 12);
            var p = Versions.MutableInode(dir);
            p.MtimeNs = p.CtimeNs = now;
            if (type == S_IFDIR) p.Nlink++;
            attr = Attr(rec);
            return 0;
        }
    }

    public Errno Link(long ino, long newParent, string newName, out InodeAttr attr)
    {
        attr = default;
        var e = CheckName(newName);
        if (e != 0) return e;
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var li = Live(ino);
            if (li == null) return Errno.ENOENT;
            if (IsDir(li.Rec)) return Errno.EPERM;
            var dir = LiveDir(newParent, out e);
            if (dir == null) return e;
            if (dir.Rec.Nlink == 0) return Errno.ENOENT; // removed directory
            if (DirOf(dir).ByName.ContainsKey(newName)) return Errno.EEXIST;
            if (li.Rec.Nlink >= 65000) return Errno.EMLINK;
            if (li.Rec.Nlink == 0 && !li.Linkable) return Errno.ENOENT;   // unlinked; an O_TMPFILE file may be named
            li.Linkable = false;
            long now = NowNs();
            Versions.AddDirent(dir, newName, ino, (li.Rec.Mode & S_IFMT) >> 12);
            var p = Versions.MutableInode(dir); p.MtimeNs = p.CtimeNs = now;
            var r = Versions.MutableInode(li); r.Nlink++; r.CtimeNs = now;
            attr = Attr(r);
            return 0;
        }
    }

    public Errno Unlink(long parent, string name) => RemoveEntry(parent, name, dirWanted: false);

    public Errno Rmdir(long parent, string name) => RemoveEntry(parent, name, dirWanted: true);

    private Errno RemoveEntry(long parent, string name, bool dirWanted)
    {
        if (name == ".") return dirWanted ? Errno.EINVAL : Errno.EISDIR;
        if (name == "..") return dirWanted ? Errno.ENOTEMPTY : Errno.EISDIR;
        var e = CheckName(name);
        if (e != 0) return e;
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var dir = LiveDir(parent, out e);
            if (dir == null) return e;
            if (!DirOf(dir).ByName.TryGetValue(name, out var d)) return Errno.ENOENT;
            var child = Live(d.Child) ?? throw new InvalidDataException($"directory {parent} entry '{name}' names missing inode {d.Child}");
            bool isDir = IsDir(child.Rec);
            if (dirWanted && !isDir) return Errno.ENOTDIR;
            if (!dirWanted && isDir) return Errno.EISDIR;
            if (isDir && DirOf(child).Count > 0) return Errno.ENOTEMPTY;
            long now = NowNs();
            Versions.RemoveDirent(dir, d);
            var p = Versions.MutableInode(dir); p.MtimeNs = p.CtimeNs = now;
            if (isDir) p.Nlink--;
            DropLink(child, now);
            return 0;
        }
    }

    /// <summary>One name of <paramref name="child"/> is gone: drop its link count, and the inode itself
    /// once nothing names it and nobody has it open.</summary>
    internal void DropLink(LiveInode child, long now)
    {
        var c = Versions.MutableInode(child);
        c.CtimeNs = now;
        c.Nlink = IsDir(c) ? 0 : c.Nlink - 1;
        if (c.Nlink == 0 && child.OpenCount == 0) DeleteInode(child);
    }

    /// <summary>At open: deletes files that were unlinked while still open when the pool was last closed.</summary>
    internal void RemoveOrphans()
    {
        lock (StateLock)
        {
            var orphans = Store.Orphans(PoolState.LiveGen);
            foreach (var r in orphans) if (Live(r.Ino) is { } li) DeleteInode(li);
            if (orphans.Count == 0) return;
        }
        Commits.Commit();
    }

    private void DeleteInode(LiveInode li)
    {
        Prealloc.DropPrealloc(li);
        if (!IsDir(li.Rec) && (li.Rec.Mode & S_IFMT) == S_IFREG)
            foreach (var c in LiveChunks(li)) Versions.DropChunk(li, c);
        Versions.RemoveInode(li);
    }

    public Errno Rename(long parent, string name, long newParent, string newName, RenameFlags flags)
    {
        if ((flags & ~(RenameFlags.NoReplace | RenameFlags.Exchange)) != 0) return Errno.EINVAL;
        if ((flags & RenameFlags.NoReplace) != 0 && (flags & RenameFlags.Exchange) != 0) return Errno.EINVAL;
        var e = CheckName(name);
        if (e == 0) e = CheckName(newName);
        if (e != 0) return e;
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var src = LiveDir(parent, out e);
            if (src == null) return e;
            var dst = LiveDir(newParent, out e);
            if (dst == null) return e;
            if (dst.Rec.Nlink == 0) return Errno.ENOENT; // removed directory
            if (!DirOf(src).ByName.TryGetValue(name, out var from)) return Errno.ENOENT;
            DirOf(dst).ByName.TryGetValue(newName, out var to);
            var moving = Live(from.Child)!;
            bool movingDir = IsDir(moving.Rec);
            long now = NowNs();
            if ((flags & RenameFlags.Exchange) != 0)
            {
                if (to == null) return Errno.ENOENT;
                if (to.Child == from.Child) return 0; // one inode (or one entry): like vfs_rename, nothing to do
                var other = Live(to.Child)!;
                bool otherDir = IsDir(other.Rec);
                if (movingDir && IsAncestor(moving.Ino, newParent)) return Errno.EINVAL;
                if (otherDir && IsAncestor(other.Ino, parent)) return Errno.EINVAL;
                Versions.RemoveDirent(src, from);
                Versions.RemoveDirent(dst, to);
                Versions.AddDirent(dst, newName, moving.Ino, from.Type);
                Versions.AddDirent(src, name, other.Ino, to.Type);
                if (parent != newParent)
                {
                    if (movingDir) { Versions.MutableInode(moving).Parent = newParent; Versions.MutableInode(src).Nlink--; Versions.MutableInode(dst).Nlink++; }
                    if (otherDir) { Versions.MutableInode(other).Parent = parent; Versions.MutableInode(dst).Nlink--; Versions.MutableInode(src).Nlink++; }
                }
                Versions.MutableInode(moving).CtimeNs = now; Versions.MutableInode(other).CtimeNs = now;
                TouchDirs(src, dst, now);
                return 0;
            }
            if (to != null && (flags & RenameFlags.NoReplace) != 0) return Errno.EEXIST;
            if (movingDir && (moving.Ino == newParent || IsAncestor(moving.Ino, newParent))) return Errno.EINVAL;
            if (to != null)
            {
                if (to.Child == from.Child) return 0; // two names of one inode: POSIX says do nothing
                var victim = Live(to.Child)!;
                bool victimDir = IsDir(victim.Rec);
                if (movingDir && !victimDir) return Errno.ENOTDIR;
                if (!movingDir && victimDir) return Errno.EISDIR;
                if (victimDir && DirOf(victim).Count > 0) return Errno.ENOTEMPTY;
                Versions.RemoveDirent(dst, to);
                if (victimDir) Versions.MutableInode(dst).Nlink--;
                DropLink(victim, now);
            }
            Versions.RemoveDirent(src, from);
            Versions.AddDirent(dst, newName, moving.Ino, from.Type);
            if (movingDir && parent != newParent)
            {
                Versions.MutableInode(moving).Parent = newParent;
                Versions.MutableInode(src).Nlink--;
                Versions.MutableInode(dst).Nlink++;
            }
            Versions.MutableInode(moving).CtimeNs = now;
            TouchDirs(src, dst, now);
            return 0;
        }
    }

    private void TouchDirs(LiveInode a, LiveInode b, long now)
    {
        var ra = Versions.MutableInode(a); ra.MtimeNs = ra.CtimeNs = now;
        var rb = Versions.MutableInode(b); rb.MtimeNs = rb.CtimeNs = now;
    }

    /// <summary>True if directory <paramref name="ancestor"/> is <paramref name="dir"/> or above it.</summary>
    private bool IsAncestor(long ancestor, long dir)
    {
        for (int depth = 0; depth < 100000; depth++)
        {
            if (dir == ancestor) return true;
            if (dir == RootIno) return false;
            var d = Live(dir);
            if (d == null) return false;
            dir = d.Rec.Parent;
        }
        throw new InvalidDataException("directory tree has a cycle");
    }

    public Errno Open(long ino)
    {
        lock (StateLock)
        {
            var li = Live(ino);
            if (li == null) return Errno.ENOENT;
            li.OpenCount++;
            return 0;
        }
    }

    /// <summary>Last close of a handle: an unlinked file is deleted when its last handle closes.</summary>
    public Errno Release(long ino)
    {
        lock (StateLock)
        {
            if (!Cache.TryGetCached(ino, out var li) || li.OpenCount == 0) return Errno.EBADF;
            li.OpenCount--;
            if (li.OpenCount == 0 && li.Rec.Nlink == 0 && !li.Deleted) DeleteInode(li);
        }
        Mappings.Deliver();
        return 0;
    }

    /// <summary>
    /// O_TMPFILE in directory <paramref name="parent"/>: a new regular file with no name and nlink 0, counted
    /// open once (its handle's <see cref="Release"/> deletes it unless <see cref="Link"/> named it first, as
    /// an unlinked open file). It may be linked once while it has no name (the VFS refuses the link itself
    /// for O_TMPFILE | O_EXCL); it is an orphan for a snapshot, fsck and the next open of the pool meanwhile.
    /// ENOENT when the directory was removed, ENOTDIR when it is not one.
    /// </summary>
    public Errno MakeTmpfile(long parent, uint mode, uint uid, uint gid, out FileSystem.InodeAttr attr, uint umask = 0)
    {
        attr = default;
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var dir = LiveDir(parent, out var e);
            if (dir == null) return e;
            if (dir.Rec.Nlink == 0) return Errno.ENOENT; // removed directory
            mode = S_IFREG | (mode & 0xFFF);
            var xattrs = InodeAttributes.InheritAclsLocked(dir.Rec, ref mode, umask);   // as a created file: default ACL or umask
            long now = NowNs();
            var rec = new InodeRecord
            {
                Rid = Versions.NewRid(), Birth = PoolState.LiveGen, Ino = PoolState.NextIno++, Mode = mode, Uid = uid, Gid = gid, Xattrs = xattrs,
                Nlink = 0, AtimeNs = now, MtimeNs = now, CtimeNs = now, BtimeNs = now,
            };
            var li = new LiveInode(rec) { AllChunksLoaded = true, OpenCount = 1, Linkable = true };
            Versions.AddInode(li);
            attr = Attr(rec);
            return 0;
        }
    }

    /// <summary>
    /// renameat2(RENAME_WHITEOUT), optionally with RENAME_NOREPLACE: renames as <see cref="Rename"/> does and,
    /// in the same change (no commit can fall between them), leaves at the source name a whiteout: a character
    /// device 0/0 with permission bits 0, owned by <paramref name="uid"/>:<paramref name="gid"/> (the caller;
    /// the dispatcher applies the setgid-directory rule). As vfs_rename, when source and target are one inode
    /// nothing happens and no whiteout is made. Errors are <see cref="Rename"/>'s and leave everything as it was.
    /// </summary>
    public Errno RenameWhiteout(long parent, string name, long newParent, string newName, bool noReplace, uint uid, uint gid)
    {
        lock (StateLock)
        {
            var e = Rename(parent, name, newParent, newName, noReplace ? FileSystem.RenameFlags.NoReplace : FileSystem.RenameFlags.None);
            if (e != 0) return e;
            var src = Live(parent) ?? throw new InvalidOperationException($"directory {parent} vanished during a rename");
            if (DirOf(src).ByName.ContainsKey(name)) return 0;   // one inode under both names: nothing was moved
            e = MakeNode(parent, name, S_IFCHR, 0, uid, gid, null, out _);
            // Everything MakeNode checks held a moment ago under this same lock (a live directory, a free name).
            if (e != 0) throw new InvalidOperationException($"whiteout of '{name}' in {parent} failed after its rename: {e}");
            return 0;
        }
    }

    /// <summary>readdir: entries after <paramref name="offset"/> and before position <paramref name="before"/>
    /// in position order, at most <paramref name="max"/>; "." and ".." come first at offsets 1 and 2 (a removed
    /// directory still open lists them and nothing else). Offsets are stable: an entry keeps its position until
    /// it is removed.</summary>
    internal Errno ReadDir(ITreeReader tree, long ino, long offset, int max, List<DirEntryInfo> into, long before = long.MaxValue)
    {
        lock (StateLock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (!IsDir(r)) return Errno.ENOTDIR;
            if (offset < 1 && into.Count < max) into.Add(new DirEntryInfo(".", ino, S_IFDIR >> 12, 1));
            if (offset < 2 && into.Count < max) into.Add(new DirEntryInfo("..", r.Parent, S_IFDIR >> 12, 2));
            foreach (var d in tree.Dir(ino)!.ByPos.After(offset))
            {
                if (into.Count >= max || d.Pos >= before) break;
                into.Add(new DirEntryInfo(d.Name, d.Child, d.Type, d.Pos));
            }
            return 0;
        }
    }

    /// <summary>The position the next entry of directory <paramref name="ino"/> will get: a readdir pass that
    /// stops before it lists each entry present throughout the pass exactly once and no entry twice.</summary>
    internal Errno DirEnd(ITreeReader tree, long ino, out long end)
    {
        end = 0;
        lock (StateLock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (!IsDir(r)) return Errno.ENOTDIR;
            end = r.NextPos;
            return 0;
        }
    }
}
