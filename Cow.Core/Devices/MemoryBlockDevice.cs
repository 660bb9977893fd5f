namespace Cow.Core.Devices;

/// <summary>
/// A sparse in-memory <see cref="IBlockDevice"/> for tests: storage is a dictionary of
/// <see cref="ChunkSize"/>-byte chunks allocated on the first non-zero write into them, so a 100 GiB
/// device costs nothing until written. Unwritten bytes read as zero. <see cref="Flush"/> does nothing
/// (memory is as durable as this device gets); wrap it in <see cref="FaultInjectingBlockDevice"/> to
/// model volatile caches and power loss.
/// </summary>
/// <remarks>
/// Threading: every member is thread-safe. One lock, <c>_gate</c>, guards the chunk dictionary
/// <c>_chunks</c> and the contents of every chunk; each <see cref="Read"/> and <see cref="Write"/> holds
/// it for the whole call, so even overlapping calls are atomic with respect to each other.
/// <see cref="Name"/> and <see cref="Length"/> are immutable.
/// Lifetime: <see cref="Dispose"/> is a no-op and the contents stay readable afterwards, so a test can
/// close a pool and reopen it on the same instance (a disk that stays plugged in).
/// </remarks>
public sealed class MemoryBlockDevice : IBlockDevice
{
    /// <summary>Allocation granularity: 64 KiB.</summary>
    public const int ChunkSize = 64 * 1024;

    private const int ChunkShift = 16;

    private readonly object _gate = new();

    // Guarded by _gate: chunk index -> ChunkSize bytes.
    private readonly Dictionary<long, byte[]> _chunks = new();

    /// <summary>Creates an all-zero device of <paramref name="length"/> bytes.</summary>
    public MemoryBlockDevice(string name, long length)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Name = name;
        Length = length;
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public long Length { get; }

    /// <summary>Bytes of memory currently allocated for chunks (a multiple of <see cref="ChunkSize"/>).</summary>
    public long AllocatedBytes
    {
        get
        {
            lock (_gate)
                return (long)_chunks.Count * ChunkSize;
        }
    }

    /// <inheritdoc />
    public void Read(long offset, Span<byte> buffer)
    {
        DeviceRange.Check(Name, Length, offset, buffer.Length);
        lock (_gate)
        {
            while (!buffer.IsEmpty)
            {
                long index = offset >> ChunkShift;
                int within = (int)(offset & (ChunkSize - 1));
                int n = Math.Min(buffer.Length, ChunkSize - within);
                if (_chunks.TryGetValue(index, out byte[]? chunk))
                    chunk.AsSpan(within, n).CopyTo(buffer);
                else
                    buffer[..n].Clear();
                buffer = buffer[n..];
                offset += n;
            }
        }
    }

    /// <inheritdoc />
    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        DeviceRange.Check(Name, Length, offset, data.Length);
        lock (_gate)
        {
            while (!data.IsEmpty)
            {
                long index = offset >> ChunkShift;
                int within = (int)(offset & (ChunkSize - 1));
                int n = Math.Min(data.Length, ChunkSize - within);
                ReadOnlySpan<byte> piece = data[..n];
                if (_chunks.TryGetValue(index, out byte[]? chunk))
                {
                    piece.CopyTo(chunk.AsSpan(within));
                }
                else if (piece.IndexOfAnyExcept((byte)0) >= 0)
                {
                    // Zeros into an unallocated chunk change nothing; anything else allocates it.
                    chunk = new byte[ChunkSize];
                    piece.CopyTo(chunk.AsSpan(within));
                    _chunks.Add(index, chunk);
                }

                data = data[n..];
                offset += n;
            }
        }
    }

    /// <summary>Does nothing: memory needs no flushing.</summary>
    public void Flush()
    {
    }

    /// <summary>Does nothing; see the class remarks.</summary>
    public void Dispose()
    {
    }

    /// <inheritdoc />
    public override string ToString() => $"memory device {Name}";
}
