using System.Runtime.InteropServices;
using System.Text;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Cow.Tests.Engine;
using Xunit;

namespace Cow.Tests.Dispatch;

[Trait("Tier", "engine")]
public sealed class DispatcherTests : DispatchTestBase
{
    // ------------------------------------------------------------------ INIT

    [Fact]
    public void Init_negotiates_version_limits_and_only_offered_flags()
    {
        var offered = FuseInitFlags.AsyncRead | FuseInitFlags.BigWrites | FuseInitFlags.MaxPages | FuseInitFlags.DoReaddirplus
            | FuseInitFlags.WritebackCache | FuseInitFlags.InitExt | FuseInitFlags.SecurityCtx | FuseInitFlags.Passthrough;
        var (h, body) = Call(FuseOpcode.Init, 0, Bytes(InitIn(7, 50, offered)));
        Assert.Equal(0, h.Error);
        Assert.Equal(FuseOutHeader.Size + FuseInitOut.Size, (int)h.Len);
        var o = MemoryMarshal.Read<FuseInitOut>(body);
        Assert.Equal(7u, o.Major);
        Assert.Equal(45u, o.Minor);
        Assert.Equal(1u << 20, o.MaxWrite);
        Assert.Equal((ushort)256, o.MaxPages);
        Assert.Equal(128u << 10, o.MaxReadahead);
        Assert.Equal(FuseInitFlags.AsyncRead | FuseInitFlags.BigWrites | FuseInitFlags.MaxPages | FuseInitFlags.DoReaddirplus, o.AllFlags);
        Assert.Equal(0u, o.Flags2);
        Assert.True(_d.Initialized);
        Assert.Equal(45u, _d.NegotiatedMinor);

        // A second INIT is refused.
        var (h2, _) = Call(FuseOpcode.Init, 0, Bytes(InitIn(7, 45, offered)));
        Assert.Equal(-EIO, h2.Error);
    }

    [Fact]
    public void Init_takes_an_older_minor_and_a_smaller_max_write_without_max_pages()
    {
        var o = Init(minor: 31, flags: FuseInitFlags.ParallelDirops | FuseInitFlags.AtomicOTrunc);
        Assert.Equal(31u, o.Minor);
        Assert.Equal(RequestDispatcher.DefaultMaxWrite, o.MaxWrite);
        Assert.Equal((ushort)0, o.MaxPages);
        Assert.Equal(FuseInitFlags.ParallelDirops | FuseInitFlags.AtomicOTrunc, o.AllFlags);
    }

    [Fact]
    public void Requests_before_init_and_a_wrong_major_get_errors()
    {
        Assert.Equal(-EIO, Call(FuseOpcode.Getattr, 1, Bytes(new FuseGetattrIn())).Header.Error);
        Assert.Equal(-EPROTO, Call(FuseOpcode.Init, 0, Bytes(InitIn(6, 45, 0))).Header.Error);
        var (h, body) = Call(FuseOpcode.Init, 0, Bytes(InitIn(8, 0, 0)));   // newer major: we answer ours, still waiting
        Assert.Equal(0, h.Error);
        Assert.Equal(7u, MemoryMarshal.Read<FuseInitOut>(body).Major);
        Assert.False(_d.Initialized);
        Init();
        Assert.Equal(0, Call(FuseOpcode.Getattr, 1, Bytes(new FuseGetattrIn())).Header.Error);
    }

    // ------------------------------------------------------------------ namespace and data

