using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>One request handler. <paramref name="payload"/> is the request after fuse_in_header, extensions
/// removed; <paramref name="reply"/> is the reply buffer after fuse_out_header. On success the handler sets
/// <paramref name="replyLength"/> to the bytes it wrote there; on an error the dispatcher ignores them.</summary>
public delegate Errno OpHandler(RequestDispatcher d, in FuseInHeader header, ReadOnlySpan<byte> payload, Span<byte> reply, out int replyLength);

/// <summary>One row of <see cref="OpcodeTable"/>. A null <see cref="Handler"/> means "answer ENOSYS".</summary>
public readonly record struct OpcodeEntry(OpHandler? Handler, int MinPayload, bool Replies);

/// <summary>
/// THE opcode table: opcode → (handler, minimum payload size in bytes after fuse_in_header and extensions,
/// whether a reply is sent). FORGET and BATCH_FORGET send no reply. Every opcode not in the table (unknown,
/// or not implemented yet) is answered ENOSYS by <see cref="RequestDispatcher"/>. The handlers below serve the
/// read side against a <see cref="FileSystemView"/>; FUSE node ids are Cow inode numbers (root 1 = root 1).
/// </summary>
public static class OpcodeTable
{
    private const int TableSize = 64;
    // NotImplemented first: static initialisers run in textual order and Build() reads it.
    private static readonly OpcodeEntry NotImplemented = new(null, 0, true);
    private static readonly OpcodeEntry[] Table = Build();

    /// <summary>The entry of <paramref name="opcode"/>; a null handler (ENOSYS, with a reply) when not implemented.</summary>
    public static OpcodeEntry Get(uint opcode) => opcode < TableSize ? Table[opcode] : NotImplemented;

    private static OpcodeEntry[] Build()
    {
        var t = new OpcodeEntry[TableSize];
        for (int i = 0; i < t.Length; i++) t[i] = NotImplemented;
        void Set(FuseOpcode op, OpHandler h, int min, bool replies = true) => t[(int)op] = new OpcodeEntry(h, min, replies);

        Set(FuseOpcode.Init, Init, InitInMinSize);
        Set(FuseOpcode.Destroy, Destroy, 0);
        Set(FuseOpcode.Lookup, Lookup, 2);                       // at least one byte of name and its NUL
        Set(FuseOpcode.Forget, Nothing, FuseForgetIn.Size, replies: false);
        Set(FuseOpcode.BatchForget, Nothing, FuseBatchForgetIn.Size, replies: false);
        Set(FuseOpcode.Getattr, Getattr, FuseGetattrIn.Size);
        Set(FuseOpcode.Statfs, Statfs, 0);
        Set(FuseOpcode.Readlink, Readlink, 0);
        Set(FuseOpcode.Open, Open, FuseOpenIn.Size);
        Set(FuseOpcode.Opendir, Opendir, FuseOpenIn.Size);
        Set(FuseOpcode.Release, Release, FuseReleaseIn.Size);
        Set(FuseOpcode.Releasedir, Nothing, FuseReleaseIn.Size);
        Set(FuseOpcode.Read, Read, FuseReadIn.Size);
        Set(FuseOpcode.Readdir, Readdir, FuseReadIn.Size);
        Set(FuseOpcode.Readdirplus, Readdirplus, FuseReadIn.Size);
        Set(FuseOpcode.Getxattr, Getxattr, FuseGetxattrIn.Size + 2);
        Set(FuseOpcode.Listxattr, Listxattr, FuseGetxattrIn.Size);
        return t;
    }

    // ------------------------------------------------------------------ INIT / DESTROY / FORGET

    /// <summary>The oldest fuse_init_in: major, minor, max_readahead, flags (before 7.36 the kernel sent 16 bytes).</summary>
    public const int InitInMinSize = 16;
    /// <summary>The oldest kernel minor served: 7.9 is where fuse_attr_out, fuse_entry_out and fuse_read_in took their present sizes.</summary>
    public const uint OldestMinor = 9;
    /// <summary>INIT flags granted when (and only when) the kernel offers them.</summary>
    public const FuseInitFlags Wanted = FuseInitFlags.AsyncRead | FuseInitFlags.ParallelDirops | FuseInitFlags.AtomicOTrunc
        | FuseInitFlags.BigWrites | FuseInitFlags.DoReaddirplus | FuseInitFlags.MaxPages;

