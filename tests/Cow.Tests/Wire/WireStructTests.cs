using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Cow.Fuse.Protocol;
using Xunit;

namespace Cow.Tests.Wire;

[Trait("Tier", "unit")]
public class WireStructTests
{
    private static void Pin<T>(int kernelSizeof, int sizeConst) where T : unmanaged
    {
        Assert.True(Unsafe.SizeOf<T>() == kernelSizeof, $"{typeof(T).Name}: Unsafe.SizeOf = {Unsafe.SizeOf<T>()}, kernel sizeof = {kernelSizeof}");
        Assert.True(sizeConst == kernelSizeof, $"{typeof(T).Name}: Size const = {sizeConst}, kernel sizeof = {kernelSizeof}");
    }

    /// <summary>Kernel sizeof values (x86-64), computed from the field lists of Linux 6.18 fuse.h (7.45;
    /// 7.43 full header + 7.44/7.45 diffs) and, for iomap, from /work/shared/reference/fuse-iomap.md.</summary>
    [Fact]
    public void Every_struct_has_the_kernel_size()
    {
        // Headers.cs
        Pin<FuseInHeader>(40, FuseInHeader.Size);
        Pin<FuseOutHeader>(16, FuseOutHeader.Size);
        // Init.cs
        Pin<FuseInitIn>(64, FuseInitIn.Size);
        Pin<FuseInitOut>(64, FuseInitOut.Size);
        // Attr.cs
        Pin<FuseAttr>(88, FuseAttr.Size);
        Pin<FuseEntryOut>(128, FuseEntryOut.Size);
        Pin<FuseGetattrIn>(16, FuseGetattrIn.Size);
        Pin<FuseAttrOut>(104, FuseAttrOut.Size);
        Pin<FuseSetattrIn>(88, FuseSetattrIn.Size);
        Pin<FuseSxTime>(16, FuseSxTime.Size);
        Pin<FuseStatx>(256, FuseStatx.Size);
        Pin<FuseStatxIn>(24, FuseStatxIn.Size);
        Pin<FuseStatxOut>(288, FuseStatxOut.Size);
        Pin<FuseAccessIn>(8, FuseAccessIn.Size);
        // Open.cs
        Pin<FuseOpenIn>(8, FuseOpenIn.Size);
        Pin<FuseCreateIn>(16, FuseCreateIn.Size);
        Pin<FuseOpenOut>(16, FuseOpenOut.Size);
        Pin<FuseReleaseIn>(24, FuseReleaseIn.Size);
        Pin<FuseFlushIn>(24, FuseFlushIn.Size);
        // ReadWrite.cs
        Pin<FuseReadIn>(40, FuseReadIn.Size);
        Pin<FuseWriteIn>(40, FuseWriteIn.Size);
        Pin<FuseWriteOut>(8, FuseWriteOut.Size);
        Pin<FuseFsyncIn>(16, FuseFsyncIn.Size);
        Pin<FuseLseekIn>(24, FuseLseekIn.Size);
        Pin<FuseLseekOut>(8, FuseLseekOut.Size);
        Pin<FuseSyncfsIn>(8, FuseSyncfsIn.Size);
        Pin<FuseFallocateIn>(32, FuseFallocateIn.Size);
        Pin<FuseCopyFileRangeIn>(56, FuseCopyFileRangeIn.Size);
        Pin<FuseCopyFileRangeOut>(8, FuseCopyFileRangeOut.Size);
        // Directory.cs
        Pin<FuseDirent>(24, FuseDirent.Size);
        Pin<FuseMknodIn>(16, FuseMknodIn.Size);
        Pin<FuseMkdirIn>(8, FuseMkdirIn.Size);
        Pin<FuseRenameIn>(8, FuseRenameIn.Size);
        Pin<FuseRename2In>(16, FuseRename2In.Size);
        Pin<FuseLinkIn>(8, FuseLinkIn.Size);
        Assert.Equal(152, FuseDirentLayout.NameOffsetDirentplus);
        // Xattr.cs
        Pin<FuseSetxattrIn>(16, FuseSetxattrIn.Size);
        Pin<FuseGetxattrIn>(8, FuseGetxattrIn.Size);
        Pin<FuseGetxattrOut>(8, FuseGetxattrOut.Size);
        // StatFs.cs
        Pin<FuseKstatfs>(80, FuseKstatfs.Size);
        Pin<FuseStatfsOut>(80, FuseStatfsOut.Size);
        // Forget.cs
        Pin<FuseForgetIn>(8, FuseForgetIn.Size);
        Pin<FuseForgetOne>(16, FuseForgetOne.Size);
        Pin<FuseBatchForgetIn>(8, FuseBatchForgetIn.Size);
        // Interrupt.cs
        Pin<FuseInterruptIn>(8, FuseInterruptIn.Size);
        // Lock.cs
        Pin<FuseFileLock>(24, FuseFileLock.Size);
        Pin<FuseLkIn>(48, FuseLkIn.Size);
        Pin<FuseLkOut>(24, FuseLkOut.Size);
        // Extensions.cs
        Pin<FuseExtHeader>(8, FuseExtHeader.Size);
        Pin<FuseSecctxHeader>(8, FuseSecctxHeader.Size);
        Pin<FuseSecctx>(8, FuseSecctx.Size);
        Pin<FuseSuppGroups>(4, FuseSuppGroups.Size);
        // Notify.cs
        Pin<FuseNotifyPollWakeupOut>(8, FuseNotifyPollWakeupOut.Size);
        Pin<FuseNotifyInvalInodeOut>(24, FuseNotifyInvalInodeOut.Size);
        Pin<FuseNotifyInvalEntryOut>(16, FuseNotifyInvalEntryOut.Size);
        Pin<FuseNotifyDeleteOut>(24, FuseNotifyDeleteOut.Size);
        Pin<FuseNotifyStoreOut>(24, FuseNotifyStoreOut.Size);
        Pin<FuseNotifyRetrieveOut>(32, FuseNotifyRetrieveOut.Size);
        Pin<FuseNotifyRetrieveIn>(40, FuseNotifyRetrieveIn.Size);
        Pin<FuseNotifyPruneOut>(16, FuseNotifyPruneOut.Size);
        // Iomap.cs (reference sizes)
        Pin<FuseIomapIo>(32, FuseIomapIo.Size);
        Pin<FuseIomapBeginIn>(32, FuseIomapBeginIn.Size);
        Pin<FuseIomapBeginOut>(64, FuseIomapBeginOut.Size);
        Pin<FuseIomapEndIn>(72, FuseIomapEndIn.Size);
        Pin<FuseIomapIoendIn>(48, FuseIomapIoendIn.Size);
        Pin<FuseIomapIoendOut>(8, FuseIomapIoendOut.Size);
        Pin<FuseIomapConfigIn>(64, FuseIomapConfigIn.Size);
        Pin<FuseIomapConfigOut>(104, FuseIomapConfigOut.Size);
        Pin<FuseBackingMap>(16, FuseBackingMap.Size);
        Pin<FuseRange>(16, FuseRange.Size);
        Pin<FuseIomapInvalMappingsOut>(48, FuseIomapInvalMappingsOut.Size);
        Pin<FuseFreezeFsIn>(8, FuseFreezeFsIn.Size);
        Pin<FuseShutdownFsIn>(8, FuseShutdownFsIn.Size);
        // Uring.cs (FUSE over io_uring)
        Pin<FuseUringEntInOut>(32, FuseUringEntInOut.Size);
        Pin<FuseUringCmdReq>(24, FuseUringCmdReq.Size);
        Assert.Equal(288, FuseUringHeader.Size);
        Assert.Equal(256, FuseUringHeader.EntInOutOffset);
        Assert.Equal(8, (int)Marshal.OffsetOf<FuseUringEntInOut>(nameof(FuseUringEntInOut.CommitId)));
        Assert.Equal(16, (int)Marshal.OffsetOf<FuseUringEntInOut>(nameof(FuseUringEntInOut.PayloadSz)));
        Assert.Equal(16, (int)Marshal.OffsetOf<FuseUringCmdReq>(nameof(FuseUringCmdReq.Qid)));
    }

