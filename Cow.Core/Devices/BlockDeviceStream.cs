using System.Buffers.Binary;

namespace Cow.Core.Devices;

/// <summary>
/// A seekable, growable read/write <see cref="Stream"/> kept on a fixed-size <see cref="IBlockDevice"/>,
/// so LiteDB can keep its data and log files on a (fault-injecting) memory device in power-cut tests.
/// </summary>
/// <remarks>
/// <para>On-device layout: the first <see cref="HeaderSize"/> (4096) bytes hold the stream header; stream
/// byte <c>i</c> lives at device offset <c>4096 + i</c>, so <see cref="Capacity"/> is
/// <c>device.Length - 4096</c> and writing or growing past it throws <see cref="IOException"/>
/// "metadata device full". The header is kept in two copies, at device offsets 0 and 512 (separate
/// sectors), each 28 bytes: magic "CowBDS1\0", a sequence number (u64 LE), the logical length
/// (i64 LE) and a CRC-32 of those 24 bytes (u32 LE). A header with sequence <c>s</c> goes to copy
/// <c>s % 2</c>, so a torn or lost header write always leaves the previous header intact;
/// <see cref="Open"/> uses the valid copy with the highest sequence. An all-zero header area (a fresh
/// device) reads as an empty stream.</para>
/// <para>Durability: <see cref="SetLength"/> writes a new header at once; a <see cref="Write"/> that
/// extends the stream only updates the in-memory length. <see cref="Flush"/> writes a new header if the
/// length differs from the last header written, then calls <c>device.Flush()</c>; when the length grew
/// it flushes the device before writing that header too, so that even a device that persists unflushed
/// writes in any order never shows a length covering bytes that are not durable. So after a power
/// cut that drops unflushed writes, <see cref="Open"/> shows exactly the length and contents as of the
/// last <see cref="Flush"/>. Bytes between the old end and a new end (growth by
/// <see cref="SetLength"/> or by writing past the end) are zeroed on the device, so stale bytes from
/// before a shrink or a crash never reappear.</para>
/// <para>Lifetime: the stream does not own the device; <see cref="Stream.Dispose()"/> neither flushes
/// nor disposes it.</para>
/// <para>Threading: every public member is thread-safe; one lock, <c>_gate</c>, guards
/// <c>_length</c>, <c>_position</c>, <c>_persistedLength</c>, <c>_sequence</c> and <c>_disposed</c>, and
/// is held across the device calls of each operation, so each Read/Write/Seek/SetLength/Flush is atomic.
/// The position is shared: callers on several threads must serialize Seek+Read pairs themselves (as
/// with <see cref="FileStream"/>).</para>
/// <para>Allocation: Read and Write through the span overloads do not allocate.</para>
/// </remarks>
public sealed class BlockDeviceStream : Stream
{
    /// <summary>Bytes reserved at the start of the device for the header; stream data follows.</summary>
    public const int HeaderSize = 4096;

    private const int HeaderCopyStride = 512;
    private const int HeaderBytes = 28;
    private const ulong Magic = 0x0031_5344_4277_6F43; // "CowBDS1\0" little-endian

    private static readonly byte[] s_zeros = new byte[64 * 1024];

    private readonly object _gate = new();
    private readonly IBlockDevice _device;

    // Guarded by _gate.
    private long _length;
    private long _position;
    private long _persistedLength;
    private ulong _sequence;
    private bool _disposed;

    /// <summary>
    /// Formats <paramref name="device"/> as a new stream of <paramref name="initialLength"/> zero bytes,
    /// discarding whatever stream it held. The new header is written but, like any write, not durable
    /// until <see cref="Flush"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The device is smaller than <see cref="HeaderSize"/>.</exception>
    /// <exception cref="IOException"><paramref name="initialLength"/> exceeds <see cref="Capacity"/>
    /// ("metadata device full"), or the device failed.</exception>
    public BlockDeviceStream(IBlockDevice device, long initialLength = 0)
    {
        CheckDevice(device);
        ArgumentOutOfRangeException.ThrowIfNegative(initialLength);
        _device = device;
        if (initialLength > Capacity)
            throw DeviceFull(initialLength);

        ZeroDevice(0, initialLength);
        _length = initialLength;
        // Overwrite both copies so no older header can win.
        WriteHeader();
        WriteHeader();
    }

