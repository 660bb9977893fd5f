using System.Runtime.InteropServices;
using System.Text;
using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.OpcodeTable;
using static Cow.Fuse.Server.FileHandlers;

namespace Cow.Fuse.Server;

// Every handler has the OpHandler signature, whether it uses each argument or not.
#pragma warning disable IDE0060

// EXPERIMENTAL fuse-iomap: IOMAP_CONFIG, IOMAP_BEGIN, IOMAP_END, IOMAP_IOEND, FREEZE_FS, UNFREEZE_FS,
// SHUTDOWN_FS (docs/iomap.md). Served only when INIT granted FUSE_IOMAP; otherwise ENOSYS. Payloads must have
// exactly the size of their struct: a different size means the kernel speaks another posting of the ABI.
internal static class IomapHandlers
{
    // The rows of opcodes ExperimentalConstants.OpFreezeFs .. OpIomapEnd, in that order (see Get). Built
    // without NotImplemented: static initialisers of partial files run in an unspecified order. Their minimum
    // payload is 0: without iomap every one of them is ENOSYS whatever it carries, so each handler checks its
    // (exact) size itself, after the grant.
    internal static readonly OpcodeEntry[] IomapRows = BuildIomapRows();

    private static OpcodeEntry[] BuildIomapRows()
    {
        var t = new OpcodeEntry[ExperimentalConstants.OpIomapEnd - ExperimentalConstants.OpFreezeFs + 1];
        void Set(uint op, OpHandler h) => t[op - ExperimentalConstants.OpFreezeFs] = new OpcodeEntry(h, 0, Replies: true);
        Set(ExperimentalConstants.OpFreezeFs, FreezeFs);          // fuse_freezefs_in
        Set(ExperimentalConstants.OpUnfreezeFs, UnfreezeFs);      // no payload
        Set(ExperimentalConstants.OpShutdownFs, ShutdownFs);      // fuse_shutdownfs_in
        Set(ExperimentalConstants.OpIomapConfig, IomapConfig);    // fuse_iomap_config_in
        Set(ExperimentalConstants.OpIomapIoend, IomapIoend);      // fuse_iomap_ioend_in
        Set(ExperimentalConstants.OpIomapBegin, IomapBegin);      // fuse_iomap_begin_in
        Set(ExperimentalConstants.OpIomapEnd, IomapEnd);          // fuse_iomap_end_in
        return t;
    }

    /// <summary>s_id of a Cow mount (IOMAP_CONFIG).</summary>
    public const string IomapSid = "cow";
    /// <summary>s_max_links: the engine refuses a link past this count (EMLINK).</summary>
    public const uint IomapMaxLinks = 65000;

    private const IomapOp WriteOps = IomapOp.Write | IomapOp.Zero | IomapOp.Unshare | IomapOp.Writeback;

    // ------------------------------------------------------------------ IOMAP_CONFIG

    /// <summary>
    /// IOMAP_CONFIG (node id 0, sent once after INIT): registers the pool's devices with the connection the
    /// first time (<see cref="IomapConnection.EnsureRegistered"/>) and answers the geometry the kernel asked
    /// for: block size, max links, time granularity and range (ns timestamps in an i64), max file size, s_id
    /// "cow" and the pool uuid. No mapping cache size: Cow never puts mappings in the kernel's cache.
    /// </summary>
    public static Errno IomapConfig(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (d.Iomap is not { } io) return Errno.ENOSYS;
        if (p.Length != FuseIomapConfigIn.Size || h.NodeId != 0) return Errno.EINVAL;
        var i = MemoryMarshal.Read<FuseIomapConfigIn>(p);
        if (i.Zero != 0 || p[(FuseIomapConfigIn.Size - 40)..].ContainsAnyExcept((byte)0)) return Errno.EINVAL;   // padding[5]
        var e = io.EnsureRegistered();
        if (e != 0) return e;
        const FuseIomapConfigFlags ours = FuseIomapConfigFlags.Sid | FuseIomapConfigFlags.Uuid | FuseIomapConfigFlags.Blocksize
            | FuseIomapConfigFlags.MaxLinks | FuseIomapConfigFlags.Time | FuseIomapConfigFlags.Maxbytes;
        var pool = d.Pool;
        var o = new FuseIomapConfigOut
        {
            Flags = (ulong)(ours & (FuseIomapConfigFlags)i.Flags),
            SBlocksize = (uint)pool.BlockSize,
            SMaxLinks = IomapMaxLinks,
            STimeGran = 1,
            STimeMin = long.MinValue / 1_000_000_000,
            STimeMax = long.MaxValue / 1_000_000_000,
            SMaxBytes = i.MaxBytes > 0 ? Math.Min(Engine.MaxFileSize, i.MaxBytes) : Engine.MaxFileSize,
        };
        unsafe
        {
            var sid = new Span<byte>(o.SId, 32);
            Encoding.ASCII.GetBytes(IomapSid, sid);
            var uuid = new Span<byte>(o.SUuid, 16);
            pool.Uuid.TryWriteBytes(uuid, bigEndian: true, out _);
        }
        o.SUuidLen = 16;
        return Write(reply, in o, out n);
    }

