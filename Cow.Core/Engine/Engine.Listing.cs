using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

// readdir. Entries are listed by position: each directory gives every entry it gains (a create, a link, a
// rename into it or within it) the next number of its NextPos counter, so positions only grow and an entry
// keeps its position until it is removed. A pass that lists only positions below the directory's end as it
// was when the pass began (what btrfs does with its dir_index since 6.5) therefore never returns an entry
// twice, whatever renames run meanwhile: a renamed entry's new position is past that end.
public sealed partial class Engine
{
    /// <summary>readdir: entries after <paramref name="offset"/> and before position <paramref name="before"/>
    /// in position order, at most <paramref name="max"/>; "." and ".." come first at offsets 1 and 2 (a removed
    /// directory still open lists them and nothing else). Offsets are stable: an entry keeps its position until
    /// it is removed.</summary>
    internal Errno ReadDir(ITreeReader tree, long ino, long offset, int max, List<DirEntryInfo> into, long before = long.MaxValue)
    {
        lock (_lock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (!IsDir(r)) return Errno.ENOTDIR;
            if (offset < 1 && into.Count < max) into.Add(new DirEntryInfo(".", ino, S_IFDIR >> 12, 1));
            if (offset < 2 && into.Count < max) into.Add(new DirEntryInfo("..", r.Parent, S_IFDIR >> 12, 2));
            var byPos = tree.Dir(ino)!.ByPos;
            int lo = 0, hi = byPos.Count - 1;
            var keys = byPos.Keys;
            while (lo <= hi) { int mid = (lo + hi) >> 1; if (keys[mid] <= offset) lo = mid + 1; else hi = mid - 1; }
            for (int i = lo; i < byPos.Count && into.Count < max; i++)
            {
                var d = byPos.Values[i];
                if (d.Pos >= before) break;
                into.Add(new DirEntryInfo(d.Name, d.Child, d.Type, d.Pos));
            }
            return 0;
        }
    }

    /// <summary>The position the next entry of directory <paramref name="ino"/> will get: a readdir pass that
    /// stops before it lists each entry present throughout the pass exactly once and no entry twice.</summary>
    internal Errno DirEnd(ITreeReader tree, long ino, out long end)
    {
        end = 0;
        lock (_lock)
        {
            var r = tree.Inode(ino);
            if (r == null) return Errno.ENOENT;
            if (!IsDir(r)) return Errno.ENOTDIR;
            end = r.NextPos;
            return 0;
        }
    }
}
