using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>
/// Attributes of an inode: getattr, setattr (mode, owner, times, and size: truncate), fallocate (reservations,
/// punch hole, zero range), xattrs, POSIX ACLs and access times.
/// <para>ACLs as ext4 and btrfs keep them: the two ACL xattrs are stored like other xattrs (versioned with the
/// inode, so snapshots and clones carry them) but with the kernel's semantics (<see cref="PosixAcl"/>): an
/// access ACL sets the mode's permission bits, chmod rewrites the access ACL, and a new inode inherits its
/// directory's default ACL (else the umask applies); each runs inside the change it belongs to, so an ACL
/// and the mode it implies are one change.</para>
/// <para>Access times on read (<see cref="AtimePolicy"/>): an update is an ordinary metadata change of the
/// inode that rides the next group commit, and the policy decides before anything is touched whether there
/// is an update at all (with relatime a file read over and over changes nothing after its first read).</para>
/// <para>State: none of its own. Threading: thread-safe; a size change takes the file's WriteGate, then the
/// engine's <c>_lock</c>; the rest runs under <c>_lock</c> alone.</para>
/// </summary>
internal sealed class InodeAttributes(EngineContext context) : EnginePart(context)
{
    // ---------------------------------------------------------------- read-only operations (any tree)

    internal Errno GetAttr(ITreeReader tree, long ino, out InodeAttr attr)
    {
        lock (StateLock)
        {
            var r = tree.Inode(ino);
            attr = r == null ? default : Attr(r);
            return r == null ? Errno.ENOENT : 0;
        }
    }

    internal Errno GetXattr(ITreeReader tree, long ino, string name, out byte[] value)
    {
        value = Array.Empty<byte>();
        lock (StateLock)
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
        lock (StateLock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (r.Xattrs != null)
                names.AddRange(r.Xattrs.Where(x => !PosixAcl.IsAclXattr(x.Key) || ShownAcl(r, x.Key, x.Value) != null)
                    .Select(x => x.Key).OrderBy(k => k, StringComparer.Ordinal));
            return 0;
        }
    }

