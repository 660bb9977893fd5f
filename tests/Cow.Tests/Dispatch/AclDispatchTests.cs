using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Xunit;

namespace Cow.Tests.Dispatch;

/// <summary>POSIX ACLs at the FUSE protocol: INIT grants POSIX_ACL with DONT_MASK, the umask fields of
/// create_in / mkdir_in / mknod_in apply unless the parent has a default ACL, and FUSE_SETXATTR_ACL_KILL_SGID
/// clears setgid with the ACL's own mode change.</summary>
[Trait("Tier", "engine")]
public sealed class AclDispatchTests : DispatchTestBase
{
    private const uint S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFIFO = 0x1000, S_ISGID = 0x400;

    private static byte[] DefaultAcl()
    {
        // u::rwx, u:65534:rwx, g::r-x, m::rwx, o::---
        Assert.Equal(0, (int)PosixAcl.TryCreate([new(AclTag.UserObj, 7, 0), new(AclTag.User, 7, 65534), new(AclTag.GroupObj, 5, 0),
            new(AclTag.Mask, 7, 0), new(AclTag.Other, 0, 0)], out var acl));
        return acl!.ToXattr();
    }

    private FuseAttr Made((FuseOutHeader Header, byte[] Body) r)
    {
        Assert.True(r.Header.Error == 0, $"error {r.Header.Error}");
        return Read<FuseEntryOut>(r.Body).Attr;
    }

    [Fact]
    public void Init_grants_posix_acl_with_dont_mask_and_dont_mask_only_with_it()
    {
        var o = Init(flags: FuseInitFlags.AsyncRead | FuseInitFlags.PosixAcl | FuseInitFlags.DontMask);
        Assert.Equal(FuseInitFlags.AsyncRead | FuseInitFlags.PosixAcl | FuseInitFlags.DontMask, o.AllFlags);
        _d = new Cow.Fuse.Server.RequestDispatcher(_pool.Pool);
        o = Init(flags: FuseInitFlags.AsyncRead | FuseInitFlags.DontMask);
        Assert.Equal(FuseInitFlags.AsyncRead, o.AllFlags); // DONT_MASK only with POSIX_ACL
    }

    [Fact]
    public void The_umask_applies_unless_the_parent_has_a_default_acl()
    {
        Init(flags: FuseInitFlags.AsyncRead | FuseInitFlags.PosixAcl | FuseInitFlags.DontMask | FuseInitFlags.SetxattrExt);
        Assert.Equal(S_IFDIR | 0x1E8, Made(Call(FuseOpcode.Mkdir, 1, Bytes(new FuseMkdirIn { Mode = 0x1FF, Umask = 0x17 }), Name("d"))).Mode);
        Assert.Equal(S_IFREG | 0x1A0, Made(Call(FuseOpcode.Create, 1, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFREG | 0x1B6, Umask = 0x17 }), Name("f"))).Mode);
        Assert.Equal(S_IFIFO | 0x1A0, Made(Call(FuseOpcode.Mknod, 1, Bytes(new FuseMknodIn { Mode = S_IFIFO | 0x1B6, Umask = 0x17 }), Name("p"))).Mode);

        var d = Lookup(1, "d");
        var acl = DefaultAcl();
        Assert.Equal(0, Call(FuseOpcode.Setxattr, d.NodeId, Bytes(new FuseSetxattrIn { Size_ = (uint)acl.Length }), Name(PosixAcl.DefaultXattr), acl).Header.Error);
        Assert.Equal(S_IFDIR | 0x1F8, Made(Call(FuseOpcode.Mkdir, d.NodeId, Bytes(new FuseMkdirIn { Mode = 0x1FF, Umask = 0x3F }), Name("sub"))).Mode);
        Assert.Equal(S_IFREG | 0x1B0, Made(Call(FuseOpcode.Create, d.NodeId, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFREG | 0x1B6, Umask = 0x3F }), Name("f"))).Mode);
        Assert.Equal(S_IFIFO | 0x1B0, Made(Call(FuseOpcode.Mknod, d.NodeId, Bytes(new FuseMknodIn { Mode = S_IFIFO | 0x1B6, Umask = 0x3F }), Name("p"))).Mode);
        var (h, body) = Call(FuseOpcode.Getxattr, Lookup(d.NodeId, "sub").NodeId, Bytes(new FuseGetxattrIn { Size_ = 256 }), Name(PosixAcl.DefaultXattr));
        Assert.Equal(0, h.Error);
        Assert.Equal(acl, body);
    }

    [Fact]
    public void Acl_kill_sgid_and_the_acl_mode_are_one_change()
    {
        Init(flags: FuseInitFlags.AsyncRead | FuseInitFlags.PosixAcl | FuseInitFlags.SetxattrExt);
        var f = Made(Call(FuseOpcode.Create, 1, Bytes(new FuseCreateIn { Flags = 2, Mode = S_IFREG | S_ISGID | 0x1ED }), Name("f")));
        Assert.Equal(0, (int)PosixAcl.TryCreate([new(AclTag.UserObj, 6, 0), new(AclTag.User, 4, 65534), new(AclTag.GroupObj, 4, 0),
            new(AclTag.Mask, 4, 0), new(AclTag.Other, 0, 0)], out var acl));
        var value = acl!.ToXattr();
        Assert.Equal(0, Call(FuseOpcode.Setxattr, f.Ino, Bytes(new FuseSetxattrIn { Size_ = (uint)value.Length, SetxattrFlags = FuseSetxattrIn.AclKillSgid }),
            Name(PosixAcl.AccessXattr), value).Header.Error);
        Assert.Equal(S_IFREG | 0x1A0, Read<FuseAttrOut>(Call(FuseOpcode.Getattr, f.Ino, Bytes(new FuseGetattrIn())).Body).Attr.Mode);
        // Malformed: EINVAL, nothing changes.
        Assert.Equal(EINVAL, Error(FuseOpcode.Setxattr, f.Ino, Bytes(new FuseSetxattrIn { Size_ = 6 }), Name(PosixAcl.AccessXattr), value[..6]));
        Assert.Equal(S_IFREG | 0x1A0, Read<FuseAttrOut>(Call(FuseOpcode.Getattr, f.Ino, Bytes(new FuseGetattrIn())).Body).Attr.Mode);
    }
}
