using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.AttributeHandlers;
using static Cow.Fuse.Server.DirectoryHandlers;
using static Cow.Fuse.Server.FileHandlers;
using static Cow.Fuse.Server.IomapHandlers;
using static Cow.Fuse.Server.NamespaceHandlers;
using static Cow.Fuse.Server.XattrHandlers;

namespace Cow.Fuse.Server;

/// <summary>One request handler. <paramref name="payload"/> is the request after fuse_in_header, extensions
/// removed; <paramref name="reply"/> is the reply buffer after fuse_out_header. On success the handler sets
/// <paramref name="replyLength"/> to the bytes it wrote there; on an error the dispatcher ignores them.</summary>
public delegate Errno OpHandler(RequestDispatcher d, in FuseInHeader header, ReadOnlySpan<byte> payload, Span<byte> reply, out int replyLength);

/// <summary>One row of <see cref="OpcodeTable"/>. A null <see cref="Handler"/> means "answer ENOSYS".
/// <see cref="Changes"/>: the request changes the pool (refused with EBUSY while the filesystem is frozen).</summary>
public readonly record struct OpcodeEntry(OpHandler? Handler, int MinPayload, bool Replies, bool Changes = false);

/// <summary>
/// THE opcode table: opcode → (handler, minimum payload size in bytes after fuse_in_header and extensions,
/// whether a reply is sent). FORGET, BATCH_FORGET, INTERRUPT and NOTIFY_REPLY send no reply. Every opcode
/// not in the table is answered ENOSYS by <see cref="RequestDispatcher"/>; the ones of the kernel's fuse.h
/// left so on purpose are listed in <see cref="Build"/> with the reason. Node ids are resolved through
/// <see cref="NodeTable"/>. The table and INIT/DESTROY live here with the reply helpers every handler uses; the
/// handlers live in one static class per message family (<see cref="AttributeHandlers"/>,
/// <see cref="NamespaceHandlers"/>, <see cref="DirectoryHandlers"/>, <see cref="FileHandlers"/>,
/// <see cref="XattrHandlers"/>, <see cref="SnapshotDirHandlers"/>, <see cref="IomapHandlers"/>), stateless like
/// this table. The experimental fuse-iomap opcodes (4089..4095, numbers in <see cref="ExperimentalConstants"/>)
/// have their rows in <see cref="IomapHandlers"/>.
/// </summary>
public static class OpcodeTable
{
    private const int TableSize = 64;
    // NotImplemented first: static initialisers run in textual order and Build() reads it.
    private static readonly OpcodeEntry NotImplemented = new(null, 0, true);
    private static readonly OpcodeEntry[] Table = Build();

    /// <summary>The entry of <paramref name="opcode"/>; a null handler (ENOSYS, with a reply) when not implemented.</summary>
    public static OpcodeEntry Get(uint opcode)
    {
        if (opcode < TableSize) return Table[opcode];
        uint x = opcode - ExperimentalConstants.OpFreezeFs;
        return x < (uint)IomapRows.Length ? IomapRows[x] : NotImplemented;
    }

