using System.Runtime.InteropServices;
using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Xunit;
using static Cow.Tests.Iomap.IomapPeer;

namespace Cow.Tests.Iomap;

/// <summary>The fuse-iomap ABI Cow speaks: the numbers of the Linux 7.2.13 fuse-iomap kernel
/// (../shared/kernel/uapi-numbers.txt), the translation between the engine's values and the wire's, and what
/// happens when a kernel speaks another snapshot of the ABI.</summary>
[Trait("Tier", "engine")]
public sealed class IomapAbiTests
{
    private const int EINVAL = 22, EOPNOTSUPP = 95;

    [Fact]
    public void The_numbers_are_those_of_the_7_2_13_fuse_iomap_kernel()
    {
        // Pinned from ../shared/kernel/uapi-numbers.txt (the test below compares with the file itself when present).
        Assert.Equal(65535, (int)FuseIomapType.PureOverwrite);
        Assert.Equal(65534, (int)FuseIomapType.RetryCache);
        Assert.Equal(65533, (int)FuseIomapType.Nocache);
        Assert.Equal(65532, (int)FuseIomapType.MappedStripe);
        Assert.Equal(65531, (int)FuseIomapType.UnwrittenStripe);
        Assert.Equal(1u << 11, (uint)FuseIomapOpFlags.Writeback);
        Assert.Equal(1u << 31, (uint)FuseIomapOpFlags.Swapfile);
        Assert.Equal(12u, ExperimentalConstants.AttrIomap);
        Assert.Equal(12u, (uint)FuseAttrFlags.Iomap);
        Assert.Equal(0x8010E563u, ExperimentalConstants.IoctlIomapSupport);
        Assert.Equal(0x4004E564u, ExperimentalConstants.IoctlSetNofs);
        Assert.Equal(0xE565u, ExperimentalConstants.IoctlAddIomap);
        Assert.Equal(0x4008E566u, ExperimentalConstants.IoctlIomapBackingSetBlocksize);
        Assert.Equal(0x4010E567u, ExperimentalConstants.IoctlIomapBackingStripeConfig);
    }

    private static readonly string UapiFile = Path.Combine(AppContext.BaseDirectory, "../../../../../../shared/kernel/uapi-numbers.txt");

