using System.Buffers.Binary;
using Mono.Unix.Native;

namespace Cow.Core.FileSystem;

/// <summary>ACL entry tags (ACL_USER_OBJ …), as in the xattr format's <c>e_tag</c>.</summary>
public enum AclTag : ushort { UserObj = 0x01, User = 0x02, GroupObj = 0x04, Group = 0x08, Mask = 0x10, Other = 0x20 }

/// <summary>One ACL entry: tag, permission bits (r=4, w=2, x=1) and, for <see cref="AclTag.User"/> and
/// <see cref="AclTag.Group"/>, the uid or gid.</summary>
public readonly record struct AclEntry(AclTag Tag, ushort Perm, uint Id);

/// <summary>
/// A POSIX access or default ACL in the Linux xattr format (<c>system.posix_acl_access</c>,
/// <c>system.posix_acl_default</c>): a little-endian header <c>a_version = 2</c>, then 8-byte entries
/// <c>{u16 e_tag, u16 e_perm, u32 e_id}</c>. The semantics are the kernel's fs/posix_acl.c: validation
/// (posix_acl_valid), equivalence to a mode (posix_acl_equiv_mode), chmod (posix_acl_chmod_masq) and
/// inheritance on create (posix_acl_create_masq). Pure functions over an immutable value; thread-safe.
/// </summary>
public sealed class PosixAcl
{
    public const string AccessXattr = "system.posix_acl_access";
    public const string DefaultXattr = "system.posix_acl_default";
    /// <summary>POSIX_ACL_XATTR_VERSION.</summary>
    public const uint XattrVersion = 2;
    /// <summary>ACL_UNDEFINED_ID: the e_id of entries that name no user or group.</summary>
    public const uint UndefinedId = uint.MaxValue;
    private const int HeaderSize = 4, EntrySize = 8;
    private const uint S_IRWXU = 0x1C0, S_IRWXG = 0x38, S_IRWXO = 0x7, S_IRWXUGO = 0x1FF;

    /// <summary>The entries, in the canonical order the format requires (by tag, then by id).</summary>
    public IReadOnlyList<AclEntry> Entries => _entries;
    private readonly AclEntry[] _entries;

    private PosixAcl(AclEntry[] entries) => _entries = entries;

    /// <summary>True for the two ACL xattr names.</summary>
    public static bool IsAclXattr(string name) => name is AccessXattr or DefaultXattr;

    /// <summary>
    /// Parses and validates an ACL xattr value. EINVAL: shorter than the header, a version other than 2, a size
    /// that is not the header plus whole entries, an unknown tag, permission bits beyond rwx, entries out of
    /// order or repeated, a named entry with id -1 (no such uid/gid), or a required entry (USER_OBJ, GROUP_OBJ, OTHER; MASK when there are named
    /// entries) missing. A value with no entries parses as null: it means "no ACL", as for the kernel.
    /// </summary>
    public static Errno TryParse(ReadOnlySpan<byte> value, out PosixAcl? acl)
    {
        acl = null;
        if (value.Length < HeaderSize) return Errno.EINVAL;
        if (BinaryPrimitives.ReadUInt32LittleEndian(value) != XattrVersion) return Errno.EINVAL;
        if ((value.Length - HeaderSize) % EntrySize != 0) return Errno.EINVAL;
        int count = (value.Length - HeaderSize) / EntrySize;
        if (count == 0) return 0;
        var entries = new AclEntry[count];
        for (int i = 0; i < count; i++)
        {
            var s = value.Slice(HeaderSize + i * EntrySize, EntrySize);
            var tag = (AclTag)BinaryPrimitives.ReadUInt16LittleEndian(s);
            ushort perm = BinaryPrimitives.ReadUInt16LittleEndian(s[2..]);
            uint id = BinaryPrimitives.ReadUInt32LittleEndian(s[4..]);
            // The id means something only for named entries; canonical form elsewhere is ACL_UNDEFINED_ID.
            entries[i] = new AclEntry(tag, perm, tag is AclTag.User or AclTag.Group ? id : UndefinedId);
        }
        var e = Validate(entries);
        if (e != 0) return e;
        acl = new PosixAcl(entries);
        return 0;
    }