    [Fact]
    public void Lookup_and_getattr_report_a_file_made_through_the_inode_api()
    {
        Init();
        long ino = MemoryPool.CreateFile(_pool.Live, "/hello.txt");
        MemoryPool.WriteAt(_pool.Live, ino, 0, Encoding.ASCII.GetBytes("hello, world"));

        var (h, body) = Call(FuseOpcode.Lookup, 1, Name("hello.txt"));
        Assert.Equal(0, h.Error);
        Assert.Equal(FuseEntryOut.Size, body.Length);
        var e = MemoryMarshal.Read<FuseEntryOut>(body);
        Assert.Equal((ulong)ino, e.NodeId);
        Assert.Equal(RequestDispatcher.EntryTimeoutSeconds, e.EntryValid);
        Assert.Equal(RequestDispatcher.AttrTimeoutSeconds, e.AttrValid);
        Assert.Equal((ulong)ino, e.Attr.Ino);
        Assert.Equal(12ul, e.Attr.Size_);
        Assert.Equal(0x81A4u, e.Attr.Mode);
        Assert.Equal(1u, e.Attr.Nlink);

        Assert.Equal(0, (int)_pool.Live.GetAttr(ino, out var a));
        var (h2, body2) = Call(FuseOpcode.Getattr, (ulong)ino, Bytes(new FuseGetattrIn()));
        Assert.Equal(0, h2.Error);
        var ao = MemoryMarshal.Read<FuseAttrOut>(body2);
        Assert.Equal(RequestDispatcher.AttrTimeoutSeconds, ao.AttrValid);
        Assert.Equal((ulong)(a.MtimeNs / 1_000_000_000), ao.Attr.Mtime);
        Assert.Equal((uint)(a.MtimeNs % 1_000_000_000), ao.Attr.Mtimensec);
        Assert.Equal((ulong)a.Blocks512, ao.Attr.Blocks);
        Assert.Equal((uint)a.BlockSize, ao.Attr.Blksize);

        Assert.Equal(-ENOENT, Call(FuseOpcode.Lookup, 1, Name("missing")).Header.Error);
        Assert.Equal(-ENAMETOOLONG, Call(FuseOpcode.Lookup, 1, Name(new string('x', 256))).Header.Error);
        Assert.Equal(-EINVAL, Call(FuseOpcode.Lookup, 1, Encoding.ASCII.GetBytes("nonul")).Header.Error);
    }

    [Fact]
    public void Extensions_are_skipped()
    {
        Init();
        long ino = MemoryPool.CreateFile(_pool.Live, "/x");
        var ext = Bytes(new FuseExtHeader { Size_ = 16, Type = FuseExtHeader.ExtGroups }).Concat(new byte[8]).ToArray();
        var req = Request((uint)FuseOpcode.Lookup, 7, 1, Name("x"), ext);
        int n = _d.Dispatch(req, _reply);
        Assert.Equal(FuseOutHeader.Size + FuseEntryOut.Size, n);
        Assert.Equal((ulong)ino, MemoryMarshal.Read<FuseEntryOut>(_reply.AsSpan(FuseOutHeader.Size)).NodeId);
    }

    [Fact]
    public void Open_read_release_returns_the_bytes()
    {
        Init();
        long ino = MemoryPool.CreateFile(_pool.Live, "/data");
        var data = MemoryPool.Pattern(300_000, 5);
        MemoryPool.WriteAt(_pool.Live, ino, 0, data);

        var (h, body) = Call(FuseOpcode.Open, (ulong)ino, Bytes(new FuseOpenIn { Flags = 0 }));
        Assert.Equal(0, h.Error);
        var fh = MemoryMarshal.Read<FuseOpenOut>(body).Fh;
        var (r1, b1) = Call(FuseOpcode.Read, (ulong)ino, ReadIn(0, 131072));
        Assert.Equal(0, r1.Error);
        Assert.Equal(data.AsSpan(0, 131072).ToArray(), b1);
        var (_, b2) = Call(FuseOpcode.Read, (ulong)ino, ReadIn(250_000, 131072));
        Assert.Equal(data.AsSpan(250_000).ToArray(), b2);
        var (_, b3) = Call(FuseOpcode.Read, (ulong)ino, ReadIn(400_000, 4096));
        Assert.Empty(b3);
        Assert.Equal(0, Call(FuseOpcode.Release, (ulong)ino, Bytes(new FuseReleaseIn { Fh = fh })).Header.Error);
    }

