using System.Buffers.Binary;
using System.Numerics;

namespace Cow.Core.Format;

/// <summary>CRC-32C (Castagnoli), the checksum of every on-disk structure and every data block
/// (format.md, "Checksums"). Uses the CPU's CRC32 instruction through <see cref="BitOperations.Crc32C(uint, ulong)"/>.
/// Stateless and thread-safe.</summary>
public static class Crc32C
{
    /// <summary>CRC-32C of <paramref name="data"/> with the standard initial value and final xor.</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(~0u, data);

    /// <summary>Continues a raw (not finalised) CRC state over more bytes.</summary>
    public static uint Append(uint state, ReadOnlySpan<byte> data)
    {
        while (data.Length >= 8)
        {
            state = BitOperations.Crc32C(state, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data) state = BitOperations.Crc32C(state, b);
        return state;
    }
}
