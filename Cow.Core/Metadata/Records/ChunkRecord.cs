using System.Buffers.Binary;
using Cow.Core.Format;

namespace Cow.Core.Metadata;

/// <summary>Collection <c>chunks</c>: one document per version of one chunk (1024 file blocks) of a
/// file's extent map.</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Each field is documented with its name in format.md ("Metadata file"); the BSON mapping is <see cref="ChunkBson"/>.</remarks>
internal sealed class ChunkRecord : VersionedRecord
{
    /// <summary><c>ino</c>: the file.</summary>
    public long Ino;
    /// <summary><c>index</c>: chunk number; the chunk covers file blocks index*1024 .. index*1024+1023.</summary>
    public long Index;
    /// <summary><c>map</c>: extents sorted by <c>first</c>, non-overlapping, packed as 24-byte entries
    /// (u32 first, u32 count, u32 dev, u32 reserved = 0, u64 addr), little-endian.</summary>
    public List<Extent> Extents = new();
    /// <summary><c>sums</c>: CRC-32C of each file block's data, u32 little-endian per chunk block
    /// (1024 entries); entries of unmapped blocks are zero and meaningless.</summary>
    public uint[] Sums = new uint[FormatConstants.ChunkBlocks];

    public ChunkRecord CloneAsNewVersion()
    {
        var c = (ChunkRecord)MemberwiseClone();
        c.Extents = new List<Extent>(Extents);
        c.Sums = (uint[])Sums.Clone();
        return c;
    }

    /// <summary><c>key</c>: index key, 16 bytes: ino then index, both big-endian, so a range of keys is a
    /// range of chunks of one file.</summary>
    public static byte[] Key(long ino, long index)
    {
        var k = new byte[16];
        BinaryPrimitives.WriteInt64BigEndian(k, ino);
        BinaryPrimitives.WriteInt64BigEndian(k.AsSpan(8), index);
        return k;
    }
}
