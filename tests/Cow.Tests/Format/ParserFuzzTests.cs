using Cow.Core.Format;
using Cow.Core.Metadata;
using LiteDB;
using Xunit;

namespace Cow.Tests.Format;

/// <summary>Fuzzing of the on-disk parsers: random, truncated and bit-flipped input is refused with a
/// reason (or an InvalidDataException naming the record), never a crash or a wrong accept.</summary>
[Trait("Tier", "unit")]
public class ParserFuzzTests
{
    private static byte[] ValidSuperblock()
    {
        var b = new byte[4096];
        new Superblock { Role = DeviceRole.Log, PoolUuid = Guid.NewGuid(), DeviceUuid = Guid.NewGuid(), DeviceCookie = 2, BlockSize = 4096, DeviceSize = 1 << 30, DataStart = 4096, DeviceCount = 2, Label = "x" }.Write(b);
        return b;
    }

    [Fact]
    public void SuperblockRejectsEveryCorruption()
    {
        var rnd = new Random(1);
        var good = ValidSuperblock();
        Assert.NotNull(Superblock.TryRead(good, out _));
        for (int i = 0; i < 20000; i++)
        {
            var b = (byte[])good.Clone();
            switch (i % 3)
            {
                case 0: b[rnd.Next(252)] ^= (byte)(1 << rnd.Next(8)); break;                // one bit flipped
                case 1: rnd.NextBytes(b.AsSpan(0, FormatConstants.SuperblockSize)); break;   // garbage
                default: b = b[..rnd.Next(FormatConstants.SuperblockSize)]; break;           // truncated
            }
            var sb = Superblock.TryRead(b, out var problem);
            Assert.Null(sb);
            Assert.False(string.IsNullOrEmpty(problem));
        }
    }

    [Fact]
    public void SegmentHeaderRejectsEveryBitFlip()
    {
        var b = new byte[4096];
        new SegmentHeader(Guid.NewGuid(), 7, 9, 3).Write(b);
        Assert.NotNull(SegmentHeader.TryRead(b));
        for (int bit = 0; bit < 60 * 8; bit++)
        {
            var c = (byte[])b.Clone();
            c[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.Null(SegmentHeader.TryRead(c));
        }
    }

    [Fact]
    public void ChunkRecordRefusesMalformedMapsWithAReason()
    {
        var rnd = new Random(2);
        var rec = new ChunkRecord { Rid = 5, Ino = 9, Index = 1, Birth = 1 };
        rec.Extents.Add(new Extent(0, 3, 2, 100));
        var doc = rec.ToBson();
        Assert.Equal(3u, ChunkBson.FromBson(doc).Extents[0].Count);
        for (int i = 0; i < 2000; i++)
        {
            var d = new BsonDocument(doc.ToDictionary(k => k.Key, k => k.Value));
            d[i % 2 == 0 ? "map" : "sums"] = new byte[rnd.Next(0, 5000) | 1]; // odd length: never valid
            var e = Assert.Throws<InvalidDataException>(() => ChunkBson.FromBson(d));
            Assert.Contains("chunk record 5", e.Message);
        }
    }
}
