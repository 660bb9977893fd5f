using System.Runtime.InteropServices;
using System.Text;
using Cow.Core;
using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace Cow.Tests.Iomap;

/// <summary>A mapping as the kernel receives it (fuse_iomap_io).</summary>
internal readonly record struct KMap(ulong Offset, ulong Length, ulong Addr, ushort Type, ushort Flags, uint Dev)
{
    public long Start => (long)Offset;
    public long End => (long)(Offset + Length);
    public static KMap From(in FuseIomapIo io) => new(io.Offset, io.Length, io.Addr, io.Type, io.Flags, io.Dev);
    public FuseIomapIo ToWire() => new() { Offset = Offset, Length = Length, Addr = Addr, Type = Type, Flags = Flags, Dev = Dev };
    public override string ToString() => $"{Start}+{Length} type {Type} flags 0x{Flags:x} dev {Dev} addr {(Addr == ulong.MaxValue ? "~0" : Addr.ToString())}";
}

/// <summary>
/// Plays the kernel on the other end of a SOCK_SEQPACKET socket, speaking the exact binary protocol to a
/// real <see cref="FuseSession"/> + <see cref="RequestDispatcher"/> over a pool of image files: INIT offering
/// fuse-iomap (minor 99 and the flags2 bit), IOMAP_CONFIG, then the kernel's iomap paths — reads through
/// read mappings, direct writes into write mappings (one ioend for the whole write, as the kernel's dio
/// completion does), buffered writes into a page cache with read-modify-write of partial blocks from the
/// read mapping followed by writeback (ioends merged when the allocations are contiguous, new_addr in bytes
/// or in sectors), zeroing, IOMAP_END for short and size-changing writes. It does the data I/O on the device
/// images itself, through the cookies <see cref="TestRegistrar"/> handed out.
/// <para>Every iomap_begin reply is checked against the kernel's validation rules (written here again, not
/// taken from the server), and every write target against the engine's space map: a block any file or
/// snapshot references is never a write target. Read mappings are cached, as a kernel mapping cache would,
/// and dropped only by FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS: reading through a stale cached mapping shows up as
/// wrong data.</para>
/// Not thread-safe: one test thread.
/// </summary>
internal sealed class IomapPeer : IDisposable
{
    // Wire mapping types of the ABI Cow speaks (FUSE_IOMAP_TYPE_*, ../shared/kernel/uapi-numbers.txt).
    public const ushort Hole = (ushort)FuseIomapType.Hole, Delalloc = (ushort)FuseIomapType.Delalloc, Mapped = (ushort)FuseIomapType.Mapped,
        Unwritten = (ushort)FuseIomapType.Unwritten, Inline = (ushort)FuseIomapType.Inline, PureOverwrite = (ushort)FuseIomapType.PureOverwrite,
        RetryCache = (ushort)FuseIomapType.RetryCache, Nocache = (ushort)FuseIomapType.Nocache,
        MappedStripe = (ushort)FuseIomapType.MappedStripe, UnwrittenStripe = (ushort)FuseIomapType.UnwrittenStripe;
    public const int O_RDWR = 2;
    public const uint RootNode = 1;

    public string Folder { get; }
    public Pool Pool { get; private set; }
    public RequestDispatcher D { get; }
    public FuseSession Session { get; }
    public SocketKernel K { get; } = new();
    public TestRegistrar Registrar { get; }
    public int BlockSize { get; private set; } = 4096;
    public long MaxBytes { get; private set; } = Cow.Core.Engine.Engine.MaxFileSize;
    /// <summary>Cache read mappings until invalidated (the mapping-cache check).</summary>
    public bool UseCache { get; set; } = true;
    public int CacheHits;
    public readonly List<string> Log = new();
    public readonly List<FuseIomapInvalMappingsOut> Invalidations = new();
    public int OtherNotifications;

    private readonly Dictionary<uint, SafeFileHandle> _devs = new();
    private readonly Dictionary<uint, long> _devSize = new();
    private readonly Dictionary<ulong, List<KMap>> _cache = new();
    private readonly Dictionary<ulong, long> _diskSize = new();   // the kernel's i_disk_size per node
    private ulong _unique = 1000;
    private bool _sectors;

    public IomapPeer(IomapMode mode = IomapMode.Auto, TestRegistrar? registrar = null, bool noRegistrar = false, long logSize = 64 << 20)
    {
        Folder = Path.Combine(Path.GetTempPath(), "cow-iomap-" + Guid.NewGuid().ToString("N"));
        Pool = Pool.Create(Folder, new PoolCreateOptions { BaseSize = 16 << 20, LogSize = logSize });
        Pool.Engine.CommitInterval = TimeSpan.Zero;   // no timed commit: free-space counts only move when a test makes them
        Registrar = registrar ?? new TestRegistrar();
        D = new RequestDispatcher(Pool, new FuseMountOptions { Iomap = mode, IomapDevices = noRegistrar ? null : Registrar });
        D.Log = AddLog;
        Session = new FuseSession(D, K.ServerFd, 1) { Log = AddLog };
        Session.Start();
    }

    private void AddLog(string line) { lock (Log) Log.Add(line); }

