using System.Runtime.Intrinsics.X86;
using System.Text;
using Cow.Core.Format;
using Xunit;

namespace Cow.Tests.Format;

[Trait("Tier", "unit")]
public class Crc32CTests
{
    [SkippableFact]
    public void CheckValue() => Assert.Equal(0xE3069283u, Crc32C.Compute(Encoding.ASCII.GetBytes("123456789")));

    [SkippableFact]
    public void LanedEqualsSerialForEveryLengthAndAlignment()
    {
        var rnd = new Random(5);
        var buf = new byte[70_000];
        rnd.NextBytes(buf);
        foreach (int len in new[] { 0, 1, 7, 8, 255, 256, 257, 4095, 4096, 4097, 8192, 12_300, 65_536, 69_000 })
            foreach (int off in new[] { 0, 1, 3 })
                if (off + len <= buf.Length)
                {
                    var data = buf.AsSpan(off, len);
                    uint serial = Crc32C.Serial(~0u, data);
                    Assert.Equal(~serial, Crc32C.Compute(data));
                    Assert.Equal(serial, Crc32C.AppendLanes(~0u, data));
                }
    }

    /// <summary>The carry-less folding path against the serial definition: random lengths (every length from
    /// the shortest it takes up to two of its rounds and a tail, then random ones past 4 KiB), offsets and raw
    /// states, zero and all-ones data. Skipped on a CPU without VPCLMULQDQ with AVX-512 (there Append never
    /// takes it; the assertion says so).</summary>
    [SkippableFact]
    public void FoldedEqualsSerial()
    {
        if (!Pclmulqdq.V512.IsSupported)
        {
            Assert.True(Crc32C.Append(1, new byte[4096]) == Crc32C.AppendLanes(1, new byte[4096]));
            Skip.If(true, "this CPU has no VPCLMULQDQ with AVX-512: the folding path never runs here");
        }
        int seed = Environment.TickCount;
        var rnd = new Random(seed);
        var buf = new byte[20_000];
        rnd.NextBytes(buf);
        for (int t = 0; t < 4000; t++)
        {
            int len = t < 600 ? Crc32C.FoldMinBytes + t : rnd.Next(Crc32C.FoldMinBytes, 16_384);
            int off = rnd.Next(0, 64);
            uint state = (uint)rnd.NextInt64(0, 1L << 32);
            var data = buf.AsSpan(off, len);
            uint expected = Crc32C.Serial(state, data);
            uint folded = Crc32C.AppendFolded(state, data);
            if (folded != expected) Assert.Fail($"seed {seed}: length {len} offset {off} state {state:X8}: folded {folded:X8}, serial {expected:X8}");
            Assert.Equal(expected, Crc32C.Append(state, data));
        }
        foreach (byte fill in new byte[] { 0x00, 0xFF })
        {
            var same = new byte[4096];
            Array.Fill(same, fill);
            Assert.Equal(Crc32C.Serial(~0u, same), Crc32C.AppendFolded(~0u, same));
        }
    }
}
