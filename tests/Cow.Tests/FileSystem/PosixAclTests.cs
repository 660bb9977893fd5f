using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.FileSystem;

/// <summary>
/// <see cref="PosixAcl"/>: the xattr format and the kernel's fs/posix_acl.c semantics (validation, mode
/// equivalence, chmod, create from a default ACL), with values worked out from the kernel's functions.
/// </summary>
[Trait("Tier", "unit")]
public class PosixAclTests
{
    private const ushort R = 4, W = 2, X = 1;

    private static AclEntry U(ushort perm) => new(AclTag.UserObj, perm, PosixAcl.UndefinedId);
    private static AclEntry Un(uint uid, ushort perm) => new(AclTag.User, perm, uid);
    private static AclEntry G(ushort perm) => new(AclTag.GroupObj, perm, PosixAcl.UndefinedId);
    private static AclEntry Gn(uint gid, ushort perm) => new(AclTag.Group, perm, gid);
    private static AclEntry M(ushort perm) => new(AclTag.Mask, perm, PosixAcl.UndefinedId);
    private static AclEntry O(ushort perm) => new(AclTag.Other, perm, PosixAcl.UndefinedId);

    /// <summary>The raw xattr bytes of entries, as setfacl's libacl writes them (no validation).</summary>
    private static byte[] Raw(uint version, params AclEntry[] entries)
    {
        var b = new byte[4 + entries.Length * 8];
        BitConverter.GetBytes(version).CopyTo(b, 0);
        for (int i = 0; i < entries.Length; i++)
        {
            BitConverter.GetBytes((ushort)entries[i].Tag).CopyTo(b, 4 + i * 8);
            BitConverter.GetBytes(entries[i].Perm).CopyTo(b, 6 + i * 8);
            BitConverter.GetBytes(entries[i].Id).CopyTo(b, 8 + i * 8);
        }
        return b;
    }

    private static PosixAcl Acl(params AclEntry[] entries)
    {
        var e = PosixAcl.TryCreate(entries, out var acl);
        Assert.True(e == 0, $"valid ACL refused: {e}");
        return acl!;
    }

    [Fact]
    public void Round_trips_the_xattr_format_byte_for_byte()
    {
        var raw = Raw(2, U(R | W), Un(65534, R), Un(70000, R | W | X), G(R), Gn(5, R | X), M(R | W | X), O(0));
        Assert.Equal(0, (int)PosixAcl.TryParse(raw, out var acl));
        Assert.Equal(7, acl!.Entries.Count);
        Assert.Equal(new AclEntry(AclTag.User, R, 65534), acl.Entries[1]);
        Assert.Equal(raw, acl.ToXattr());
        Assert.Equal("u::rw-,u:65534:r--,u:70000:rwx,g::r--,g:5:r-x,m::rwx,o::---", acl.ToString());
    }

    [Fact]
    public void The_id_of_unnamed_entries_is_canonicalised()
    {
        var raw = Raw(2, U(R) with { Id = 0 }, G(R) with { Id = 7 }, O(R) with { Id = 9 });
        Assert.Equal(0, (int)PosixAcl.TryParse(raw, out var acl));
        Assert.Equal(Raw(2, U(R), G(R), O(R)), acl!.ToXattr());
    }

    [Fact]
    public void A_value_with_no_entries_is_no_acl()
    {
        Assert.Equal(0, (int)PosixAcl.TryParse(Raw(2), out var acl));
        Assert.Null(acl);
    }