    private static Errno Init(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        uint major = MemoryMarshal.Read<uint>(p), minor = MemoryMarshal.Read<uint>(p[4..]);
        uint maxReadahead = MemoryMarshal.Read<uint>(p[8..]);
        ulong offered = MemoryMarshal.Read<uint>(p[12..]);
        if (major < FuseConstants.KernelVersion) return Errno.EPROTO;
        var o = new FuseInitOut { Major = FuseConstants.KernelVersion, Minor = FuseConstants.KernelMinorVersion };
        if (major > FuseConstants.KernelVersion)
        {
            // A newer major: answer ours and wait for a second INIT in 7.x (what libfuse does).
            return Write(reply, in o, out n);
        }
        if (minor < OldestMinor) return Errno.EPROTO;
        if ((offered & (ulong)FuseInitFlags.InitExt) != 0 && p.Length >= 20) offered |= (ulong)MemoryMarshal.Read<uint>(p[16..]) << 32;

        var granted = (FuseInitFlags)offered & Wanted;
        o.Minor = Math.Min(minor, FuseConstants.KernelMinorVersion);
        o.MaxReadahead = maxReadahead;
        o.TimeGran = 1;
        if ((granted & FuseInitFlags.MaxPages) != 0) { o.MaxWrite = RequestDispatcher.MaxWrite; o.MaxPages = RequestDispatcher.MaxPages; }
        else o.MaxWrite = RequestDispatcher.DefaultMaxWrite;
        if (((ulong)granted >> 32) != 0) granted |= FuseInitFlags.InitExt;   // flags >= 32 travel in flags2
        o.SetAllFlags(granted);

        // Replies to old kernels are shorter: FUSE_COMPAT_22_INIT_OUT_SIZE before 7.23.
        int size = o.Minor < 23 ? FuseConstants.Compat22InitOutSize : FuseInitOut.Size;
        if (reply.Length < size) return Errno.EIO;
        MemoryMarshal.Write(reply, in o);
        n = size;
        d.CompleteInit(o.Minor, granted);
        return 0;
    }

    private static Errno Destroy(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        d.MarkDestroyed();
        return 0;
    }

    /// <summary>FORGET / BATCH_FORGET (node ids are inode numbers and the engine keeps no lookup counts, so
    /// there is nothing to drop; no reply) and RELEASEDIR (an open directory holds nothing): nothing to do.</summary>
    private static Errno Nothing(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        return 0;
    }

    // ------------------------------------------------------------------ attributes and names

    private static Errno Lookup(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var e = ReadName(p, Errno.ENOENT, out string name);   // a name that is not UTF-8 cannot exist in Cow
        if (e != 0) return e;
        if (!ToIno(h.NodeId, out long parent)) return Errno.ENOENT;
        e = d.View.Lookup(parent, name, out var attr);
        if (e != 0) return e;
        var entry = Entry(in attr);
        return Write(reply, in entry, out n);
    }