    private BlockDeviceStream(IBlockDevice device, ulong sequence, long length)
    {
        _device = device;
        _sequence = sequence;
        _length = length;
        _persistedLength = length;
    }

    /// <summary>
    /// Opens the stream previously kept on <paramref name="device"/>, recovering its length from the
    /// newest valid header copy. A fresh (all-zero) device opens as an empty stream.
    /// </summary>
    /// <exception cref="InvalidDataException">The header area is not zero but neither copy is valid.</exception>
    public static BlockDeviceStream Open(IBlockDevice device)
    {
        CheckDevice(device);
        Span<byte> area = stackalloc byte[HeaderCopyStride + HeaderBytes];
        device.Read(0, area);

        long capacity = device.Length - HeaderSize;
        bool found = false;
        ulong bestSequence = 0;
        long bestLength = 0;
        for (int copy = 0; copy < 2; copy++)
        {
            if (TryParseHeader(area.Slice(copy * HeaderCopyStride, HeaderBytes), capacity,
                    out ulong sequence, out long length) && (!found || sequence > bestSequence))
            {
                found = true;
                bestSequence = sequence;
                bestLength = length;
            }
        }

        if (!found && area.IndexOfAnyExcept((byte)0) >= 0)
        {
            throw new InvalidDataException(
                $"device {device.Name}: does not hold a valid stream header (both copies damaged or foreign data)");
        }

        return new BlockDeviceStream(device, bestSequence, bestLength);
    }

    /// <summary>For a metadata log stream: the data stream that must be durable before this one is truncated.</summary>
    public Stream? FlushBeforeTruncate { get; set; }

    /// <summary>The device the stream lives on.</summary>
    public IBlockDevice Device => _device;

    /// <summary>Largest possible stream length: the device length minus <see cref="HeaderSize"/>.</summary>
    public long Capacity => _device.Length - HeaderSize;

    /// <inheritdoc />
    public override bool CanRead => !IsDisposed;

    /// <inheritdoc />
    public override bool CanSeek => !IsDisposed;

    /// <inheritdoc />
    public override bool CanWrite => !IsDisposed;

    /// <inheritdoc />
    public override long Length
    {
        get
        {
            lock (_gate)
            {
                ThrowIfDisposed();
                return _length;
            }
        }
    }