    [Fact]
    public void Readdir_lists_dot_dotdot_and_entries_with_offsets_across_calls()
    {
        Init();
        var names = Enumerable.Range(0, 40).Select(i => $"file-{i:D3}").ToHashSet();
        foreach (var n in names) MemoryPool.CreateFile(_pool.Live, "/" + n);

        Assert.Equal(0, Call(FuseOpcode.Opendir, 1, Bytes(new FuseOpenIn())).Header.Error);
        var (h1, b1) = Call(FuseOpcode.Readdir, 1, ReadIn(0, 400));
        Assert.Equal(0, h1.Error);
        var first = ParseDirents(b1);
        Assert.True(first.Count is > 2 and < 42, $"first call returned {first.Count}");
        Assert.Equal(".", first[0].Name);
        Assert.Equal(1ul, first[0].Ino);
        Assert.Equal("..", first[1].Name);

        var (_, b2) = Call(FuseOpcode.Readdir, 1, ReadIn(first[^1].Off, 65536));
        var second = ParseDirents(b2);
        var (_, b3) = Call(FuseOpcode.Readdir, 1, ReadIn(second[^1].Off, 65536));
        Assert.Empty(b3);   // end of directory

        var all = first.Concat(second).Select(e => e.Name).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.True(names.SetEquals(all.Skip(2)), string.Join(",", all));
        foreach (var (name, ino, _) in first.Concat(second).Skip(2))
            Assert.Equal((ulong)MemoryPool.Ino(_pool.Live, "/" + name), ino);
        Assert.Equal(0, Call(FuseOpcode.Releasedir, 1, Bytes(new FuseReleaseIn())).Header.Error);
    }

    [Fact]
    public void Readdirplus_carries_entries_with_attributes()
    {
        Init(flags: FuseInitFlags.DoReaddirplus);
        long ino = MemoryPool.CreateFile(_pool.Live, "/p");
        var (h, body) = Call(FuseOpcode.Readdirplus, 1, ReadIn(0, 4096));
        Assert.Equal(0, h.Error);
        int pos = 0;
        var seen = new List<string>();
        while (pos < body.Length)
        {
            var e = MemoryMarshal.Read<FuseEntryOut>(body.AsSpan(pos));
            var d = MemoryMarshal.Read<FuseDirent>(body.AsSpan(pos + FuseEntryOut.Size));
            string name = Encoding.UTF8.GetString(body, pos + FuseDirentLayout.NameOffsetDirentplus, (int)d.NameLen);
            seen.Add(name);
            if (name == "p") { Assert.Equal((ulong)ino, e.NodeId); Assert.Equal(0x81A4u, e.Attr.Mode); }
            else Assert.Equal(0ul, e.NodeId);
            pos += FuseDirentLayout.DirentplusRecordSize((int)d.NameLen);
        }
        Assert.Equal([".", "..", "p"], seen);
    }

    [Fact]
    public void Xattrs_follow_the_size_rules()
    {
        Init();
        long ino = MemoryPool.CreateFile(_pool.Live, "/x");
        Assert.Equal(0, (int)_pool.Live.SetXattr(ino, "user.a", Encoding.ASCII.GetBytes("12345")));
        Assert.Equal(0, (int)_pool.Live.SetXattr(ino, "user.bb", [1]));
        var name = Name("user.a");

        var (h0, b0) = Call(FuseOpcode.Getxattr, (ulong)ino, Bytes(new FuseGetxattrIn { Size_ = 0 }), name);
        Assert.Equal(0, h0.Error);
        Assert.Equal(5u, MemoryMarshal.Read<FuseGetxattrOut>(b0).Size_);
        Assert.Equal(-ERANGE, Call(FuseOpcode.Getxattr, (ulong)ino, Bytes(new FuseGetxattrIn { Size_ = 4 }), name).Header.Error);
        Assert.Equal("12345", Encoding.ASCII.GetString(Call(FuseOpcode.Getxattr, (ulong)ino, Bytes(new FuseGetxattrIn { Size_ = 64 }), name).Body));

        var (l0, lb0) = Call(FuseOpcode.Listxattr, (ulong)ino, Bytes(new FuseGetxattrIn { Size_ = 0 }));
        Assert.Equal(0, l0.Error);
        Assert.Equal(15u, MemoryMarshal.Read<FuseGetxattrOut>(lb0).Size_);
        Assert.Equal(-ERANGE, Call(FuseOpcode.Listxattr, (ulong)ino, Bytes(new FuseGetxattrIn { Size_ = 14 })).Header.Error);
        var list = Call(FuseOpcode.Listxattr, (ulong)ino, Bytes(new FuseGetxattrIn { Size_ = 100 })).Body;
        Assert.Equal(["user.a", "user.bb"], Encoding.UTF8.GetString(list).TrimEnd('\0').Split('\0').Order().ToArray());
    }

