using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Cow.Tests.Engine;
using Xunit;
using static Cow.Tests.Iomap.IomapPeer;

namespace Cow.Tests.Iomap;

/// <summary>
/// The fuse-iomap server seen from the kernel's side: a test kernel (<see cref="IomapPeer"/>) on a
/// SOCK_SEQPACKET socket speaks the binary protocol to a real FuseSession over image files, does the data
/// I/O on the device images itself, and checks every reply against the kernel's rules.
/// </summary>
[Trait("Tier", "engine")]
public sealed class IomapPeerTests
{
    private const int EIO = 5, EAGAIN = 11, EBUSY = 16, ENOENT = 2, EISDIR = 21, EINVAL = 22, EFBIG = 27, EROFS = 30, ENOSYS = 38, EOPNOTSUPP = 95;
    private const uint IomapAttrFlags = ExperimentalConstants.AttrIomap | ExperimentalConstants.AttrExclusive;

    private static byte[] Pattern(int n, int seed) => MemoryPool.Pattern(n, seed);

    [Fact]
    public void Init_and_config_register_the_devices_once_with_the_kernel_cookies()
    {
        using var k = new IomapPeer();
        var (h, init) = k.Init();
        Assert.Equal(0, h.Error);
        Assert.True((init.AllFlags & FuseInitFlags.Iomap) != 0);
        Assert.True((init.AllFlags & FuseInitFlags.InitExt) != 0, "flags2 travels only with FUSE_INIT_EXT");
        // The writeback cache comes with iomap (not asked for by the mount): without it the 7.2.13 kernel takes
        // i_size from every SETATTR reply and drops appended bytes not yet written back.
        Assert.True((init.AllFlags & FuseInitFlags.WritebackCache) != 0, "no writeback cache with iomap");
        Assert.True(k.D.WritebackCacheGranted);
        Assert.Equal(99u, init.Minor);
        Assert.True(k.D.IomapGranted);
        Assert.Equal(0, k.Registrar.Calls);   // not before IOMAP_CONFIG

        var (e, cfg) = k.Config();
        Assert.Equal(0, e);
        Assert.Equal(1, k.Registrar.Calls);
        Assert.Equal(k.K.ServerFd, k.Registrar.FuseFd);
        Assert.Equal([1u, 2u], k.Registrar.Asked.Select(d => d.EngineCookie));
        foreach (var d in k.Registrar.Asked)
        {
            Assert.True(File.Exists(d.Path), d.Path);
            Assert.Equal(k.Pool.Devices.Single(x => x.Cookie == d.EngineCookie).SizeBytes, d.SizeBytes);
        }
        Assert.Equal([5u, 9u], k.D.IomapDevices.Select(d => d.KernelCookie));
        Assert.Equal(0x3FUL, cfg.Flags);   // s_id, uuid, blocksize, max links, time, maxbytes; no mapping cache
        Assert.Equal(4096u, cfg.SBlocksize);
        Assert.Equal(65000u, cfg.SMaxLinks);
        Assert.Equal(1u, cfg.STimeGran);
        Assert.True(cfg.STimeMin < 0 && cfg.STimeMax > 4_000_000_000L);
        Assert.Equal(Cow.Core.Engine.Engine.MaxFileSize, cfg.SMaxBytes);
        Assert.Equal(16, cfg.SUuidLen);
        unsafe
        {
            Assert.Equal("cow", System.Text.Encoding.ASCII.GetString(new ReadOnlySpan<byte>(cfg.SId, 32)).TrimEnd('\0'));
            Assert.Equal(k.Pool.Engine.PoolUuid, new Guid(new ReadOnlySpan<byte>(cfg.SUuid, 16), bigEndian: true));
            Assert.True(new ReadOnlySpan<byte>(cfg.SPad, 3).IndexOfAnyExcept((byte)0) < 0);
        }
        Assert.Equal(0u, cfg.TailPad);
        // A second IOMAP_CONFIG answers the same and registers nothing again.
        Assert.Equal(0, k.Config().Error);
        Assert.Equal(1, k.Registrar.Calls);
        Assert.Single(k.LogLines(), l => l.StartsWith("fuse-iomap granted: the kernel does data I/O on 2 devices"));
        Assert.Equal(0, k.Registrar.Disposals);   // the mount disposes it, not the dispatcher
    }

