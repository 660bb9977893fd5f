using System.Text;
using Cow.Core.FileSystem;
using Cow.Core.Metadata;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    public const long RootIno = 1;
    private const uint S_IFMT = 0xF000, S_IFDIR = 0x4000;
    /// <summary>Largest file size: 2^50 bytes (1 PiB), s_maxbytes of a Cow mount.</summary>
    public const long MaxFileSize = 1L << 50;
    /// <summary>Most properties one snapshot carries.</summary>
    public const int MaxSnapshotProperties = 64;
    /// <summary>Longest snapshot property value, in UTF-8 bytes.</summary>
    public const int MaxSnapshotPropertyValue = 4096;

    /// <summary>relatime refreshes an atime at least this old (24 hours, as Linux).</summary>
    public const long RelatimeIntervalNs = 24L * 3600 * 1_000_000_000;

    /// <summary>How far an mtime or ctime may trail the change it records: with the writeback cache the kernel
    /// sets them from its coarse clock (one tick, 10 ms at HZ=100, behind), while atime comes from the server's.
    /// Without this, a file created (atime = the server's now) and written at once would look read since.</summary>
    public const long CoarseClockSlackNs = 10_000_000;

    internal static long NowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;
    internal const int NameMax = 255;

    internal static bool IsDir(InodeRecord r) => (r.Mode & S_IFMT) == S_IFDIR;

    internal InodeAttr Attr(InodeRecord r) => Attr(r, BlockSize);

    internal static InodeAttr Attr(InodeRecord r, int blockSize) => new(r.Ino, r.Mode, r.Nlink, r.Uid, r.Gid, r.Rdev, r.Size,
        r.Blocks * (blockSize / 512), blockSize, r.AtimeNs, r.MtimeNs, r.CtimeNs, r.BtimeNs);

    /// <summary>Checks a directory entry name: EINVAL for empty, ".", "..", '/' or NUL; ENAMETOOLONG past 255 bytes.</summary>
    internal static Errno CheckName(string name)
    {
        if (name.Length == 0 || name == "." || name == ".." || name.Contains('/') || name.Contains('\0')) return Errno.EINVAL;
        return Encoding.UTF8.GetByteCount(name) > NameMax ? Errno.ENAMETOOLONG : 0;
    }
}
