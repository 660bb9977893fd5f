using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

// open(O_TMPFILE): a regular file with no name, open from birth, which linkat can name later.
public sealed partial class Engine
{
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
        lock (_lock)
        {
            if (Failed) return Errno.EIO;
            var dir = LiveDir(parent, out var e);
            if (dir == null) return e;
            if (dir.Rec.Nlink == 0) return Errno.ENOENT; // removed directory
            mode = S_IFREG | (mode & 0xFFF);
            var xattrs = InheritAclsLocked(dir.Rec, ref mode, umask);   // as a created file: default ACL or umask
            long now = NowNs();
            var rec = new InodeRecord
            {
                Rid = _versions.NewRid(), Birth = _pool.LiveGen, Ino = _pool.NextIno++, Mode = mode, Uid = uid, Gid = gid, Xattrs = xattrs,
                Nlink = 0, AtimeNs = now, MtimeNs = now, CtimeNs = now, BtimeNs = now,
            };
            var li = new LiveInode(rec) { AllChunksLoaded = true, OpenCount = 1, Linkable = true };
            _versions.AddInode(li);
            attr = Attr(rec);
            return 0;
        }
    }
}
