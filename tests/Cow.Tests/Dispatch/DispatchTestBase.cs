using System.Runtime.InteropServices;
using System.Text;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Cow.Tests.Engine;
using Xunit;

namespace Cow.Tests.Dispatch;

/// <summary>A dispatcher over a memory pool, and raw FUSE request building.</summary>
public abstract class DispatchTestBase : IDisposable
{
    protected const int EPERM = 1, ENOENT = 2, EIO = 5, EEXIST = 17, EXDEV = 18, ENOTDIR = 20, EISDIR = 21, EINVAL = 22,
        ENFILE = 23, EFBIG = 27, EROFS = 30, ERANGE = 34, ENAMETOOLONG = 36, ENOSYS = 38, ENOTEMPTY = 39, ENODATA = 61,
        EPROTO = 71, EOPNOTSUPP = 95, ESTALE = 116, EBUSY = 16, ENXIO = 6, EILSEQ = 84;
    protected readonly MemoryPool _pool = new();
    protected RequestDispatcher _d;
    protected readonly byte[] _reply = new byte[RequestDispatcher.ReplyBufferSize];
    protected ulong _unique = 100;

    protected DispatchTestBase(FuseMountOptions? options = null) => _d = new RequestDispatcher(_pool.Pool, options);

    /// <summary>Bytes the dispatcher allocates per request made by <paramref name="request"/> (each request is
    /// made before its round is measured). Steady state: the least of three rounds after a warm-up (JIT,
    /// thread-static scratch). A one-off allocation (a lock's wait event created the first time a background
    /// commit contends with the request, or the runtime's tier-up, seen under a loaded CI machine) shows in
    /// one round only; an allocation per request shows in every round.</summary>
    protected long AllocatedPerCall(Func<byte[]> request, int calls = 2000)
    {
        for (int i = 0; i < 200; i++) _d.Dispatch(request(), _reply);
        long least = long.MaxValue;
        for (int round = 0; round < 3; round++)
        {
            var requests = new byte[calls][];
            for (int i = 0; i < calls; i++) requests[i] = request();
            long before = GC.GetAllocatedBytesForCurrentThread();
            foreach (var r in requests) _d.Dispatch(r, _reply);
            least = Math.Min(least, (GC.GetAllocatedBytesForCurrentThread() - before) / calls);
        }
        return least;
    }

    /// <summary><see cref="AllocatedPerCall(Func{byte[]}, int)"/> of one request sent again and again.</summary>
    protected long AllocatedPerCall(byte[] request, int calls = 2000) => AllocatedPerCall(() => request, calls);

    public void Dispose()
    {
        _pool.Dispose();
        GC.SuppressFinalize(this);
    }

    // ------------------------------------------------------------------ request building

    protected static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(MemoryMarshal.CreateReadOnlySpan(ref value, 1)).ToArray();

