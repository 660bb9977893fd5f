using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Xunit;
using static Cow.Tests.Iomap.IomapPeer;

namespace Cow.Tests.Iomap;

/// <summary>INIT negotiation of fuse-iomap and the userspace fallback, seen from the kernel's side of the socket.</summary>
[Trait("Tier", "engine")]
public sealed class IomapNegotiationTests
{
    private const int EIO = 5, EPROTO = 71, ENOSYS = 38;

    private static readonly FuseOpcode[] IomapOpcodes =
    [
        FuseOpcode.IomapConfig, FuseOpcode.IomapBegin, FuseOpcode.IomapEnd, FuseOpcode.IomapIoend,
        FuseOpcode.FreezeFs, FuseOpcode.UnfreezeFs, FuseOpcode.ShutdownFs,
    ];

    /// <summary>Every iomap opcode, with a well-formed payload, answers ENOSYS; attrs never carry
    /// FUSE_ATTR_IOMAP; FUSE_READ and FUSE_WRITE do the I/O.</summary>
    private static void AssertUserspaceMode(IomapPeer k)
    {
        Assert.False(k.D.IomapGranted);
        var f = k.Create(RootNode, "f");
        Assert.Equal(0u, f.Attr.Flags);
        Assert.Equal(0u, k.GetAttr(f.NodeId).Flags);
        Assert.Equal(0u, k.GetAttr(RootNode).Flags);
        Assert.Equal(0u, k.Lookup(RootNode, "f").Attr.Flags);
        foreach (var op in IomapOpcodes)
        {
            byte[] payload = op switch
            {
                FuseOpcode.IomapConfig => Bytes(ConfigIn()),
                FuseOpcode.IomapBegin => Bytes(new FuseIomapBeginIn { AttrIno = f.Attr.Ino, Count = 4096 }),
                FuseOpcode.IomapEnd => Bytes(new FuseIomapEndIn { AttrIno = f.Attr.Ino }),
                FuseOpcode.IomapIoend => Bytes(new FuseIomapIoendIn { AttrIno = f.Attr.Ino, NewAddr = ulong.MaxValue }),
                FuseOpcode.FreezeFs => Bytes(new FuseFreezeFsIn()),
                FuseOpcode.ShutdownFs => Bytes(new FuseShutdownFsIn()),
                _ => [],
            };
            Assert.Equal(ENOSYS, k.Errno(op, op == FuseOpcode.IomapConfig ? 0 : f.NodeId, payload));
        }
        Assert.False(k.D.Frozen);
        Assert.False(k.D.ShutDown);
        k.UserspaceWrite(f.NodeId, 0, [1, 2, 3]);
        var (h, body) = k.Call(FuseOpcode.Read, f.NodeId, Bytes(new FuseReadIn { Size_ = 10 }));
        Assert.Equal(0, h.Error);
        Assert.Equal([1, 2, 3], body);
        Assert.Empty(k.Invalidations);   // no listener: nothing recorded, nothing sent
        Assert.Equal(0, k.Registrar.Calls);
    }

    [Fact]
    public void A_mainline_kernel_gets_userspace_io_and_ENOSYS_for_every_iomap_opcode()
    {
        using var k = new IomapPeer();
        var (h, o) = k.Init(offerIomap: false, minor: 45);
        Assert.Equal(0, h.Error);
        Assert.Equal(45u, o.Minor);
        Assert.Equal(0UL, (ulong)(o.AllFlags & FuseInitFlags.Iomap));
        AssertUserspaceMode(k);
        Assert.Contains("userspace I/O: kernel did not offer fuse-iomap", k.LogLines());
        Assert.Null(k.D.IomapFailure);
    }

    [Fact]
    public void IomapMode_Off_never_echoes_the_bit_even_when_the_kernel_offers_it()
    {
        using var k = new IomapPeer(IomapMode.Off);
        var (h, o) = k.Init(offerIomap: true);
        Assert.Equal(0, h.Error);
        Assert.Equal(0UL, (ulong)(o.AllFlags & FuseInitFlags.Iomap));
        Assert.Equal(45u, o.Minor);   // the mainline protocol, not the experimental one
        AssertUserspaceMode(k);
        Assert.DoesNotContain(k.LogLines(), l => l.Contains("fuse-iomap"));   // Off: the mount side logged why
    }