    // ------------------------------------------------------------------ IOMAP_BEGIN

    /// <summary>
    /// IOMAP_BEGIN: where the bytes of [pos, pos+count) live (read mapping) and where new bytes go (write
    /// mapping), from <see cref="Engine.IomapBegin"/> on the node's tree, translated to the kernel's device
    /// cookies and checked against the kernel's rules before it is sent (a reply that would break them is a
    /// bug: logged, answered EIO, and any allocation released).
    /// <list type="bullet">
    /// <item>Reads and reports (FIEMAP, SEEK_DATA/HOLE): the read mapping; the write mapping is a pure overwrite.</item>
    /// <item>Writeback and direct writes: a write mapping on freshly allocated log space, flagged SHARED (an
    /// out-of-place write: the kernel sends ioend, which commits the remap). A direct write that is not
    /// block-aligned at both ends gets ENOSYS, which makes the kernel redo it as a synchronous buffered
    /// write: the kernel would otherwise zero the rest of the partial blocks of an out-of-place mapping
    /// instead of copying the old bytes. OVERWRITE_ONLY gets EAGAIN (Cow never overwrites in place).</item>
    /// <item>Buffered writes and page faults (WRITE without DIRECT): a DELALLOC write mapping and no
    /// allocation — the data goes to the page cache, with partial blocks read from the read mapping, and is
    /// placed at writeback. Zeroing (ZERO): over a hole nothing (pure overwrite of the hole), over data a
    /// DELALLOC mapping. UNSHARE: nothing to unshare (every write is out of place), a pure overwrite.</item>
    /// <item>DAX, atomic writes and swap files: EOPNOTSUPP.</item>
    /// </list>
    /// Snapshot trees are read-only: write ops get EROFS.
    /// </summary>
    public static Errno IomapBegin(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (d.Iomap is not { } io) return Errno.ENOSYS;
        if (p.Length != FuseIomapBeginIn.Size) return Errno.EINVAL;
        var i = MemoryMarshal.Read<FuseIomapBeginIn>(p);
        if (i.Reserved != 0) return Errno.EINVAL;
        var e = ResolveIomapNode(d, h.NodeId, i.AttrIno, out var node);
        if (e != 0) return e;
        if (i.Pos > long.MaxValue || i.Count == 0 || i.Count > long.MaxValue) return Errno.EINVAL;
        if (!IomapWire.TryOp(i.OpFlags, out var op, out uint unknown)) return ForeignOpFlags(d, "IOMAP_BEGIN", i.OpFlags, unknown);
        if ((op & (IomapOp.Dax | IomapOp.Atomic | IomapOp.SwapFile)) != 0) return Errno.EOPNOTSUPP;
        long pos = (long)i.Pos, count = (long)i.Count;
        bool write = (op & WriteOps) != 0;
        if (pos >= Engine.MaxFileSize) return write ? Errno.EFBIG : Errno.EINVAL;
        var view = node.View!;
        if (write && view.ReadOnly) return Errno.EROFS;
        int bs = d.Pool.BlockSize;

        bool allocate = false;
        MappingType? writeType = null;   // null: the engine's write mapping
        if (!write) { }
        else if ((op & IomapOp.Unshare) != 0) writeType = MappingType.PureOverwrite;
        else if ((op & IomapOp.Writeback) != 0) allocate = true;
        else if ((op & IomapOp.Write) != 0 && (op & IomapOp.Direct) != 0)
        {
            if (((pos | (pos + count)) & (bs - 1)) != 0) return Errno.ENOSYS;   // redo as a buffered write
            if ((op & IomapOp.OverwriteOnly) != 0) return Errno.EAGAIN;
            allocate = true;
        }
        else if ((op & IomapOp.Write) != 0) writeType = MappingType.Delalloc;
        else writeType = MappingType.Delalloc;   // ZERO alone: decided on the read mapping below

        e = view.IomapBegin(node.Ino, pos, count, allocate ? op : op & ~WriteOps, out var pair);
        if (e != 0) return e;
        var read = pair.Read;
        var wm = pair.Write;
        if ((op & IomapOp.Report) != 0 && !write && read.Type == MappingType.Hole
            && io.Delalloc.FirstOverlap(h.NodeId, read.Offset, read.Offset + read.Length, out long dFrom, out long dTo))
        {
            // Written but not yet written back: the kernel's dirty pages are data (DELALLOC), not a hole.
            read = dFrom <= pos ? new IomapMapping(dFrom, dTo - dFrom, FormatConstants.NoAddress, MappingType.Delalloc, MappingFlags.None, 0)
                : IomapMapping.Hole(read.Offset, dFrom - read.Offset);
            wm = new IomapMapping(read.Offset, read.Length, FormatConstants.NoAddress, MappingType.PureOverwrite, MappingFlags.None, 0);
        }
        if (writeType is MappingType.PureOverwrite || (writeType != null && (op & IomapOp.Write) == 0 && read.Type == MappingType.Hole))
            wm = new IomapMapping(read.Offset, read.Length, FormatConstants.NoAddress, MappingType.PureOverwrite, MappingFlags.None, 0);
        else if (writeType is MappingType.Delalloc)
            wm = new IomapMapping(read.Offset, read.Length, FormatConstants.NoAddress, MappingType.Delalloc, MappingFlags.None, 0);

        // Translate to kernel cookies and check every rule the kernel checks.
        bool known = ToKernel(io, read, out var kr) & ToKernel(io, wm, out var kw);
        string? problem = known ? new IomapPair(kr, kw).Validate(pos, bs, io.DeviceSizes)
            : "a mapping names a device that is not registered (IOMAP_CONFIG not done or failed)";
        if (problem != null)
        {
            if (allocate) d.Pool.IomapEnd(node.Ino, pos, count, 0, op, pair.Write);   // give the allocation back
            d.LogLine($"IOMAP_BEGIN inode {node.Ino} pos {pos} count {count} op 0x{i.OpFlags:x}: reply would break the kernel's rules ({problem}); answered EIO");
            return Errno.EIO;
        }
        // The kernel dirties [pos, pos+count) of its page cache under a DELALLOC answer (buffered write, page
        // fault, zeroing of data): remembered for reports until writeback (ioend) or a short write (iomap_end),
        // and, over a hole, counted in st_blocks until then.
        if (kw.Type == MappingType.Delalloc)
        {
            long from = Math.Max(pos, kw.Offset), to = Math.Min(pos + count, kw.Offset + kw.Length);
            io.Delalloc.Add(h.NodeId, from, to - from, overHole: read.Type == MappingType.Hole);
        }
        var o = new FuseIomapBeginOut { Read = ToWire(kr), Write = ToWire(kw) };
        return Write(reply, in o, out n);
    }