    private static OpcodeEntry[] Build()
    {
        var t = new OpcodeEntry[TableSize];
        for (int i = 0; i < t.Length; i++) t[i] = NotImplemented;
        void Set(FuseOpcode op, OpHandler h, int min, bool replies = true, bool changes = false) => t[(int)op] = new OpcodeEntry(h, min, replies, changes);

        Set(FuseOpcode.Init, Init, InitInMinSize);
        Set(FuseOpcode.Destroy, Destroy, 0);
        Set(FuseOpcode.Lookup, Lookup, 2);                       // at least one byte of name and its NUL
        Set(FuseOpcode.Forget, Nothing, FuseForgetIn.Size, replies: false);
        Set(FuseOpcode.BatchForget, Nothing, FuseBatchForgetIn.Size, replies: false);
        Set(FuseOpcode.Interrupt, Nothing, FuseInterruptIn.Size, replies: false);
        Set(FuseOpcode.NotifyReply, Nothing, 0, replies: false);
        Set(FuseOpcode.Getattr, Getattr, FuseGetattrIn.Size);
        Set(FuseOpcode.Setattr, Setattr, FuseSetattrIn.Size, changes: true);
        Set(FuseOpcode.Statx, Statx, FuseStatxIn.Size);
        Set(FuseOpcode.Access, Access, FuseAccessIn.Size);
        Set(FuseOpcode.Statfs, Statfs, 0);
        Set(FuseOpcode.Readlink, Readlink, 0);
        Set(FuseOpcode.Mknod, Mknod, FuseConstants.CompatMknodInSize + 2, changes: true);
        Set(FuseOpcode.Mkdir, Mkdir, FuseMkdirIn.Size + 2, changes: true);
        Set(FuseOpcode.Symlink, Symlink, 4, changes: true);      // name, NUL, target, NUL
        Set(FuseOpcode.Link, Link, FuseLinkIn.Size + 2, changes: true);
        Set(FuseOpcode.Unlink, Unlink, 2, changes: true);
        Set(FuseOpcode.Rmdir, Rmdir, 2, changes: true);
        Set(FuseOpcode.Rename, Rename, FuseRenameIn.Size + 4, changes: true);
        Set(FuseOpcode.Rename2, Rename2, FuseRename2In.Size + 4, changes: true);
        Set(FuseOpcode.Open, Open, FuseOpenIn.Size);
        Set(FuseOpcode.Create, Create, FuseOpenIn.Size + 2, changes: true);   // fuse_create_in is 8 bytes before 7.12
        Set(FuseOpcode.Tmpfile, Tmpfile, FuseCreateIn.Size + 2, changes: true);
        Set(FuseOpcode.Opendir, Opendir, FuseOpenIn.Size);
        Set(FuseOpcode.Release, Release, FuseReleaseIn.Size);
        Set(FuseOpcode.Releasedir, Releasedir, FuseReleaseIn.Size);
        Set(FuseOpcode.Flush, Nothing, FuseFlushIn.Size);        // nothing is buffered per handle
        Set(FuseOpcode.Read, Read, FuseReadIn.Size);
        Set(FuseOpcode.Write, WriteData, FuseWriteIn.Size, changes: true);
        Set(FuseOpcode.Fsync, Fsync, FuseFsyncIn.Size);
        Set(FuseOpcode.Fsyncdir, Fsync, FuseFsyncIn.Size);
        Set(FuseOpcode.Syncfs, Syncfs, FuseSyncfsIn.Size);
        Set(FuseOpcode.Fallocate, Fallocate, FuseFallocateIn.Size, changes: true);
        Set(FuseOpcode.Lseek, Lseek, FuseLseekIn.Size);
        Set(FuseOpcode.CopyFileRange, CopyFileRange, FuseCopyFileRangeIn.Size, changes: true);
        Set(FuseOpcode.CopyFileRange64, CopyFileRange, FuseCopyFileRangeIn.Size, changes: true);
        Set(FuseOpcode.Readdir, Readdir, FuseReadIn.Size);
        Set(FuseOpcode.Readdirplus, Readdirplus, FuseReadIn.Size);
        Set(FuseOpcode.Setxattr, Setxattr, FuseConstants.CompatSetxattrInSize + 2, changes: true);
        Set(FuseOpcode.Getxattr, Getxattr, FuseGetxattrIn.Size + 2);
        Set(FuseOpcode.Listxattr, Listxattr, FuseGetxattrIn.Size);
        Set(FuseOpcode.Removexattr, Removexattr, 2, changes: true);

        // Deliberately ENOSYS (left as NotImplemented):
        //  GETLK, SETLK, SETLKW: FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS are not granted, so the kernel keeps
        //    locks itself and never sends these.
        //  BMAP: only for fuseblk mounts (a block device behind the mount); Cow is not one.
        //  IOCTL: Cow has no ioctls (the kernel answers ENOTTY). POLL: files are always ready; ENOSYS makes
        //    the kernel use its default poll mask.
        //  SETUPMAPPING, REMOVEMAPPING: DAX (virtiofs) only.
        //  CUSE_INIT: not this protocol.
        return t;
    }

    // ------------------------------------------------------------------ INIT / DESTROY / FORGET

