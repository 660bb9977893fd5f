using System.Buffers.Binary;
using System.Text;

namespace Cow.Core.Format;

/// <summary>
/// The superblock at byte 0 of every pool device (format.md, "Superblock"). 256 bytes, little-endian,
/// the rest of block 0 zero. Immutable value; <see cref="Write"/> and <see cref="TryRead"/> are pure.
/// </summary>
public sealed record Superblock
{
    /// <summary><c>format_version</c> (offset 8, u32).</summary>
    public uint FormatVersion { get; init; } = FormatConstants.MkfsFormatVersion;
    /// <summary><c>role</c> (offset 12, u32): 1 base, 2 log, 3 extra.</summary>
    public DeviceRole Role { get; init; }
    /// <summary><c>pool_uuid</c> (offset 16, 16 bytes): the pool this device belongs to.</summary>
    public Guid PoolUuid { get; init; }
    /// <summary><c>device_uuid</c> (offset 32, 16 bytes): this device, unique forever.</summary>
    public Guid DeviceUuid { get; init; }
    /// <summary><c>device_cookie</c> (offset 48, u32): the device's number in mappings (1 base, 2 log).</summary>
    public uint DeviceCookie { get; init; }
    /// <summary><c>block_size</c> (offset 52, u32): bytes per block, a power of two 4096..65536.</summary>
    public uint BlockSize { get; init; }
    /// <summary><c>device_size</c> (offset 56, u64): bytes formatted; the device may be larger, never smaller.</summary>
    public ulong DeviceSize { get; init; }
    /// <summary><c>data_start</c> (offset 64, u64): byte offset of the first block after the superblock.</summary>
    public ulong DataStart { get; init; }
    /// <summary><c>device_count</c> (offset 72, u32): devices in the pool when this one was formatted.</summary>
    public uint DeviceCount { get; init; }
    /// <summary><c>segment_blocks</c> (offset 76, u32): blocks per segment.</summary>
    public uint SegmentBlocks { get; init; } = FormatConstants.SegmentBlocks;
    /// <summary><c>created_ns</c> (offset 80, i64): creation time, ns since the Unix epoch.</summary>
    public long CreatedNs { get; init; }
    /// <summary><c>label</c> (offset 88, 32 bytes UTF-8, zero padded): the pool's label.</summary>
    public string Label { get; init; } = "";
    /// <summary><c>meta_data_offset</c> (offset 120, u64; version 2): byte offset on this device of the region holding the
    /// pool's metadata data stream, 0 when this device holds no metadata (the metadata is in a pool folder or on another device).</summary>
    public ulong MetaDataOffset { get; init; }
    /// <summary><c>meta_data_bytes</c> (offset 128, u64): bytes of that region.</summary>
    public ulong MetaDataBytes { get; init; }
    /// <summary><c>meta_log_offset</c> (offset 136, u64): byte offset of the region holding the metadata's write-ahead log.</summary>
    public ulong MetaLogOffset { get; init; }
    /// <summary><c>meta_log_bytes</c> (offset 144, u64): bytes of that region.</summary>
    public ulong MetaLogBytes { get; init; }
    /// <summary>True when this device holds the pool's metadata.</summary>
    public bool HoldsMetadata => MetaDataOffset != 0;
    // offsets 152..251 reserved, zero. <c>checksum</c> (offset 252, u32): CRC-32C of bytes 0..251.

