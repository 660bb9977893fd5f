using Cow.Fuse.Protocol;
using Cow.Tests.Engine;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Dispatch;

/// <summary>The hot paths allocate nothing per request in the dispatcher (engine allocations aside).</summary>
[Trait("Tier", "engine")]
public sealed class AllocationTests(ITestOutputHelper output) : DispatchTestBase
{
    [Fact]
    public void Getattr_read_write_lookup_allocate_little()
    {
        Init();
        long ino = MemoryPool.CreateFile(_pool.Live, "/file");
        MemoryPool.WriteAt(_pool.Live, ino, 0, MemoryPool.Pattern(1 << 20, 1));
        Assert.Equal(0, (int)_pool.Engine.CreateSnapshot("s", out _));
        var snap = Lookup(Cow.Fuse.Server.NodeTable.SnapshotDirNodeId, "s");
        var snapFile = Lookup(snap.NodeId, "file");

        long getattr = AllocatedPerCall(Request((uint)FuseOpcode.Getattr, 1, (ulong)ino, Bytes(new FuseGetattrIn())));
        long getattrSnap = AllocatedPerCall(Request((uint)FuseOpcode.Getattr, 1, snapFile.NodeId, Bytes(new FuseGetattrIn())));
        long read = AllocatedPerCall(Request((uint)FuseOpcode.Read, 1, (ulong)ino, ReadIn(4096, 65536)));
        long write = AllocatedPerCall(Request((uint)FuseOpcode.Write, 1, (ulong)ino, [.. Bytes(new FuseWriteIn { Offset = 8192, Size_ = 4096 }), .. new byte[4096]]), 300);
        long lookup = AllocatedPerCall(Request((uint)FuseOpcode.Lookup, 1, 1, Name("file")));
        output.WriteLine($"bytes per request: getattr {getattr}, getattr(snapshot) {getattrSnap}, read {read}, write {write}, lookup {lookup}");
        Assert.Equal(0, getattr);
        Assert.Equal(0, getattrSnap);
        Assert.Equal(0, read);
        // WRITE through the engine: write reservations and checksum arrays are reused, not allocated.
        Assert.Equal(0, write);
        // LOOKUP allocates the name string the engine API takes (a 4-character string is 32 bytes).
        Assert.InRange(lookup, 0, 64);
    }
}