    /// <summary>An engine mapping with its device cookie replaced by the kernel's; false for an unregistered device.</summary>
    private static bool ToKernel(IomapConnection io, in IomapMapping m, out IomapMapping k)
    {
        k = m;
        if (m.Type is not (MappingType.Mapped or MappingType.Unwritten)) return true;
        if (!io.TryKernelCookie(m.Device, out uint dev)) return false;
        k = m with { Device = dev };
        return true;
    }

    private static FuseIomapIo ToWire(in IomapMapping m) => new()
    {
        Offset = (ulong)m.Offset, Length = (ulong)m.Length, Addr = m.Address, Type = IomapWire.ToWire(m.Type), Flags = IomapWire.ToWire(m.Flags), Dev = m.Device,
    };

    private static int _foreignOpFlagsLogged;

    /// <summary>Op flags with bits the ABI Cow speaks does not define: the kernel speaks another snapshot of
    /// fuse-iomap (e.g. the v7 posting's SWAPFILE 1&lt;&lt;30). EINVAL, and the first few are logged naming the ABI.</summary>
    private static Errno ForeignOpFlags(RequestDispatcher d, string what, uint opflags, uint unknown)
    {
        if (Interlocked.Increment(ref _foreignOpFlagsLogged) <= 5)
            d.LogLine($"{what}: op flags 0x{opflags:x} carry bits 0x{unknown:x} that {ExperimentalConstants.AbiName} does not define: "
                + "this kernel speaks another fuse-iomap ABI snapshot; answered EINVAL");
        return Errno.EINVAL;
    }

