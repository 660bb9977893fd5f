using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

// Access times on read (AtimePolicy). An update is an ordinary metadata change of the inode: it rides the
// next group commit (no commit or flush of its own), and, like any change, makes a new version of the inode
// record only when a snapshot sees the current one. The policy decides, before anything is touched, whether
// there is an update at all: with relatime a file read over and over changes nothing after its first read.
public sealed partial class Engine
{
    /// <summary>relatime refreshes an atime at least this old (24 hours, as Linux).</summary>
    public const long RelatimeIntervalNs = 24L * 3600 * 1_000_000_000;

    /// <summary>How far an mtime or ctime may trail the change it records: with the writeback cache the kernel
    /// sets them from its coarse clock (one tick, 10 ms at HZ=100, behind), while atime comes from the server's.
    /// Without this, a file created (atime = the server's now) and written at once would look read since.</summary>
    public const long CoarseClockSlackNs = 10_000_000;

    /// <summary>relatime_need_update of Linux's fs/inode.c: atime not after mtime, not after ctime (allowing
    /// <see cref="CoarseClockSlackNs"/>), or a day old.</summary>
    internal static bool RelatimeNeedsUpdate(long atimeNs, long mtimeNs, long ctimeNs, long nowNs) =>
        mtimeNs + CoarseClockSlackNs >= atimeNs || ctimeNs + CoarseClockSlackNs >= atimeNs || nowNs - atimeNs >= RelatimeIntervalNs;

    /// <summary>
    /// A read (or, for a directory, a listing) of live inode <paramref name="ino"/> happened: sets its atime
    /// to now when <paramref name="policy"/> says so. <paramref name="updated"/> tells whether it did (the
    /// caller then lets the group commit know). ENOENT for an inode that is gone; EIO after a failure.
    /// </summary>
    internal Errno NoteAccess(long ino, AtimePolicy policy, out bool updated)
    {
        updated = false;
        if (policy == AtimePolicy.Noatime) return 0;
        lock (_lock)
        {
            if (Failed) return Errno.EIO;
            var li = Live(ino);
            if (li == null) return Errno.ENOENT;
            long now = NowNs();
            var r = li.Rec;
            if (r.AtimeNs == now) return 0;
            if (policy == AtimePolicy.Relatime && !RelatimeNeedsUpdate(r.AtimeNs, r.MtimeNs, r.CtimeNs, now)) return 0;
            _versions.MutableInode(li).AtimeNs = now;
            updated = true;
            return 0;
        }
    }
}
