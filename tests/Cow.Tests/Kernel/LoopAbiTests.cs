using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Cow.Fuse.Kernel;
using Cow.Fuse.Protocol;
using Xunit;

namespace Cow.Tests.Kernel;

/// <summary>The loop/block ABI of <see cref="LoopAbi"/> against the kernel headers (x86-64): struct sizes and
/// the offsets that matter, and every ioctl number re-derived from the _IO/_IOR/_IOW encoding.</summary>
[Trait("Tier", "unit")]
public class LoopAbiTests
{
    // asm-generic/ioctl.h: dir (2 bits) << 30 | size (14 bits) << 16 | type << 8 | nr.
    private static ulong Io(uint type, uint nr) => (type << 8) | nr;
    private static ulong Ior(uint type, uint nr, uint size) => (2UL << 30) | ((ulong)size << 16) | (type << 8) | nr;
    private static ulong Iow(uint type, uint nr, uint size) => (1UL << 30) | ((ulong)size << 16) | (type << 8) | nr;

    [Fact]
    public void Structs_have_the_kernel_sizes_and_offsets()
    {
        // sizeof/offsetof from gcc on the Linux 6.18 uapi headers (linux/loop.h).
        Assert.Equal(232, Unsafe.SizeOf<LoopInfo64>());
        Assert.Equal(232, LoopInfo64.Size);
        Assert.Equal(304, Unsafe.SizeOf<LoopConfig>());
        Assert.Equal(304, LoopConfig.Size);
        Assert.Equal(40, (int)Marshal.OffsetOf<LoopInfo64>(nameof(LoopInfo64.LoNumber)));
        Assert.Equal(52, (int)Marshal.OffsetOf<LoopInfo64>(nameof(LoopInfo64.LoFlags)));
        Assert.Equal(56, (int)Marshal.OffsetOf<LoopInfo64>(nameof(LoopInfo64.LoFileName)));
        Assert.Equal(216, (int)Marshal.OffsetOf<LoopInfo64>(nameof(LoopInfo64.LoInit)));
        Assert.Equal(4, (int)Marshal.OffsetOf<LoopConfig>(nameof(LoopConfig.BlockSize)));
        Assert.Equal(8, (int)Marshal.OffsetOf<LoopConfig>(nameof(LoopConfig.Info)));
        Assert.Equal(240, (int)Marshal.OffsetOf<LoopConfig>(nameof(LoopConfig.Reserved)));
        Assert.Equal(16, Unsafe.SizeOf<FuseBackingMap>());
    }

    [Fact]
    public void Ioctl_numbers_match_their_encoding()
    {
        const uint L = 0x4C;
        Assert.Equal(LoopAbi.LoopClrFd, Io(L, 0x01));
        Assert.Equal(LoopAbi.LoopSetStatus64, Io(L, 0x04));
        Assert.Equal(LoopAbi.LoopGetStatus64, Io(L, 0x05));
        Assert.Equal(LoopAbi.LoopConfigure, Io(L, 0x0A));
        Assert.Equal(LoopAbi.LoopCtlGetFree, Io(L, 0x82));
        Assert.Equal(LoopAbi.BlkGetSize64, Ior(0x12, 114, 8));
        Assert.Equal(FuseDevIoctl.BackingOpen, Iow(229, 1, (uint)FuseBackingMap.Size));
        Assert.Equal(FuseDevIoctl.BackingClose, Iow(229, 2, 4));
        Assert.Equal(ExperimentalConstants.IoctlAddIomap, Io(229, 101));
        Assert.Equal(4u, LoopAbi.LoFlagsAutoclear);
        Assert.Equal(16u, LoopAbi.LoFlagsDirectIo);
    }
}
