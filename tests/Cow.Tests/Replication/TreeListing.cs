using System.Security.Cryptography;
using System.Text;
using Cow.Core.FileSystem;
using Xunit;

namespace Cow.Tests.Replication;

/// <summary>Every path of a tree with everything a replica must keep: inode number, mode, owner, link count, size,
/// allocated blocks, the four times, device number, symlink target, xattrs, readdir order and a digest of the data
/// (holes read as zeros; the allocated blocks tell holes from written zeros). One line per path, sorted.</summary>
public static class TreeListing
{
    public static List<string> Of(FileSystemView v)
    {
        var lines = new List<string>();
        Walk(v, 1, "", lines);
        lines.Sort(StringComparer.Ordinal);
        return lines;
    }

    private static void Walk(FileSystemView v, long ino, string path, List<string> lines)
    {
        Assert.Equal(0, (int)v.GetAttr(ino, out var a));
        var sb = new StringBuilder();
        sb.Append($"{(path == "" ? "/" : path)} ino={a.Ino} mode={Convert.ToString(a.Mode, 8)} nlink={a.Nlink} uid={a.Uid} gid={a.Gid} size={a.Size} blocks={a.Blocks512} ");
        sb.Append($"atime={a.AtimeNs} mtime={a.MtimeNs} ctime={a.CtimeNs} btime={a.BtimeNs} rdev={a.Rdev}");
        Assert.Equal(0, (int)v.ListXattr(ino, out var names));
        foreach (var n in names.Order(StringComparer.Ordinal))
        {
            Assert.Equal(0, (int)v.GetXattr(ino, n, out var val));
            sb.Append($" x:{n}={Convert.ToHexString(val)}");
        }
        if (a.IsSymlink) { Assert.Equal(0, (int)v.Readlink(ino, out var t)); sb.Append($" -> {t}"); }
        if (a.IsRegular)
        {
            var buf = new byte[a.Size];
            Assert.Equal(0, (int)v.Read(ino, 0, buf, out int n));
            Assert.Equal(a.Size, n);
            sb.Append($" sha={Convert.ToHexString(SHA256.HashData(buf))[..16]}");
        }
        if (a.IsDirectory)
        {
            var entries = new List<DirEntryInfo>();
            long off = 0;
            while (true)
            {
                var batch = new List<DirEntryInfo>();
                Assert.Equal(0, (int)v.ReadDir(ino, off, 256, batch));
                if (batch.Count == 0) break;
                entries.AddRange(batch);
                off = batch[^1].NextOffset;
            }
            var named = entries.Where(e => e.Name is not ("." or ".." or ".snapshots")).ToList();
            sb.Append(" entries=" + string.Join(",", named.Select(e => e.Name)));
            lines.Add(sb.ToString());
            foreach (var e in named) Walk(v, e.Ino, path + "/" + e.Name, lines);
            return;
        }
        lines.Add(sb.ToString());
    }
}