    /// <summary>The oldest fuse_init_in: major, minor, max_readahead, flags (before 7.36 the kernel sent 16 bytes).</summary>
    public const int InitInMinSize = 16;
    /// <summary>The oldest kernel minor served: 7.9 is where fuse_attr_out, fuse_entry_out and fuse_read_in took their present sizes.</summary>
    public const uint OldestMinor = 9;
    /// <summary>INIT flags granted when (and only when) the kernel offers them. HANDLE_KILLPRIV_V2: the server
    /// clears setuid/setgid on a write (FUSE_WRITE_KILL_SUIDGID), a truncate (FATTR_KILL_SUIDGID,
    /// FUSE_OPEN_KILL_SUIDGID) and a chown; in return the kernel marks the super block SB_NOSEC, so that a
    /// write to a file with neither those bits nor security.capability no longer asks for that xattr first
    /// (one FUSE_GETXATTR round trip per write(2) before: 4 KiB random buffered writes went from 13,000–18,500
    /// to 19,800–26,100 IOPS). Capabilities stay the kernel's: it removes security.capability
    /// itself, and setting a security.* xattr clears the inode's S_NOSEC. POSIX_ACL: the kernel enforces the
    /// ACLs it reads with GETXATTR (system.posix_acl_access) and the server keeps them and the mode in step
    /// (InodeAttributes.cs); with it (and only with it) DONT_MASK, so the server, not the kernel, applies the umask,
    /// and only when the parent has no default ACL (posix_acl_create). EXPORT_SUPPORT: file handles
    /// (name_to_handle_at, NFS) carry (node id, generation); node ids are inode numbers and need no state, so
    /// LOOKUP of "." in a node id the kernel no longer caches, after any eviction or remount, finds the inode
    /// again (ESTALE once it is gone, or when the generation differs: <see cref="NodeTable.Generation"/>).
    /// Not asked for: POSIX_LOCKS and FLOCK_LOCKS (the kernel locks locally), HANDLE_KILLPRIV (v1),
    /// passthrough, DAX and the rest.</summary>
    public const FuseInitFlags Wanted = FuseInitFlags.AsyncRead | FuseInitFlags.ParallelDirops | FuseInitFlags.AtomicOTrunc
        | FuseInitFlags.BigWrites | FuseInitFlags.DoReaddirplus | FuseInitFlags.MaxPages | FuseInitFlags.AsyncDio
        | FuseInitFlags.SetxattrExt | FuseInitFlags.CacheSymlinks | FuseInitFlags.DirectIoAllowMmap
        | FuseInitFlags.HandleKillprivV2 | FuseInitFlags.PosixAcl | FuseInitFlags.DontMask | FuseInitFlags.ExportSupport;
    /// <summary>init_out.max_background and congestion_threshold. The kernel's FUSE read-ahead skips an
    /// asynchronous window outright once congestion_threshold background requests are queued, so they must hold
    /// two windows of the mount's read-ahead in READs of max_read with room to spare: 64 READs for
    /// <c>--read-ahead 8192 --max-read 256</c>, which 64 / 48 did not.</summary>
    public const ushort MaxBackground = 256, CongestionThreshold = 192;