    /// <summary>Every number of the kernel's own list that Cow has a name for, compared with Cow's.</summary>
    [SkippableFact]
    public void Every_number_matches_the_kernels_uapi_list()
    {
        var file = new[] { UapiFile, "/work/shared/kernel/uapi-numbers.txt" }.FirstOrDefault(File.Exists);
        Skip.If(file == null, "../shared/kernel/uapi-numbers.txt (the fuse-iomap kernel's ABI list) is not on this machine");
        var kernel = File.ReadAllLines(file!).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Where(p => p.Length >= 2)
            .ToDictionary(p => p[0], p => ulong.Parse(p[1]));
        var cow = new Dictionary<string, ulong>
        {
            ["FUSE_KERNEL_MINOR_VERSION"] = ExperimentalConstants.IomapMinorVersion,
            ["FUSE_IOMAP"] = ExperimentalConstants.InitIomap,
            ["FUSE_FREEZE_FS"] = ExperimentalConstants.OpFreezeFs,
            ["FUSE_UNFREEZE_FS"] = ExperimentalConstants.OpUnfreezeFs,
            ["FUSE_SHUTDOWN_FS"] = ExperimentalConstants.OpShutdownFs,
            ["FUSE_IOMAP_CONFIG"] = ExperimentalConstants.OpIomapConfig,
            ["FUSE_IOMAP_IOEND"] = ExperimentalConstants.OpIomapIoend,
            ["FUSE_IOMAP_BEGIN"] = ExperimentalConstants.OpIomapBegin,
            ["FUSE_IOMAP_END"] = ExperimentalConstants.OpIomapEnd,
            ["FUSE_NOTIFY_IOMAP_BACKING_INVAL"] = ExperimentalConstants.NotifyIomapDevInval,
            ["FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS"] = ExperimentalConstants.NotifyIomapUpsertMappings,
            ["FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS"] = ExperimentalConstants.NotifyIomapInvalMappings,
            ["FUSE_ATTR_EXCLUSIVE"] = ExperimentalConstants.AttrExclusive,
            ["__FUSE_ATTR_IOMAP"] = ExperimentalConstants.AttrIomapBit,
            ["FUSE_ATTR_IOMAP"] = ExperimentalConstants.AttrIomap,
            ["FUSE_BACKING_TYPE_IOMAP"] = ExperimentalConstants.BackingTypeIomap,
            ["FUSE_DEV_IOC_SYNC_INIT"] = ExperimentalConstants.IoctlSyncInit,
            ["FUSE_DEV_IOC_IOMAP_SUPPORT"] = ExperimentalConstants.IoctlIomapSupport,
            ["FUSE_DEV_IOC_SET_NOFS"] = ExperimentalConstants.IoctlSetNofs,
            ["FUSE_DEV_IOC_ADD_IOMAP"] = ExperimentalConstants.IoctlAddIomap,
            ["FUSE_DEV_IOC_IOMAP_BACKING_SET_BLOCKSIZE"] = ExperimentalConstants.IoctlIomapBackingSetBlocksize,
            ["FUSE_DEV_IOC_IOMAP_BACKING_STRIPE_CONFIG"] = ExperimentalConstants.IoctlIomapBackingStripeConfig,
            ["FUSE_IOMAP_TYPE_HOLE"] = (ulong)FuseIomapType.Hole,
            ["FUSE_IOMAP_TYPE_DELALLOC"] = (ulong)FuseIomapType.Delalloc,
            ["FUSE_IOMAP_TYPE_MAPPED"] = (ulong)FuseIomapType.Mapped,
            ["FUSE_IOMAP_TYPE_UNWRITTEN"] = (ulong)FuseIomapType.Unwritten,
            ["FUSE_IOMAP_TYPE_INLINE"] = (ulong)FuseIomapType.Inline,
            ["FUSE_IOMAP_TYPE_PURE_OVERWRITE"] = (ulong)FuseIomapType.PureOverwrite,
            ["FUSE_IOMAP_TYPE_RETRY_CACHE"] = (ulong)FuseIomapType.RetryCache,
            ["FUSE_IOMAP_TYPE_NOCACHE"] = (ulong)FuseIomapType.Nocache,
            ["FUSE_IOMAP_TYPE_MAPPED_STRIPE"] = (ulong)FuseIomapType.MappedStripe,
            ["FUSE_IOMAP_TYPE_UNWRITTEN_STRIPE"] = (ulong)FuseIomapType.UnwrittenStripe,
            ["FUSE_IOMAP_F_WANT_IOMAP_END"] = (ulong)FuseIomapFlags.WantIomapEnd,
            ["FUSE_IOMAP_OP_WRITEBACK"] = (ulong)FuseIomapOpFlags.Writeback,
            ["FUSE_IOMAP_OP_SWAPFILE"] = (ulong)FuseIomapOpFlags.Swapfile,
            ["FUSE_IOMAP_IOEND_SWAPOFF"] = (ulong)FuseIomapIoendFlags.Swapoff,
            ["FUSE_IOMAP_CONFIG_CACHE_MAXBYTES"] = (ulong)FuseIomapConfigFlags.CacheMaxbytes,
            ["fuse_iomap_io"] = (ulong)FuseIomapIo.Size,
            ["fuse_iomap_begin_in"] = (ulong)FuseIomapBeginIn.Size,
            ["fuse_iomap_begin_out"] = (ulong)FuseIomapBeginOut.Size,
            ["fuse_iomap_end_in"] = (ulong)FuseIomapEndIn.Size,
            ["fuse_iomap_ioend_in"] = (ulong)FuseIomapIoendIn.Size,
            ["fuse_iomap_ioend_out"] = (ulong)FuseIomapIoendOut.Size,
            ["fuse_iomap_config_in"] = (ulong)FuseIomapConfigIn.Size,
            ["fuse_iomap_config_out"] = (ulong)FuseIomapConfigOut.Size,
            ["fuse_backing_map"] = (ulong)FuseBackingMap.Size,
            ["fuse_iomap_inval_mappings_out"] = (ulong)FuseIomapInvalMappingsOut.Size,
            ["fuse_freezefs_in"] = (ulong)FuseFreezeFsIn.Size,
            ["fuse_shutdownfs_in"] = (ulong)FuseShutdownFsIn.Size,
        };
        foreach (var (name, value) in cow)
        {
            Assert.True(kernel.TryGetValue(name, out var k), $"{name} is not in {file}");
            Assert.True(k == value, $"{name}: the kernel says {k}, Cow {value}");
        }
        foreach (var t in new[] { typeof(FuseIomapIo), typeof(FuseIomapBeginIn), typeof(FuseIomapBeginOut), typeof(FuseIomapEndIn), typeof(FuseIomapIoendIn) })
            Assert.True(Marshal.SizeOf(t) == (int)cow[ToCName(t.Name)], $"{t.Name}: marshalled size differs from the kernel's");
    }

    private static string ToCName(string n) => n switch
    {
        nameof(FuseIomapIo) => "fuse_iomap_io",
        nameof(FuseIomapBeginIn) => "fuse_iomap_begin_in",
        nameof(FuseIomapBeginOut) => "fuse_iomap_begin_out",
        nameof(FuseIomapEndIn) => "fuse_iomap_end_in",
        _ => "fuse_iomap_ioend_in",
    };