    [Fact]
    public void Statfs_and_readlink_reply()
    {
        Init();
        var (h, body) = Call(FuseOpcode.Statfs, 1);
        Assert.Equal(0, h.Error);
        var s = MemoryMarshal.Read<FuseStatfsOut>(body);
        Assert.Equal(4096u, s.St.Bsize);
        Assert.Equal(255u, s.St.NameLen);
        Assert.True(s.St.Blocks > 0);

        Assert.Equal(0, (int)_pool.Live.Symlink(1, "ln", "target/path", 0, 0, out var a));
        var (hl, bl) = Call(FuseOpcode.Readlink, (ulong)a.Ino);
        Assert.Equal(0, hl.Error);
        Assert.Equal("target/path", Encoding.UTF8.GetString(bl));
    }

    // ------------------------------------------------------------------ protocol edges

    [Fact]
    public void Unknown_and_unimplemented_opcodes_get_enosys()
    {
        Init();
        Assert.Equal(-ENOSYS, Call((FuseOpcode)99, 1).Header.Error);
        Assert.Equal(-ENOSYS, Call((FuseOpcode)4095, 1).Header.Error);
        Assert.Equal(-ENOSYS, Call(FuseOpcode.Getlk, 1, new byte[FuseLkIn.Size]).Header.Error);
        Assert.Equal(-ENOSYS, Call(FuseOpcode.Bmap, 1, new byte[16]).Header.Error);
        Assert.Equal(-ENOSYS, Call(FuseOpcode.Ioctl, 1, new byte[32]).Header.Error);
        Assert.Equal(-ENOSYS, Call(FuseOpcode.Poll, 1, new byte[24]).Header.Error);
    }

    [Fact]
    public void Forget_and_batch_forget_send_no_reply()
    {
        Init();
        Assert.Equal(0, _d.Dispatch(Request((uint)FuseOpcode.Forget, 9, 1, Bytes(new FuseForgetIn { Nlookup = 1 })), _reply));
        var batch = Bytes(new FuseBatchForgetIn { Count = 1 }).Concat(Bytes(new FuseForgetOne { NodeId = 1, Nlookup = 3 })).ToArray();
        Assert.Equal(0, _d.Dispatch(Request((uint)FuseOpcode.BatchForget, 10, 0, batch), _reply));
        Assert.Equal(0, _d.Dispatch(Request((uint)FuseOpcode.Forget, 11, 1, []), _reply));   // even malformed
    }

    [Fact]
    public void Lying_lengths_and_short_payloads_are_einval()
    {
        Init();
        var req = Request((uint)FuseOpcode.Getattr, 77, 1, Bytes(new FuseGetattrIn()));
        BitConverter.GetBytes((uint)(req.Length + 8)).CopyTo(req, 0);
        Assert.Equal(FuseOutHeader.Size, _d.Dispatch(req, _reply));
        var h = MemoryMarshal.Read<FuseOutHeader>(_reply);
        Assert.Equal(-EINVAL, h.Error);
        Assert.Equal(77ul, h.Unique);

        Assert.Equal(-EINVAL, Call(FuseOpcode.Read, 1, new byte[8]).Header.Error);
        Assert.Equal(0, _d.Dispatch(new byte[10], _reply));   // no readable unique: dropped
        var ext = Request((uint)FuseOpcode.Getattr, 78, 1, Bytes(new FuseGetattrIn()));
        ext[36] = 200;   // total_extlen beyond the request
        Assert.Equal(-EINVAL, MemoryMarshal.Read<FuseOutHeader>(_reply.AsSpan(0, _d.Dispatch(ext, _reply))).Error);
    }

    [Fact]
    public void A_handler_exception_becomes_eio_and_is_logged()
    {
        var logged = new List<string>();
        _d.Log = logged.Add;
        Init();
        _pool.Pool.Dispose();   // the engine under the view is gone: handlers throw
        var (h, _) = Call(FuseOpcode.Getattr, 1, Bytes(new FuseGetattrIn()));
        Assert.Equal(-EIO, h.Error);
        Assert.Equal(1, _d.HandlerFailures);
        Assert.Contains(logged, l => l.Contains("failed"));
    }

    // ------------------------------------------------------------------ fuzz