    /// <inheritdoc />
    public override long Position
    {
        get
        {
            lock (_gate)
            {
                ThrowIfDisposed();
                return _position;
            }
        }
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            lock (_gate)
            {
                ThrowIfDisposed();
                _position = value;
            }
        }
    }

    private bool IsDisposed
    {
        get
        {
            lock (_gate)
                return _disposed;
        }
    }

    /// <inheritdoc />
    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    /// <inheritdoc />
    public override int Read(Span<byte> buffer)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (_position >= _length || buffer.IsEmpty)
                return 0;
            int n = (int)Math.Min(buffer.Length, _length - _position);
            _device.Read(HeaderSize + _position, buffer[..n]);
            _position += n;
            return n;
        }
    }

    /// <inheritdoc />
    public override int ReadByte()
    {
        Span<byte> one = stackalloc byte[1];
        return Read(one) == 1 ? one[0] : -1;
    }

    /// <inheritdoc />
    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        Write(buffer.AsSpan(offset, count));
    }

    /// <inheritdoc />
    public override void Write(ReadOnlySpan<byte> buffer)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (buffer.IsEmpty)
                return;
            long end = _position + buffer.Length;
            if (end > Capacity)
                throw DeviceFull(end);

            if (_position > _length)
                ZeroDevice(_length, _position);
            _device.Write(HeaderSize + _position, buffer);
            _position = end;
            if (end > _length)
                _length = end;
        }
    }

    /// <inheritdoc />
    public override void WriteByte(byte value)
    {
        ReadOnlySpan<byte> one = [value];
        Write(one);
    }

    /// <inheritdoc />
    public override long Seek(long offset, SeekOrigin origin)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            long target = origin switch
            {
                SeekOrigin.Begin => offset,
                SeekOrigin.Current => _position + offset,
                SeekOrigin.End => _length + offset,
                _ => throw new ArgumentOutOfRangeException(nameof(origin), origin, "unknown seek origin"),
            };
            if (target < 0)
                throw new IOException($"stream on device {_device.Name}: seek to {target}, before the beginning of the stream");
            _position = target;
            return target;
        }
    }

    /// <summary>
    /// Sets the logical length (growing zero-fills) and writes a new header at once. The position is
    /// not changed, even when it ends up past the end.
    /// </summary>
    /// <exception cref="IOException"><paramref name="value"/> exceeds <see cref="Capacity"/>
    /// ("metadata device full"), or the device failed.</exception>
    public override void SetLength(long value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(value);
        // Truncating the metadata log ends a checkpoint: the data stream must be durable first (as DurableFileStream).
        if (FlushBeforeTruncate is { } first && value < Length) first.Flush();
        lock (_gate)
        {
            ThrowIfDisposed();
            if (value > Capacity)
                throw DeviceFull(value);
            if (value > _length)
                ZeroDevice(_length, value);
            _length = value;
            WriteHeader();
        }
    }

    /// <summary>Writes a new header if the length changed since the last one, then flushes the
    /// device: everything written so far becomes durable.</summary>
    public override void Flush()
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (_length != _persistedLength)
            {
                // A device may persist unflushed writes in any order: the bytes a longer length exposes
                // must be durable before the header that exposes them, or stale bytes could appear.
                if (_length > _persistedLength)
                    _device.Flush();
                WriteHeader();
            }

            _device.Flush();
        }
    }

    /// <inheritdoc />
    public override string ToString() => $"stream on device {_device.Name}";

    /// <summary>Marks the stream closed. Does not flush and does not dispose the device.</summary>
    protected override void Dispose(bool disposing)
    {
        lock (_gate)
            _disposed = true;
        base.Dispose(disposing);
    }

    // Caller holds _gate (or is the constructor).
    private void WriteHeader()
    {
        ulong sequence = _sequence + 1;
        Span<byte> header = stackalloc byte[HeaderBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(header, Magic);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], sequence);
        BinaryPrimitives.WriteInt64LittleEndian(header[16..], _length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[24..], Crc32.Compute(header[..24]));
        _device.Write((long)(sequence % 2) * HeaderCopyStride, header);
        _sequence = sequence;
        _persistedLength = _length;
    }

    private static bool TryParseHeader(ReadOnlySpan<byte> header, long capacity, out ulong sequence, out long length)
    {
        sequence = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        length = BinaryPrimitives.ReadInt64LittleEndian(header[16..]);
        return BinaryPrimitives.ReadUInt64LittleEndian(header) == Magic
               && BinaryPrimitives.ReadUInt32LittleEndian(header[24..]) == Crc32.Compute(header[..24])
               && length >= 0 && length <= capacity;
    }

    // Zeroes stream bytes [from, to) on the device. Caller holds _gate (or is the constructor).
    private void ZeroDevice(long from, long to)
    {
        while (from < to)
        {
            int n = (int)Math.Min(s_zeros.Length, to - from);
            _device.Write(HeaderSize + from, s_zeros.AsSpan(0, n));
            from += n;
        }
    }

    private static void CheckDevice(IBlockDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device.Length < HeaderSize)
        {
            throw new ArgumentException(
                $"device {device.Name}: {device.Length} bytes is too small for a stream (needs at least {HeaderSize})",
                nameof(device));
        }
    }

    private IOException DeviceFull(long wanted) =>
        new($"metadata device full: device {_device.Name} holds at most {Capacity} bytes of stream data, {wanted} needed");

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320). Thread-safe: the table is
    /// immutable after static initialization.</summary>
    private static class Crc32
    {
        private static readonly uint[] s_table = BuildTable();

        public static uint Compute(ReadOnlySpan<byte> data)
        {
            uint crc = 0xFFFF_FFFFu;
            foreach (byte b in data)
                crc = s_table[(crc ^ b) & 0xFF] ^ (crc >> 8);
            return ~crc;
        }

        private static uint[] BuildTable()
        {
            var table = new uint[256];
            for (uint i = 0; i < 256; i++)
            {
                uint c = i;
                for (int k = 0; k < 8; k++)
                    c = (c & 1) != 0 ? 0xEDB8_8320u ^ (c >> 1) : c >> 1;
                table[i] = c;
            }

            return table;
        }
    }
}