    public void Write(Span<byte> block)
    {
        var b = block[..FormatConstants.SuperblockSize];
        b.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(b, FormatConstants.SuperblockMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(b[12..], (uint)Role);
        PoolUuid.TryWriteBytes(b[16..32]);
        DeviceUuid.TryWriteBytes(b[32..48]);
        BinaryPrimitives.WriteUInt32LittleEndian(b[48..], DeviceCookie);
        BinaryPrimitives.WriteUInt32LittleEndian(b[52..], BlockSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b[56..], DeviceSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b[64..], DataStart);
        BinaryPrimitives.WriteUInt32LittleEndian(b[72..], DeviceCount);
        BinaryPrimitives.WriteUInt32LittleEndian(b[76..], SegmentBlocks);
        BinaryPrimitives.WriteInt64LittleEndian(b[80..], CreatedNs);
        var label = Encoding.UTF8.GetBytes(Label);
        if (label.Length > 32) throw new ArgumentException("label is longer than 32 bytes");
        label.CopyTo(b[88..120]);
        BinaryPrimitives.WriteUInt64LittleEndian(b[120..], MetaDataOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(b[128..], MetaDataBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(b[136..], MetaLogOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(b[144..], MetaLogBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(b[252..], Crc32C.Compute(b[..252]));
    }

    /// <summary>Parses a superblock; on failure returns null and says why in words an administrator can act on.</summary>
    public static Superblock? TryRead(ReadOnlySpan<byte> block, out string? problem)
    {
        problem = null;
        if (block.Length < FormatConstants.SuperblockSize) { problem = "too short to hold a superblock"; return null; }
        var b = block[..FormatConstants.SuperblockSize];
        if (BinaryPrimitives.ReadUInt64LittleEndian(b) != FormatConstants.SuperblockMagic)
        {
            problem = b.IndexOfAnyExcept((byte)0) < 0
                ? "has no Cow superblock (block 0 is empty: not formatted, or wiped)"
                : "is not a Cow device (no Cow superblock at byte 0)";
            return null;
        }
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(b[8..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(b[252..]) != Crc32C.Compute(b[..252]))
        { problem = "has a corrupt superblock (checksum mismatch)"; return null; }
        if (version < FormatConstants.OldestFormatVersion || version > FormatConstants.FormatVersion)
        {
            problem = version > FormatConstants.FormatVersion
                ? $"was formatted with Cow format version {version}, newer than this build understands (version {FormatConstants.FormatVersion}); use a newer cow"
                : $"uses Cow format version {version}, which this build no longer reads (it reads versions {FormatConstants.OldestFormatVersion} to {FormatConstants.FormatVersion})";
            return null;
        }
        return new Superblock
        {
            FormatVersion = version,
            Role = (DeviceRole)BinaryPrimitives.ReadUInt32LittleEndian(b[12..]),
            PoolUuid = new Guid(b[16..32]),
            DeviceUuid = new Guid(b[32..48]),
            DeviceCookie = BinaryPrimitives.ReadUInt32LittleEndian(b[48..]),
            BlockSize = BinaryPrimitives.ReadUInt32LittleEndian(b[52..]),
            DeviceSize = BinaryPrimitives.ReadUInt64LittleEndian(b[56..]),
            DataStart = BinaryPrimitives.ReadUInt64LittleEndian(b[64..]),
            DeviceCount = BinaryPrimitives.ReadUInt32LittleEndian(b[72..]),
            SegmentBlocks = BinaryPrimitives.ReadUInt32LittleEndian(b[76..]),
            CreatedNs = BinaryPrimitives.ReadInt64LittleEndian(b[80..]),
            Label = Encoding.UTF8.GetString(b[88..120]).TrimEnd('\0'),
            MetaDataOffset = BinaryPrimitives.ReadUInt64LittleEndian(b[120..]),
            MetaDataBytes = BinaryPrimitives.ReadUInt64LittleEndian(b[128..]),
            MetaLogOffset = BinaryPrimitives.ReadUInt64LittleEndian(b[136..]),
            MetaLogBytes = BinaryPrimitives.ReadUInt64LittleEndian(b[144..]),
        };
    }
}

/// <summary>
/// The header in block 0 of a log segment (format.md, "Log device"), written each time the allocator
/// opens the segment for appending. 64 bytes, little-endian. Immutable value.
/// </summary>
public readonly record struct SegmentHeader(Guid PoolUuid, ulong SegmentIndex, ulong Sequence, long Generation)
{
    // magic u64 @0 ("COWSEG01"); pool_uuid @8 (16); segment_index u64 @24; sequence u64 @32;
    // generation i64 @40; reserved @48..59 zero; checksum u32 @60 = CRC-32C of bytes 0..59.
    public void Write(Span<byte> block)
    {
        var b = block[..FormatConstants.SegmentHeaderSize];
        b.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(b, FormatConstants.SegmentMagic);
        PoolUuid.TryWriteBytes(b[8..24]);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], SegmentIndex);
        BinaryPrimitives.WriteUInt64LittleEndian(b[32..], Sequence);
        BinaryPrimitives.WriteInt64LittleEndian(b[40..], Generation);
        BinaryPrimitives.WriteUInt32LittleEndian(b[60..], Crc32C.Compute(b[..60]));
    }

    public static SegmentHeader? TryRead(ReadOnlySpan<byte> block)
    {
        var b = block[..FormatConstants.SegmentHeaderSize];
        if (BinaryPrimitives.ReadUInt64LittleEndian(b) != FormatConstants.SegmentMagic) return null;
        if (BinaryPrimitives.ReadUInt32LittleEndian(b[60..]) != Crc32C.Compute(b[..60])) return null;
        return new SegmentHeader(new Guid(b[8..24]), BinaryPrimitives.ReadUInt64LittleEndian(b[24..]),
            BinaryPrimitives.ReadUInt64LittleEndian(b[32..]), BinaryPrimitives.ReadInt64LittleEndian(b[40..]));
    }
}