    public string[] LogLines() { lock (Log) return Log.ToArray(); }

    private bool _closed;

    /// <summary>Closes the kernel end, waits for the session to end (end of file on its socket) and closes it.</summary>
    public void CloseConnection()
    {
        if (_closed) return;
        _closed = true;
        K.CloseKernelEnd();
        bool ended = Session.WaitEnded(TimeSpan.FromSeconds(10));
        Session.Dispose();
        Assert.True(ended, "the session did not end when the kernel end closed");
    }

    /// <summary>Ends the connection, closes the pool and opens it again from its folder (what survived).</summary>
    public Pool ReopenPool()
    {
        CloseConnection();
        Pool.Dispose();
        Pool = Pool.Open(Folder);
        return Pool;
    }

    public void Dispose()
    {
        try { CloseConnection(); }
        finally
        {
            foreach (var h in _devs.Values) h.Dispose();
            try { Pool.Dispose(); }
            finally { try { Directory.Delete(Folder, true); } catch (IOException) { } }
        }
    }

    // ------------------------------------------------------------------ raw protocol

    public static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(MemoryMarshal.CreateReadOnlySpan(ref value, 1)).ToArray();
    public static T Read<T>(ReadOnlySpan<byte> b) where T : unmanaged => MemoryMarshal.Read<T>(b);
    public static byte[] Name(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    /// <summary>Sends one request and returns its reply; notifications that arrive first are taken in.</summary>
    public (FuseOutHeader H, byte[] Body) Call(uint opcode, ulong node, ReadOnlySpan<byte> payload)
    {
        ulong unique = ++_unique;
        var h = new FuseInHeader { Len = (uint)(FuseInHeader.Size + payload.Length), Opcode = opcode, Unique = unique, NodeId = node };
        K.Send([.. Bytes(h), .. payload]);
        while (true)
        {
            var msg = K.Receive();
            var oh = Read<FuseOutHeader>(msg);
            Assert.Equal((uint)msg.Length, oh.Len);
            if (oh.Unique == 0) { TakeNotification(oh.Error, msg.AsSpan(FuseOutHeader.Size)); continue; }
            Assert.Equal(unique, oh.Unique);
            Assert.True(oh.Error <= 0);
            return (oh, msg[FuseOutHeader.Size..]);
        }
    }

    public (FuseOutHeader H, byte[] Body) Call(FuseOpcode op, ulong node, params byte[][] parts) => Call((uint)op, node, parts.SelectMany(p => p).ToArray());

    /// <summary>-error of a call (0 on success).</summary>
    public int Errno(FuseOpcode op, ulong node, params byte[][] parts) => -Call(op, node, parts).H.Error;

    /// <summary>Takes in every notification already sent.</summary>
    public void DrainNotifications()
    {
        while (K.HasMessage())
        {
            var msg = K.Receive();
            var oh = Read<FuseOutHeader>(msg);
            Assert.Equal(0UL, oh.Unique);
            TakeNotification(oh.Error, msg.AsSpan(FuseOutHeader.Size));
        }
    }

    private void TakeNotification(int code, ReadOnlySpan<byte> body)
    {
        if (code != (int)FuseNotifyCode.IomapInvalMappings) { OtherNotifications++; return; }
        Assert.Equal(FuseIomapInvalMappingsOut.Size, body.Length);
        var n = Read<FuseIomapInvalMappingsOut>(body);
        Assert.Equal(n.NodeId, n.AttrIno);   // live inodes: node id = st_ino = inode number
        foreach (var r in new[] { n.Read, n.Write })
        {
            if (r.Length == 0) continue;
            // The kernel's rules for an invalidation range (else -EFSCORRUPTED).
            Assert.True(r.Offset < (ulong)MaxBytes, $"invalidation offset {r.Offset} past maxbytes");
            Assert.True(r.Offset % (ulong)BlockSize == 0, $"invalidation offset {r.Offset} not aligned");
            Assert.True(r.Length == ExperimentalConstants.IomapInvalToEof || (r.Length % (ulong)BlockSize == 0 && r.Offset + r.Length > r.Offset),
                $"invalidation length {r.Length} not aligned or overflowing");
        }
        Invalidations.Add(n);
        if (_cache.TryGetValue(n.NodeId, out var list))
        {
            ulong end = n.Read.Length == ExperimentalConstants.IomapInvalToEof ? ulong.MaxValue : n.Read.Offset + n.Read.Length;
            list.RemoveAll(m => m.Offset < end && n.Read.Offset < m.Offset + m.Length);
        }
    }

    // ------------------------------------------------------------------ INIT, IOMAP_CONFIG

    public static FuseInitIn InitIn(uint minor, FuseInitFlags flags) => new()
    {
        Major = 7, Minor = minor, MaxReadahead = 128 << 10, Flags = (uint)((ulong)flags & 0xFFFF_FFFF), Flags2 = (uint)((ulong)flags >> 32),
    };

    public const FuseInitFlags KernelFlags = FuseInitFlags.AsyncRead | FuseInitFlags.BigWrites | FuseInitFlags.MaxPages | FuseInitFlags.InitExt
        | FuseInitFlags.DoReaddirplus | FuseInitFlags.ParallelDirops | FuseInitFlags.AtomicOTrunc | FuseInitFlags.DirectIoAllowMmap
        | FuseInitFlags.WritebackCache;

    /// <summary>INIT as an iomap kernel sends it (minor 99, FUSE_IOMAP in flags2) or as a mainline one.</summary>
    public (FuseOutHeader H, FuseInitOut Out) Init(bool offerIomap = true, uint minor = 99)
    {
        var flags = KernelFlags | (offerIomap ? FuseInitFlags.Iomap : 0);
        var (h, body) = Call(FuseOpcode.Init, 0, Bytes(InitIn(minor, flags)));
        return (h, h.Error == 0 ? Read<FuseInitOut>(body) : default);
    }

    public static FuseIomapConfigIn ConfigIn() => new() { Flags = 0x7F, MaxBytes = long.MaxValue };

    /// <summary>IOMAP_CONFIG; on success opens the registered devices for the peer's own I/O.</summary>
    public (int Error, FuseIomapConfigOut Out) Config(FuseIomapConfigIn? input = null, ulong node = 0)
    {
        var (h, body) = Call(FuseOpcode.IomapConfig, node, Bytes(input ?? ConfigIn()));
        if (h.Error != 0) return (-h.Error, default);
        Assert.Equal(FuseIomapConfigOut.Size, body.Length);
        var o = Read<FuseIomapConfigOut>(body);
        BlockSize = (int)o.SBlocksize;
        MaxBytes = o.SMaxBytes;
        OpenRegisteredDevices();
        return (0, o);
    }

    /// <summary>Opens, for the peer's own I/O, every device the registrar has registered and the peer has not opened
    /// (after IOMAP_CONFIG, and after a device was added to the mounted pool).</summary>
    public void OpenRegisteredDevices()
    {
        foreach (var d in Registrar.Answered)
            if (!_devs.ContainsKey(d.KernelCookie))
            {
                _devs[d.KernelCookie] = File.OpenHandle(d.BlockDevicePath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
                _devSize[d.KernelCookie] = d.SizeBytes;
            }
    }

    /// <summary>INIT with iomap and IOMAP_CONFIG, both succeeding.</summary>
    public IomapPeer Start()
    {
        var (h, o) = Init();
        Assert.Equal(0, h.Error);
        Assert.True((o.AllFlags & FuseInitFlags.Iomap) != 0, "FUSE_IOMAP not echoed");
        Assert.Equal(ExperimentalConstants.IomapMinorVersion, o.Minor);
        Assert.Equal(0, Config().Error);
        return this;
    }

    // ------------------------------------------------------------------ namespace

    public uint EngineCookie(uint kernelCookie) => Registrar.Answered.Single(d => d.KernelCookie == kernelCookie).EngineCookie;

    public FuseEntryOut Create(ulong parent, string name)
    {
        var (h, body) = Call(FuseOpcode.Create, parent, Bytes(new FuseCreateIn { Flags = O_RDWR, Mode = 0x81A4 }), Name(name));
        Assert.True(h.Error == 0, $"create {name}: {h.Error}");
        var e = Read<FuseEntryOut>(body);
        var o = Read<FuseOpenOut>(body.AsSpan(FuseEntryOut.Size));
        Assert.Equal(0, Errno(FuseOpcode.Release, e.NodeId, Bytes(new FuseReleaseIn { Fh = o.Fh, Flags = O_RDWR })));
        _diskSize[e.NodeId] = 0;
        return e;
    }

    public FuseEntryOut Lookup(ulong parent, string name)
    {
        var (h, body) = Call(FuseOpcode.Lookup, parent, Name(name));
        Assert.True(h.Error == 0, $"lookup {name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    public FuseAttr GetAttr(ulong node)
    {
        var (h, body) = Call(FuseOpcode.Getattr, node, Bytes(new FuseGetattrIn()));
        Assert.True(h.Error == 0, $"getattr {node}: {h.Error}");
        return Read<FuseAttrOut>(body).Attr;
    }

    public long DiskSize(ulong node)
    {
        if (!_diskSize.TryGetValue(node, out long s)) _diskSize[node] = s = (long)GetAttr(node).Size_;
        return s;
    }

    /// <summary>truncate(2) as the iomap kernel does it: zero the rest of the new last block (shrinking) or
    /// the old partial last block (growing) through iomap, write it back, then SETATTR.</summary>
    public void Truncate(ulong node, ulong attrIno, long size)
    {
        long old = DiskSize(node);
        int bs = BlockSize;
        if (size < old && size % bs != 0) Zero(node, attrIno, size, Math.Min(old, (size | (long)(bs - 1)) + 1) - size, eof: size);
        if (size > old && old % bs != 0) Zero(node, attrIno, old, Math.Min(size, (old | (long)(bs - 1)) + 1) - old, eof: size);
        var (h, _) = Call(FuseOpcode.Setattr, node, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Size, Size_ = (ulong)size }));
        Assert.True(h.Error == 0, $"setattr size {size}: {h.Error}");
        _diskSize[node] = size;
    }

    public void Punch(ulong node, long offset, long length)
    {
        Assert.Equal(0, Errno(FuseOpcode.Fallocate, node, Bytes(new FuseFallocateIn { Offset = (ulong)offset, Length = (ulong)length, Mode = 3 })));
    }

    public long CopyRange(ulong src, long srcOff, ulong dst, long dstOff, long len)
    {
        var (h, body) = Call(FuseOpcode.CopyFileRange64, src, Bytes(new FuseCopyFileRangeIn { OffIn = (ulong)srcOff, NodeIdOut = dst, OffOut = (ulong)dstOff, Len = (ulong)len }));
        Assert.True(h.Error == 0, $"copy_file_range: {h.Error}");
        long copied = (long)Read<FuseCopyFileRangeOut>(body).BytesCopied;
        _diskSize.Remove(dst);
        return copied;
    }

    /// <summary>FUSE_WRITE: the userspace path (the kernel still sends it for what iomap does not cover).</summary>
    public void UserspaceWrite(ulong node, long offset, byte[] data)
    {
        var (h, body) = Call(FuseOpcode.Write, node, Bytes(new FuseWriteIn { Offset = (ulong)offset, Size_ = (uint)data.Length }), data);
        Assert.True(h.Error == 0, $"write: {h.Error}");
        Assert.Equal((uint)data.Length, Read<FuseWriteOut>(body).Size_);
        _diskSize.Remove(node);
    }

    public void Unlink(ulong parent, string name) => Assert.Equal(0, Errno(FuseOpcode.Unlink, parent, Name(name)));

    public void Syncfs() => Assert.Equal(0, Errno(FuseOpcode.Syncfs, RootNode, Bytes(new FuseSyncfsIn())));

    public void SnapshotCreate(string name)
    {
        var (h, _) = Call(FuseOpcode.Mkdir, NodeTable.SnapshotDirNodeId, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(name));
        Assert.True(h.Error == 0, $"mkdir .snapshots/{name}: {h.Error}");
    }

    public void SnapshotDelete(string name) => Assert.Equal(0, Errno(FuseOpcode.Rmdir, NodeTable.SnapshotDirNodeId, Name(name)));

    /// <summary>The entry of <paramref name="file"/> in snapshot <paramref name="snapshot"/> (browsed under .snapshots).</summary>
    public FuseEntryOut SnapshotFile(string snapshot, string file) => Lookup(Lookup(NodeTable.SnapshotDirNodeId, snapshot).NodeId, file);

    public long FreeBlocks()
    {
        var (h, body) = Call(FuseOpcode.Statfs, RootNode);
        Assert.Equal(0, h.Error);
        return (long)Read<FuseStatfsOut>(body).St.Bfree;
    }

    // ------------------------------------------------------------------ iomap requests

    /// <summary>The kernel's fuse_iomap_op_to_server: the wire op flags of an iomap operation, written here from
    /// the ABI's numbers (not taken from the server's translation).</summary>
    public static uint WireOp(IomapOp op)
    {
        uint w = 0;
        void Map(IomapOp o, FuseIomapOpFlags f) { if ((op & o) != 0) w |= (uint)f; }
        Map(IomapOp.Write, FuseIomapOpFlags.Write); Map(IomapOp.Zero, FuseIomapOpFlags.Zero); Map(IomapOp.Report, FuseIomapOpFlags.Report);
        Map(IomapOp.Fault, FuseIomapOpFlags.Fault); Map(IomapOp.Direct, FuseIomapOpFlags.Direct); Map(IomapOp.NoWait, FuseIomapOpFlags.Nowait);
        Map(IomapOp.OverwriteOnly, FuseIomapOpFlags.OverwriteOnly); Map(IomapOp.Unshare, FuseIomapOpFlags.Unshare); Map(IomapOp.Dax, FuseIomapOpFlags.Dax);
        Map(IomapOp.Atomic, FuseIomapOpFlags.Atomic); Map(IomapOp.DontCache, FuseIomapOpFlags.Dontcache);
        Map(IomapOp.Writeback, FuseIomapOpFlags.Writeback); Map(IomapOp.SwapFile, FuseIomapOpFlags.Swapfile);
        return w;
    }

    public (int Error, KMap Read, KMap Write) BeginRaw(ulong node, ulong attrIno, long pos, long count, IomapOp op, uint reserved = 0, int extraBytes = 0)
        => BeginWire(node, attrIno, pos, count, WireOp(op), reserved, extraBytes);

    /// <summary>IOMAP_BEGIN with raw wire op flags.</summary>
    public (int Error, KMap Read, KMap Write) BeginWire(ulong node, ulong attrIno, long pos, long count, uint opflags, uint reserved = 0, int extraBytes = 0)
    {
        var i = new FuseIomapBeginIn { OpFlags = opflags, Reserved = reserved, AttrIno = attrIno, Pos = (ulong)pos, Count = (ulong)count };
        byte[] payload = Bytes(i);
        if (extraBytes > 0) payload = [.. payload, .. new byte[extraBytes]];
        if (extraBytes < 0) payload = payload[..^(-extraBytes)];
        var (h, body) = Call(FuseOpcode.IomapBegin, node, payload);
        if (h.Error != 0) { Assert.Empty(body); return (-h.Error, default, default); }
        Assert.Equal(FuseIomapBeginOut.Size, body.Length);
        var o = Read<FuseIomapBeginOut>(body);
        return (0, KMap.From(o.Read), KMap.From(o.Write));
    }

    /// <summary>IOMAP_BEGIN that must succeed; the reply is checked against the kernel's rules.</summary>
    public (KMap Read, KMap Write) Begin(ulong node, ulong attrIno, long pos, long count, IomapOp op)
    {
        var (e, r, w) = BeginRaw(node, attrIno, pos, count, op);
        Assert.True(e == 0, $"IOMAP_BEGIN node {node} pos {pos} count {count} op {op}: errno {e}");
        CheckReply(pos, op, r, w);
        return (r, w);
    }

    public int End(ulong node, ulong attrIno, long pos, long count, long written, IomapOp op, KMap map, uint reserved = 0)
    {
        var i = new FuseIomapEndIn
        {
            OpFlags = WireOp(op), Reserved = reserved, AttrIno = attrIno, Pos = (ulong)pos, Count = (ulong)count, Written = written, Map = map.ToWire(),
        };
        return Errno(FuseOpcode.IomapEnd, node, Bytes(i));
    }

    public (int Error, long NewSize) Ioend(ulong node, ulong attrIno, FuseIomapIoendFlags flags, int error, long pos, long written, uint dev, ulong newAddr, uint pad = 0)
    {
        var i = new FuseIomapIoendIn
        {
            Flags = (uint)flags, Error = error, AttrIno = attrIno, Pos = (ulong)pos, NewAddr = newAddr, Written = (ulong)written, Dev = dev, Pad = pad,
        };
        var (h, body) = Call(FuseOpcode.IomapIoend, node, Bytes(i));
        if (h.Error != 0) return (-h.Error, 0);
        Assert.Equal(FuseIomapIoendOut.Size, body.Length);
        return (0, (long)Read<FuseIomapIoendOut>(body).NewSize);
    }

    // ------------------------------------------------------------------ the kernel's rules

    /// <summary>fuse_iomap_check_mapping of the kernel (fs/fuse/fuse_iomap.c in ../shared/kernel/fuse-iomap-7.2.13.patch):
    /// what it refuses with -EFSCORRUPTED ("bad data from server"), check for check. Cow configures no kernel mapping
    /// cache and sends no upserts, so the inode has no cache: RETRY_CACHE is refused (fuse_inode_caches_iomaps).</summary>
    public void CheckMapping(in KMap m, bool writeMapping, string what)
    {
        // fuse_iomap_check_type: exactly the FUSE_IOMAP_TYPE_* of this ABI.
        Assert.True(m.Type is Hole or Delalloc or Mapped or Unwritten or Inline or PureOverwrite or RetryCache or Nocache or MappedStripe or UnwrittenStripe,
            $"{what}: !fuse_iomap_check_type({m.Type})");
        // fuse_iomap_check_flags: FUSE_IOMAP_F_ALL = NEW..WANT_IOMAP_END.
        Assert.True((m.Flags & ~(ushort)FuseIomapFlags.ReplyMask) == 0, $"{what}: !fuse_iomap_check_flags(0x{m.Flags:x})");
        Assert.True(m.Length != 0, $"{what}: map->length == 0");
        Assert.True(m.Offset % (ulong)BlockSize == 0, $"{what}: {m}: offset not aligned to {BlockSize}");
        Assert.True(m.Length % (ulong)BlockSize == 0, $"{what}: {m}: length not aligned to {BlockSize}");
        Assert.True(m.Offset + m.Length >= m.Offset, $"{what}: {m}: check_add_overflow(offset, length)");
        Assert.True(m.Offset < (ulong)MaxBytes, $"{what}: {m}: offset >= s_maxbytes");
        switch (m.Type)
        {
            case Mapped or Unwritten or MappedStripe or UnwrittenStripe:
                Assert.True(m.Dev != 0, $"{what}: {m}: map->dev == FUSE_IOMAP_DEV_NULL");
                Assert.True(m.Addr != ulong.MaxValue, $"{what}: {m}: map->addr == FUSE_IOMAP_NULL_ADDR");
                break;
            case Delalloc or Hole or Inline:
                Assert.True(m.Dev == 0, $"{what}: {m}: map->dev != FUSE_IOMAP_DEV_NULL");
                Assert.True(m.Addr == ulong.MaxValue, $"{what}: {m}: map->addr != FUSE_IOMAP_NULL_ADDR");
                break;
            case PureOverwrite:
                Assert.True(writeMapping, $"{what}: {m}: pure overwrite as a read mapping (iodir != WRITE_MAPPING)");
                Assert.True(m.Flags == 0 && m.Dev == 0 && m.Addr == ulong.MaxValue, $"{what}: pure overwrite {m} carries state");
                break;
            case RetryCache or Nocache:
                Assert.True(m.Type != RetryCache, $"{what}: {m}: RETRY_CACHE without a mapping cache (!fuse_inode_caches_iomaps)");
                Assert.True(m.Flags == 0 && m.Dev == 0 && m.Addr == ulong.MaxValue, $"{what}: {m}: cache instruction carries state");
                break;
        }
        if (m.Addr != ulong.MaxValue) Assert.True(m.Addr + m.Length >= m.Addr, $"{what}: {m}: check_add_overflow(addr, length)");
        // fuse_iomap_find_bdev: no stripe device is ever configured (Cow does not stripe) -> -EFSCORRUPTED; a
        // MAPPED/UNWRITTEN cookie must name a registered iomap backing device.
        Assert.True(m.Type is not (MappedStripe or UnwrittenStripe), $"{what}: {m}: striped mapping but no stripe device was configured");
        if (m.Type is Mapped or Unwritten)
            Assert.True(_devs.ContainsKey(m.Dev), $"{what}: {m} names device {m.Dev}, which is not registered (fuse_iomap_find_bdev)");
    }

    /// <summary>fuse_iomap_begin_validate (every check), plus Cow's own promises: both mappings cover one range,
    /// addresses are block-aligned and inside their device, and a write mapping with space is out of place —
    /// SHARED, on blocks nothing references.</summary>
    public void CheckReply(long pos, IomapOp op, in KMap r, in KMap w)
    {
        CheckMapping(r, false, "read mapping");
        CheckMapping(w, true, "write mapping");
        Assert.True(r.Type != Nocache && w.Type != Nocache, "NOCACHE in an iomap_begin reply");
        Assert.True(r.Offset <= (ulong)pos && (ulong)pos < r.Offset + r.Length, $"read mapping {r} does not cover {pos}");
        Assert.True(w.Offset <= (ulong)pos && (ulong)pos < w.Offset + w.Length, $"write mapping {w} does not cover {pos}");
        if ((op & (IomapOp.Report | IomapOp.Atomic | IomapOp.SwapFile)) != 0)   // !fuse_iomap_can_cache
            Assert.True(r.Type != RetryCache && w.Type != RetryCache, "RETRY_CACHE for an uncached operation");
        if ((op & IomapOp.Atomic) != 0)
        {
            var wm = w.Type == PureOverwrite ? r : w;
            Assert.True(wm.Type is Mapped or Unwritten && (wm.Flags & (ushort)FuseIomapFlags.AtomicBio) != 0, $"atomic write mapping {wm} without ATOMIC_BIO");
        }
        // Cow's promises (stricter than the kernel):
        foreach (var (m, name) in new[] { (r, "read"), (w, "write") })
            if (m.Type is Mapped or Unwritten)
            {
                Assert.True(m.Addr % (ulong)BlockSize == 0, $"{name} mapping {m}: address not aligned");
                Assert.True((long)(m.Addr + m.Length) <= _devSize[m.Dev], $"{name} mapping {m} runs past device {m.Dev} ({_devSize[m.Dev]} bytes)");
            }
        Assert.True(r.Offset == w.Offset && r.Length == w.Length, $"read {r} and write {w} cover different ranges");
        bool writeOp = (WireOp(op) & (uint)FuseIomapOpFlags.WriteMask) != 0;   // fuse_is_iomap_file_write
        if (!writeOp) Assert.Equal(PureOverwrite, w.Type);
        if (w.Type == Mapped)
        {
            Assert.True(writeOp, "a write mapping with space for a read");
            Assert.True((w.Flags & (ushort)FuseIomapFlags.Shared) != 0, $"write mapping {w} is not SHARED: the kernel would not send ioend");
            AssertNobodyReferences(w);
            if (r.Type == Mapped && r.Dev == w.Dev)
                Assert.True(r.Addr + r.Length <= w.Addr || w.Addr + w.Length <= r.Addr, $"write mapping {w} overlaps read mapping {r}");
        }
    }

    /// <summary>Every block of <paramref name="w"/> has no reference in the engine's space map: no file and no
    /// snapshot maps it.</summary>
    public void AssertNobodyReferences(in KMap w)
    {
        var space = Pool.Engine.Space[EngineCookie(w.Dev)];
        long first = (long)(w.Addr / (ulong)BlockSize), n = (long)(w.Length / (ulong)BlockSize);
        for (long b = first; b < first + n; b++)
            Assert.True(space.RefCount(b) == 0, $"write target block {b} of device {w.Dev} is referenced ({space.RefCount(b)}): shared data would be overwritten");
    }

    // ------------------------------------------------------------------ the kernel's data paths

    /// <summary>Writes to a registered device, as the kernel's bios do.</summary>
    public void DevWrite(uint dev, ulong addr, ReadOnlySpan<byte> data) => RandomAccess.Write(_devs[dev], data, (long)addr);

    /// <summary>Reads from a registered device.</summary>
    public void DevRead(uint dev, ulong addr, Span<byte> into)
    {
        int done = 0;
        while (done < into.Length)
        {
            int n = RandomAccess.Read(_devs[dev], into[done..], (long)addr + done);
            Assert.True(n > 0, $"short read of device {dev} at {addr + (ulong)done}");
            done += n;
        }
    }

    private bool TryCached(ulong node, long pos, out KMap m)
    {
        m = default;
        if (!UseCache || !_cache.TryGetValue(node, out var list)) return false;
        foreach (var c in list) if (c.Start <= pos && pos < c.End) { m = c; CacheHits++; return true; }
        return false;
    }

    private void Cache(ulong node, in KMap m)
    {
        if (!UseCache || m.Type is not (Hole or Mapped)) return;
        if (!_cache.TryGetValue(node, out var list)) _cache[node] = list = new List<KMap>();
        var copy = m;
        list.RemoveAll(c => c.Offset < copy.Offset + copy.Length && copy.Offset < c.Offset + c.Length);
        list.Add(m);
    }

    /// <summary>Drops the cached mappings of a node (its snapshot was deleted, or the test wants fresh ones).</summary>
    public void ForgetCache(ulong node) => _cache.Remove(node);

    /// <summary>Reads [pos, pos+len) through read mappings (cached ones first), as iomap reads do.</summary>
    public byte[] Read(ulong node, ulong attrIno, long pos, int len, bool direct = false)
    {
        var result = new byte[len];
        long p = pos, end = pos + len;
        while (p < end)
        {
            if (!TryCached(node, p, out var m))
            {
                m = Begin(node, attrIno, p, end - p, direct ? IomapOp.Direct : IomapOp.None).Read;
                Cache(node, m);
            }
            long n = Math.Min(end, m.End) - p;
            if (m.Type == Mapped) DevRead(m.Dev, m.Addr + (ulong)(p - m.Start), result.AsSpan((int)(p - pos), (int)n));
            else Assert.Equal(Hole, m.Type);
            p += n;
        }
        return result;
    }

    /// <summary>
    /// A direct write (O_DIRECT, block-aligned): one IOMAP_BEGIN per mapping, the data written to each write
    /// mapping, then ONE ioend for the whole write with dev 0 / addr ~0, as the kernel's dio completion sends
    /// it. <paramref name="stopAfter"/> makes it short (the I/O stops there: IOMAP_END with what was written,
    /// then the ioend for the part done); <paramref name="fail"/> makes the I/O fail (ioend with -EIO).
    /// Returns the bytes the server committed.
    /// </summary>
    public long DirectWrite(ulong node, ulong attrIno, long pos, byte[] data, long stopAfter = -1, bool fail = false)
    {
        Assert.True(pos % BlockSize == 0 && data.Length % BlockSize == 0, "direct writes here are block-aligned");
        long end = pos + data.Length, stop = stopAfter >= 0 ? pos + stopAfter : end;
        long old = DiskSize(node);
        if (pos > old && old % BlockSize != 0) Zero(node, attrIno, old, Math.Min(pos, (old | (long)(BlockSize - 1)) + 1) - old, eof: old);   // fuse_iomap_write_zero_eof
        long p = pos;
        while (p < stop)
        {
            var (_, w) = Begin(node, attrIno, p, end - p, IomapOp.Write | IomapOp.Direct);
            Assert.Equal(Mapped, w.Type);
            long n = Math.Min(end, w.End) - p, did = Math.Min(n, stop - p);
            DevWrite(w.Dev, w.Addr + (ulong)(p - w.Start), data.AsSpan((int)(p - pos), (int)did));
            if (did < n) Assert.Equal(0, End(node, attrIno, p, n, did, IomapOp.Write | IomapOp.Direct, w));
            p += did;
        }
        long written = stop - pos, disk = DiskSize(node);
        var flags = FuseIomapIoendFlags.Direct | FuseIomapIoendFlags.Shared | (pos + written > disk ? FuseIomapIoendFlags.Append : 0);
        var (e, size) = Ioend(node, attrIno, flags, fail ? -5 : 0, pos, written, 0, ulong.MaxValue);
        Assert.True(e == 0, $"direct-I/O ioend {pos}+{written}: errno {e}");
        if (fail) return 0;
        Assert.Equal(Math.Max(disk, pos + written), size);
        _diskSize[node] = size;
        return written;
    }

    /// <summary>
    /// A buffered write: the page cache takes the data (IOMAP_BEGIN(WRITE) answers the read mapping and a
    /// DELALLOC write mapping; partial blocks are read from the read mapping first; IOMAP_END when the write
    /// grows the file), then writeback places it (<see cref="WriteBack"/>). Past the end of the file the kernel
    /// first zeroes from the old end (<see cref="Zero"/>).
    /// </summary>
    public void BufferedWrite(ulong node, ulong attrIno, long pos, byte[] data)
    {
        int bs = BlockSize;
        long size = DiskSize(node);
        long end = pos + data.Length;
        if (pos > size && size % bs != 0) Zero(node, attrIno, size, Math.Min(pos, (size | (long)(bs - 1)) + 1) - size, eof: end);
        long bStart = pos & ~(long)(bs - 1), bEnd = (end + bs - 1) & ~(long)(bs - 1);
        var pc = new byte[bEnd - bStart];
        long p = pos;
        while (p < end)
        {
            var (r, w) = Begin(node, attrIno, p, end - p, IomapOp.Write);
            Assert.Equal(Delalloc, w.Type);
            long mEnd = Math.Min(end, r.End);
            long head = p & ~(long)(bs - 1);
            if (p != head) FillFromReadMapping(pc, bStart, head, r, size);
            long tail = (mEnd - 1) & ~(long)(bs - 1);
            if (mEnd % bs != 0 && (tail != head || p == head)) FillFromReadMapping(pc, bStart, tail, r, size);
            data.AsSpan((int)(p - pos), (int)(mEnd - p)).CopyTo(pc.AsSpan((int)(p - bStart)));
            if (mEnd > size)
            {
                size = mEnd;   // iomap_write_end grew i_size: IOMAP_F_SIZE_CHANGED, so the kernel sends iomap_end
                Assert.Equal(0, End(node, attrIno, p, end - p, mEnd - p, IomapOp.Write, w with { Flags = (ushort)(w.Flags | (ushort)FuseIomapFlags.SizeChanged) }));
            }
            p = mEnd;
        }
        WriteBack(node, attrIno, bStart, pc, eof: Math.Max(end, DiskSize(node)));
    }

    /// <summary>iomap_block_needs_zeroing: the old bytes of a partial block come from a mapped read mapping
    /// inside the file; anything else reads as zeros.</summary>
    private void FillFromReadMapping(byte[] pc, long bStart, long block, in KMap r, long iSize)
    {
        if (r.Type != Mapped || block >= iSize) return;
        DevRead(r.Dev, r.Addr + (ulong)(block - r.Start), pc.AsSpan((int)(block - bStart), BlockSize));
    }

    /// <summary>
    /// Writeback of the page-cache range [start, start+pc.Length) (block-aligned) of a file whose size is
    /// <paramref name="eof"/>: IOMAP_BEGIN(WRITEBACK) allocations, the data written there, and ioends —
    /// merged across allocations that are contiguous on the device, as the kernel merges them, trimmed to the
    /// end of the file, with new_addr in bytes or, every other time, in 512-byte sectors.
    /// </summary>
    public void WriteBack(ulong node, ulong attrIno, long start, byte[] pc, long eof)
    {
        long end = start + pc.Length, p = start;
        long ioStart = -1, ioLen = 0;
        uint ioDev = 0;
        ulong ioAddr = 0, next = 0;
        void Flush()
        {
            if (ioStart < 0) return;
            long written = Math.Min(ioStart + ioLen, eof) - ioStart;
            if (written <= 0) return;
            long disk = DiskSize(node);
            var flags = FuseIomapIoendFlags.Writeback | FuseIomapIoendFlags.Shared | (ioStart + written > disk ? FuseIomapIoendFlags.Append : 0);
            _sectors = !_sectors;
            var (e, size) = Ioend(node, attrIno, flags, 0, ioStart, written, ioDev, _sectors ? ioAddr >> 9 : ioAddr);
            Assert.True(e == 0, $"writeback ioend {ioStart}+{written} at {ioAddr} ({(_sectors ? "sectors" : "bytes")}): errno {e}");
            Assert.Equal(Math.Max(disk, ioStart + written), size);
            _diskSize[node] = size;
        }
        while (p < end)
        {
            var (_, w) = Begin(node, attrIno, p, end - p, IomapOp.Writeback);
            Assert.Equal(Mapped, w.Type);
            long n = Math.Min(end, w.End) - p;
            ulong addr = w.Addr + (ulong)(p - w.Start);
            DevWrite(w.Dev, addr, pc.AsSpan((int)(p - start), (int)n));
            if (ioStart >= 0 && ioDev == w.Dev && next == addr) ioLen += n;
            else { Flush(); ioStart = p; ioLen = n; ioDev = w.Dev; ioAddr = addr; }
            next = addr + (ulong)n;
            p += n;
        }
        Flush();
    }

    /// <summary>iomap_zero_range over [pos, pos+len): holes are left alone (the reply is a pure overwrite of the
    /// hole); mapped blocks are zeroed in the page cache (DELALLOC) and written back.</summary>
    public void Zero(ulong node, ulong attrIno, long pos, long len, long eof)
    {
        int bs = BlockSize;
        long end = pos + len, p = pos;
        long iSize = DiskSize(node);
        while (p < end)
        {
            var (r, w) = Begin(node, attrIno, p, end - p, IomapOp.Zero);
            long mEnd = Math.Min(end, r.End);
            if (w.Type == PureOverwrite) Assert.Equal(Hole, r.Type);
            else
            {
                Assert.Equal(Delalloc, w.Type);
                Assert.Equal(Mapped, r.Type);
                long bStart = p & ~(long)(bs - 1), bEnd = (mEnd + bs - 1) & ~(long)(bs - 1);
                var pc = new byte[bEnd - bStart];
                for (long b = bStart; b < bEnd; b += bs) FillFromReadMapping(pc, bStart, b, r, iSize);
                pc.AsSpan((int)(p - bStart), (int)(mEnd - p)).Clear();
                WriteBack(node, attrIno, bStart, pc, eof);
            }
            p = mEnd;
        }
    }
}