    /// <summary>setxattr: XATTR_CREATE / XATTR_REPLACE; the POSIX ACL names get their semantics (<see cref="SetAclLocked"/>);
    /// <see cref="XattrSetFlags.AclKillSgid"/> clears S_ISGID in the same change.</summary>
    public Errno SetXattr(long ino, string name, ReadOnlySpan<byte> value, XattrSetFlags flags)
    {
        if (name.Length == 0) return Errno.EINVAL;
        if (Encoding.UTF8.GetByteCount(name) > XattrNameMax) return Errno.ERANGE;
        if (value.Length > XattrValueMax) return Errno.E2BIG;
        lock (StateLock)
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
                var r = Versions.MutableInode(li);
                (r.Xattrs ??= new Dictionary<string, byte[]>())[name] = value.ToArray();
                r.CtimeNs = NowNs();
            }
            if ((flags & XattrSetFlags.AclKillSgid) != 0) Versions.MutableInode(li).Mode &= ~0x400u;   // S_ISGID, in the same change
            return 0;
        }
    }

    public Errno RemoveXattr(long ino, string name)
    {
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var li = Live(ino);
            if (li == null) return Errno.ENOENT;
            if (li.Rec.Xattrs?.ContainsKey(name) != true) return Errno.ENODATA;
            var r = Versions.MutableInode(li);
            r.Xattrs!.Remove(name);
            r.CtimeNs = NowNs();
            return 0;
        }
    }

    public Errno SetAttr(long ino, SetAttrRequest req, out InodeAttr attr)
    {
        attr = default;
        LiveInode? li;
        lock (StateLock)
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
        lock (StateLock)
        {
            if (li.Deleted && li.OpenCount == 0) return Errno.ENOENT;
            long now = NowNs();
            var r = Versions.MutableInode(li);
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
        lock (StateLock) oldSize = li.Rec.Size;
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
            lock (StateLock)
            {
                Iomap.PunchRange(li, (size + BlockSize - 1) >> BlockShift, (oldSize + BlockSize - 1) >> BlockShift);
                // Reservations past the old end (FALLOC_FL_KEEP_SIZE) go too, as ext4 frees them.
                Prealloc.ReleasePrealloc(li, (size + BlockSize - 1) >> BlockShift, (MaxFileSize >> BlockShift) + 1);
            }
        }
        lock (StateLock) Versions.MutableInode(li).Size = size;
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
        lock (StateLock)
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
                lock (StateLock) Prealloc.ReleasePrealloc(li, (offset + BlockSize - 1) >> BlockShift, end >> BlockShift);
            if (punch || zero)
            {
                long size; lock (StateLock) size = li.Rec.Size;
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
                        lock (StateLock) Iomap.PunchRange(li, firstFull, lastFull);
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
                // Mode 0 / KEEP_SIZE reserves the space (FallocateReservations.cs); freed blocks waiting for a commit count.
                var e = Prealloc.ReserveForFallocate(li, offset, end);
                if (e == Errno.ENOSPC && HasPendingFrees())
                {
                    Commits.Commit();
                    e = Prealloc.ReserveForFallocate(li, offset, end);
                }
                if (e != 0) return e;
            }
            lock (StateLock)
            {
                var r = Versions.MutableInode(li);
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
            lock (StateLock) hole = ExtentMap.FindRun(LiveChunk(li, fb / ChunkBlocks), fb, 1).IsHole;
            if (!hole)
            {
                long pos = offset; int w = 0;
                var e = Data.WriteLocked(li, ref pos, new byte[blockEnd - offset], ref w);
                if (e != 0) return e;
            }
            offset = blockEnd;
        }
        return 0;
    }

    private const uint S_IRWXUGO = 0x1FF;

    /// <summary>setxattr of <c>system.posix_acl_access</c> / <c>system.posix_acl_default</c> (flags already
    /// checked). EINVAL for a malformed value, EOPNOTSUPP on a symlink, EACCES for a default ACL on anything
    /// but a directory (as ext4). A value with no entries removes the ACL. An access ACL sets the mode's
    /// permission bits and is stored only when it says more than the mode (posix_acl_update_mode).</summary>
    private Errno SetAclLocked(LiveInode li, string name, ReadOnlySpan<byte> value)
    {
        if ((li.Rec.Mode & S_IFMT) == S_IFLNK) return Errno.EOPNOTSUPP;
        var e = PosixAcl.TryParse(value, out var acl);
        if (e != 0) return e;
        if (name == PosixAcl.DefaultXattr && !IsDir(li.Rec)) return acl == null ? 0 : Errno.EACCES;
        var r = Versions.MutableInode(li);
        bool store = acl != null;
        if (name == PosixAcl.AccessXattr && acl != null)
        {
            store = !acl.IsEquivalentToMode(out uint bits);
            r.Mode = (r.Mode & ~S_IRWXUGO) | bits;
        }
        if (store) (r.Xattrs ??= new Dictionary<string, byte[]>())[name] = acl!.ToXattr();
        else r.Xattrs?.Remove(name);
        r.CtimeNs = NowNs();
        return 0;
    }

    /// <summary>
    /// What getxattr and listxattr show of a stored ACL xattr <paramref name="name"/> of inode <paramref name="r"/>:
    /// null to show nothing. ACLs set since Cow keeps them with the mode come back as stored. An ACL that an older
    /// Cow stored raw, beside a mode it did not update (cp -a, cp -p), is shown as ext4 would hold it, with the
    /// mode as the truth: one that does not parse, or says no more than a mode, is not shown (ext4 never stores
    /// such an access ACL); an extended one is shown with its owner, mask and other entries from the mode. So the
    /// kernel, which enforces what GETXATTR returns, never grants more than <c>ls -l</c> shows.
    /// </summary>
    private static byte[]? ShownAcl(InodeRecord r, string name, byte[] stored)
    {
        if (PosixAcl.TryParse(stored, out var acl) != 0 || acl == null) return null;
        if (name == PosixAcl.DefaultXattr) return stored;
        if (acl.IsEquivalentToMode(out _)) return null;
        var shown = acl.WithMode(r.Mode).ToXattr();
        return shown.AsSpan().SequenceEqual(stored) ? stored : shown;
    }

    /// <summary>chmod: the access ACL's USER_OBJ, MASK (or GROUP_OBJ) and OTHER entries follow the new mode
    /// (posix_acl_chmod). An ACL xattr that does not parse (stored raw by an older Cow) is left alone.</summary>
    private static void ChmodAclLocked(InodeRecord r)
    {
        if (r.Xattrs == null || !r.Xattrs.TryGetValue(PosixAcl.AccessXattr, out var v)) return;
        if (PosixAcl.TryParse(v, out var acl) != 0 || acl == null) return;
        r.Xattrs[PosixAcl.AccessXattr] = acl.WithMode(r.Mode).ToXattr();
    }

    /// <summary>
    /// A new inode in <paramref name="dir"/> (posix_acl_create): with a default ACL there, the mode is limited by
    /// it (no umask), the inode gets it as its access ACL (unless equivalent to the mode) and, if a directory,
    /// as its default ACL too. Without one, the umask applies. Symbolic links have neither.
    /// Returns the new inode's xattrs, or null.
    /// </summary>
    internal static Dictionary<string, byte[]>? InheritAclsLocked(InodeRecord dir, ref uint mode, uint umask)
    {
        if ((mode & S_IFMT) == S_IFLNK) return null;
        PosixAcl? dflt = null;
        if (dir.Xattrs != null && dir.Xattrs.TryGetValue(PosixAcl.DefaultXattr, out var v)) PosixAcl.TryParse(v, out dflt);
        if (dflt == null)
        {
            mode &= ~(umask & S_IRWXUGO);
            return null;
        }
        var access = dflt.InheritedAccessAcl(ref mode);
        var x = new Dictionary<string, byte[]>();
        if (access != null) x[PosixAcl.AccessXattr] = access.ToXattr();
        if ((mode & S_IFMT) == S_IFDIR) x[PosixAcl.DefaultXattr] = dflt.ToXattr();
        return x.Count > 0 ? x : null;
    }

    /// <summary>relatime_need_update of Linux's fs/inode.c: atime not after mtime, not after ctime (allowing
    /// <see cref="Engine.CoarseClockSlackNs"/>), or a day old.</summary>
    internal static bool RelatimeNeedsUpdate(long atimeNs, long mtimeNs, long ctimeNs, long nowNs) =>
        mtimeNs + Engine.CoarseClockSlackNs >= atimeNs || ctimeNs + Engine.CoarseClockSlackNs >= atimeNs || nowNs - atimeNs >= Engine.RelatimeIntervalNs;

    /// <summary>
    /// A read (or, for a directory, a listing) of live inode <paramref name="ino"/> happened: sets its atime
    /// to now when <paramref name="policy"/> says so. <paramref name="updated"/> tells whether it did (the
    /// caller then lets the group commit know). ENOENT for an inode that is gone; EIO after a failure.
    /// </summary>
    internal Errno NoteAccess(long ino, AtimePolicy policy, out bool updated)
    {
        updated = false;
        if (policy == AtimePolicy.Noatime || PoolState.Receive != null) return 0;   // a receive keeps the live tree as it is
        lock (StateLock)
        {
            if (Failed) return Errno.EIO;
            var li = Live(ino);
            if (li == null) return Errno.ENOENT;
            long now = NowNs();
            var r = li.Rec;
            if (r.AtimeNs == now) return 0;
            if (policy == AtimePolicy.Relatime && !RelatimeNeedsUpdate(r.AtimeNs, r.MtimeNs, r.CtimeNs, now)) return 0;
            Versions.MutableInode(li).AtimeNs = now;
            updated = true;
            return 0;
        }
    }
}