    public static Errno Init(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
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

        var wanted = Wanted;
        // fuse-iomap (experimental): echoed only when the kernel offered it, it is not switched off, and
        // there is a way to register the devices. Required but impossible: INIT fails (EPROTO).
        bool iomapOffered = (offered & ExperimentalConstants.InitIomap) != 0;
        var mode = d.Options.Iomap;
        // Every fuse-iomap posting says minor 99; an offer at another minor is an ABI Cow does not know.
        bool foreignAbi = iomapOffered && minor != ExperimentalConstants.IomapMinorVersion;
        string foreignWhy = $"the kernel offers FUSE_IOMAP at protocol 7.{minor}, but Cow speaks {ExperimentalConstants.AbiName} "
            + $"(protocol 7.{ExperimentalConstants.IomapMinorVersion}; its structs, mapping types and op flags differ between snapshots)";
        bool iomap = iomapOffered && !foreignAbi && mode != IomapMode.Off && d.Options.IomapDevices != null;
        if (!iomap && mode == IomapMode.On)
        {
            d.RefuseIomap(foreignAbi ? $"fuse-iomap required (--iomap on) but {foreignWhy}; refusing INIT"
                : iomapOffered
                ? "fuse-iomap required (--iomap on) but no device registrar is configured; refusing INIT"
                : $"fuse-iomap required (--iomap on) but the kernel did not offer it (protocol 7.{minor}, FUSE_IOMAP not in flags2: "
                  + "it needs a kernel with the fuse-iomap patches, fuse.enable_iomap=Y and CAP_SYS_RAWIO); refusing INIT");
            return Errno.EPROTO;
        }
        if (d.Options.OverIoUring) wanted |= FuseInitFlags.OverIoUring;
        // With iomap the kernel writes file data itself and no FUSE_WRITE carries FUSE_WRITE_KILL_SUIDGID: the
        // kernel must clear setuid/setgid (and security.capability) itself, with SETATTR / REMOVEXATTR, which it
        // does only without HANDLE_KILLPRIV_V2 — and, for open(O_TRUNC), only without ATOMIC_O_TRUNC (with it
        // the kernel skips the truncating SETATTR that carries the mode change).
        if (iomap) wanted = (wanted | FuseInitFlags.Iomap) & ~(FuseInitFlags.HandleKillprivV2 | FuseInitFlags.AtomicOTrunc);
        // Write-back caching of a read-only tree would only buffer writes that fail. With iomap it is asked for
        // always: the kernel then keeps the size (and c/mtime) of an iomap inode its own in SETATTR and writes
        // its dirty pages back first. Without it, the 7.2.13 kernel's fuse_do_setattr takes i_size from the
        // reply and cuts the page cache to it, so a chmod or utimensat of a file with appended bytes not yet
        // written back (Cow has not seen them) dropped those bytes (docs/iomap.md, "Known limits").
        if ((d.Options.WritebackCache || iomap) && !d.Root.ReadOnly) wanted |= FuseInitFlags.WritebackCache;
        // Off: the mount side decided (--iomap off, or ADD_IOMAP refused under auto) and logged why.
        else if (mode == IomapMode.Off) { }
        else if (foreignAbi) d.LogLine($"userspace I/O: {foreignWhy}");
        else if (iomapOffered) d.LogLine("userspace I/O: the kernel offered fuse-iomap but no device registrar is configured");
        else d.LogLine("userspace I/O: kernel did not offer fuse-iomap");
        var granted = (FuseInitFlags)offered & wanted;
        // DONT_MASK only with POSIX_ACL: without ACLs the kernel's own umask is right (and the server's is then a no-op).
        if ((granted & FuseInitFlags.PosixAcl) == 0) granted &= ~FuseInitFlags.DontMask;
        // An iomap kernel speaks minor 99 (the experimental structs and opcodes); without iomap, the mainline minor.
        o.Minor = Math.Min(minor, iomap ? ExperimentalConstants.IomapMinorVersion : FuseConstants.KernelMinorVersion);
        o.MaxReadahead = maxReadahead;
        o.TimeGran = 1;
        o.MaxBackground = MaxBackground;
        o.CongestionThreshold = CongestionThreshold;
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

    public static Errno Destroy(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        d.MarkDestroyed();
        return 0;
    }

    /// <summary>Nothing to do: FORGET / BATCH_FORGET (node ids are never reused and the engine keeps no lookup
    /// counts; no reply), INTERRUPT (requests are handled synchronously, nothing is left to interrupt; no
    /// reply), NOTIFY_REPLY (no RETRIEVE is ever sent; no reply) and FLUSH (nothing is buffered per handle).</summary>
    public static Errno Nothing(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        return 0;
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Reads the NUL-terminated name at the start of <paramref name="p"/>: EINVAL when it has no NUL
    /// inside the payload or is empty, ENAMETOOLONG beyond 255 bytes, <paramref name="notUtf8"/> when it is
    /// not UTF-8 (Cow keeps names as strings).</summary>
    public static Errno ReadName(ReadOnlySpan<byte> p, Errno notUtf8, out string name) => ReadName(p, notUtf8, out name, out _);

    /// <summary><see cref="ReadName(ReadOnlySpan{byte}, Errno, out string)"/>; <paramref name="consumed"/> counts the NUL.</summary>
    public static Errno ReadName(ReadOnlySpan<byte> p, Errno notUtf8, out string name, out int consumed)
    {
        name = "";
        consumed = 0;
        int nul = p.IndexOf((byte)0);
        if (nul < 0) return Errno.EINVAL;
        if (nul > RequestDispatcher.MaxNameLength) return Errno.ENAMETOOLONG;
        if (!Wire.TryReadName(p, out var bytes, out int used)) return Errno.EINVAL;
        if (!Utf8.IsValid(bytes)) return notUtf8;
        name = Encoding.UTF8.GetString(bytes);
        consumed = used;
        return 0;
    }

    /// <summary>A name that a directory operation creates (or renames to): <see cref="ReadName(ReadOnlySpan{byte}, Errno, out string, out int)"/>
    /// with EILSEQ for names that are not UTF-8 (Cow cannot store them).</summary>
    internal static Errno ReadNewName(ReadOnlySpan<byte> p, out string name, out int consumed) => ReadName(p, Errno.EILSEQ, out name, out consumed);

    internal static bool IsDotName(string name) => name is "." or "..";

    /// <summary>True when <paramref name="name"/> in <paramref name="parent"/> is <c>.snapshots</c> in the root of a live mount.</summary>
    internal static bool IsSnapshotDirEntry(RequestDispatcher d, in FuseNode parent, string name) =>
        parent.Slot == NodeTable.RootSlot && parent.Ino == Core.Engine.Engine.RootIno && d.Nodes.HasSnapshotDir
        && string.Equals(name, NodeTable.SnapshotDirName, StringComparison.Ordinal);

    internal static Errno Write<T>(Span<byte> reply, in T value, out int n) where T : unmanaged
    {
        n = 0;
        if (!Wire.TryWrite(reply, in value)) return Errno.EIO;
        n = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        return 0;
    }

    /// <summary>Writes fuse_entry_out for inode <paramref name="a"/> of the tree in <paramref name="slot"/>.</summary>
    internal static Errno EntryReply(RequestDispatcher d, int slot, in InodeAttr a, Span<byte> reply, out int n)
    {
        n = 0;
        if (!NodeTable.TryNodeId(slot, a.Ino, out ulong nodeId)) return Errno.EOVERFLOW;
        var visible = d.Visible(slot, nodeId, in a);
        var entry = Entry(in visible, nodeId, d.Nodes.StIno(slot, a.Ino), d.AttrFlags(slot), d.Nodes.Generation(slot, a.Ino, a.BtimeNs));
        return Write(reply, in entry, out n);
    }

    /// <summary>fuse_entry_out for <paramref name="a"/> with node id = inode number (the mounted tree), generation 0, 1 s timeouts.</summary>
    public static FuseEntryOut Entry(in InodeAttr a) => Entry(in a, (ulong)a.Ino, (ulong)a.Ino);

    /// <summary>fuse_entry_out for <paramref name="a"/>: 1 s timeouts; <paramref name="attrFlags"/> is
    /// fuse_attr.flags (<see cref="RequestDispatcher.AttrFlags"/>), <paramref name="generation"/> the inode's
    /// (<see cref="NodeTable.Generation"/>).</summary>
    public static FuseEntryOut Entry(in InodeAttr a, ulong nodeId, ulong stIno, uint attrFlags = 0, uint generation = 0) => new()
    {
        NodeId = nodeId,
        Generation = generation,
        EntryValid = RequestDispatcher.EntryTimeoutSeconds,
        AttrValid = RequestDispatcher.AttrTimeoutSeconds,
        Attr = Attr(in a, stIno, attrFlags),
    };

    /// <summary>fuse_attr from <paramref name="a"/> with st_ino = its inode number.</summary>
    public static FuseAttr Attr(in InodeAttr a) => Attr(in a, (ulong)a.Ino);

    /// <summary>fuse_attr from <paramref name="a"/>: times split into seconds and nanoseconds (floor, so that
    /// times before 1970 keep 0 ≤ nsec &lt; 10⁹), rdev re-encoded for the kernel's new_decode_dev;
    /// <paramref name="attrFlags"/> is fuse_attr.flags.</summary>
    public static FuseAttr Attr(in InodeAttr a, ulong stIno, uint attrFlags = 0)
    {
        var r = new FuseAttr
        {
            Ino = stIno, Size_ = (ulong)a.Size, Blocks = (ulong)a.Blocks512,
            Mode = a.Mode, Nlink = a.Nlink, Uid = a.Uid, Gid = a.Gid, Rdev = EncodeDev(a.Rdev), Blksize = (uint)a.BlockSize,
            Flags = attrFlags,
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

    /// <summary>The kernel's 32-bit new_encode_dev layout (what MKNOD sends) → glibc dev_t (gnu_dev_makedev).</summary>
    public static ulong DecodeDev(uint dev)
    {
        ulong major = (dev & 0xFFF00u) >> 8;
        ulong minor = (dev & 0xFFu) | ((dev >> 12) & 0xFFF00u);
        return ((major & 0xFFFFF000UL) << 32) | ((major & 0xFFFUL) << 8) | ((minor & 0xFFFFFF00UL) << 12) | (minor & 0xFFUL);
    }

    /// <summary>glibc dev_t (gnu_dev_makedev layout) → the kernel's 32-bit new_encode_dev layout.</summary>
    public static uint EncodeDev(ulong dev)
    {
        ulong major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFFUL);
        ulong minor = (dev & 0xFF) | ((dev >> 12) & ~0xFFUL);
        return (uint)((minor & 0xFF) | (major << 8) | ((minor & ~0xFFUL) << 12));
    }
}
