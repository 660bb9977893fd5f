namespace Cow.Core.Devices;

/// <summary>
/// A byte range of another device as a device of its own: [<see cref="Offset"/>, +<see cref="Length"/>) of the inner
/// device is byte 0.. of this one. A pool keeps its metadata streams in two such windows of its log device
/// (format.md 2, <c>meta_data_offset</c>..). Flush flushes the inner device (the whole device: a range has no cache of
/// its own). Threading: as the inner device; the window itself is immutable. Disposes the inner device when it owns it.
/// </summary>
public sealed class DeviceWindow(IBlockDevice inner, long offset, long length, string what, bool ownsInner) : IBlockDevice
{
    public long Offset { get; } = offset >= 0 && length >= 0 && offset <= inner.Length - length ? offset
        : throw new ArgumentOutOfRangeException(nameof(offset), $"device {inner.Name}: window {offset}+{length} is outside its {inner.Length} bytes");

    public string Name { get; } = $"{inner.Name} ({what})";
    public long Length { get; } = length;

    public void Read(long offset, Span<byte> buffer)
    {
        DeviceRange.Check(Name, Length, offset, buffer.Length);
        inner.Read(Offset + offset, buffer);
    }

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        DeviceRange.Check(Name, Length, offset, data.Length);
        inner.Write(Offset + offset, data);
    }

    public void Flush() => inner.Flush();

    public void Dispose()
    {
        if (ownsInner) inner.Dispose();
    }
}
