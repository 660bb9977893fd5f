using System.Text;
using Cow.Core.Format;
using Xunit;

namespace Cow.Tests.Format;

public class Crc32CTests
{
    [Fact]
    public void CheckValue() => Assert.Equal(0xE3069283u, Crc32C.Compute(Encoding.ASCII.GetBytes("123456789")));

    [Fact]
    public void LanedEqualsSerialForEveryLengthAndAlignment()
    {
        var rnd = new Random(5);
        var buf = new byte[70_000];
        rnd.NextBytes(buf);
        foreach (int len in new[] { 0, 1, 7, 8, 4095, 4096, 4097, 8192, 12_300, 65_536, 69_000 })
            foreach (int off in new[] { 0, 1, 3 })
                if (off + len <= buf.Length)
                    Assert.Equal(~Crc32C.Serial(~0u, buf.AsSpan(off, len)), Crc32C.Compute(buf.AsSpan(off, len)));
    }
}
