using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    public const long RootIno = 1;
    private const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000,
        S_IFIFO = 0x1000, S_IFSOCK = 0xC000, S_IFCHR = 0x2000, S_IFBLK = 0x6000;
    private const int NameMax = 255, XattrNameMax = 255, XattrValueMax = 65536, SymlinkMax = 4095;

    internal static bool IsDir(InodeRecord r) => (r.Mode & S_IFMT) == S_IFDIR;

    internal InodeAttr Attr(InodeRecord r) => new(r.Ino, r.Mode, r.Nlink, r.Uid, r.Gid, r.Rdev, r.Size,
        r.Blocks * (BlockSize / 512), BlockSize, r.AtimeNs, r.MtimeNs, r.CtimeNs, r.BtimeNs);

    /// <summary>Checks a directory entry name: EINVAL for empty, ".", "..", '/' or NUL; ENAMETOOLONG past 255 bytes.</summary>
    internal static Errno CheckName(string name)
    {
        if (name.Length == 0 || name == "." || name == ".." || name.Contains('/') || name.Contains('\0')) return Errno.EINVAL;
        return Encoding.UTF8.GetByteCount(name) > NameMax ? Errno.ENAMETOOLONG : 0;
    }

    // ---------------------------------------------------------------- read-only operations (any tree)

    internal Errno GetAttr(ITreeReader tree, long ino, out InodeAttr attr)
    {
        lock (_lock)
        {
            var r = tree.Inode(ino);
            attr = r == null ? default : Attr(r);
            return r == null ? Errno.ENOENT : 0;
        }
    }

    internal Errno Lookup(ITreeReader tree, long parent, string name, out InodeAttr attr)
    {
        attr = default;
        if (Encoding.UTF8.GetByteCount(name) > NameMax) return Errno.ENAMETOOLONG;
        lock (_lock)
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
        lock (_lock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if ((r.Mode & S_IFMT) != S_IFLNK) return Errno.EINVAL;
            target = r.Target ?? "";
            return 0;
        }
    }

    internal Errno GetXattr(ITreeReader tree, long ino, string name, out byte[] value)
    {
        value = Array.Empty<byte>();
        lock (_lock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (r.Xattrs == null || !r.Xattrs.TryGetValue(name, out var v)) return Errno.ENODATA;
            if (PosixAcl.IsAclXattr(name) && (v = ShownAcl(r, name, v)!) == null) return Errno.ENODATA;
            value = v;
            return 0;
        }
    }

    internal Errno ListXattr(ITreeReader tree, long ino, out List<string> names)
    {
        names = new List<string>();
        lock (_lock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (r.Xattrs != null)
                names.AddRange(r.Xattrs.Where(x => !PosixAcl.IsAclXattr(x.Key) || ShownAcl(r, x.Key, x.Value) != null)
                    .Select(x => x.Key).OrderBy(k => k, StringComparer.Ordinal));
            return 0;
        }
    }

    /// <summary>lseek SEEK_DATA / SEEK_HOLE. ENXIO when <paramref name="offset"/> is at or past the end,
    /// or (SEEK_DATA) there is no data after it.</summary>
    internal Errno Seek(ITreeReader tree, long ino, long offset, SeekWhence whence, out long result)
    {
        result = 0;
        lock (_lock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (offset < 0) return Errno.ENXIO;
            if (offset >= r.Size) return Errno.ENXIO;
            long fb = offset >> BlockShift;
            long endBlock = (r.Size + BlockSize - 1) >> BlockShift;
            var chunks = tree.Chunks(ino);
            if (whence == SeekWhence.Data)
            {
                foreach (var c in chunks)
                {
                    long cStart = c.Index * ChunkBlocks;
                    if (cStart + ChunkBlocks <= fb) continue;
                    foreach (var e in c.Extents)
                    {
                        long eStart = cStart + e.First, eEnd = cStart + e.End;
                        if (eEnd <= fb) continue;
                        long at = Math.Max(offset, eStart << BlockShift);
                        if (at >= r.Size) return Errno.ENXIO;
                        result = at;
                        return 0;
                    }
                }
                return Errno.ENXIO;
            }
            // SEEK_HOLE: the first unmapped block at or after fb, or the end of the file.
            long b = fb;
            foreach (var c in chunks)
            {
                long cStart = c.Index * ChunkBlocks;
                if (cStart + ChunkBlocks <= b) continue;
                if (cStart > b) break; // gap before this chunk
                foreach (var e in c.Extents)
                {
                    long eStart = cStart + e.First, eEnd = cStart + e.End;
                    if (eEnd <= b) continue;
                    if (eStart > b) break;
                    b = eEnd;
                }
                if (b < cStart + ChunkBlocks) break;
            }
            result = b >= endBlock ? r.Size : Math.Max(offset, b << BlockShift);
            return 0;
        }
    }

    // ---------------------------------------------------------------- changes (live tree only)

    private LiveInode? LiveDir(long ino, out Errno e)
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
        lock (_lock)
        {
            if (Failed) return Errno.EIO;
            var dir = LiveDir(parent, out e);
            if (dir == null) return e;
            if (dir.Rec.Nlink == 0) return Errno.ENOENT; // removed directory
            if (DirOf(dir).ByName.ContainsKey(name)) return Errno.EEXIST;
            var xattrs = InheritAclsLocked(dir.Rec, ref mode, umask);
            long now = NowNs();
            var rec = new InodeRecord
            {
                Rid = _versions.NewRid(), Birth = _pool.LiveGen, Ino = _pool.NextIno++, Mode = mode, Uid = uid, Gid = gid,
                Nlink = type == S_IFDIR ? 2u : 1u, Rdev = type is S_IFCHR or S_IFBLK ? rdev : 0,
                AtimeNs = now, MtimeNs = now, CtimeNs = now, BtimeNs = now, Target = type == S_IFLNK ? symlinkTarget : null,
                Size = type == S_IFLNK ? Encoding.UTF8.GetByteCount(symlinkTarget!) : 0,
                NextPos = type == S_IFDIR ? 3 : 0, Parent = type == S_IFDIR ? parent : 0, Xattrs = xattrs,
            };
            var li = new LiveInode(rec) { AllChunksLoaded = true };
            if (type == S_IFDIR) li.Dir = new DirState();
            _versions.AddInode(li);
            _versions.AddDirent(dir, name, rec.Ino, type >> 12);
            var p = _versions.MutableInode(dir);
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
        lock (_lock)
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
            _versions.AddDirent(dir, newName, ino, (li.Rec.Mode & S_IFMT) >> 12);
            var p = _versions.MutableInode(dir); p.MtimeNs = p.CtimeNs = now;
            var r = _versions.MutableInode(li); r.Nlink++; r.CtimeNs = now;
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
        lock (_lock)
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
            _versions.RemoveDirent(dir, d);
            var p = _versions.MutableInode(dir); p.MtimeNs = p.CtimeNs = now;
            if (isDir) p.Nlink--;
            DropLink(child, now);
            return 0;
        }
    }

    /// <summary>One name of <paramref name="child"/> is gone: drop its link count, and the inode itself
    /// once nothing names it and nobody has it open.</summary>
    private void DropLink(LiveInode child, long now)
    {
        var c = _versions.MutableInode(child);
        c.CtimeNs = now;
        c.Nlink = IsDir(c) ? 0 : c.Nlink - 1;
        if (c.Nlink == 0 && child.OpenCount == 0) DeleteInode(child);
    }

    /// <summary>At open: deletes files that were unlinked while still open when the pool was last closed.</summary>
    internal void RemoveOrphans()
    {
        lock (_lock)
        {
            var orphans = Store.Orphans(_pool.LiveGen);
            foreach (var r in orphans) if (Live(r.Ino) is { } li) DeleteInode(li);
            if (orphans.Count == 0) return;
        }
        Commit();
    }

    private void DeleteInode(LiveInode li)
    {
        DropPrealloc(li);
        if (!IsDir(li.Rec) && (li.Rec.Mode & S_IFMT) == S_IFREG)
            foreach (var c in LiveChunks(li)) _versions.DropChunk(li, c);
        _versions.RemoveInode(li);
    }

    public Errno Rename(long parent, string name, long newParent, string newName, RenameFlags flags)
    {
        if ((flags & ~(RenameFlags.NoReplace | RenameFlags.Exchange)) != 0) return Errno.EINVAL;
        if ((flags & RenameFlags.NoReplace) != 0 && (flags & RenameFlags.Exchange) != 0) return Errno.EINVAL;
        var e = CheckName(name);
        if (e == 0) e = CheckName(newName);
        if (e != 0) return e;
        lock (_lock)
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
                _versions.RemoveDirent(src, from);
                _versions.RemoveDirent(dst, to);
                _versions.AddDirent(dst, newName, moving.Ino, from.Type);
                _versions.AddDirent(src, name, other.Ino, to.Type);
                if (parent != newParent)
                {
                    if (movingDir) { _versions.MutableInode(moving).Parent = newParent; _versions.MutableInode(src).Nlink--; _versions.MutableInode(dst).Nlink++; }
                    if (otherDir) { _versions.MutableInode(other).Parent = parent; _versions.MutableInode(dst).Nlink--; _versions.MutableInode(src).Nlink++; }
                }
                _versions.MutableInode(moving).CtimeNs = now; _versions.MutableInode(other).CtimeNs = now;
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
                _versions.RemoveDirent(dst, to);
                if (victimDir) _versions.MutableInode(dst).Nlink--;
                DropLink(victim, now);
            }
            _versions.RemoveDirent(src, from);
            _versions.AddDirent(dst, newName, moving.Ino, from.Type);
            if (movingDir && parent != newParent)
            {
                _versions.MutableInode(moving).Parent = newParent;
                _versions.MutableInode(src).Nlink--;
                _versions.MutableInode(dst).Nlink++;
            }
            _versions.MutableInode(moving).CtimeNs = now;
            TouchDirs(src, dst, now);
            return 0;
        }
    }

    private void TouchDirs(LiveInode a, LiveInode b, long now)
    {
        var ra = _versions.MutableInode(a); ra.MtimeNs = ra.CtimeNs = now;
        var rb = _versions.MutableInode(b); rb.MtimeNs = rb.CtimeNs = now;
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

    public Errno SetAttr(long ino, SetAttrRequest req, out InodeAttr attr)
    {
        attr = default;
        LiveInode? li;
        lock (_lock)
        {
            if (Failed) return Errno.EIO;
            li = Live(ino);
            if (li == null) return Errno.ENOENT;
            if (req.Size is long sz)
            {
                if (IsDir(li.Rec)) return Errno.EISDIR;
                if ((li.Rec.Mode & S_IFMT) != S_IFREG) return Errno.EINVAL;
                if (sz < 0) return Errno.EINVAL;
                if (sz > MaxFileSize) return Errno.EFBIG;
            }
            li.Pins++;
        }
        try { return SetAttrPinned(li, req, out attr); }
        finally { Unpin(li); }
    }

    private Errno SetAttrPinned(LiveInode li, SetAttrRequest req, out InodeAttr attr)
    {
        attr = default;
        if (req.Size is long size)
        {
            li.WriteGate.Wait();
            try
            {
                var e = Truncate(li, size);
                if (e != 0) return e;
            }
            finally { li.WriteGate.Release(); }
        }
        lock (_lock)
        {
            if (li.Deleted && li.OpenCount == 0) return Errno.ENOENT;
            long now = NowNs();
            var r = _versions.MutableInode(li);
            if (req.Mode is uint m) { r.Mode = (r.Mode & S_IFMT) | (m & 0xFFF); ChmodAclLocked(r); }
            if (req.Uid is uint u) r.Uid = u;
            if (req.Gid is uint g) r.Gid = g;
            if (req.AtimeNow) r.AtimeNs = now; else if (req.AtimeNs is long a) r.AtimeNs = a;
            if (req.MtimeNow) r.MtimeNs = now; else if (req.MtimeNs is long mt) r.MtimeNs = mt;
            if (req.Size != null && req.MtimeNs == null && !req.MtimeNow) r.MtimeNs = now;
            r.CtimeNs = req.CtimeNs ?? now;
            attr = Attr(r);
            return 0;
        }
    }

    /// <summary>Sets the size: shrinking unmaps whole blocks past the end and zeroes the tail of the last
    /// block (so growing later reads zeros); growing leaves a hole. Caller holds the WriteGate.</summary>
    private Errno Truncate(LiveInode li, long size)
    {
        long oldSize;
        lock (_lock) oldSize = li.Rec.Size;
        if (size < oldSize)
        {
            int tail = (int)(size & (BlockSize - 1));
            if (tail != 0)
            {
                // Rewrite the last block with zeros after the new end (out of place, like any write).
                long blockEnd = Math.Min(oldSize, (size | (long)(BlockSize - 1)) + 1);
                var e = ZeroBytes(li, size, blockEnd - size);
                if (e != 0) return e;
            }
            lock (_lock)
            {
                PunchRange(li, (size + BlockSize - 1) >> BlockShift, (oldSize + BlockSize - 1) >> BlockShift);
                // Reservations past the old end (FALLOC_FL_KEEP_SIZE) go too, as ext4 frees them.
                ReleasePrealloc(li, (size + BlockSize - 1) >> BlockShift, (MaxFileSize >> BlockShift) + 1);
            }
        }
        lock (_lock) _versions.MutableInode(li).Size = size;
        return 0;
    }

    public Errno Fallocate(long ino, FallocateMode mode, long offset, long length)
    {
        if (offset < 0 || length <= 0) return Errno.EINVAL;
        if (offset + length > MaxFileSize || offset + length < 0) return Errno.EFBIG;
        const FallocateMode supported = FallocateMode.KeepSize | FallocateMode.PunchHole | FallocateMode.ZeroRange;
        if ((mode & ~supported) != 0) return Errno.EOPNOTSUPP;
        bool punch = (mode & FallocateMode.PunchHole) != 0, zero = (mode & FallocateMode.ZeroRange) != 0;
        if (punch && (mode & FallocateMode.KeepSize) == 0) return Errno.EOPNOTSUPP;
        if (punch && zero) return Errno.EOPNOTSUPP;
        LiveInode? li;
        lock (_lock)
        {
            if (Failed) return Errno.EIO;
            li = Live(ino);
            if (li == null) return Errno.ENOENT;
            if (IsDir(li.Rec)) return Errno.EISDIR;
            if ((li.Rec.Mode & S_IFMT) != S_IFREG) return Errno.ENODEV;
            li.Pins++;
        }
        try { return FallocatePinned(li, mode, offset, length, punch, zero); }
        finally { Unpin(li); }
    }

    private Errno FallocatePinned(LiveInode li, FallocateMode mode, long offset, long length, bool punch, bool zero)
    {
        li.WriteGate.Wait();
        try
        {
            long end = offset + length;
            if (punch)   // whole blocks of the range, past the end of the file too (KEEP_SIZE reservations)
                lock (_lock) ReleasePrealloc(li, (offset + BlockSize - 1) >> BlockShift, end >> BlockShift);
            if (punch || zero)
            {
                long size; lock (_lock) size = li.Rec.Size;
                long zEnd = Math.Min(end, size);
                if (offset < zEnd)
                {
                    // A range reaching the end of the file takes its last block whole (the bytes past the
                    // end read as zeros already), as ext4 does: punching to EOF frees that block too.
                    long firstFull = (offset + BlockSize - 1) >> BlockShift;
                    long lastFull = (end >= size ? zEnd + BlockSize - 1 : zEnd) >> BlockShift;
                    if (firstFull < lastFull)
                    {
                        var e = ZeroBytes(li, offset, (firstFull << BlockShift) - offset);
                        if (e == 0) e = ZeroBytes(li, lastFull << BlockShift, zEnd - (lastFull << BlockShift));
                        if (e != 0) return e;
                        lock (_lock) PunchRange(li, firstFull, lastFull);
                    }
                    else
                    {
                        var e = ZeroBytes(li, offset, zEnd - offset);
                        if (e != 0) return e;
                    }
                }
            }
            if (!punch && !zero)
            {
                // Mode 0 / KEEP_SIZE reserves the space (Engine.Prealloc.cs); freed blocks waiting for a commit count.
                var e = ReserveForFallocate(li, offset, end);
                if (e == Errno.ENOSPC && HasPendingFrees())
                {
                    Commit();
                    e = ReserveForFallocate(li, offset, end);
                }
                if (e != 0) return e;
            }
            lock (_lock)
            {
                var r = _versions.MutableInode(li);
                long now = NowNs();
                bool grows = (mode & FallocateMode.KeepSize) == 0 && end > r.Size;
                if (grows) r.Size = end;
                if (punch || zero || grows) r.MtimeNs = now; // like ext4: a size change is a modification
                r.CtimeNs = now;
            }
            return 0;
        }
        finally { li.WriteGate.Release(); }
    }

    /// <summary>Writes zeros over [offset, offset+length) of the file, block by block, skipping blocks that
    /// are holes: they already read as zeros and must stay unallocated (ext4 zeroes a partial block only
    /// when it is mapped). Meant for partial blocks. Caller holds the WriteGate.</summary>
    private Errno ZeroBytes(LiveInode li, long offset, long length)
    {
        long end = offset + length;
        while (offset < end)
        {
            long blockEnd = Math.Min(end, (offset | (long)(BlockSize - 1)) + 1);
            long fb = offset >> BlockShift;
            bool hole;
            lock (_lock) hole = ExtentMap.FindRun(LiveChunk(li, fb / ChunkBlocks), fb, 1).IsHole;
            if (!hole)
            {
                long pos = offset; int w = 0;
                var e = WriteLocked(li, ref pos, new byte[blockEnd - offset], ref w);
                if (e != 0) return e;
            }
            offset = blockEnd;
        }
        return 0;
    }

    public Errno Open(long ino)
    {
        lock (_lock)
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
        lock (_lock)
        {
            if (!_cache.TryGetCached(ino, out var li) || li.OpenCount == 0) return Errno.EBADF;
            li.OpenCount--;
            if (li.OpenCount == 0 && li.Rec.Nlink == 0 && !li.Deleted) DeleteInode(li);
        }
        _mappings.Deliver();
        return 0;
    }

    /// <summary>setxattr: XATTR_CREATE / XATTR_REPLACE; the POSIX ACL names get their semantics (<see cref="SetAclLocked"/>);
    /// <see cref="XattrSetFlags.AclKillSgid"/> clears S_ISGID in the same change.</summary>
    public Errno SetXattr(long ino, string name, ReadOnlySpan<byte> value, XattrSetFlags flags)
    {
        if (name.Length == 0) return Errno.EINVAL;
        if (Encoding.UTF8.GetByteCount(name) > XattrNameMax) return Errno.ERANGE;
        if (value.Length > XattrValueMax) return Errno.E2BIG;
        lock (_lock)
        {
            if (Failed) return Errno.EIO;
            var li = Live(ino);
            if (li == null) return Errno.ENOENT;
            bool exists = li.Rec.Xattrs?.ContainsKey(name) == true;
            if ((flags & XattrSetFlags.Create) != 0 && exists) return Errno.EEXIST;
            if ((flags & XattrSetFlags.Replace) != 0 && !exists) return Errno.ENODATA;
            if (PosixAcl.IsAclXattr(name))
            {
                var e = SetAclLocked(li, name, value);
                if (e != 0) return e;
            }
            else
            {
                var r = _versions.MutableInode(li);
                (r.Xattrs ??= new Dictionary<string, byte[]>())[name] = value.ToArray();
                r.CtimeNs = NowNs();
            }
            if ((flags & XattrSetFlags.AclKillSgid) != 0) _versions.MutableInode(li).Mode &= ~0x400u;   // S_ISGID, in the same change
            return 0;
        }
    }

    public Errno RemoveXattr(long ino, string name)
    {
        lock (_lock)
        {
            if (Failed) return Errno.EIO;
            var li = Live(ino);
            if (li == null) return Errno.ENOENT;
            if (li.Rec.Xattrs?.ContainsKey(name) != true) return Errno.ENODATA;
            var r = _versions.MutableInode(li);
            r.Xattrs!.Remove(name);
            r.CtimeNs = NowNs();
            return 0;
        }
    }
}
