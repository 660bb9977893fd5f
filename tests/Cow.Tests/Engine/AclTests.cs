using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>
/// POSIX ACLs through the inode API (<see cref="FileSystemView"/>), as ext4 keeps them: an access ACL sets
/// the mode, chmod rewrites the ACL, new inodes inherit default ACLs (else the umask applies), malformed
/// values are EINVAL and change nothing, snapshots and clones carry ACLs. Every test ends with fsck.
/// </summary>
[Trait("Tier", "engine")]
public class AclTests
{
    private const long Root = 1;
    private const uint S_IFREG = 0x8000, S_IFDIR = 0x4000, S_ISGID = 0x400;
    private const ushort R = 4, W = 2, X = 1;
    private const string Access = PosixAcl.AccessXattr, Default = PosixAcl.DefaultXattr;

    private static void Ok(Errno e, string what) => Assert.True(e == 0, $"{what}: {e}");

    private static byte[] Acl(params (AclTag Tag, ushort Perm, uint Id)[] entries)
    {
        Ok(PosixAcl.TryCreate(entries.Select(x => new AclEntry(x.Tag, x.Perm, x.Id)), out var acl), "test ACL");
        return acl!.ToXattr();
    }

    /// <summary>u::rw-, u:65534:r--, g::r--, m::r--, o::--- (setfacl -m u:nobody:r on a 0640 file).</summary>
    private static readonly byte[] NobodyReads = Acl((AclTag.UserObj, R | W, 0), (AclTag.User, R, 65534), (AclTag.GroupObj, R, 0),
        (AclTag.Mask, R, 0), (AclTag.Other, 0, 0));

    private static string AclText(FileSystemView fs, long ino, string name = Access)
    {
        var e = fs.GetXattr(ino, name, out var v);
        if (e == Errno.ENODATA) return "none";
        Ok(e, $"getxattr {name}");
        Ok(PosixAcl.TryParse(v, out var acl), "stored ACL parses");
        return acl!.ToString();
    }

    private static uint Mode(FileSystemView fs, long ino)
    {
        Ok(fs.GetAttr(ino, out var a), "getattr");
        return a.Mode;
    }

    private static long NewFile(FileSystemView fs, long parent, string name, uint mode = 0x1B6, uint umask = 0)
    {
        Ok(fs.Create(parent, name, mode, 0, 0, out var a, umask), $"create {name}");
        return a.Ino;
    }

    private static long NewDir(FileSystemView fs, long parent, string name, uint mode = 0x1FF, uint umask = 0)
    {
        Ok(fs.Mkdir(parent, name, mode, 0, 0, out var a, umask), $"mkdir {name}");
        return a.Ino;
    }

