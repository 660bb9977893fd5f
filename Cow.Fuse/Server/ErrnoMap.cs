using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>
/// The ONE place that turns a <see cref="Errno"/> (what <c>FileSystemView</c> returns) into the value of
/// <c>fuse_out_header.error</c>: 0 for success, otherwise the negated Linux errno number obtained through
/// <see cref="NativeConvert.FromErrno"/>. Nothing else in Cow.Fuse may negate or cast an Errno for the wire.
/// Results are cached per Errno value, so the hot path makes no native call after the first use.
/// </summary>
public static class ErrnoMap
{
    private const int CacheSize = 256;
    private static readonly int[] Cache = new int[CacheSize]; // 0 = not yet computed

    /// <summary>fuse_out_header.error for <paramref name="errno"/>: 0, or a negative errno. An Errno that
    /// the platform cannot represent becomes -EIO.</summary>
    public static int ToReplyError(Errno errno)
    {
        if (errno == 0) return 0;
        int key = (int)errno;
        if ((uint)key < CacheSize)
        {
            int cached = Cache[key];
            if (cached != 0) return cached;
            return Cache[key] = Convert(errno);
        }
        return Convert(errno);
    }

    private static int Convert(Errno errno)
    {
        int native;
        try { native = NativeConvert.FromErrno(errno); }
        catch (ArgumentException) { native = 0; }
        if (native <= 0)
        {
            if (errno == Errno.EIO) return -5; // cannot recurse: EIO is 5 on every Linux architecture
            return ToReplyError(Errno.EIO);
        }
        return -native;
    }
}