    protected static byte[] Name(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    protected static byte[] Request(uint opcode, ulong unique, ulong node, byte[] payload, byte[]? extensions = null, uint uid = 0, uint gid = 0)
    {
        extensions ??= [];
        var h = new FuseInHeader
        {
            Len = (uint)(FuseInHeader.Size + payload.Length + extensions.Length), Opcode = opcode, Unique = unique,
            NodeId = node, TotalExtLen = (ushort)(extensions.Length / 8), Uid = uid, Gid = gid,
        };
        return [.. Bytes(h), .. payload, .. extensions];
    }

    protected (FuseOutHeader Header, byte[] Body) Call(FuseOpcode op, ulong node, params byte[][] parts) => CallAs(0, 0, op, node, parts);

    protected (FuseOutHeader Header, byte[] Body) CallAs(uint uid, uint gid, FuseOpcode op, ulong node, params byte[][] parts)
    {
        ulong unique = ++_unique;
        var req = Request((uint)op, unique, node, parts.SelectMany(p => p).ToArray(), uid: uid, gid: gid);
        int n = _d.Dispatch(req, _reply);
        Assert.True(n >= FuseOutHeader.Size, $"{op}: no reply");
        var h = MemoryMarshal.Read<FuseOutHeader>(_reply);
        Assert.Equal((uint)n, h.Len);
        Assert.Equal(unique, h.Unique);
        return (h, _reply[FuseOutHeader.Size..n]);
    }

    protected static FuseInitIn InitIn(uint major, uint minor, FuseInitFlags flags)
    {
        var i = new FuseInitIn { Major = major, Minor = minor, MaxReadahead = 128 << 10 };
        i.Flags = (uint)((ulong)flags & 0xFFFF_FFFF);
        i.Flags2 = (uint)((ulong)flags >> 32);
        return i;
    }

    protected FuseInitOut Init(uint minor = 45, FuseInitFlags flags = FuseInitFlags.AsyncRead | FuseInitFlags.MaxPages | FuseInitFlags.InitExt)
    {
        var (h, body) = Call(FuseOpcode.Init, 0, Bytes(InitIn(7, minor, flags)));
        Assert.Equal(0, h.Error);
        return MemoryMarshal.Read<FuseInitOut>(body);
    }

    protected static byte[] ReadIn(ulong offset, uint size) => Bytes(new FuseReadIn { Offset = offset, Size_ = size });

    protected static List<(string Name, ulong Ino, ulong Off)> ParseDirents(byte[] body)
    {
        var list = new List<(string, ulong, ulong)>();
        int pos = 0;
        while (pos < body.Length)
        {
            var d = MemoryMarshal.Read<FuseDirent>(body.AsSpan(pos));
            list.Add((Encoding.UTF8.GetString(body, pos + FuseDirent.Size, (int)d.NameLen), d.Ino, d.Off));
            pos += FuseDirentLayout.DirentSize((int)d.NameLen);
        }
        Assert.Equal(body.Length, pos);
        return list;
    }

    protected static List<(string Name, FuseEntryOut Entry, ulong Off)> ParseDirentplus(byte[] body)
    {
        var list = new List<(string, FuseEntryOut, ulong)>();
        int pos = 0;
        while (pos < body.Length)
        {
            var e = MemoryMarshal.Read<FuseEntryOut>(body.AsSpan(pos));
            var d = MemoryMarshal.Read<FuseDirent>(body.AsSpan(pos + FuseEntryOut.Size));
            Assert.Equal(e.Attr.Ino, d.Ino);
            list.Add((Encoding.UTF8.GetString(body, pos + FuseDirentLayout.NameOffsetDirentplus, (int)d.NameLen), e, d.Off));
            pos += FuseDirentLayout.DirentplusRecordSize((int)d.NameLen);
        }
        Assert.Equal(body.Length, pos);
        return list;
    }

    /// <summary>Every entry of a directory, through READDIR calls of <paramref name="size"/> bytes.</summary>
    protected List<(string Name, ulong Ino, ulong Off)> ListDir(ulong node, uint size = 65536)
    {
        var all = new List<(string, ulong, ulong)>();
        ulong off = 0;
        for (int guard = 0; guard < 10_000; guard++)
        {
            var (h, body) = Call(FuseOpcode.Readdir, node, ReadIn(off, size));
            Assert.Equal(0, h.Error);
            var part = ParseDirents(body);
            if (part.Count == 0) return all;
            all.AddRange(part);
            off = part[^1].Off;
        }
        throw new InvalidOperationException("readdir does not end");
    }

    protected static T Read<T>(byte[] body) where T : unmanaged => MemoryMarshal.Read<T>(body);

    /// <summary>LOOKUP that must succeed.</summary>
    protected FuseEntryOut Lookup(ulong parent, string name)
    {
        var (h, body) = Call(FuseOpcode.Lookup, parent, Name(name));
        Assert.True(h.Error == 0, $"lookup {name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    protected int Error(FuseOpcode op, ulong node, params byte[][] parts) => -Call(op, node, parts).Header.Error;
}