    /// <summary>The node of an iomap request: a file of a mounted or browsed tree whose st_ino is
    /// <paramref name="attrIno"/> (the fuse_attr.ino the kernel knows it by; EINVAL otherwise). EISDIR for
    /// <c>.snapshots</c>.</summary>
    private static Errno ResolveIomapNode(RequestDispatcher d, ulong nodeId, ulong attrIno, out FuseNode node)
    {
        var e = d.Nodes.Resolve(nodeId, out node);
        if (e != 0) return e;
        if (node.IsSnapshotDir) return Errno.EISDIR;
        return d.Nodes.StIno(node.Slot, node.Ino) == attrIno ? 0 : Errno.EINVAL;
    }

    // ------------------------------------------------------------------ IOMAP_END

    /// <summary>
    /// IOMAP_END (a short or failed write, a size change, or WANT_IOMAP_END): releases the part of the write
    /// mapping that [pos, pos+written) did not use (<see cref="Engine.IomapEnd"/>); the used part waits for
    /// its ioend. A mapping without space (hole, delalloc, pure overwrite) holds nothing. A device cookie no
    /// registered device has is EINVAL, and nothing changes.
    /// </summary>
    public static Errno IomapEnd(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (d.Iomap is not { } io) return Errno.ENOSYS;
        if (p.Length != FuseIomapEndIn.Size) return Errno.EINVAL;
        var i = MemoryMarshal.Read<FuseIomapEndIn>(p);
        if (i.Reserved != 0) return Errno.EINVAL;
        var e = ResolveIomapNode(d, h.NodeId, i.AttrIno, out var node);
        if (e != 0) return e;
        if (i.Pos >= (ulong)Engine.MaxFileSize || i.Count > long.MaxValue || i.Written < 0) return Errno.EINVAL;
        if (!IomapWire.TryOp(i.OpFlags, out var op, out uint unknown)) return ForeignOpFlags(d, "IOMAP_END", i.OpFlags, unknown);
        var m = i.Map;
        if (m.Offset > long.MaxValue || m.Length > long.MaxValue || !IomapWire.TryType(m.Type, out var type)) return Errno.EINVAL;
        uint dev = 0;
        if (m.Dev != ExperimentalConstants.IomapNoDevice && !io.TryEngineCookie(m.Dev, out dev)) return Errno.EINVAL;
        if (node.View!.ReadOnly) return 0;   // nothing is ever allocated for a snapshot
        if (type == MappingType.Delalloc && i.Written < (long)i.Count)   // a short buffered write: the rest was never dirtied
            io.Delalloc.Remove(h.NodeId, (long)i.Pos + i.Written, (long)i.Count - i.Written);
        var map = new IomapMapping((long)m.Offset, (long)m.Length, m.Addr, type, IomapWire.FlagsFromWire(m.Flags), dev);
        return d.Pool.IomapEnd(node.Ino, (long)i.Pos, (long)i.Count, i.Written, op, in map);
    }

    // ------------------------------------------------------------------ IOMAP_IOEND

