namespace Cow.Core.Devices;

/// <summary>
/// A fixed-size, byte-addressed block device: an image file, a block device node, memory, or a
/// fault-injecting wrapper around one of those. Every pool device (base, log, extra) and, in tests,
/// the metadata streams sit behind this interface.
/// </summary>
/// <remarks>
/// Threading: implementations are thread-safe for concurrent <see cref="Read"/> and <see cref="Write"/>
/// calls on non-overlapping ranges (pread/pwrite semantics); overlapping concurrent writes have no
/// defined winner. <see cref="Flush"/> may run concurrently with I/O and makes durable every write that
/// completed before it was called.
/// Errors: I/O failures surface as <see cref="IOException"/> (the message names the device and the
/// offset); a range outside the device is <see cref="ArgumentOutOfRangeException"/>.
/// </remarks>
public interface IBlockDevice : IDisposable
{
    /// <summary>What an administrator would call this device: its path, or a test name.</summary>
    string Name { get; }

    /// <summary>Size in bytes. Fixed for the lifetime of the open device.</summary>
    long Length { get; }

    /// <summary>Reads exactly <paramref name="buffer"/>.Length bytes at <paramref name="offset"/>.
    /// Bytes never written read as zero.</summary>
    void Read(long offset, Span<byte> buffer);

    /// <summary>The block size of <see cref="ReadOrLend"/>'s checksums.</summary>
    public const int ChecksumBlockBytes = 4096;

    /// <summary>Reads like <see cref="Read"/>, but when this object holds the bytes in memory already (read-ahead
    /// buffers) it may lend them in place through <paramref name="lend"/> instead of copying them into
    /// <paramref name="buffer"/> (<see cref="DeviceReadResult.Lent"/>: the bytes are the segments just added to
    /// <paramref name="lend"/>, held until its Release), and it gives the CRC-32C of each 4 KiB block in
    /// <paramref name="blockSums"/> when it computed them as the bytes came off the device. Offset and length
    /// whole 4 KiB blocks; <paramref name="blockSums"/> empty (no checksums wanted, nothing lent) or one entry per
    /// 4 KiB block. Default: <see cref="Read"/>.</summary>
    DeviceReadResult ReadOrLend(long offset, Span<byte> buffer, Span<uint> blockSums, ReadSegments? lend)
    {
        Read(offset, buffer);
        return DeviceReadResult.Read;
    }

    /// <summary>Writes all of <paramref name="data"/> at <paramref name="offset"/>. Not durable until
    /// <see cref="Flush"/> returns.</summary>
    void Write(long offset, ReadOnlySpan<byte> data);

    /// <summary>Makes every completed write durable (fdatasync / cache flush).</summary>
    void Flush();

    /// <summary>Forgets whatever this object holds of [<paramref name="offset"/>, +<paramref name="length"/>)
    /// (read-ahead buffers): those bytes were written by someone other than this object — the kernel, with
    /// fuse-iomap. Writes through <see cref="Write"/> need no call. Default: nothing is held.</summary>
    void DropCached(long offset, long length) { }

    /// <summary>Waits until every write made through <see cref="Write"/> to [<paramref name="offset"/>,
    /// +<paramref name="length"/>) is on the device, where another reader of it (the kernel, with fuse-iomap)
    /// sees it: writes held back by this object (written behind) land first. Not a flush: nothing is made
    /// durable. Default: writes are on the device when <see cref="Write"/> returns.</summary>
    void Settle(long offset, long length) { }
}

/// <summary>How <see cref="IBlockDevice.ReadOrLend"/> delivered a read.</summary>
public enum DeviceReadResult
{
    /// <summary>Read into the buffer; the caller computes the checksums.</summary>
    Read,
    /// <summary>Read into the buffer, and each block's CRC-32C is in the block sums.</summary>
    ReadWithSums,
    /// <summary>Lent in place through the <see cref="ReadSegments"/>, and each block's CRC-32C is in the block sums.</summary>
    Lent,
}
