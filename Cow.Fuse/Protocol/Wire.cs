// Allocation-free reading and writing of wire structs from and to byte spans.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Thrown by <see cref="Wire.Read{T}"/> when a request is shorter than the struct it must hold.</summary>
public sealed class TruncatedMessageException(string message) : Exception(message);

/// <summary>Reads and writes FUSE wire structs (native, i.e. little-endian on x86-64) without allocating.</summary>
public static class Wire
{
    /// <summary>Reads a <typeparamref name="T"/> from the start of <paramref name="src"/>; false (and default)
    /// when the span is too short. The hot-path way to detect a truncated request.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryRead<T>(ReadOnlySpan<byte> src, out T value) where T : unmanaged
    {
        if (src.Length < Unsafe.SizeOf<T>()) { value = default; return false; }
        value = MemoryMarshal.Read<T>(src);
        return true;
    }

    /// <summary>Reads a <typeparamref name="T"/> from the start of <paramref name="src"/>.</summary>
    /// <exception cref="TruncatedMessageException">The span is shorter than the struct.</exception>
    public static T Read<T>(ReadOnlySpan<byte> src) where T : unmanaged
    {
        if (src.Length < Unsafe.SizeOf<T>())
            throw new TruncatedMessageException($"Truncated FUSE message: {typeof(T).Name} needs {Unsafe.SizeOf<T>()} bytes, got {src.Length}.");
        return MemoryMarshal.Read<T>(src);
    }

    /// <summary>Reads a <typeparamref name="T"/> at the start of <paramref name="src"/> and returns the rest.</summary>
    public static bool TryRead<T>(ReadOnlySpan<byte> src, out T value, out ReadOnlySpan<byte> rest) where T : unmanaged
    {
        if (!TryRead(src, out value)) { rest = default; return false; }
        rest = src[Unsafe.SizeOf<T>()..];
        return true;
    }

    /// <summary>Writes <paramref name="value"/> at the start of <paramref name="dst"/>; false when it does not fit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryWrite<T>(Span<byte> dst, in T value) where T : unmanaged
    {
        if (dst.Length < Unsafe.SizeOf<T>()) return false;
        MemoryMarshal.Write(dst, in value);
        return true;
    }

    /// <summary>Writes <paramref name="value"/> at the start of <paramref name="dst"/>; returns the bytes written.</summary>
    /// <exception cref="ArgumentException">The destination is too small.</exception>
    public static int Write<T>(Span<byte> dst, in T value) where T : unmanaged
    {
        if (dst.Length < Unsafe.SizeOf<T>())
            throw new ArgumentException($"{typeof(T).Name} needs {Unsafe.SizeOf<T>()} bytes, destination has {dst.Length}.", nameof(dst));
        MemoryMarshal.Write(dst, in value);
        return Unsafe.SizeOf<T>();
    }

    /// <summary>Reads a NUL-terminated name at the start of <paramref name="src"/>. <paramref name="name"/> excludes
    /// the NUL; <paramref name="consumed"/> includes it. False when there is no NUL or the name is empty.</summary>
    public static bool TryReadName(ReadOnlySpan<byte> src, out ReadOnlySpan<byte> name, out int consumed)
    {
        int nul = src.IndexOf((byte)0);
        if (nul <= 0) { name = default; consumed = 0; return false; }
        name = src[..nul];
        consumed = nul + 1;
        return true;
    }

    /// <summary>Reads two consecutive NUL-terminated names (RENAME, RENAME2, SYMLINK, SETXATTR's name).</summary>
    public static bool TryReadTwoNames(ReadOnlySpan<byte> src, out ReadOnlySpan<byte> first, out ReadOnlySpan<byte> second, out int consumed)
    {
        second = default;
        if (!TryReadName(src, out first, out int c1) || !TryReadName(src[c1..], out second, out int c2))
        {
            first = default; consumed = 0; return false;
        }
        consumed = c1 + c2;
        return true;
    }
}