    /// <summary>
    /// IOMAP_IOEND: the kernel's write of [pos, pos+written) completed (or failed). Commits the remap through
    /// <see cref="Engine.IoEnd"/> and answers the new on-disk size (grown for appends). dev 0 with addr ~0 is
    /// a direct-I/O completion: the engine commits what it handed out for the range. With a device, new_addr
    /// must name where the engine put the range: in bytes (the documented ABI) or, failing that, in 512-byte
    /// sectors (what the v7 kernel fills in from ioend->io_sector for writeback) — either only when it is
    /// exactly what was handed out. An unknown cookie, an address without a device, or a range nothing was
    /// handed out for is EINVAL, and nothing changes. An error releases every allocation of the range.
    /// SWAPOFF: nothing to do.
    /// </summary>
    public static Errno IomapIoend(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (d.Iomap is not { } io) return Errno.ENOSYS;
        if (p.Length != FuseIomapIoendIn.Size) return Errno.EINVAL;
        var i = MemoryMarshal.Read<FuseIomapIoendIn>(p);
        if (i.Pad != 0) return Errno.EINVAL;
        var e = ResolveIomapNode(d, h.NodeId, i.AttrIno, out var node);
        if (e != 0) return e;
        var view = node.View!;
        if (i.Pos > long.MaxValue || i.Written > long.MaxValue) return Errno.EINVAL;
        if (i.Dev == ExperimentalConstants.IomapNoDevice && i.NewAddr != ExperimentalConstants.IomapNullAddr) return Errno.EINVAL;
        uint dev = 0;
        if (i.Dev != ExperimentalConstants.IomapNoDevice && !io.TryEngineCookie(i.Dev, out dev)) return Errno.EINVAL;
        var pool = d.Pool;
        long newSize;
        // Written back (or failed and discarded): no longer the kernel's dirty pages. Only ioends of page-cache
        // writeback (or without an allocation: a discarded folio) can end a delayed allocation.
        if ((i.Flags & (uint)FuseIomapIoendFlags.Direct) == 0) io.Delalloc.Placed(h.NodeId, (long)i.Pos, (long)i.Written);
        if ((i.Flags & (uint)FuseIomapIoendFlags.Swapoff) != 0)
        {
            e = view.GetAttr(node.Ino, out var a);
            if (e != 0) return e;
            newSize = a.Size;
        }
        else
        {
            if (view.ReadOnly) return Errno.EROFS;
            int error = i.Error == 0 ? 0 : i.Error == int.MinValue ? int.MaxValue : Math.Abs(i.Error);
            // A failed write gives back every allocation of its range, wherever the kernel says it went.
            ulong addr = i.Dev == ExperimentalConstants.IomapNoDevice || error != 0 ? FormatConstants.NoAddress : i.NewAddr;
            e = pool.IoEnd(node.Ino, (long)i.Pos, (long)i.Written, error, dev, addr, out newSize);
            if (e == Errno.EINVAL && error == 0 && addr != FormatConstants.NoAddress && addr <= ulong.MaxValue >> 9)
                e = pool.IoEnd(node.Ino, (long)i.Pos, (long)i.Written, 0, dev, addr << 9, out newSize);
            if (e != 0) return e;
        }
        var o = new FuseIomapIoendOut { NewSize = (ulong)newSize };
        return Write(reply, in o, out n);
    }

    // ------------------------------------------------------------------ FREEZE_FS / UNFREEZE_FS / SHUTDOWN_FS

    /// <summary>
    /// FREEZE_FS: the kernel has stopped its writers and synced (SYNCFS) before sending this. Every change
    /// becomes durable (<see cref="Core.Pool.Freeze"/>), and until UNFREEZE_FS no commit runs and every request
    /// that would change the pool gets EBUSY — refused, not held, so that no worker blocks while UNFREEZE_FS
    /// waits to be read. (The kernel sends no such request while frozen; RELEASE and FORGET still work.)
    /// </summary>
    public static Errno FreezeFs(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (d.Iomap == null) return Errno.ENOSYS;
        if (p.Length != FuseFreezeFsIn.Size) return Errno.EINVAL;
        var e = d.Pool.Freeze();
        if (e != 0) return e;
        d.Freeze(true);
        return 0;
    }

    public static Errno UnfreezeFs(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (d.Iomap == null) return Errno.ENOSYS;
        if (p.Length != 0) return Errno.EINVAL;
        d.Freeze(false);
        d.Pool.Thaw();
        return 0;
    }

    /// <summary>SHUTDOWN_FS (the kernel's FS_IOC_SHUTDOWN, or its block device went away): commits what can
    /// be committed, then every request gets EIO (<see cref="RequestDispatcher.ShutDown"/>).</summary>
    public static Errno ShutdownFs(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n)
    {
        n = 0;
        if (d.Iomap == null) return Errno.ENOSYS;
        if (p.Length != FuseShutdownFsIn.Size) return Errno.EINVAL;
        d.MarkShutDown();
        var pool = d.Pool;
        pool.Thaw();
        try { pool.Commit(); }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException) { d.LogLine($"SHUTDOWN_FS: the last commit failed: {ex.Message}"); }
        d.LogLine("SHUTDOWN_FS: the filesystem is shut down; every request fails with EIO from now on");
        return 0;
    }
}