    /// <summary>An ACL from entries (validated as <see cref="TryParse"/> does); EINVAL if not valid.</summary>
    public static Errno TryCreate(IEnumerable<AclEntry> entries, out PosixAcl? acl)
    {
        var a = entries.Select(x => x with { Id = x.Tag is AclTag.User or AclTag.Group ? x.Id : UndefinedId }).ToArray();
        acl = null;
        var e = a.Length == 0 ? Errno.EINVAL : Validate(a);
        if (e == 0) acl = new PosixAcl(a);
        return e;
    }

    /// <summary>posix_acl_valid: the order USER_OBJ, USER (ascending uid), GROUP_OBJ, GROUP (ascending gid),
    /// MASK, OTHER, each single entry exactly once, MASK required when there is a named entry.</summary>
    private static Errno Validate(AclEntry[] entries)
    {
        // States: 1 expect USER_OBJ, 2 in USER, 3 in GROUP, 4 after MASK (expect OTHER), 0 done.
        int state = 1;
        bool needsMask = false;
        long prevId = -1;
        foreach (var x in entries)
        {
            if ((x.Perm & ~7) != 0) return Errno.EINVAL;
            switch (x.Tag)
            {
                case AclTag.UserObj:
                    if (state != 1) return Errno.EINVAL;
                    state = 2; prevId = -1;
                    break;
                case AclTag.User:
                    if (state != 2 || x.Id <= prevId || x.Id == UndefinedId) return Errno.EINVAL;
                    prevId = x.Id; needsMask = true;
                    break;
                case AclTag.GroupObj:
                    if (state != 2) return Errno.EINVAL;
                    state = 3; prevId = -1;
                    break;
                case AclTag.Group:
                    if (state != 3 || x.Id <= prevId || x.Id == UndefinedId) return Errno.EINVAL;
                    prevId = x.Id; needsMask = true;
                    break;
                case AclTag.Mask:
                    if (state != 3) return Errno.EINVAL;
                    state = 4;
                    break;
                case AclTag.Other:
                    if (state == 4 || (state == 3 && !needsMask)) { state = 0; break; }
                    return Errno.EINVAL;
                default:
                    return Errno.EINVAL;
            }
        }
        return state == 0 ? 0 : Errno.EINVAL;
    }

    /// <summary>The xattr value (version 2 header and entries; ACL_UNDEFINED_ID for unnamed entries).</summary>
    public byte[] ToXattr()
    {
        var b = new byte[HeaderSize + _entries.Length * EntrySize];
        BinaryPrimitives.WriteUInt32LittleEndian(b, XattrVersion);
        for (int i = 0; i < _entries.Length; i++)
        {
            var s = b.AsSpan(HeaderSize + i * EntrySize, EntrySize);
            BinaryPrimitives.WriteUInt16LittleEndian(s, (ushort)_entries[i].Tag);
            BinaryPrimitives.WriteUInt16LittleEndian(s[2..], _entries[i].Perm);
            BinaryPrimitives.WriteUInt32LittleEndian(s[4..], _entries[i].Id);
        }
        return b;
    }

    /// <summary>
    /// posix_acl_equiv_mode: the permission bits (0777) this ACL gives the mode — owner from USER_OBJ, group
    /// from MASK if there is one (else GROUP_OBJ), other from OTHER — and whether the ACL says no more than
    /// those bits (only USER_OBJ, GROUP_OBJ and OTHER entries): then it need not be stored.
    /// </summary>
    public bool IsEquivalentToMode(out uint permissionBits)
    {
        uint mode = 0;
        bool equivalent = true;
        foreach (var x in _entries)
            switch (x.Tag)
            {
                case AclTag.UserObj: mode |= (uint)(x.Perm & 7) << 6; break;
                case AclTag.GroupObj: mode |= (uint)(x.Perm & 7) << 3; break;
                case AclTag.Other: mode |= (uint)(x.Perm & 7); break;
                case AclTag.Mask: mode = (mode & ~S_IRWXG) | ((uint)(x.Perm & 7) << 3); equivalent = false; break;
                default: equivalent = false; break;
            }
        permissionBits = mode;
        return equivalent;
    }

