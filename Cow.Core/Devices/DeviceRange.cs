namespace Cow.Core.Devices;

/// <summary>
/// Shared argument checks for <see cref="IBlockDevice"/> implementations.
/// </summary>
/// <remarks>Threading: stateless; every member is thread-safe.</remarks>
internal static class DeviceRange
{
    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless [offset, offset + count) lies
    /// inside a device of <paramref name="length"/> bytes. Does not allocate on the success path.</summary>
    public static void Check(string name, long length, long offset, int count)
    {
        if (offset < 0 || offset > length || count > length - offset)
            Throw(name, length, offset, count);
    }

    private static void Throw(string name, long length, long offset, int count) =>
        throw new ArgumentOutOfRangeException(nameof(offset),
            $"device {name}: range of {count} bytes at offset {offset} is outside the device (length {length} bytes)");
}