    [Fact]
    public void Setting_an_access_acl_sets_the_mode_and_chmod_rewrites_the_acl()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = NewFile(fs, Root, "f", 0x180); // 0600
        long ctime0 = fs.GetAttr(f, out var a0) == 0 ? a0.CtimeNs : 0;
        Ok(fs.SetXattr(f, Access, NobodyReads), "set ACL");
        Assert.Equal(S_IFREG | 0x1A0, Mode(fs, f)); // 0640: group bits are the mask
        Assert.True(fs.GetAttr(f, out var a1) == 0 && a1.CtimeNs >= ctime0);
        Assert.Equal("u::rw-,u:65534:r--,g::r--,m::r--,o::---", AclText(fs, f));

        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0x1F5 }, out var a), "chmod 0765");
        Assert.Equal(S_IFREG | 0x1F5, a.Mode);
        Assert.Equal("u::rwx,u:65534:r--,g::r--,m::rw-,o::r-x", AclText(fs, f));

        p.Reopen();
        Assert.Equal("u::rwx,u:65534:r--,g::r--,m::rw-,o::r-x", AclText(p.Live, f));
        Assert.Equal(S_IFREG | 0x1F5, Mode(p.Live, f));
        p.AssertClean();
    }

    [Fact]
    public void Acls_an_older_cow_stored_raw_beside_the_mode_never_grant_more_than_the_mode_shows()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long plain = NewFile(fs, Root, "plain", 0x180), ext = NewFile(fs, Root, "ext", 0x180), bad = NewFile(fs, Root, "bad", 0x180);
        Ok(fs.SetXattr(plain, "user.k", [1]), "set user.k");
        // What cp -a left before Cow kept ACLs and modes in step: the ACL bytes as they came, the mode 0600.
        var wide = Acl((AclTag.UserObj, R | W, 0), (AclTag.GroupObj, R, 0), (AclTag.Other, R, 0));
        var ext644 = Acl((AclTag.UserObj, R | W, 0), (AclTag.User, R | W, 65534), (AclTag.GroupObj, R, 0), (AclTag.Mask, R | W, 0), (AclTag.Other, R, 0));
        (p.Engine.Live(plain)!.Rec.Xattrs ??= new())[Access] = wide;
        (p.Engine.Live(ext)!.Rec.Xattrs ??= new())[Access] = ext644;
        (p.Engine.Live(bad)!.Rec.Xattrs ??= new())[Access] = [2, 0, 0, 0, 1];

        Assert.Equal("none", AclText(fs, plain));   // a minimal ACL: the mode (0600) is the truth
        Ok(fs.ListXattr(plain, out var names), "listxattr");
        Assert.Equal(["user.k"], names);
        Assert.Equal("u::rw-,u:65534:rw-,g::r--,m::---,o::---", AclText(fs, ext));   // owner, mask, other from 0600
        Assert.Equal("none", AclText(fs, bad));
        Ok(fs.ListXattr(bad, out names), "listxattr");
        Assert.Empty(names);
        Assert.Equal(S_IFREG | 0x180, Mode(fs, plain));
    }

    [Fact]
    public void An_acl_equivalent_to_a_mode_is_not_stored_and_replaces_an_extended_one()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = NewFile(fs, Root, "f", 0x180);
        Ok(fs.SetXattr(f, Access, NobodyReads), "set ACL");
        // setfacl -b: u::rw-, g::r--, o::r-- (what is left of the mode)
        Ok(fs.SetXattr(f, Access, Acl((AclTag.UserObj, R | W, 0), (AclTag.GroupObj, R, 0), (AclTag.Other, R, 0))), "minimal ACL");
        Assert.Equal(S_IFREG | 0x1A4, Mode(fs, f));
        Assert.Equal("none", AclText(fs, f));
        Ok(fs.ListXattr(f, out var names), "listxattr");
        Assert.Empty(names);
        // A value with no entries removes the ACL and leaves the mode.
        Ok(fs.SetXattr(f, Access, NobodyReads), "set ACL");
        Ok(fs.SetXattr(f, Access, new byte[] { 2, 0, 0, 0 }), "empty ACL");
        Assert.Equal("none", AclText(fs, f));
        Assert.Equal(S_IFREG | 0x1A0, Mode(fs, f));
        p.AssertClean();
    }

    [Fact]
    public void Malformed_acls_are_EINVAL_and_change_nothing()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = NewFile(fs, Root, "f", 0x1A4);
        Ok(fs.SetXattr(f, Access, NobodyReads), "set ACL");
        var good = NobodyReads;
        var bad = new List<byte[]>
        {
            new byte[] { 1, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff },                     // version 1
            good[..^2],                                                                         // size not 4 + 8n
            Acl((AclTag.UserObj, R, 0), (AclTag.GroupObj, R, 0), (AclTag.Other, R, 0))[..^8],  // no OTHER
        };
        var swapped = (byte[])good.Clone(); // GROUP_OBJ before USER_OBJ: unsorted
        good.AsSpan(4, 8).CopyTo(swapped.AsSpan(20));
        good.AsSpan(20, 8).CopyTo(swapped.AsSpan(4));
        bad.Add(swapped);
        var badTag = (byte[])good.Clone();
        badTag[4 + 8] = 0x40;
        bad.Add(badTag);
        foreach (var v in bad)
        {
            Assert.Equal(Errno.EINVAL, fs.SetXattr(f, Access, v));
            Assert.Equal(Errno.EINVAL, fs.SetXattr(Root, Default, v));
        }
        Assert.Equal(S_IFREG | 0x1A0, Mode(fs, f));
        Assert.Equal("u::rw-,u:65534:r--,g::r--,m::r--,o::---", AclText(fs, f));
        Assert.Equal("none", AclText(fs, Root, Default));
        // A default ACL belongs to directories (EACCES, as ext4); symlinks have no ACLs (EOPNOTSUPP).
        Assert.Equal(Errno.EACCES, fs.SetXattr(f, Default, good));
        Ok(fs.Symlink(Root, "l", "f", 0, 0, out var l), "symlink");
        Assert.Equal(Errno.EOPNOTSUPP, fs.SetXattr(l.Ino, Access, good));
        Assert.Equal("none", AclText(fs, f, Default));
        p.AssertClean();
    }

    [Fact]
    public void New_inodes_inherit_the_default_acl_or_get_the_umask()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long plain = NewDir(fs, Root, "plain", 0x1FF, umask: 0x12);
        Assert.Equal(S_IFDIR | 0x1ED, Mode(fs, plain)); // 0777 & ~022
        Assert.Equal(S_IFREG | 0x180, Mode(fs, NewFile(fs, plain, "f", 0x1B6, umask: 0x3F))); // 0666 & ~077

        long d = NewDir(fs, Root, "d", 0x1ED);
        // setfacl -d -m u:nobody:rwx,g::r-x,o::- d
        var dflt = Acl((AclTag.UserObj, R | W | X, 0), (AclTag.User, R | W | X, 65534), (AclTag.GroupObj, R | X, 0),
            (AclTag.Mask, R | W | X, 0), (AclTag.Other, 0, 0));
        Ok(fs.SetXattr(d, Default, dflt), "set default ACL");
        Assert.Equal(S_IFDIR | 0x1ED, Mode(fs, d)); // a default ACL leaves the mode alone

        long f = NewFile(fs, d, "f", 0x1B6, umask: 0x3F); // the umask does not apply under a default ACL
        Assert.Equal(S_IFREG | 0x1B0, Mode(fs, f));
        Assert.Equal("u::rw-,u:65534:rwx,g::r-x,m::rw-,o::---", AclText(fs, f));
        Assert.Equal("none", AclText(fs, f, Default));

        long sub = NewDir(fs, d, "sub", 0x1FF, umask: 0x3F);
        Assert.Equal(S_IFDIR | 0x1F8, Mode(fs, sub));
        Assert.Equal("u::rwx,u:65534:rwx,g::r-x,m::rwx,o::---", AclText(fs, sub));
        Assert.Equal("u::rwx,u:65534:rwx,g::r-x,m::rwx,o::---", AclText(fs, sub, Default));
        long deeper = NewFile(fs, sub, "g", 0x124); // 0444: inherited twice
        Assert.Equal(S_IFREG | 0x120, Mode(fs, deeper));
        Assert.Equal("u::r--,u:65534:rwx,g::r-x,m::r--,o::---", AclText(fs, deeper));

        Ok(fs.Mknod(d, "fifo", 0x1000 | 0x1B6, 0, 0, 0, out var fifo, umask: 0x3F), "mkfifo");
        Assert.Equal(0x1000u | 0x1B0, fifo.Mode);
        Ok(fs.Symlink(d, "l", "f", 0, 0, out var l), "symlink");
        Assert.Equal(0xA000u | 0x1FF, l.Mode);
        Assert.Equal("none", AclText(fs, l.Ino));

        // A setgid directory's S_ISGID passes through the default ACL unchanged.
        long sg = NewDir(fs, d, "sg", S_ISGID | 0x1FF);
        Assert.Equal(S_IFDIR | S_ISGID | 0x1F8, Mode(fs, sg));
        p.AssertClean();
    }

    [Fact]
    public void Acl_kill_sgid_clears_setgid_in_the_same_change()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = NewFile(fs, Root, "f", S_ISGID | 0x1ED);
        Ok(fs.SetXattr(f, Access, NobodyReads, XattrSetFlags.AclKillSgid), "set ACL, kill sgid");
        Assert.Equal(S_IFREG | 0x1A0, Mode(fs, f));
        long g = NewFile(fs, Root, "g", S_ISGID | 0x1ED);
        Ok(fs.SetXattr(g, Access, NobodyReads), "set ACL");
        Assert.Equal(S_IFREG | S_ISGID | 0x1A0, Mode(fs, g));
        p.AssertClean();
    }

    [Fact]
    public void Snapshots_and_clones_carry_acls()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = NewDir(fs, Root, "d", 0x1ED);
        long f = NewFile(fs, d, "f", 0x180);
        Ok(fs.SetXattr(f, Access, NobodyReads), "set ACL");
        Ok(fs.SetXattr(d, Default, NobodyReads), "set default ACL");
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0x1FF }, out _), "chmod 0777 after the snapshot");
        Ok(fs.RemoveXattr(d, Default), "remove default ACL after the snapshot");

        var snap = p.Pool.Snapshot("s")!;
        long sf = MemoryPool.Ino(snap, "/d/f"), sd = MemoryPool.Ino(snap, "/d");
        Assert.Equal("u::rw-,u:65534:r--,g::r--,m::r--,o::---", AclText(snap, sf));
        Assert.Equal(S_IFREG | 0x1A0, Mode(snap, sf));
        Assert.Equal("u::rw-,u:65534:r--,g::r--,m::r--,o::---", AclText(snap, sd, Default));
        Assert.Equal(Errno.EROFS, snap.SetXattr(sf, Access, NobodyReads));
        Assert.Equal("u::rwx,u:65534:r--,g::r--,m::rwx,o::rwx", AclText(fs, f));

        Ok(p.Engine.CloneSnapshot("s", "/copy", "/d"), "clone");
        long cf = MemoryPool.Ino(fs, "/copy/f"), cd = MemoryPool.Ino(fs, "/copy");
        Assert.Equal("u::rw-,u:65534:r--,g::r--,m::r--,o::---", AclText(fs, cf));
        Assert.Equal(S_IFREG | 0x1A0, Mode(fs, cf));
        Assert.Equal("u::rw-,u:65534:r--,g::r--,m::r--,o::---", AclText(fs, cd, Default));
        // The clone's default ACL works like any other.
        Assert.Equal("u::rw-,u:65534:r--,g::r--,m::r--,o::---", AclText(fs, NewFile(fs, cd, "new", 0x1B6)));
        p.AssertClean();
    }
}