    [Fact]
    public void Every_engine_op_flag_and_mapping_type_translates_by_name_both_ways()
    {
        foreach (IomapOp op in Enum.GetValues<IomapOp>())
        {
            if (op == IomapOp.None) continue;
            uint w = IomapWire.ToWire(op);
            Assert.Equal(WireOp(op), w);   // the peer's own table agrees
            Assert.True(IomapWire.TryOp(w, out var back, out _));
            Assert.Equal(op, back);
        }
        Assert.Equal((uint)FuseIomapOpFlags.Writeback, IomapWire.ToWire(IomapOp.Writeback));
        Assert.Equal((uint)FuseIomapOpFlags.Swapfile, IomapWire.ToWire(IomapOp.SwapFile));
        foreach (var t in new[] { MappingType.Hole, MappingType.Delalloc, MappingType.Mapped, MappingType.Unwritten, MappingType.Inline, MappingType.PureOverwrite })
        {
            Assert.True(IomapWire.TryType(IomapWire.ToWire(t), out var back));
            Assert.Equal(t, back);
        }
        Assert.Equal(65535, IomapWire.ToWire(MappingType.PureOverwrite));
        Assert.False(IomapWire.TryType(255, out _));   // the v7 posting's PURE_OVERWRITE is not a type of this ABI
        Assert.False(IomapWire.TryType((ushort)FuseIomapType.RetryCache, out _));
        // Bits no FUSE_IOMAP_OP_* of this ABI defines: v7's SWAPFILE (1<<30), and bit 12.
        Assert.False(IomapWire.TryOp(1u << 30, out _, out uint unknown));
        Assert.Equal(1u << 30, unknown);
        Assert.False(IomapWire.TryOp(1u << 12 | 1, out _, out unknown));
        Assert.Equal(1u << 12, unknown);
    }

    [Fact]
    public void Writeback_op_1_shl_11_is_a_write_and_gets_fresh_out_of_place_space()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        var (e, r, w) = k.BeginWire(f.NodeId, f.Attr.Ino, 0, 8192, (uint)FuseIomapOpFlags.Writeback);
        Assert.Equal(0, e);
        k.CheckReply(0, IomapOp.Writeback, r, w);
        Assert.Equal(Mapped, w.Type);
        Assert.True((w.Flags & (ushort)FuseIomapFlags.Shared) != 0);
        Assert.Equal(0, k.End(f.NodeId, f.Attr.Ino, 0, 8192, 0, IomapOp.Writeback, w));   // nothing written: given back
        // and a read reply's write mapping carries this ABI's PURE_OVERWRITE
        (e, r, w) = k.BeginWire(f.NodeId, f.Attr.Ino, 0, 4096, 0);
        Assert.Equal(0, e);
        Assert.Equal((ushort)65535, w.Type);
        // SWAPFILE (1<<31 here; v7's WRITEBACK) is not supported
        Assert.Equal(EOPNOTSUPP, k.BeginWire(f.NodeId, f.Attr.Ino, 0, 4096, (uint)FuseIomapOpFlags.Swapfile | (uint)FuseIomapOpFlags.Write).Error);
    }

    [Fact]
    public void Op_flags_of_another_ABI_snapshot_are_refused_and_logged_naming_the_ABI()
    {
        using var k = new IomapPeer().Start();
        var f = k.Create(RootNode, "f");
        long free = k.FreeBlocks();
        Assert.Equal(EINVAL, k.BeginWire(f.NodeId, f.Attr.Ino, 0, 4096, 1u << 30).Error);   // v7 SWAPFILE
        Assert.Equal(EINVAL, k.BeginWire(f.NodeId, f.Attr.Ino, 0, 4096, 1u << 12 | (uint)FuseIomapOpFlags.Write).Error);
        Assert.Equal(free, k.FreeBlocks());
        Assert.Contains(k.LogLines(), l => l.Contains("0x40000000") && l.Contains(ExperimentalConstants.AbiName) && l.Contains("another fuse-iomap ABI snapshot"));
        // IOMAP_END with an unknown mapping type (the v7 PURE_OVERWRITE 255) changes nothing
        var map = new KMap(0, 4096, ulong.MaxValue, 255, 0, 0);
        Assert.Equal(EINVAL, k.End(f.NodeId, f.Attr.Ino, 0, 4096, 0, IomapOp.Write, map));
    }

    [Fact]
    public void An_iomap_offer_at_another_minor_than_99_is_refused_with_the_minor_named()
    {
        using var k = new IomapPeer();
        var (h, o) = k.Init(offerIomap: true, minor: 98);
        Assert.Equal(0, h.Error);
        Assert.Equal(0UL, (ulong)(o.AllFlags & FuseInitFlags.Iomap));
        Assert.False(k.D.IomapGranted);
        Assert.Contains(k.LogLines(), l => l.StartsWith("userspace I/O: the kernel offers FUSE_IOMAP at protocol 7.98") && l.Contains(ExperimentalConstants.AbiName));
        using var k2 = new IomapPeer(IomapMode.On);
        Assert.Equal(-71, k2.Init(offerIomap: true, minor: 100).H.Error);   // EPROTO under --iomap on
        Assert.Contains("protocol 7.100", k2.D.IomapFailure);
    }

    [Fact]
    public void A_granted_mount_does_not_log_that_no_device_registrar_is_configured()
    {
        using var k = new IomapPeer().Start();
        Assert.True(k.D.IomapGranted);
        Assert.DoesNotContain(k.LogLines(), l => l.Contains("no device registrar"));
    }
}