    [Fact]
    public void Fuzz_random_requests_never_throw_and_replies_are_well_formed()
    {
        int seed = Environment.GetEnvironmentVariable("COW_FUZZ_SEED") is { } s ? int.Parse(s) : Environment.TickCount;
        try { Fuzz(seed, 20_000); }
        catch (Exception e) { throw new Xunit.Sdk.XunitException($"fuzz seed {seed} (rerun with COW_FUZZ_SEED={seed}): {e}"); }
    }

    private void Fuzz(int seed, int count)
    {
        var rng = new Random(seed);
        long file = MemoryPool.CreateFile(_pool.Live, "/f");
        MemoryPool.WriteAt(_pool.Live, file, 0, MemoryPool.Pattern(10_000, seed));
        Assert.Equal(0, (int)_pool.Live.Mkdir(1, "dir", 0x1ED, 0, 0, out var dir));
        Assert.Equal(0, (int)_pool.Live.SetXattr(file, "user.k", [1, 2, 3]));
        Assert.Equal(0, (int)_pool.Engine.CreateSnapshot("s0", out _));
        var d = new RequestDispatcher(_pool.Pool, new FuseMountOptions { SnapshotDirVisible = rng.Next(2) == 0, WritebackCache = rng.Next(2) == 0 }) { Log = _ => { } };
        ulong snapRoot = (1UL << 48) | 1, snapFile = (1UL << 48) | (ulong)file, snapDir = NodeTable.SnapshotDirNodeId;
        ulong[] nodes = [0, 1, 1, (ulong)file, (ulong)file, (ulong)dir.Ino, 999_999, ulong.MaxValue, (ulong)long.MaxValue + 1,
            snapRoot, snapFile, snapDir, snapDir, (5UL << 48) | 1, (0xFFFFUL << 48) | 2];
        uint[] valid = [.. Enumerable.Range(1, 53).Select(i => (uint)i).Where(i => i is not 7 and not 19)];
        var reply = new byte[rng.Next(4) == 0 ? 300 : 70_000];
        int succeeded = 0, failed = 0, dropped = 0;

        for (int i = 0; i < count; i++)
        {
            if (i == 50)
            {
                Init_(d, rng);
                // Give the snapshot its slot 1 (snapRoot, snapFile) through the dispatcher.
                d.Dispatch(Request((uint)FuseOpcode.Lookup, 2, snapDir, Name("s0")), reply.Length >= 200 ? reply : new byte[200]);
            }
            uint opcode = rng.Next(10) switch
            {
                < 7 => valid[rng.Next(valid.Length)],
                7 => (uint)rng.Next(64),
                8 => (uint)rng.Next(4089, 4097),
                _ => (uint)rng.NextInt64(0, 1L << 32),
            };
            ulong unique = rng.Next(20) == 0 ? 0 : (ulong)rng.NextInt64();
            byte[] payload = RandomPayload(rng, opcode, nodes);
            byte[] ext = rng.Next(8) == 0 ? new byte[8 * rng.Next(0, 4)] : [];
            rng.NextBytes(ext);
            var req = Request(opcode, unique, nodes[rng.Next(nodes.Length)], payload, ext, uid: (uint)rng.Next(3) * 1000, gid: (uint)rng.Next(3) * 1000);
            switch (rng.Next(12))
            {
                case 0: BitConverter.GetBytes((uint)rng.Next(0, req.Length * 2)).CopyTo(req, 0); break;     // lying len
                case 1: req = req[..rng.Next(0, req.Length + 1)]; break;                                       // truncated
                case 2: BitConverter.GetBytes((ushort)rng.Next(0, 1 << 16)).CopyTo(req, 36); break;            // lying extlen
                case 3: rng.NextBytes(req); break;                                                             // garbage
                case 4: if (req.Length > 40) req[40 + rng.Next(req.Length - 40)] ^= (byte)rng.Next(1, 256); break;
            }
            // Keep copies small: a fuzzed setattr may have made a file of a petabyte (sparse).
            if (req.Length >= 40 + 48 + 8 && MemoryMarshal.Read<uint>(req.AsSpan(4)) is (uint)FuseOpcode.CopyFileRange or (uint)FuseOpcode.CopyFileRange64)
                BitConverter.GetBytes((ulong)rng.Next(0, 70_000)).CopyTo(req, 40 + 40);
            if (rng.Next(200) == 0) reply = new byte[rng.Next(16, 100_000)];

            int n = d.Dispatch(req, reply);
            if (n == 0) { dropped++; continue; }
            Assert.InRange(n, FuseOutHeader.Size, reply.Length);
            var h = MemoryMarshal.Read<FuseOutHeader>(reply);
            Assert.Equal((uint)n, h.Len);
            Assert.True(h.Error <= 0, $"request {i}: error {h.Error}");
            Assert.True(h.Error == 0 || n == FuseOutHeader.Size, $"request {i}: an error reply carries data");
            Assert.True(req.Length >= 16, $"request {i}: replied to a request without a unique");
            Assert.Equal(MemoryMarshal.Read<ulong>(req.AsSpan(8)), h.Unique);
            Assert.NotEqual(0ul, h.Unique);
            uint op = MemoryMarshal.Read<uint>(req.AsSpan(4));
            Assert.False(op is (uint)FuseOpcode.Forget or (uint)FuseOpcode.BatchForget or (uint)FuseOpcode.Interrupt or (uint)FuseOpcode.NotifyReply,
                $"request {i}: opcode {op} must not be answered");
            if (h.Error == 0) succeeded++; else failed++;
        }
        // The mix reaches the handlers, not only the validation in front of them.
        Assert.True(succeeded > count / 50 && failed > count / 10 && dropped > 0, $"ok {succeeded}, errors {failed}, dropped {dropped}");
        Assert.Equal(0, d.HandlerFailures);
    }