    [Fact]
    public void Live_inodes_carry_iomap_and_exclusive_attr_flags_snapshot_inodes_do_not()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        Assert.Equal(IomapAttrFlags, f.Attr.Flags);
        Assert.Equal(IomapAttrFlags, k.GetAttr(f.NodeId).Flags);
        Assert.Equal(IomapAttrFlags, k.GetAttr(RootNode).Flags);
        Assert.Equal(IomapAttrFlags, k.Lookup(RootNode, "f").Attr.Flags);
        var (h, body) = k.Call(FuseOpcode.Mkdir, RootNode, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("d"));
        Assert.Equal(0, h.Error);
        Assert.Equal(IomapAttrFlags, Read<FuseEntryOut>(body).Attr.Flags);
        (h, body) = k.Call(FuseOpcode.Setattr, f.NodeId, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Mode, Mode = 0x1B6 }));
        Assert.Equal(0, h.Error);
        Assert.Equal(IomapAttrFlags, Read<FuseAttrOut>(body).Attr.Flags);
        (h, body) = k.Call(FuseOpcode.Readdirplus, RootNode, Bytes(new FuseReadIn { Size_ = 65536 }));
        Assert.Equal(0, h.Error);
        int pos = 0, named = 0;
        while (pos < body.Length)
        {
            var e = Read<FuseEntryOut>(body.AsSpan(pos));
            var d = Read<FuseDirent>(body.AsSpan(pos + FuseEntryOut.Size));
            if (e.NodeId != 0) { Assert.Equal(IomapAttrFlags, e.Attr.Flags); named++; }
            pos += FuseDirentLayout.DirentplusRecordSize((int)d.NameLen);
        }
        Assert.Equal(2, named);
        // Snapshot inodes and .snapshots: never (they are read through FUSE_READ).
        k.SnapshotCreate("s");
        Assert.Equal(0u, k.GetAttr(NodeTable.SnapshotDirNodeId).Flags);
        var snapRoot = k.Lookup(NodeTable.SnapshotDirNodeId, "s");
        Assert.Equal(0u, snapRoot.Attr.Flags);
        var sf = k.Lookup(snapRoot.NodeId, "f");
        Assert.Equal(0u, sf.Attr.Flags);
        Assert.Equal(0u, k.GetAttr(sf.NodeId).Flags);
        // Live files are not opened with FOPEN_DIRECT_IO: the kernel's iomap paths must be free to fall back to buffered I/O.
        (h, body) = k.Call(FuseOpcode.Open, f.NodeId, Bytes(new FuseOpenIn { Flags = O_RDWR }));
        Assert.Equal(0, h.Error);
        Assert.Equal(0u, Read<FuseOpenOut>(body).OpenFlags & (uint)FuseOpenOutFlags.DirectIo);
    }

    /// <summary>Under iomap (which asks for the writeback cache) only snapshot files send LSEEK: they answer from
    /// the engine, as without the writeback cache (SeekInASnapshotAnswersAsInTheLiveTree); ENOSYS would turn
    /// FUSE_LSEEK off for the connection and leave the kernel's generic lseek, all data up to the size.</summary>
    [Fact]
    public void Snapshot_files_answer_SEEK_DATA_and_SEEK_HOLE_with_the_writeback_cache_granted()
    {
        using var k = new IomapPeer().Start();
        Assert.True(k.D.WritebackCacheGranted);
        var f = k.Create(RootNode, "f");
        k.DirectWrite(f.NodeId, f.Attr.Ino, 1 << 20, Pattern(4096, 3));
        k.SnapshotCreate("s");
        var sf = k.SnapshotFile("s", "f");
        (int Error, ulong Offset) Seek(ulong node, long off, uint whence)
        {
            var (h, body) = k.Call(FuseOpcode.Lseek, node, Bytes(new FuseLseekIn { Offset = (ulong)off, Whence = whence }));
            return (-h.Error, h.Error == 0 ? Read<FuseLseekOut>(body).Offset : 0);
        }
        const uint SeekData = 3, SeekHole = 4;
        Assert.Equal((0, 1UL << 20), Seek(sf.NodeId, 0, SeekData));
        Assert.Equal((0, 0UL), Seek(sf.NodeId, 0, SeekHole));
        // A live file (the kernel would ask only if it were not an iomap inode): ENOSYS, its dirty pages are unknown here.
        Assert.Equal(38, Seek(f.NodeId, 0, SeekData).Error);
    }

    [Fact]
    public void Holes_read_as_holes_without_device_or_address_and_data_reads_back()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "sparse");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var a = Pattern(8192, 1);
        var b = Pattern(4096, 2);
        k.DirectWrite(n, ino, 1 << 20, a);
        k.DirectWrite(n, ino, 3 << 20, b);
        var (r, w) = k.Begin(n, ino, 0, 2 << 20, IomapOp.None);
        Assert.Equal(Hole, r.Type);
        Assert.Equal(0u, r.Dev);
        Assert.Equal(ulong.MaxValue, r.Addr);
        Assert.Equal(1UL << 20, r.Length);   // the whole hole up to the data
        Assert.Equal(PureOverwrite, w.Type);
        (r, _) = k.Begin(n, ino, (1 << 20) + 100, 10, IomapOp.None);
        Assert.Equal(Mapped, r.Type);
        Assert.Equal(9u, r.Dev);   // the log device, as the kernel names it
        Assert.Equal(1L << 20, r.Start);
        // FIEMAP / SEEK_DATA style report.
        (r, _) = k.Begin(n, ino, (1 << 20) + 8192, 1 << 20, IomapOp.Report);
        Assert.Equal(Hole, r.Type);
        var all = k.Read(n, ino, 0, (3 << 20) + 4096);
        var expect = new byte[(3 << 20) + 4096];
        a.CopyTo(expect, 1 << 20);
        b.CopyTo(expect, 3 << 20);
        Assert.Equal(expect, all);
        Assert.Equal(expect, MemoryPool.ReadAll(k.Pool.Live, (long)ino));   // the userspace path agrees
        k.Pool.Engine.Commit();
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void Direct_writes_land_out_of_place_and_one_ioend_commits_every_allocation()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "d");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var v1 = Pattern(64 << 10, 3);
        k.DirectWrite(n, ino, 0, v1);
        Assert.Equal(v1, k.Read(n, ino, 0, v1.Length));
        // Before the ioend, the file still reads the old bytes: the write went elsewhere.
        var (r, w) = k.Begin(n, ino, 0, 8192, IomapOp.Write | IomapOp.Direct);
        Assert.Equal(Mapped, r.Type);
        Assert.True((w.Flags & (ushort)FuseIomapFlags.Shared) != 0);
        Assert.NotEqual(r.Addr, w.Addr);
        Assert.Equal(0, k.End(n, ino, 0, 8192, 0, IomapOp.Write | IomapOp.Direct, w));   // nothing written: given back
        Assert.Equal(v1, MemoryPool.ReadAll(k.Pool.Live, (long)ino));
        // A direct write across data and a hole past the end: several mappings, one ioend (dev 0, addr ~0), an append.
        var v2 = Pattern(256 << 10, 4);
        long commits = k.Pool.Engine.CommitCount;
        Assert.Equal((long)v2.Length, k.DirectWrite(n, ino, 32 << 10, v2));
        Assert.Equal(commits, k.Pool.Engine.CommitCount);   // ioends commit in groups, not each
        var expect = new byte[(32 << 10) + v2.Length];
        v1.CopyTo(expect, 0);
        v2.CopyTo(expect, 32 << 10);
        Assert.Equal((ulong)expect.Length, k.GetAttr(n).Size_);
        Assert.Equal(expect, k.Read(n, ino, 0, expect.Length));
        k.Syncfs();
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void Buffered_unaligned_writes_read_modify_write_partial_blocks_and_writeback_merges_ioends()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "b");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var model = new byte[0];
        void Write(long pos, byte[] data)
        {
            k.BufferedWrite(n, ino, pos, data);
            if (pos + data.Length > model.Length) Array.Resize(ref model, (int)(pos + data.Length));
            data.CopyTo(model, pos);
            Assert.Equal((ulong)model.Length, k.GetAttr(n).Size_);
            Assert.Equal(model, k.Read(n, ino, 0, model.Length));
        }
        Write(0, Pattern(10_000, 5));           // appends, partial last block
        Write(100, Pattern(50, 6));             // inside one block
        Write(4000, Pattern(300, 7));           // across a block boundary
        Write(9_999, Pattern(20_000, 8));       // from the old partial end block, growing
        Write(100_000, Pattern(777, 9));        // past the end: the old end block is zeroed first, a hole between
        Write(4096, Pattern(8192, 10));         // aligned
        var (r, _) = k.Begin(n, ino, 50_000, 1, IomapOp.None);
        Assert.Equal(Hole, r.Type);
        k.Syncfs();
        Assert.True(k.Pool.Fsck().Clean);
        Assert.Equal(model, MemoryPool.ReadAll(k.Pool.Live, (long)ino));
    }

    [Fact]
    public void Unaligned_direct_writes_fall_back_to_buffered_writes_and_allocate_nothing()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "u");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        k.DirectWrite(n, ino, 0, Pattern(16384, 1));
        long free = k.FreeBlocks();
        Assert.Equal(ENOSYS, k.BeginRaw(n, ino, 100, 4096, IomapOp.Write | IomapOp.Direct).Error);
        Assert.Equal(ENOSYS, k.BeginRaw(n, ino, 4096, 4000, IomapOp.Write | IomapOp.Direct).Error);
        Assert.Equal(EAGAIN, k.BeginRaw(n, ino, 4096, 4096, IomapOp.Write | IomapOp.Direct | IomapOp.OverwriteOnly).Error);
        Assert.Equal(free, k.FreeBlocks());
        // What the kernel then does: the same write, buffered.
        var data = Pattern(4096, 2);
        k.BufferedWrite(n, ino, 100, data);
        var expect = Pattern(16384, 1);
        data.CopyTo(expect, 100);
        Assert.Equal(expect, k.Read(n, ino, 0, expect.Length));
    }

    /// <summary>The kernel walks a range one IOMAP_BEGIN per mapping: zeroing from EOF up to a write far past it
    /// (fuse_iomap_write_zero_eof), truncate up, SEEK_DATA/SEEK_HOLE. A hole is one mapping up to the next data,
    /// across empty and absent chunks: cut at every 4 MiB chunk, a write at the end of a 2^50-byte file took 2^28
    /// round trips (the POSIX case HugeSparseFilesUpToTheSizeLimit hung in the fuse-iomap VM).</summary>
    [Fact]
    public void A_hole_is_one_mapping_up_to_the_next_data_across_chunks()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "huge");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        long max = Cow.Core.Engine.Engine.MaxFileSize, gib = 1L << 30;
        k.DirectWrite(n, ino, 0, Pattern(4096, 1));
        k.DirectWrite(n, ino, gib + (5L << 12), Pattern(4096, 2));   // inside a chunk, not at its start
        k.DirectWrite(n, ino, max - 4096, Pattern(4096, 3));
        foreach (var op in new[] { IomapOp.None, IomapOp.Report, IomapOp.Zero })
        {
            var (r, w) = k.Begin(n, ino, 4096, max - 4096, op);
            Assert.Equal((Hole, 4096L, gib + (5L << 12)), (r.Type, r.Start, r.End));
            Assert.Equal(PureOverwrite, w.Type);
            (r, _) = k.Begin(n, ino, gib + (6L << 12), max - gib, op);
            Assert.Equal((Hole, max - 4096), (r.Type, r.End));
            (r, _) = k.Begin(n, ino, 8192, 3 << 20, op);   // never past what was asked
            Assert.Equal((Hole, 8192L + (3 << 20)), (r.Type, r.End));
        }
        // the walk of a zeroing from just after the first block to the last block: three mappings
        k.Zero(n, ino, 4096, max - 8192, max);
        var (rr, _) = k.Begin(n, ino, max - 4096, 4096, IomapOp.None);
        Assert.Equal(Mapped, rr.Type);
        Assert.Equal(Pattern(4096, 3), k.Read(n, ino, max - 4096, 4096));
        // a chunk punched empty is a hole too
        k.Punch(n, gib + (5L << 12), 4096);
        var (r2, _) = k.Begin(n, ino, 4096, max - 4096, IomapOp.Report);
        Assert.Equal((Hole, max - 4096), (r2.Type, r2.End));
        k.Syncfs();
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void Zeroing_leaves_holes_alone_and_rewrites_data_blocks_out_of_place()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "z");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        k.DirectWrite(n, ino, 1 << 20, Pattern(8192, 1));
        var (r, w) = k.Begin(n, ino, 0, 4096, IomapOp.Zero);
        Assert.Equal((Hole, PureOverwrite), (r.Type, w.Type));
        (r, w) = k.Begin(n, ino, 1 << 20, 4096, IomapOp.Zero);
        Assert.Equal((Mapped, Delalloc), (r.Type, w.Type));
        (r, w) = k.Begin(n, ino, 1 << 20, 4096, IomapOp.Write | IomapOp.Unshare);
        Assert.Equal(PureOverwrite, w.Type);   // nothing to unshare: every write is out of place
        // truncate to the middle of a block: the kernel zeroes its tail through iomap, then SETATTR.
        k.Truncate(n, ino, (1 << 20) + 1000);
        var expect = new byte[(1 << 20) + 1000];
        Pattern(8192, 1).AsSpan(0, 1000).CopyTo(expect.AsSpan(1 << 20));
        Assert.Equal(expect, k.Read(n, ino, 0, expect.Length));
        k.Truncate(n, ino, (1 << 20) + 5000);   // grow again: the bytes after the old end read as zeros
        Array.Resize(ref expect, (1 << 20) + 5000);
        Assert.Equal(expect, k.Read(n, ino, 0, expect.Length));
        k.Syncfs();
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void Short_and_failed_writes_release_what_was_not_used()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "s");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var v1 = Pattern(64 << 10, 1);
        k.DirectWrite(n, ino, 0, v1);
        k.Syncfs();
        long free = k.FreeBlocks();
        // The I/O fails: the ioend carries the error; the file keeps its bytes, the allocation is given back.
        Assert.Equal(0L, k.DirectWrite(n, ino, 0, Pattern(64 << 10, 2), stopAfter: 16 << 10, fail: true));
        Assert.Equal(free, k.FreeBlocks());
        Assert.Equal(v1, k.Read(n, ino, 0, v1.Length));
        // A short write: 3 blocks of 16 land; IOMAP_END gives back the rest, the ioend commits the 3.
        var v2 = Pattern(64 << 10, 3);
        Assert.Equal(12288L, k.DirectWrite(n, ino, 0, v2, stopAfter: 12288));
        Assert.Equal(free - 3, k.FreeBlocks());   // the 3 new blocks; the 3 old ones are free after the commit
        var expect = (byte[])v1.Clone();
        v2.AsSpan(0, 12288).CopyTo(expect);
        Assert.Equal(expect, k.Read(n, ino, 0, expect.Length));
        k.Syncfs();
        Assert.Equal(free, k.FreeBlocks());
        // An ioend error for a range that never had an allocation (a failed buffered write): nothing to undo.
        Assert.Equal(0, k.Ioend(n, ino, FuseIomapIoendFlags.Writeback, -5, 1 << 20, 4096, 0, ulong.MaxValue).Error);
        Assert.Equal(expect, k.Read(n, ino, 0, expect.Length));
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void Snapshots_keep_their_bytes_and_their_blocks_are_never_write_targets()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var v1 = Pattern(96 << 10, 1);
        k.DirectWrite(n, ino, 0, v1);
        k.SnapshotCreate("s1");
        // Every write below checks that its target blocks are referenced by nothing (CheckReply).
        var v2 = (byte[])v1.Clone();
        var d1 = Pattern(32 << 10, 2);
        k.DirectWrite(n, ino, 16 << 10, d1);
        d1.CopyTo(v2, 16 << 10);
        var d2 = Pattern(5000, 3);
        k.BufferedWrite(n, ino, 70_000, d2);
        d2.CopyTo(v2, 70_000);
        k.SnapshotCreate("s2");
        var d3 = Pattern(4096, 4);
        k.BufferedWrite(n, ino, 0, d3);
        var v3 = (byte[])v2.Clone();
        d3.CopyTo(v3, 0);
        Assert.Equal(v3, k.Read(n, ino, 0, v3.Length));
        // The snapshots, read through their own mappings (their nodes are in snapshot slots).
        foreach (var (name, content) in new[] { ("s1", v1), ("s2", v2) })
        {
            var sf = k.SnapshotFile(name, "f");
            Assert.Equal(ino | NodeTable.SnapshotTreeInoBit, sf.Attr.Ino);   // st_ino is stable across snapshots, never the live one's
            Assert.Equal(content, k.Read(sf.NodeId, sf.Attr.Ino, 0, content.Length));
            // Snapshot trees are read-only.
            Assert.Equal(EROFS, k.BeginRaw(sf.NodeId, sf.Attr.Ino, 0, 4096, IomapOp.Write | IomapOp.Direct).Error);
            Assert.Equal(EROFS, k.BeginRaw(sf.NodeId, sf.Attr.Ino, 0, 4096, IomapOp.Writeback).Error);
            Assert.Equal(EROFS, k.BeginRaw(sf.NodeId, sf.Attr.Ino, 0, 4096, IomapOp.Write).Error);
            Assert.Equal(EROFS, k.Ioend(sf.NodeId, sf.Attr.Ino, FuseIomapIoendFlags.Direct, 0, 0, 4096, 0, ulong.MaxValue).Error);
        }
        k.SnapshotDelete("s1");
        k.Syncfs();
        var s2 = k.SnapshotFile("s2", "f");
        Assert.Equal(v2, k.Read(s2.NodeId, s2.Attr.Ino, 0, v2.Length));
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void Malformed_requests_get_errors_and_change_nothing()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "m");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var v1 = Pattern(32 << 10, 1);
        k.DirectWrite(n, ino, 0, v1);
        k.Syncfs();
        // An allocation in flight, to see that nothing below disturbs it.
        var (_, w) = k.Begin(n, ino, 0, 8192, IomapOp.Write | IomapOp.Direct);
        long free = k.FreeBlocks();
        long commits = k.Pool.Engine.CommitCount;
        int invalidations = k.Invalidations.Count;

        // IOMAP_BEGIN
        Assert.Equal(EINVAL, k.BeginRaw(n, ino, 0, 4096, IomapOp.None, extraBytes: -1).Error);   // short
        Assert.Equal(EINVAL, k.BeginRaw(n, ino, 0, 4096, IomapOp.None, extraBytes: 8).Error);    // long: another ABI
        Assert.Equal(EINVAL, k.BeginRaw(n, ino, 0, 4096, IomapOp.Write | IomapOp.Direct, reserved: 1).Error);
        Assert.Equal(EINVAL, k.BeginRaw(n, ino + 1, 0, 4096, IomapOp.None).Error);                // attr_ino of another inode
        Assert.Equal(EINVAL, k.BeginRaw(n, ino, 0, 0, IomapOp.None).Error);                       // empty range
        Assert.Equal(EINVAL, k.BeginRaw(n, ino, -1, 4096, IomapOp.None).Error);                   // pos > LLONG_MAX
        Assert.Equal(EINVAL, k.BeginRaw(n, ino, Cow.Core.Engine.Engine.MaxFileSize, 4096, IomapOp.None).Error);
        Assert.Equal(EFBIG, k.BeginRaw(n, ino, Cow.Core.Engine.Engine.MaxFileSize, 4096, IomapOp.Write | IomapOp.Direct).Error);
        Assert.Equal(EFBIG, k.BeginRaw(n, ino, long.MaxValue - 4096, 4096, IomapOp.Writeback).Error);
        Assert.Equal(EOPNOTSUPP, k.BeginRaw(n, ino, 0, 4096, IomapOp.SwapFile | IomapOp.Report).Error);
        Assert.Equal(EOPNOTSUPP, k.BeginRaw(n, ino, 0, 4096, IomapOp.Write | IomapOp.Direct | IomapOp.Atomic).Error);
        Assert.Equal(EOPNOTSUPP, k.BeginRaw(n, ino, 0, 4096, IomapOp.Dax).Error);
        Assert.Equal(ENOENT, k.BeginRaw(4242, 4242, 0, 4096, IomapOp.None).Error);
        Assert.Equal(EISDIR, k.BeginRaw(NodeTable.SnapshotDirNodeId, NodeTable.SnapshotDirStIno, 0, 4096, IomapOp.None).Error);
        Assert.Equal(EISDIR, k.BeginRaw(RootNode, 1, 0, 4096, IomapOp.None).Error);

        // IOMAP_END
        Assert.Equal(EINVAL, k.End(n, ino, 0, 8192, 0, IomapOp.Write | IomapOp.Direct, w with { Dev = 7 }));   // unknown cookie
        Assert.Equal(EINVAL, k.End(n, ino, 0, 8192, 0, IomapOp.Write | IomapOp.Direct, w, reserved: 3));
        Assert.Equal(EINVAL, k.End(n, ino, 0, 8192, -1, IomapOp.Write | IomapOp.Direct, w));
        Assert.Equal(EINVAL, k.End(n, ino + 1, 0, 8192, 0, IomapOp.Write | IomapOp.Direct, w));
        Assert.Equal(EINVAL, k.Errno(FuseOpcode.IomapEnd, n, new byte[FuseIomapEndIn.Size - 8]));

        // IOMAP_IOEND
        var direct = FuseIomapIoendFlags.Direct | FuseIomapIoendFlags.Shared;
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, 0, 8192, 7, w.Addr).Error);                   // unknown cookie
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, 0, 8192, 0, w.Addr).Error);                   // an address without a device
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, 0, 8192, w.Dev, w.Addr + 4096).Error);        // not what was handed out
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, 0, 8192, 5, w.Addr).Error);                   // the other device
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, 0, 12288, 0, ulong.MaxValue).Error);          // past the allocation
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, 1 << 20, 4096, 0, ulong.MaxValue).Error);     // nothing handed out there
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, 0, 8192, 0, ulong.MaxValue, pad: 1).Error);
        Assert.Equal(EINVAL, k.Ioend(n, ino + 1, direct, 0, 0, 8192, 0, ulong.MaxValue).Error);
        Assert.Equal(EINVAL, k.Ioend(n, ino, direct, 0, Cow.Core.Engine.Engine.MaxFileSize - 4096, 8192, 0, ulong.MaxValue).Error);
        Assert.Equal(EINVAL, k.Errno(FuseOpcode.IomapIoend, n, new byte[FuseIomapIoendIn.Size + 8]));

        // IOMAP_CONFIG
        Assert.Equal(EINVAL, k.Config(node: 1).Error);
        Assert.Equal(EINVAL, k.Config(ConfigIn() with { Zero = 1 }).Error);
        Assert.Equal(EINVAL, k.Errno(FuseOpcode.IomapConfig, 0, new byte[FuseIomapConfigIn.Size - 1]));
        // FREEZE / SHUTDOWN with the wrong payload
        Assert.Equal(EINVAL, k.Errno(FuseOpcode.FreezeFs, RootNode, new byte[4]));
        Assert.Equal(EINVAL, k.Errno(FuseOpcode.ShutdownFs, RootNode, new byte[16]));
        Assert.Equal(EINVAL, k.Errno(FuseOpcode.UnfreezeFs, RootNode, new byte[8]));

        // Nothing changed: no commit, no block, no byte, no invalidation; the allocation still completes.
        Assert.Equal(commits, k.Pool.Engine.CommitCount);
        Assert.Equal(free, k.FreeBlocks());
        Assert.Equal(invalidations, k.Invalidations.Count);
        Assert.False(k.D.Frozen);
        Assert.False(k.D.ShutDown);
        Assert.Equal(v1, MemoryPool.ReadAll(k.Pool.Live, (long)ino));
        Assert.Equal(0, k.Registrar.Calls - 1);
        var data = Pattern(8192, 9);
        k.DevWrite(w.Dev, w.Addr, data);   // the kernel writes, then completes
        Assert.Equal((0, (long)v1.Length), k.Ioend(n, ino, direct, 0, 0, 8192, w.Dev, w.Addr));
        data.CopyTo(v1, 0);
        Assert.Equal(v1, k.Read(n, ino, 0, v1.Length));
        k.Syncfs();
        Assert.True(k.Pool.Fsck().Clean);
    }

    [Fact]
    public void Mapping_changes_the_kernel_cannot_see_are_invalidated_before_the_blocks_are_reused()
    {
        // A small log (2 segments), so that freed blocks are reused soon.
        using var k = new IomapPeer(logSize: 8 << 20).Start();
        var a = k.Create(RootNode, "a");
        var b = k.Create(RootNode, "b");
        ulong an = a.NodeId, ai = a.Attr.Ino;
        var va = Pattern(256 << 10, 1);
        k.DirectWrite(an, ai, 0, va);
        Assert.Equal(va, k.Read(an, ai, 0, va.Length));   // the peer now caches a's read mappings
        int hitsBefore = k.CacheHits;
        Assert.Equal(va, k.Read(an, ai, 0, va.Length));
        Assert.True(k.CacheHits > hitsBefore, "the second read did not use the cached mappings");
        var stale = k.Begin(an, ai, 0, 4096, IomapOp.None).Read;

        // FUSE_WRITE (the userspace path) remaps a's first 64 KiB behind the kernel's back.
        int seen = k.Invalidations.Count;
        var wa = Pattern(64 << 10, 2);
        k.UserspaceWrite(an, 0, wa);
        Assert.Contains(k.Invalidations.Skip(seen), i => i.NodeId == an && i.Read.Offset == 0 && i.Read.Length >= 64 << 10);
        wa.CopyTo(va, 0);
        Assert.Equal(va, k.Read(an, ai, 0, va.Length));

        // Commit (the old blocks become free), then rewrite b until the log allocator wraps around and
        // hands a's old blocks to b.
        k.Syncfs();
        var space = k.Pool.Engine.Space[k.EngineCookie(stale.Dev)];
        long staleBlock = (long)stale.Addr / k.BlockSize;
        Assert.Equal(0u, space.RefCount(staleBlock));
        byte[] vb = [];
        for (int round = 0; round < 40 && space.RefCount(staleBlock) == 0; round++)
        {
            vb = Pattern(1 << 20, 100 + round);
            k.DirectWrite(b.NodeId, b.Attr.Ino, 0, vb);
            k.Syncfs();
        }
        Assert.True(space.RefCount(staleBlock) > 0, "the log allocator never reused a's old blocks");
        var old = new byte[4096];
        k.DevRead(stale.Dev, stale.Addr, old);
        Assert.NotEqual(va.AsSpan(0, 4096).ToArray(), old);   // the stale mapping now points at b's bytes
        Assert.Equal(va, k.Read(an, ai, 0, va.Length));       // ... and the peer never used it

        // Truncate, punch, a range clone over a, unlink: each tells the kernel.
        seen = k.Invalidations.Count;
        k.Truncate(an, ai, 200 << 10);
        Assert.Contains(k.Invalidations.Skip(seen), i => i.NodeId == an && i.Read.Offset <= (200 << 10) && EndOf(i.Read) >= 256 << 10);
        seen = k.Invalidations.Count;
        k.Punch(an, 8192, 16384);
        Assert.Contains(k.Invalidations.Skip(seen), i => i.NodeId == an && i.Read.Offset <= 8192 && EndOf(i.Read) >= 8192 + 16384);
        seen = k.Invalidations.Count;
        Assert.Equal(64L << 10, k.CopyRange(b.NodeId, 0, an, 64 << 10, 64 << 10));
        Assert.Contains(k.Invalidations.Skip(seen), i => i.NodeId == an && i.Read.Offset <= (64 << 10) && EndOf(i.Read) >= 128 << 10);
        Array.Resize(ref va, 200 << 10);
        va.AsSpan(8192, 16384).Clear();
        vb.AsSpan(0, 64 << 10).CopyTo(va.AsSpan(64 << 10));
        Assert.Equal(va, k.Read(an, ai, 0, va.Length));
        seen = k.Invalidations.Count;
        k.Unlink(RootNode, "a");
        Assert.Contains(k.Invalidations.Skip(seen), i => i.NodeId == an && i.Read.Offset == 0);
        k.Syncfs();
        Assert.True(k.Pool.Fsck().Clean);
    }

    private static ulong EndOf(FuseRange r) => r.Length == ExperimentalConstants.IomapInvalToEof ? ulong.MaxValue : r.Offset + r.Length;

    [Fact]
    public void Userspace_read_and_write_still_work_when_iomap_is_granted()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "rw");
        var data = Pattern(10_000, 1);
        k.UserspaceWrite(f.NodeId, 123, data);
        var (h, body) = k.Call(FuseOpcode.Read, f.NodeId, Bytes(new FuseReadIn { Offset = 123, Size_ = 10_000 }));
        Assert.Equal(0, h.Error);
        Assert.Equal(data, body);
        var expect = new byte[10_123];
        data.CopyTo(expect, 123);
        Assert.Equal(expect, k.Read(f.NodeId, f.Attr.Ino, 0, expect.Length));
    }

    [Fact]
    public void Freeze_commits_then_refuses_changes_and_commits_nothing_until_thaw()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var v1 = Pattern(16384, 1);
        k.DirectWrite(n, ino, 0, v1);
        long commits = k.Pool.Engine.CommitCount;
        Assert.Equal(0, k.Errno(FuseOpcode.FreezeFs, RootNode, Bytes(new FuseFreezeFsIn())));
        Assert.Equal(commits + 1, k.Pool.Engine.CommitCount);   // what was written is durable
        Assert.True(k.D.Frozen);
        Assert.True(k.Pool.Engine.Frozen);
        k.Syncfs();                                              // fsync/syncfs while frozen: nothing to commit
        Assert.Equal(commits + 1, k.Pool.Engine.CommitCount);
        Assert.Equal(EBUSY, k.Errno(FuseOpcode.Create, RootNode, Bytes(new FuseCreateIn { Flags = O_RDWR, Mode = 0x81A4 }), Name("g")));
        Assert.Equal(EBUSY, k.Errno(FuseOpcode.Write, n, Bytes(new FuseWriteIn { Size_ = 1 }), [1]));
        Assert.Equal(EBUSY, k.Errno(FuseOpcode.Setattr, n, Bytes(new FuseSetattrIn { Valid = (uint)FuseSetattrValid.Size })));
        Assert.Equal(EBUSY, k.Errno(FuseOpcode.Mkdir, NodeTable.SnapshotDirNodeId, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("s")));
        Assert.Equal(Mono.Unix.Native.Errno.EBUSY, k.Pool.Engine.CreateSnapshot("s", out _));
        Assert.Equal(v1, k.Read(n, ino, 0, v1.Length));          // reads go on
        Assert.Equal(commits + 1, k.Pool.Engine.CommitCount);
        Assert.Equal(0, k.Errno(FuseOpcode.UnfreezeFs, RootNode));
        Assert.False(k.D.Frozen);
        Assert.False(k.Pool.Engine.Frozen);
        k.Create(RootNode, "g");
        k.SnapshotCreate("s");
        Assert.True(k.Pool.Engine.CommitCount > commits + 1);
    }

    [Fact]
    public void Shutdown_commits_what_it_can_then_every_request_fails_with_EIO()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        ulong n = f.NodeId, ino = f.Attr.Ino;
        var v1 = Pattern(40_000, 1);
        k.BufferedWrite(n, ino, 0, v1);
        long commits = k.Pool.Engine.CommitCount;
        Assert.Equal(0, k.Errno(FuseOpcode.ShutdownFs, RootNode, Bytes(new FuseShutdownFsIn())));
        Assert.Equal(commits + 1, k.Pool.Engine.CommitCount);
        Assert.True(k.D.ShutDown);
        Assert.Equal(EIO, k.Errno(FuseOpcode.Getattr, n, Bytes(new FuseGetattrIn())));
        Assert.Equal(EIO, k.BeginRaw(n, ino, 0, 4096, IomapOp.None).Error);
        Assert.Equal(EIO, k.Errno(FuseOpcode.Statfs, RootNode));
        Assert.Equal(EIO, k.Errno(FuseOpcode.UnfreezeFs, RootNode));
        Assert.Contains(k.LogLines(), l => l.Contains("SHUTDOWN_FS"));
        var pool = k.ReopenPool();
        Assert.Equal(v1, MemoryPool.ReadAll(pool.Live, (long)ino));
        Assert.True(pool.Fsck().Clean);
    }
}
