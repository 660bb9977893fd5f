using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

/// <summary>
/// POSIX ACLs, as ext4 and btrfs keep them: the two ACL xattrs are stored like other xattrs (versioned with the
/// inode, so snapshots and clones carry them) but with the kernel's semantics (<see cref="PosixAcl"/>): an
/// access ACL sets the mode's permission bits, chmod rewrites the access ACL, and a new inode inherits its
/// directory's default ACL (else the umask applies). Every helper here runs under <c>_lock</c>, inside the
/// change it belongs to, so an ACL and the mode it implies are one change.
/// </summary>
public sealed partial class Engine
{
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
        var r = _versions.MutableInode(li);
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
    private static Dictionary<string, byte[]>? InheritAclsLocked(InodeRecord dir, ref uint mode, uint umask)
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
}