    /// <summary>posix_acl_chmod: the ACL after chmod to <paramref name="mode"/>: USER_OBJ, MASK (GROUP_OBJ
    /// when there is no mask) and OTHER take the mode's owner, group and other bits; named entries stay.</summary>
    public PosixAcl WithMode(uint mode)
    {
        var a = (AclEntry[])_entries.Clone();
        int group = -1, mask = -1;
        for (int i = 0; i < a.Length; i++)
            switch (a[i].Tag)
            {
                case AclTag.UserObj: a[i] = a[i] with { Perm = (ushort)((mode & S_IRWXU) >> 6) }; break;
                case AclTag.Other: a[i] = a[i] with { Perm = (ushort)(mode & S_IRWXO) }; break;
                case AclTag.GroupObj: group = i; break;
                case AclTag.Mask: mask = i; break;
            }
        int g = mask >= 0 ? mask : group;
        a[g] = a[g] with { Perm = (ushort)((mode & S_IRWXG) >> 3) };
        return new PosixAcl(a);
    }

    /// <summary>
    /// posix_acl_create_masq: a new inode in a directory whose default ACL is this one. The mode's permission
    /// bits become the create mode's bits limited by the ACL (owner by USER_OBJ, group by MASK or else
    /// GROUP_OBJ, other by OTHER; no umask); its other bits (type, setuid, setgid, sticky) stay. The inode's
    /// access ACL is this ACL with those entries limited by the create mode, or null when it is equivalent
    /// to the resulting mode (then only the mode is stored).
    /// </summary>
    public PosixAcl? InheritedAccessAcl(ref uint mode)
    {
        var a = (AclEntry[])_entries.Clone();
        uint m = mode;
        bool notEquivalent = false;
        int group = -1, mask = -1;
        for (int i = 0; i < a.Length; i++)
            switch (a[i].Tag)
            {
                case AclTag.UserObj:
                    a[i] = a[i] with { Perm = (ushort)(a[i].Perm & ((m >> 6) & 7)) };
                    m &= ((uint)a[i].Perm << 6) | ~S_IRWXU;
                    break;
                case AclTag.User: case AclTag.Group: notEquivalent = true; break;
                case AclTag.GroupObj: group = i; break;
                case AclTag.Mask: mask = i; notEquivalent = true; break;
                case AclTag.Other:
                    a[i] = a[i] with { Perm = (ushort)(a[i].Perm & (m & 7)) };
                    m &= a[i].Perm | ~S_IRWXO;
                    break;
            }
        int g = mask >= 0 ? mask : group;
        a[g] = a[g] with { Perm = (ushort)(a[g].Perm & ((m >> 3) & 7)) };
        m &= ((uint)a[g].Perm << 3) | ~S_IRWXG;
        mode = (mode & ~S_IRWXUGO) | (m & S_IRWXUGO);
        return notEquivalent ? new PosixAcl(a) : null;
    }

    /// <summary>The ACL in getfacl's short text form ("u::rw-,u:65534:r--,g::r--,m::r--,o::---"), for messages and tests.</summary>
    public override string ToString() => string.Join(',', _entries.Select(x =>
    {
        string who = x.Tag switch
        {
            AclTag.UserObj => "u:",
            AclTag.User => $"u:{x.Id}",
            AclTag.GroupObj => "g:",
            AclTag.Group => $"g:{x.Id}",
            AclTag.Mask => "m:",
            _ => "o:",
        };
        return who + ":" + ((x.Perm & 4) != 0 ? "r" : "-") + ((x.Perm & 2) != 0 ? "w" : "-") + ((x.Perm & 1) != 0 ? "x" : "-");
    }));
}