    private void Init_(RequestDispatcher d, Random rng)
    {
        var req = Request((uint)FuseOpcode.Init, 1, 0, Bytes(InitIn(7, (uint)rng.Next(9, 60), (FuseInitFlags)(ulong)rng.NextInt64())));
        d.Dispatch(req, _reply);
    }

    private static byte[] RandomPayload(Random rng, uint opcode, ulong[] nodes)
    {
        string[] names = ["f", "dir", ".", "..", "missing", "user.k", "", ".snapshots", "s0", "s1", "new", "a/b",
            new string('n', 255), new string('n', 256), new string('é', 200)];
        byte[] Name_() => rng.Next(8) switch
        {
            0 => Encoding.UTF8.GetBytes(names[rng.Next(names.Length)]),          // missing NUL
            1 => [0xFF, 0xFE, 0],                                                  // not UTF-8
            2 => [.. Enumerable.Repeat((byte)'h', rng.Next(200, 5000)), 0],        // huge
            _ => Name(names[rng.Next(names.Length)]),
        };
        byte[] Struct(int size) { var b = new byte[rng.Next(3) == 0 ? rng.Next(0, size + 1) : size]; rng.NextBytes(b); return b; }
        ulong Offset() => rng.Next(3) == 0 ? (ulong)rng.NextInt64() : (ulong)rng.Next(0, 20_000);
        ulong Node() => nodes[rng.Next(nodes.Length)];
        uint Mode() => (uint)rng.Next(0, 1 << 16);
        byte[] ReadStruct()
        {
            var r = new FuseReadIn { Offset = Offset(), Size_ = (uint)(rng.Next(3) == 0 ? rng.NextInt64(0, 1L << 32) : rng.Next(0, 140_000)) };
            return Bytes(r);
        }
        byte[] XattrIn() => Bytes(new FuseGetxattrIn { Size_ = (uint)rng.Next(0, 8) == 0 ? 0 : (uint)rng.Next(0, 100) });
        byte[] Data() => new byte[rng.Next(4) == 0 ? rng.Next(0, 70_000) : rng.Next(0, 600)];
        return (FuseOpcode)opcode switch
        {
            FuseOpcode.Lookup or FuseOpcode.Unlink or FuseOpcode.Rmdir or FuseOpcode.Removexattr => Name_(),
            FuseOpcode.Getxattr => [.. XattrIn(), .. Name_()],
            FuseOpcode.Listxattr => XattrIn(),
            FuseOpcode.Setxattr => [.. Bytes(new FuseSetxattrIn { Size_ = (uint)rng.Next(0, 12), Flags = (uint)rng.Next(0, 5) })
                .Take(rng.Next(2) == 0 ? 8 : 16), .. Name_(), .. Struct(8)],
            FuseOpcode.Read or FuseOpcode.Readdir or FuseOpcode.Readdirplus => ReadStruct(),
            FuseOpcode.Write => [.. Bytes(new FuseWriteIn { Offset = Offset(), Size_ = (uint)rng.Next(0, 700), Flags = rng.Next(3) == 0 ? 0x400u : 0,
                WriteFlags = (uint)rng.Next(0, 8) }), .. Data()],
            FuseOpcode.Open or FuseOpcode.Opendir => Bytes(new FuseOpenIn { Flags = (uint)rng.Next(0, 4) | (rng.Next(2) == 0 ? 0x200u : 0) }),
            FuseOpcode.Create => [.. Bytes(new FuseCreateIn { Flags = (uint)rng.Next(0, 4) | (rng.Next(2) == 0 ? 0x200u : 0) | (rng.Next(2) == 0 ? 0x80u : 0), Mode = 0x8000 | (uint)rng.Next(0, 0x1000) }), .. Name_()],
            FuseOpcode.Mknod => [.. Bytes(new FuseMknodIn { Mode = Mode(), Rdev = (uint)rng.Next() }), .. Name_()],
            FuseOpcode.Mkdir => [.. Bytes(new FuseMkdirIn { Mode = (uint)rng.Next(0, 0x1000) }), .. Name_()],
            FuseOpcode.Symlink => [.. Name_(), .. Name_()],
            FuseOpcode.Link => [.. Bytes(new FuseLinkIn { OldNodeId = Node() }), .. Name_()],
            FuseOpcode.Rename => [.. Bytes(new FuseRenameIn { NewDir = Node() }), .. Name_(), .. Name_()],
            FuseOpcode.Rename2 => [.. Bytes(new FuseRename2In { NewDir = Node(), Flags = (uint)rng.Next(0, 8) }), .. Name_(), .. Name_()],
            FuseOpcode.Setattr => Bytes(new FuseSetattrIn
            {
                Valid = (uint)rng.Next(0, 1 << 12), Size_ = rng.Next(4) == 0 ? (ulong)rng.NextInt64() : (ulong)rng.Next(0, 30_000), Mode = Mode(),
                Uid = (uint)rng.Next(-1, 3), Gid = (uint)rng.Next(-1, 3), Atime = (ulong)rng.NextInt64(), Atimensec = (uint)rng.Next(0, 1_100_000_000),
                Mtime = (ulong)rng.Next(), Mtimensec = (uint)rng.Next(0, 1_000_000_000),
            }),
            FuseOpcode.Fallocate => Bytes(new FuseFallocateIn { Offset = Offset(), Length = rng.Next(5) == 0 ? (ulong)rng.NextInt64() : (ulong)rng.Next(0, 30_000), Mode = (uint)rng.Next(0, 0x80) }),
            FuseOpcode.Lseek => Bytes(new FuseLseekIn { Offset = Offset(), Whence = (uint)rng.Next(0, 6) }),
            FuseOpcode.CopyFileRange or FuseOpcode.CopyFileRange64 => Bytes(new FuseCopyFileRangeIn
            {
                OffIn = Offset(), NodeIdOut = Node(), OffOut = Offset(), Len = (ulong)rng.Next(0, 70_000), Flags = rng.Next(10) == 0 ? 1u : 0,
            }),
            FuseOpcode.Access => Bytes(new FuseAccessIn { Mask = (uint)rng.Next(0, 8) }),
            FuseOpcode.Statx => Bytes(new FuseStatxIn { SxMask = (uint)rng.Next() }),
            FuseOpcode.Fsync or FuseOpcode.Fsyncdir => Bytes(new FuseFsyncIn { FsyncFlags = (uint)rng.Next(0, 2) }),
            FuseOpcode.Init => Bytes(InitIn((uint)rng.Next(5, 10), (uint)rng.Next(0, 60), (FuseInitFlags)(ulong)rng.NextInt64())),
            FuseOpcode.BatchForget => [.. Bytes(new FuseBatchForgetIn { Count = (uint)rng.Next(0, 1000) }), .. Struct(32)],
            _ => Struct(rng.Next(0, 128)),
        };
    }
}