    [Fact]
    public void Without_a_device_registrar_auto_mode_falls_back_to_userspace_io()
    {
        using var k = new IomapPeer(noRegistrar: true);
        var (h, o) = k.Init(offerIomap: true);
        Assert.Equal(0, h.Error);
        Assert.Equal(0UL, (ulong)(o.AllFlags & FuseInitFlags.Iomap));
        AssertUserspaceMode(k);
        Assert.Contains(k.LogLines(), l => l.StartsWith("userspace I/O: the kernel offered fuse-iomap but no device registrar"));
    }

    [Fact]
    public void IomapMode_On_fails_INIT_when_the_kernel_does_not_offer_it()
    {
        using var k = new IomapPeer(IomapMode.On);
        var (h, _) = k.Init(offerIomap: false, minor: 45);
        Assert.Equal(-EPROTO, h.Error);
        Assert.False(k.D.Initialized);
        Assert.NotNull(k.D.IomapFailure);
        Assert.Contains("did not offer it", k.D.IomapFailure);
        Assert.Contains(k.LogLines(), l => l == k.D.IomapFailure);
        // and with the kernel's offer it works
        using var k2 = new IomapPeer(IomapMode.On).Start();
        Assert.True(k2.D.IomapGranted);
    }

    [Fact]
    public void A_failing_registration_answers_IOMAP_CONFIG_with_an_error_and_is_logged_once()
    {
        using var k = new IomapPeer(registrar: new TestRegistrar { FailWith = "loop0: CAP_SYS_RAWIO is needed to register iomap devices" });
        Assert.Equal(0, k.Init().H.Error);
        Assert.Equal(EIO, k.Config().Error);
        Assert.Equal(EIO, k.Config().Error);   // the first outcome stands; no second attempt
        Assert.Equal(1, k.Registrar.Calls);
        Assert.Single(k.LogLines(), l => l.Contains("CAP_SYS_RAWIO is needed"));
        Assert.Contains("CAP_SYS_RAWIO", k.D.IomapFailure);
        Assert.Empty(k.D.IomapDevices);
        // A mapping with a device cannot be sent without registered devices: a bug, answered EIO, allocation given back.
        var f = k.Create(RootNode, "f");
        long free = k.FreeBlocks();
        Assert.Equal(EIO, k.BeginRaw(f.NodeId, f.Attr.Ino, 0, 4096, IomapOp.Write | IomapOp.Direct).Error);
        Assert.Equal(free, k.FreeBlocks());
        Assert.Contains(k.LogLines(), l => l.Contains("reply would break the kernel's rules"));
    }

    [Theory]
    [InlineData("zero cookie")]
    [InlineData("duplicate cookie")]
    [InlineData("missing device")]
    [InlineData("too small")]
    public void A_registrar_answer_that_does_not_name_every_device_properly_is_refused(string how)
    {
        var registrar = new TestRegistrar
        {
            Answer = devices => how switch
            {
                "zero cookie" => devices.Select(d => new RegisteredIomapDevice(d.EngineCookie, d.EngineCookie == 1 ? 0u : 9u, d.Path, d.SizeBytes)).ToList(),
                "duplicate cookie" => devices.Select(d => new RegisteredIomapDevice(d.EngineCookie, 5, d.Path, d.SizeBytes)).ToList(),
                "missing device" => [new RegisteredIomapDevice(devices[0].EngineCookie, 5, devices[0].Path, devices[0].SizeBytes)],
                _ => devices.Select(d => new RegisteredIomapDevice(d.EngineCookie, d.EngineCookie + 4, d.Path, d.SizeBytes - 4096)).ToList(),
            },
        };
        using var k = new IomapPeer(registrar: registrar);
        Assert.Equal(0, k.Init().H.Error);
        Assert.Equal(EIO, k.Config().Error);
        Assert.Empty(k.D.IomapDevices);
        Assert.NotNull(k.D.IomapFailure);
    }

    [Fact]
    public void Every_experimental_number_comes_from_ExperimentalConstants()
    {
        Assert.Equal(ExperimentalConstants.InitIomap, (ulong)FuseInitFlags.Iomap);
        Assert.Equal(ExperimentalConstants.AttrIomap, (uint)FuseAttrFlags.Iomap);
        Assert.Equal(ExperimentalConstants.AttrExclusive, (uint)FuseAttrFlags.Exclusive);
        Assert.Equal(ExperimentalConstants.NotifyIomapInvalMappings, (int)FuseNotifyCode.IomapInvalMappings);
        foreach (var op in IomapOpcodes)
            Assert.NotNull(OpcodeTable.Get((uint)op).Handler);
        Assert.Null(OpcodeTable.Get(ExperimentalConstants.OpFreezeFs - 1).Handler);
        Assert.Null(OpcodeTable.Get(ExperimentalConstants.OpIomapEnd + 1).Handler);
    }
}