    public static TheoryData<string, byte[]> Malformed => new()
    {
        { "empty value", Array.Empty<byte>() },
        { "short header", new byte[] { 2, 0, 0 } },
        { "version 1", Raw(1, U(R), G(R), O(R)) },
        { "version 3", Raw(3, U(R), G(R), O(R)) },
        { "size not header + 8n", Raw(2, U(R), G(R), O(R))[..^3] },
        { "unknown tag", Raw(2, U(R), G(R), new AclEntry((AclTag)0x40, R, 0), O(R)) },
        { "perm beyond rwx", Raw(2, U(8), G(R), O(R)) },
        { "no USER_OBJ", Raw(2, G(R), O(R)) },
        { "no GROUP_OBJ", Raw(2, U(R), O(R)) },
        { "no OTHER", Raw(2, U(R), G(R)) },
        { "named user without mask", Raw(2, U(R), Un(5, R), G(R), O(R)) },
        { "named group without mask", Raw(2, U(R), G(R), Gn(5, R), O(R)) },
        { "unsorted users", Raw(2, U(R), Un(9, R), Un(5, R), G(R), M(R), O(R)) },
        { "duplicate user", Raw(2, U(R), Un(5, R), Un(5, R), G(R), M(R), O(R)) },
        { "duplicate group", Raw(2, U(R), G(R), Gn(5, R), Gn(5, W), M(R), O(R)) },
        { "two USER_OBJ", Raw(2, U(R), U(R), G(R), O(R)) },
        { "two OTHER", Raw(2, U(R), G(R), O(R), O(R)) },
        { "GROUP_OBJ before USER_OBJ", Raw(2, G(R), U(R), O(R)) },
        { "mask before GROUP_OBJ", Raw(2, U(R), M(R), G(R), O(R)) },
        { "user after group", Raw(2, U(R), G(R), Un(5, R), M(R), O(R)) },
        { "entry after OTHER", Raw(2, U(R), G(R), O(R), M(R)) },
        { "named user -1", Raw(2, U(R), Un(uint.MaxValue, R), G(R), M(R), O(R)) },
        { "named group -1", Raw(2, U(R), G(R), Gn(uint.MaxValue, R), M(R), O(R)) },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Malformed_values_are_EINVAL(string what, byte[] value)
    {
        var e = PosixAcl.TryParse(value, out var acl);
        Assert.True(e == Errno.EINVAL, $"{what}: {e}");
        Assert.Null(acl);
    }

    [Fact]
    public void A_mask_without_named_entries_is_valid()
    {
        Assert.Equal(0, (int)PosixAcl.TryParse(Raw(2, U(R | W), G(R), M(R), O(0)), out var acl));
        Assert.False(acl!.IsEquivalentToMode(out uint bits));
        Assert.Equal(0x1A0u, bits); // 0640: group bits from the mask
    }

    [Fact]
    public void Minimal_acl_is_equivalent_to_its_mode()
    {
        var acl = Acl(U(R | W | X), G(R | X), O(X));
        Assert.True(acl.IsEquivalentToMode(out uint bits));
        Assert.Equal(0x1E9u, bits); // 0751
    }

    [Fact]
    public void Extended_acl_gives_the_mask_as_group_bits()
    {
        var acl = Acl(U(R | W), Un(65534, R), G(R | W | X), M(R), O(0));
        Assert.False(acl.IsEquivalentToMode(out uint bits));
        Assert.Equal(0x1A0u, bits); // 0640, not 0670: the group class is the mask
    }

    [Fact]
    public void Chmod_rewrites_owner_mask_and_other_and_keeps_named_entries()
    {
        var acl = Acl(U(R | W), Un(65534, R | W), G(R), M(R | W), O(R));
        Assert.Equal("u::rwx,u:65534:rw-,g::r--,m::r-x,o::--x", acl.WithMode(0x8000 | 0x1E9).ToString()); // 0751
        var minimal = Acl(U(R | W), G(R), O(R));
        Assert.Equal("u::---,g::rwx,o::r--", minimal.WithMode(0x03C).ToString()); // 0074: no mask, GROUP_OBJ takes it
    }

    [Fact]
    public void Create_from_a_default_acl_limits_the_mode_and_keeps_named_entries()
    {
        // setfacl -d -m u:nobody:rwx,g::r-x,o::- on a directory; open(O_CREAT, 0666) in it.
        var dflt = Acl(U(R | W | X), Un(65534, R | W | X), G(R | X), M(R | W | X), O(0));
        uint mode = 0x8000 | 0x1B6;
        var access = dflt.InheritedAccessAcl(ref mode);
        Assert.Equal(0x8000u | 0x1B0, mode); // 0660: the mask rwx & rw- = rw-
        Assert.Equal("u::rw-,u:65534:rwx,g::r-x,m::rw-,o::---", access!.ToString());

        // mkdir 0777 in it: the full default ACL, mode 0770.
        mode = 0x4000 | 0x1FF;
        access = dflt.InheritedAccessAcl(ref mode);
        Assert.Equal(0x4000u | 0x1F8, mode);
        Assert.Equal("u::rwx,u:65534:rwx,g::r-x,m::rwx,o::---", access!.ToString());
    }

    [Fact]
    public void Create_from_a_minimal_default_acl_stores_only_the_mode()
    {
        var dflt = Acl(U(R | W | X), G(R | X), O(0));
        uint mode = 0x8000 | 0x800 | 0x1A4; // setuid 0644: special bits stay
        Assert.Null(dflt.InheritedAccessAcl(ref mode));
        Assert.Equal(0x8000u | 0x800 | 0x1A0, mode); // 04640
    }
}
