using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Cow.Tests.Engine;
using Cow.Tests.Iomap;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Dispatch;

/// <summary>With fuse-iomap granted, the mapping requests of the kernel's reads, reports and buffered writes
/// (which allocate no space: DELALLOC) allocate nothing: no delegate, no boxing, no list per request.</summary>
[Trait("Tier", "engine")]
public sealed class IomapAllocationTests(ITestOutputHelper output) : DispatchTestBase(new FuseMountOptions { IomapDevices = new TestRegistrar() })
{
    [Fact]
    public void Iomap_begin_for_reads_reports_and_buffered_writes_allocates_nothing()
    {
        var init = Init(99, FuseInitFlags.AsyncRead | FuseInitFlags.MaxPages | FuseInitFlags.InitExt | FuseInitFlags.Iomap);
        Assert.True((init.AllFlags & FuseInitFlags.Iomap) != 0);
        Assert.Equal(0, Call(FuseOpcode.IomapConfig, 0, Bytes(IomapPeer.ConfigIn())).Header.Error);
        long ino = MemoryPool.CreateFile(_pool.Live, "/file");
        MemoryPool.WriteAt(_pool.Live, ino, 0, MemoryPool.Pattern(1 << 20, 1));
        MemoryPool.WriteAt(_pool.Live, ino, 4 << 20, MemoryPool.Pattern(4096, 2));
        byte[] Begin(IomapOp op, ulong pos) => Request((uint)FuseOpcode.IomapBegin, 1, (ulong)ino,
            Bytes(new FuseIomapBeginIn { OpFlags = (uint)op, AttrIno = (ulong)ino, Pos = pos, Count = 65536 }));

        long read = AllocatedPerCall(() => Begin(IomapOp.None, 8192));
        long hole = AllocatedPerCall(() => Begin(IomapOp.Report, 2 << 20));
        long buffered = AllocatedPerCall(() => Begin(IomapOp.Write, 8192));
        output.WriteLine($"bytes per request: read {read}, hole report {hole}, buffered write {buffered}");
        Assert.Equal(0, read);
        Assert.Equal(0, hole);
        Assert.Equal(0, buffered);
    }
}