    [Fact]
    public void Field_offsets_match_the_header()
    {
        Assert.Equal(0, (int)Marshal.OffsetOf<FuseInHeader>(nameof(FuseInHeader.Len)));
        Assert.Equal(4, (int)Marshal.OffsetOf<FuseInHeader>(nameof(FuseInHeader.Opcode)));
        Assert.Equal(8, (int)Marshal.OffsetOf<FuseInHeader>(nameof(FuseInHeader.Unique)));
        Assert.Equal(16, (int)Marshal.OffsetOf<FuseInHeader>(nameof(FuseInHeader.NodeId)));
        Assert.Equal(24, (int)Marshal.OffsetOf<FuseInHeader>(nameof(FuseInHeader.Uid)));
        Assert.Equal(36, (int)Marshal.OffsetOf<FuseInHeader>(nameof(FuseInHeader.TotalExtLen)));
        Assert.Equal(32, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.Flags2)));
        Assert.Equal(36, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.MaxStackDepth)));
        Assert.Equal(40, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.RequestTimeout)));
        Assert.Equal(40, (int)Marshal.OffsetOf<FuseEntryOut>(nameof(FuseEntryOut.Attr)));
        Assert.Equal(16, (int)Marshal.OffsetOf<FuseAttrOut>(nameof(FuseAttrOut.Attr)));
        Assert.Equal(84, (int)Marshal.OffsetOf<FuseAttr>(nameof(FuseAttr.Flags)));
        Assert.Equal(60, (int)Marshal.OffsetOf<FuseIomapConfigOut>(nameof(FuseIomapConfigOut.SBlocksize)));
        Assert.Equal(96, (int)Marshal.OffsetOf<FuseIomapConfigOut>(nameof(FuseIomapConfigOut.CacheMaxBytes)));
        Assert.Equal(40, (int)Marshal.OffsetOf<FuseIomapEndIn>(nameof(FuseIomapEndIn.Map)));
        Assert.Equal(40, (int)Marshal.OffsetOf<FuseIomapIoendIn>(nameof(FuseIomapIoendIn.Dev)));
        Assert.Equal(16, (int)Marshal.OffsetOf<FuseIomapInvalMappingsOut>(nameof(FuseIomapInvalMappingsOut.Read)));
        Assert.Equal(32, (int)Marshal.OffsetOf<FuseIomapInvalMappingsOut>(nameof(FuseIomapInvalMappingsOut.Write)));
    }

    [Fact]
    public void InHeader_reads_fields_at_kernel_offsets()
    {
        var buf = new byte[FuseInHeader.Size];
        BitConverter.TryWriteBytes(buf.AsSpan(0), 123u);
        BitConverter.TryWriteBytes(buf.AsSpan(4), (uint)FuseOpcode.Lookup);
        BitConverter.TryWriteBytes(buf.AsSpan(8), 0x1122334455667788UL);
        BitConverter.TryWriteBytes(buf.AsSpan(16), 42UL);
        BitConverter.TryWriteBytes(buf.AsSpan(24), 1000u);
        BitConverter.TryWriteBytes(buf.AsSpan(28), 1001u);
        BitConverter.TryWriteBytes(buf.AsSpan(32), 777u);
        BitConverter.TryWriteBytes(buf.AsSpan(36), (ushort)3);

        Assert.True(Cow.Fuse.Protocol.Wire.TryRead(buf, out FuseInHeader h));
        Assert.Equal(123u, h.Len);
        Assert.Equal(FuseOpcode.Lookup, (FuseOpcode)h.Opcode);
        Assert.Equal(0x1122334455667788UL, h.Unique);
        Assert.Equal(42UL, h.NodeId);
        Assert.Equal(1000u, h.Uid);
        Assert.Equal(1001u, h.Gid);
        Assert.Equal(777u, h.Pid);
        Assert.Equal((ushort)3, h.TotalExtLen);

        var back = new byte[FuseInHeader.Size];
        Assert.Equal(FuseInHeader.Size, Cow.Fuse.Protocol.Wire.Write(back, in h));
        Assert.Equal(buf, back);
    }

    [Fact]
    public void OutHeader_and_init_out_round_trip()
    {
        var o = new FuseOutHeader { Len = 16, Error = -2, Unique = 99 };
        var buf = new byte[FuseOutHeader.Size];
        Assert.True(Cow.Fuse.Protocol.Wire.TryWrite(buf, in o));
        Assert.Equal(16u, BitConverter.ToUInt32(buf, 0));
        Assert.Equal(-2, BitConverter.ToInt32(buf, 4));
        Assert.Equal(99UL, BitConverter.ToUInt64(buf, 8));

        var init = new FuseInitOut { Major = 7, Minor = 45, MaxWrite = 1 << 20, MaxStackDepth = 1, RequestTimeout = 30 };
        init.SetAllFlags(FuseInitFlags.AsyncRead | FuseInitFlags.InitExt | FuseInitFlags.Passthrough | FuseInitFlags.Iomap);
        var ib = new byte[FuseInitOut.Size];
        Cow.Fuse.Protocol.Wire.Write(ib, in init);
        Assert.Equal((uint)(1 | (1 << 30)), BitConverter.ToUInt32(ib, 12));
        Assert.Equal((1u << 5) | (1u << 11), BitConverter.ToUInt32(ib, 32));
        Assert.Equal(1u, BitConverter.ToUInt32(ib, 36));
        Assert.Equal((ushort)30, BitConverter.ToUInt16(ib, 40));
        var again = Cow.Fuse.Protocol.Wire.Read<FuseInitOut>(ib);
        Assert.Equal(init.AllFlags, again.AllFlags);
        Assert.Equal(1u << 20, again.MaxWrite);
    }

    [Fact]
    public void Iomap_begin_out_round_trips()
    {
        var o = new FuseIomapBeginOut
        {
            Read = new FuseIomapIo { Offset = 4096, Length = 8192, Addr = 1 << 20, Type = (ushort)FuseIomapType.Mapped, Dev = 1 },
            Write = new FuseIomapIo { Offset = 4096, Length = 8192, Addr = 2 << 20, Type = (ushort)FuseIomapType.Mapped, Flags = (ushort)FuseIomapFlags.Shared, Dev = 2 },
        };
        var buf = new byte[FuseIomapBeginOut.Size];
        Cow.Fuse.Protocol.Wire.Write(buf, in o);
        Assert.Equal(2UL << 20, BitConverter.ToUInt64(buf, 32 + 16));
        Assert.Equal((ushort)FuseIomapFlags.Shared, BitConverter.ToUInt16(buf, 32 + 26));
        Assert.Equal(2u, BitConverter.ToUInt32(buf, 32 + 28));
        var back = Cow.Fuse.Protocol.Wire.Read<FuseIomapBeginOut>(buf);
        Assert.Equal(o.Write.Addr, back.Write.Addr);
        Assert.Equal(o.Read.Dev, back.Read.Dev);
    }

    [Fact]
    public void TryRead_on_a_truncated_span_returns_false()
    {
        var buf = new byte[FuseInHeader.Size - 1];
        Assert.False(Cow.Fuse.Protocol.Wire.TryRead(buf, out FuseInHeader h));
        Assert.Equal(default, h);
        Assert.False(Cow.Fuse.Protocol.Wire.TryRead(ReadOnlySpan<byte>.Empty, out FuseWriteIn _));
        Assert.Throws<TruncatedMessageException>(() => Cow.Fuse.Protocol.Wire.Read<FuseWriteIn>(new byte[39]));
        Assert.False(Cow.Fuse.Protocol.Wire.TryWrite(new byte[15], new FuseOutHeader()));
        Assert.True(Cow.Fuse.Protocol.Wire.TryRead(new byte[41], out FuseWriteIn _, out var rest));
        Assert.Equal(1, rest.Length);
    }

    [Fact]
    public void TryReadName_requires_a_NUL()
    {
        Assert.False(Cow.Fuse.Protocol.Wire.TryReadName("abc"u8, out _, out int c0));
        Assert.Equal(0, c0);
        Assert.False(Cow.Fuse.Protocol.Wire.TryReadName("\0abc"u8, out _, out _));
        Assert.False(Cow.Fuse.Protocol.Wire.TryReadName(ReadOnlySpan<byte>.Empty, out _, out _));

        Assert.True(Cow.Fuse.Protocol.Wire.TryReadName("abc\0rest"u8, out var name, out int consumed));
        Assert.True(name.SequenceEqual("abc"u8));
        Assert.Equal(4, consumed);

        Assert.True(Cow.Fuse.Protocol.Wire.TryReadTwoNames("old\0new\0"u8, out var a, out var b, out int both));
        Assert.True(a.SequenceEqual("old"u8));
        Assert.True(b.SequenceEqual("new"u8));
        Assert.Equal(8, both);
        Assert.False(Cow.Fuse.Protocol.Wire.TryReadTwoNames("old\0new"u8, out _, out _, out _));
    }

    [Fact]
    public void Dirents_are_packed_with_8_byte_alignment()
    {
        var buf = new byte[64];
        buf.AsSpan().Fill(0xEE);
        Assert.True(FuseDirentLayout.TryWriteDirent(buf, 5, 1, 4, "a"u8, out int w1));
        Assert.Equal(32, w1); // 24 + 1 -> 32
        Assert.Equal(5UL, BitConverter.ToUInt64(buf, 0));
        Assert.Equal(1UL, BitConverter.ToUInt64(buf, 8));
        Assert.Equal(1u, BitConverter.ToUInt32(buf, 16));
        Assert.Equal(4u, BitConverter.ToUInt32(buf, 20));
        Assert.Equal((byte)'a', buf[24]);
        Assert.All(buf[25..32], b => Assert.Equal(0, b));

        Assert.True(FuseDirentLayout.TryWriteDirent(buf.AsSpan(w1), 6, 2, 8, "12345678"u8, out int w2));
        Assert.Equal(32, w2); // 24 + 8 = 32, already aligned
        Assert.Equal(0, (w1 + w2) % 8);

        // 24 + 9 = 33 -> 40: does not fit in the 0 bytes left, nor in 39.
        Assert.False(FuseDirentLayout.TryWriteDirent(buf.AsSpan(w1 + w2), 7, 3, 8, "123456789"u8, out int w3));
        Assert.Equal(0, w3);
        Assert.False(FuseDirentLayout.TryWriteDirent(new byte[39], 7, 3, 8, "123456789"u8, out _));
        Assert.True(FuseDirentLayout.TryWriteDirent(new byte[40], 7, 3, 8, "123456789"u8, out int w4));
        Assert.Equal(40, w4);
        Assert.Throws<ArgumentException>(() => FuseDirentLayout.TryWriteDirent(new byte[40], 1, 1, 1, ReadOnlySpan<byte>.Empty, out _));

        for (int n = 1; n <= 40; n++)
        {
            Assert.Equal(0, FuseDirentLayout.DirentSize(n) % 8);
            Assert.InRange(FuseDirentLayout.DirentSize(n) - (24 + n), 0, 7);
            Assert.Equal(0, FuseDirentLayout.DirentplusRecordSize(n) % 8);
            Assert.InRange(FuseDirentLayout.DirentplusRecordSize(n) - (152 + n), 0, 7);
        }
    }

    [Fact]
    public void Direntplus_packs_entry_dirent_and_name()
    {
        var entry = new FuseEntryOut { NodeId = 77, Generation = 1, EntryValid = 1, AttrValid = 1 };
        entry.Attr.Ino = 77;
        entry.Attr.Mode = 0x81A4;
        var buf = new byte[256];
        buf.AsSpan().Fill(0xEE);
        Assert.True(FuseDirentLayout.TryWriteDirentplus(buf, in entry, 9, 8, "file"u8, out int w));
        Assert.Equal(160, w); // 152 + 4 = 156 -> 160
        Assert.Equal(77UL, BitConverter.ToUInt64(buf, 0));
        Assert.Equal(77UL, BitConverter.ToUInt64(buf, 128));     // dirent.ino
        Assert.Equal(9UL, BitConverter.ToUInt64(buf, 136));      // dirent.off
        Assert.Equal(4u, BitConverter.ToUInt32(buf, 144));       // dirent.namelen
        Assert.Equal(8u, BitConverter.ToUInt32(buf, 148));       // dirent.type
        Assert.True(buf.AsSpan(152, 4).SequenceEqual("file"u8));
        Assert.All(buf[156..160], b => Assert.Equal(0, b));
        Assert.Equal(0xEE, buf[160]);
        Assert.False(FuseDirentLayout.TryWriteDirentplus(new byte[159], in entry, 9, 8, "file"u8, out _));
    }

    [Fact]
    public void Numbers_match_the_header_and_reference()
    {
        Assert.Equal(53u, (uint)FuseOpcode.CopyFileRange64);
        Assert.Equal(4089u, (uint)FuseOpcode.FreezeFs);
        Assert.Equal(4095u, (uint)FuseOpcode.IomapEnd);
        Assert.Equal(9, (int)FuseNotifyCode.Prune);
        Assert.Equal(99, (int)FuseNotifyCode.IomapDevInval);
        Assert.Equal(101, (int)FuseNotifyCode.IomapInvalMappings);
        Assert.Equal(1UL << 42, (ulong)FuseInitFlags.RequestTimeout);
        Assert.Equal(1UL << 43, (ulong)FuseInitFlags.Iomap);
        // ioctl encodings: _IOC(dir, 229, nr, size) = dir<<30 | size<<16 | 229<<8 | nr
        static uint Ioc(uint dir, uint nr, uint size) => (dir << 30) | (size << 16) | (229u << 8) | nr;
        Assert.Equal(FuseDevIoctl.Clone, Ioc(2, 0, 4));
        Assert.Equal(FuseDevIoctl.BackingOpen, Ioc(1, 1, (uint)FuseBackingMap.Size));
        Assert.Equal(FuseDevIoctl.BackingClose, Ioc(1, 2, 4));
        Assert.Equal(ExperimentalConstants.IoctlSyncInit, Ioc(0, 3, 0));
        Assert.Equal(ExperimentalConstants.IoctlAddIomap, Ioc(0, 101, 0));
    }
}