    private static Errno Getattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        var e = d.View.GetAttr(ino, out var attr);
        if (e != 0) return e;
        var o = new FuseAttrOut { AttrValid = RequestDispatcher.AttrTimeoutSeconds, Attr = Attr(in attr) };
        return Write(reply, in o, out n);
    }

    private static Errno Statfs(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        var s = d.View.StatFs();
        var o = new FuseStatfsOut
        {
            St = new FuseKstatfs
            {
                Blocks = (ulong)Math.Max(0, s.Blocks), Bfree = (ulong)Math.Max(0, s.FreeBlocks), Bavail = (ulong)Math.Max(0, s.AvailableBlocks),
                Files = (ulong)Math.Max(0, s.Files), Ffree = (ulong)Math.Max(0, s.FreeFiles),
                Bsize = (uint)s.BlockSize, Frsize = (uint)s.BlockSize, NameLen = (uint)s.NameMax,
            },
        };
        return Write(reply, in o, out n);
    }

    private static Errno Readlink(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        var e = d.View.Readlink(ino, out string target);
        if (e != 0) return e;
        if (!Encoding.UTF8.TryGetBytes(target, reply, out n)) { n = 0; return Errno.ENAMETOOLONG; }
        return 0;
    }

    // ------------------------------------------------------------------ open / release / read

    private const uint O_ACCMODE = 3, O_TRUNC = 0x200;
    /// <summary>fuse_open_out.fh of a file the engine has counted open (RELEASE pairs only those).</summary>
    private const ulong EngineOpenFh = 1;

    private static Errno Open(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        var i = MemoryMarshal.Read<FuseOpenIn>(p);
        bool writable = (i.Flags & O_ACCMODE) != 0;
        var e = d.View.GetAttr(ino, out var attr);
        if (e != 0) return e;
        if (attr.IsDirectory) return Errno.EISDIR;
        e = d.View.Open(ino, writable);
        if (e != 0) return e;
        ulong fh = d.View.ReadOnly ? 0 : EngineOpenFh;
        // With FUSE_ATOMIC_O_TRUNC the kernel leaves O_TRUNC to us.
        if (writable && (i.Flags & O_TRUNC) != 0 && attr.Size != 0)
        {
            e = d.View.SetAttr(ino, new SetAttrRequest { Size = 0 }, out _);
            if (e != 0) { if (fh == EngineOpenFh) d.View.Release(ino); return e; }
        }
        var o = new FuseOpenOut { Fh = fh };
        return Write(reply, in o, out n);
    }

    private static Errno Opendir(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        var e = d.View.GetAttr(ino, out var attr);
        if (e != 0) return e;
        if (!attr.IsDirectory) return Errno.ENOTDIR;
        var o = new FuseOpenOut();
        return Write(reply, in o, out n);
    }

    private static Errno Release(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseReleaseIn>(p);
        if (i.Fh != EngineOpenFh || !ToIno(h.NodeId, out long ino)) return 0;
        d.View.Release(ino);   // RELEASE cannot fail from the kernel's point of view
        return 0;
    }

    private static Errno Read(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        var i = MemoryMarshal.Read<FuseReadIn>(p);
        if (i.Offset > long.MaxValue) return Errno.EINVAL;
        int size = (int)Math.Min(i.Size_, (uint)reply.Length);
        var e = d.View.Read(ino, (long)i.Offset, reply[..size], out int count);
        if (e != 0) return e;
        n = Math.Clamp(count, 0, size);
        return 0;
    }

    // ------------------------------------------------------------------ directories

    [ThreadStatic] private static List<DirEntryInfo>? t_entries;

    private static Errno Readdir(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n) => ReadDirectory(d, in h, p, reply, plus: false, out n);

    private static Errno Readdirplus(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n) => ReadDirectory(d, in h, p, reply, plus: true, out n);

    private static Errno ReadDirectory(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, bool plus, out int n)
    {
        n = 0;
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        var i = MemoryMarshal.Read<FuseReadIn>(p);
        if (i.Offset > long.MaxValue) return Errno.EINVAL;
        int limit = (int)Math.Min(i.Size_, (uint)reply.Length);
        int smallest = plus ? FuseDirentLayout.DirentplusRecordSize(1) : FuseDirentLayout.DirentSize(1);
        int max = Math.Max(1, limit / smallest);
        var list = t_entries ??= new List<DirEntryInfo>(256);
        list.Clear();
        try
        {
            var e = d.View.ReadDir(ino, (long)i.Offset, max, list);
            if (e != 0) return e;
            Span<byte> name = stackalloc byte[1024];
            var dst = reply[..limit];
            foreach (var ent in list)
            {
                if (!Encoding.UTF8.TryGetBytes(ent.Name, name, out int len) || len == 0) continue;
                var nm = name[..len];
                bool ok;
                int written;
                if (plus)
                {
                    FuseEntryOut entry = default;
                    entry.Attr.Ino = (ulong)ent.Ino;
                    bool dot = nm.Length <= 2 && nm[0] == (byte)'.' && (nm.Length == 1 || nm[1] == (byte)'.');
                    // The kernel skips "." and ".." and entries with node id 0: no lookup count is taken for them.
                    if (!dot && d.View.GetAttr(ent.Ino, out var a) == 0) entry = Entry(in a);
                    ok = FuseDirentLayout.TryWriteDirentplus(dst[n..], in entry, (ulong)ent.NextOffset, ent.Type, nm, out written);
                }
                else ok = FuseDirentLayout.TryWriteDirent(dst[n..], (ulong)ent.Ino, (ulong)ent.NextOffset, ent.Type, nm, out written);
                if (!ok) break;
                n += written;
            }
            return 0;
        }
        finally { list.Clear(); }
    }

    // ------------------------------------------------------------------ xattrs

    private static Errno Getxattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseGetxattrIn>(p);
        var e = ReadName(p[FuseGetxattrIn.Size..], Errno.ENODATA, out string name);
        if (e != 0) return e;
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        e = d.View.GetXattr(ino, name, out byte[] value);
        if (e != 0) return e;
        e = SizedReply(i.Size_, value.Length, reply, out n);
        if (e != 0 || i.Size_ == 0) return e;
        value.CopyTo(reply);
        n = value.Length;
        return 0;
    }

    private static Errno Listxattr(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        var i = MemoryMarshal.Read<FuseGetxattrIn>(p);
        if (!ToIno(h.NodeId, out long ino)) return Errno.ENOENT;
        var e = d.View.ListXattr(ino, out var names);
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

    // ------------------------------------------------------------------ helpers

    /// <summary>Reads the NUL-terminated name at the start of <paramref name="p"/>: EINVAL when it has no NUL
    /// inside the payload or is empty, ENAMETOOLONG beyond 255 bytes, <paramref name="notUtf8"/> when it is
    /// not UTF-8 (Cow keeps names as strings).</summary>
    public static Errno ReadName(ReadOnlySpan<byte> p, Errno notUtf8, out string name)
    {
        name = "";
        int nul = p.IndexOf((byte)0);
        if (nul < 0) return Errno.EINVAL;
        if (nul > RequestDispatcher.MaxNameLength) return Errno.ENAMETOOLONG;
        if (!Wire.TryReadName(p, out var bytes, out _)) return Errno.EINVAL;
        if (!Utf8.IsValid(bytes)) return notUtf8;
        name = Encoding.UTF8.GetString(bytes);
        return 0;
    }

    private static bool ToIno(ulong nodeId, out long ino)
    {
        ino = (long)nodeId;
        return nodeId != 0 && nodeId <= long.MaxValue;
    }

    private static Errno Write<T>(Span<byte> reply, in T value, out int n) where T : unmanaged
    {
        n = 0;
        if (!Wire.TryWrite(reply, in value)) return Errno.EIO;
        n = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        return 0;
    }

    /// <summary>fuse_entry_out for <paramref name="a"/>: node id = inode number, generation 0, 1 s timeouts.</summary>
    public static FuseEntryOut Entry(in InodeAttr a) => new()
    {
        NodeId = (ulong)a.Ino,
        EntryValid = RequestDispatcher.EntryTimeoutSeconds,
        AttrValid = RequestDispatcher.AttrTimeoutSeconds,
        Attr = Attr(in a),
    };

    /// <summary>fuse_attr from <paramref name="a"/>: times split into seconds and nanoseconds (floor, so that
    /// times before 1970 keep 0 ≤ nsec &lt; 10⁹), rdev re-encoded for the kernel's new_decode_dev.</summary>
    public static FuseAttr Attr(in InodeAttr a)
    {
        var r = new FuseAttr
        {
            Ino = (ulong)a.Ino, Size_ = (ulong)a.Size, Blocks = (ulong)a.Blocks512,
            Mode = a.Mode, Nlink = a.Nlink, Uid = a.Uid, Gid = a.Gid, Rdev = EncodeDev(a.Rdev), Blksize = (uint)a.BlockSize,
        };
        (r.Atime, r.Atimensec) = SplitNs(a.AtimeNs);
        (r.Mtime, r.Mtimensec) = SplitNs(a.MtimeNs);
        (r.Ctime, r.Ctimensec) = SplitNs(a.CtimeNs);
        return r;
    }

    private static (ulong Sec, uint Nsec) SplitNs(long ns)
    {
        long sec = Math.DivRem(ns, 1_000_000_000L, out long rem);
        if (rem < 0) { sec--; rem += 1_000_000_000L; }
        return ((ulong)sec, (uint)rem);
    }

    /// <summary>glibc dev_t (gnu_dev_makedev layout) → the kernel's 32-bit new_encode_dev layout.</summary>
    public static uint EncodeDev(ulong dev)
    {
        ulong major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFFUL);
        ulong minor = (dev & 0xFF) | ((dev >> 12) & ~0xFFUL);
        return (uint)((minor & 0xFF) | (major << 8) | ((minor & ~0xFFUL) << 12));
    }
}
