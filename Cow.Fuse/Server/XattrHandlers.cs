using System.Runtime.InteropServices;
using System.Text;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.OpcodeTable;
using static Cow.Fuse.Server.AttributeHandlers;

namespace Cow.Fuse.Server;

// Every handler has the OpHandler signature, whether it uses each argument or not.
#pragma warning disable IDE0060

// SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR.
internal static class XattrHandlers
{
    /// <summary>
    /// SETXATTR: fuse_setxattr_in is 8 bytes (FUSE_COMPAT_SETXATTR_IN_SIZE) unless FUSE_SETXATTR_EXT was
    /// granted, then 16; the name and the value follow. XATTR_CREATE / XATTR_REPLACE; other flags EINVAL.
    /// FUSE_SETXATTR_ACL_KILL_SGID clears S_ISGID in the same change as the ACL (and the mode it implies).
    /// </summary>
    public static Errno Setxattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        int size = (d.NegotiatedFlags & FuseInitFlags.SetxattrExt) != 0 ? FuseSetxattrIn.Size : FuseConstants.CompatSetxattrInSize;
        if (p.Length < size + 2) return Errno.EINVAL;
        uint valueSize = MemoryMarshal.Read<uint>(p), flags = MemoryMarshal.Read<uint>(p[4..]);
        uint setxattrFlags = size == FuseSetxattrIn.Size ? MemoryMarshal.Read<uint>(p[8..]) : 0;
        var e = ReadName(p[size..], Errno.EINVAL, out string name, out int used);
        if (e == Errno.ENAMETOOLONG) return Errno.ERANGE;   // setxattr(2): a name longer than 255 bytes
        if (e != 0) return e;
        var value = p[(size + used)..];
        if (valueSize > (uint)value.Length) return Errno.EINVAL;
        if ((flags & ~3u) != 0) return Errno.EINVAL;
        e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EROFS;
        var view = node.View!;
        var set = (XattrSetFlags)flags | ((setxattrFlags & FuseSetxattrIn.AclKillSgid) != 0 ? XattrSetFlags.AclKillSgid : 0);
        return view.SetXattr(node.Ino, name, value[..(int)valueSize].ToArray(), set);
    }

    public static Errno Getxattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseGetxattrIn>(p);
        var e = ReadName(p[FuseGetxattrIn.Size..], Errno.ENODATA, out string name);
        if (e == Errno.ENAMETOOLONG) return Errno.ERANGE;
        if (e != 0) return e;
        e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.ENODATA;
        e = node.View!.GetXattr(node.Ino, name, out byte[] value);
        if (e != 0) return e;
        e = SizedReply(i.Size_, value.Length, reply, out n);
        if (e != 0 || i.Size_ == 0) return e;
        value.CopyTo(reply);
        n = value.Length;
        return 0;
    }

    public static Errno Listxattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseGetxattrIn>(p);
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return SizedReply(i.Size_, 0, reply, out n);
        e = node.View!.ListXattr(node.Ino, out var names);
        if (e != 0) return e;
        int total = 0;
        foreach (var name in names) total += Encoding.UTF8.GetByteCount(name) + 1;
        e = SizedReply(i.Size_, total, reply, out n);
        if (e != 0 || i.Size_ == 0) return e;
        foreach (var name in names)
        {
            n += Encoding.UTF8.GetBytes(name, reply[n..]);
            reply[n++] = 0;
        }
        return 0;
    }

    public static Errno Removexattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = ReadName(p, Errno.ENODATA, out string name);
        if (e == Errno.ENAMETOOLONG) return Errno.ERANGE;
        if (e != 0) return e;
        e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EROFS;
        return node.View!.RemoveXattr(node.Ino, name);
    }

    /// <summary>The GETXATTR/LISTXATTR size rules: size 0 asks for the length (fuse_getxattr_out); a buffer
    /// smaller than the value is ERANGE. On success with size != 0 the caller writes the value.</summary>
    private static Errno SizedReply(uint requested, int actual, Span<byte> reply, out int n)
    {
        n = 0;
        if (requested == 0)
        {
            var o = new FuseGetxattrOut { Size_ = (uint)actual };
            return Write(reply, in o, out n);
        }
        if ((uint)actual > requested || actual > reply.Length) return Errno.ERANGE;
        return 0;
    }
}
