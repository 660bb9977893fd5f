using System.Runtime.InteropServices;
using Mono.Unix.Native;

namespace Cow.Core.Import;

/// <summary>
/// One node of a host tree to import, as lstat(2) saw it when the tree was scanned: never followed through a
/// symlink. Immutable once scanned.
/// </summary>
public sealed class SourceNode
{
    /// <summary>Host path.</summary>
    public required string Path { get; init; }
    /// <summary>Name in the pool; null for a node that is applied to the directory the import goes into (its
    /// mode, owner, times and xattrs become that directory's).</summary>
    public string? Name { get; init; }
    /// <summary>Index of the parent node in <see cref="ImportPlan.Nodes"/>, or -1: the directory the import goes into.</summary>
    public int Parent { get; init; }
    /// <summary>st_mode: file type and all 12 permission bits.</summary>
    public uint Mode { get; init; }
    public uint Uid { get; init; }
    public uint Gid { get; init; }
    /// <summary>Device number of a character or block device, in the kernel's new_encode_dev form (what FUSE carries).</summary>
    public ulong Rdev { get; init; }
    public long Size { get; init; }
    public long AtimeNs { get; init; }
    public long MtimeNs { get; init; }
    /// <summary>Symlink target (readlink), for symlinks.</summary>
    public string? Target { get; init; }
    /// <summary>Index of an earlier node that is the same host inode (a hard link), or -1.</summary>
    public int LinkOf { get; init; } = -1;
    /// <summary>Data ranges of a regular file (SEEK_DATA/SEEK_HOLE), sorted; the rest are holes.</summary>
    public IReadOnlyList<(long Offset, long Length)> DataRanges { get; init; } = [];

    public uint Type => Mode & 0xF000;
    public bool IsDirectory => Type == 0x4000;
    public bool IsRegular => Type == 0x8000;
}

/// <summary>
/// What an import will make, found by scanning the host tree(s) before anything is written: every node with its
/// metadata (lstat, never following symlinks), hard links found by (st_dev, st_ino), each regular file's data
/// ranges (SEEK_DATA/SEEK_HOLE) and the data blocks they need. Scanning opens every regular file and lists every
/// directory, so an unreadable one is found here. Immutable after <see cref="Scan"/>.
/// </summary>
public sealed class ImportPlan
{
    /// <summary>Nodes in pre-order (a directory before its children, children by ordinal name).</summary>
    public IReadOnlyList<SourceNode> Nodes => _nodes;
    /// <summary>Pool blocks the data ranges cover: what the base device must hold at most (all-zero blocks
    /// inside them become holes and need less).</summary>
    public long DataBlocks { get; private set; }
    public int BlockSize { get; }
    public long Files { get; private set; }
    public long Directories { get; private set; }
    public long Others { get; private set; }

    private readonly List<SourceNode> _nodes = new();
    private readonly Dictionary<(ulong Dev, ulong Ino), int> _inodes = new();

    private ImportPlan(int blockSize) { BlockSize = blockSize; }

    /// <summary>Scans <paramref name="sources"/>: each (host path, name in the pool; null = the source is a
    /// directory whose contents, mode, owner, times and xattrs go into the target directory itself).
    /// Throws <see cref="PoolException"/> naming the path for a source that is missing or cannot be read.</summary>
    public static ImportPlan Scan(IEnumerable<(string Path, string? Name)> sources, int blockSize)
    {
        var plan = new ImportPlan(blockSize);
        foreach (var (path, name) in sources)
        {
            // The directory given as the root may be named through a symlink (as cp -H follows command-line links);
            // anything under it, and a source imported by name, is taken as it is.
            var at = path;
            if (name == null)
            {
                try { at = new DirectoryInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? path; }
                catch (IOException e) { throw Problem(path, e.Message); }
            }
            plan.Add(at, name, -1);
        }
        return plan;
    }

    private static PoolException Problem(string path, string what) => new($"import source {path}: {what}");

    private static string LastError() { var e = Stdlib.GetLastError(); return $"{Syscall.strerror(e)} ({e})"; }

    private void Add(string path, string? name, int parent)
    {
        if (Syscall.lstat(path, out var st) != 0) throw Problem(path, LastError());
        uint mode = (uint)st.st_mode;
        uint type = mode & 0xF000;
        if (name == null && type != 0x4000) throw Problem(path, "only a directory can be imported as the pool's root");
        int index = _nodes.Count;
        int linkOf = -1;
        if (type != 0x4000 && st.st_nlink > 1)
        {
            if (_inodes.TryGetValue((st.st_dev, st.st_ino), out int first)) linkOf = first;
            else _inodes[(st.st_dev, st.st_ino)] = index;
        }
        string? target = null;
        IReadOnlyList<(long, long)> ranges = [];
        if (linkOf < 0 && type == 0xA000)
        {
            try { target = new FileInfo(path).LinkTarget ?? throw Problem(path, "not a symlink any more"); }
            catch (IOException e) { throw Problem(path, e.Message); }
        }
        if (linkOf < 0 && type == 0x8000) ranges = ScanData(path, st.st_size);
        _nodes.Add(new SourceNode
        {
            Path = path, Name = name, Parent = parent, Mode = mode, Uid = st.st_uid, Gid = st.st_gid,
            Rdev = type is 0x2000 or 0x6000 ? NewEncodeDev(st.st_rdev) : 0, Size = type == 0x8000 ? st.st_size : 0,
            AtimeNs = st.st_atime * 1_000_000_000L + st.st_atime_nsec, MtimeNs = st.st_mtime * 1_000_000_000L + st.st_mtime_nsec,
            Target = target, LinkOf = linkOf, DataRanges = ranges,
        });
        if (linkOf >= 0) return;
        switch (type)
        {
            case 0x4000:
                Directories++;
                string[] children;
                try { children = Directory.GetFileSystemEntries(path); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw Problem(path, $"cannot list the directory: {e.Message}"); }
                Array.Sort(children, StringComparer.Ordinal);
                foreach (var child in children) Add(child, System.IO.Path.GetFileName(child), index);
                break;
            case 0x8000:
                Files++;
                long last = -1;   // pool blocks covered, counting a block two ranges share once
                foreach (var (off, len) in ranges)
                {
                    long a = off / BlockSize, b = (off + len - 1) / BlockSize;
                    if (a <= last) a = last + 1;
                    if (b >= a) DataBlocks += b - a + 1;
                    last = Math.Max(last, b);
                }
                break;
            default: Others++; break;
        }
    }

    /// <summary>glibc's dev_t (major/minor split over 64 bits) to the kernel's 32-bit new_encode_dev form.</summary>
    private static ulong NewEncodeDev(ulong d)
    {
        ulong major = ((d >> 8) & 0xfff) | ((d >> 32) & ~0xfffUL);
        ulong minor = (d & 0xff) | ((d >> 12) & ~0xffUL);
        return (minor & 0xff) | (major << 8) | ((minor & ~0xffUL) << 12);
    }

    [DllImport("libc", SetLastError = true)]
    private static extern long lseek(int fd, long offset, int whence);

    private const int SEEK_DATA = 3, SEEK_HOLE = 4, ENXIO = 6;

    /// <summary>The data ranges of a regular file of <paramref name="size"/> bytes (opens it: an unreadable file
    /// is refused here). A file system without SEEK_DATA counts as all data.</summary>
    private static List<(long, long)> ScanData(string path, long size)
    {
        using var h = OpenForImport(path);
        var ranges = new List<(long, long)>();
        if (size == 0) return ranges;
        int fd = (int)h.DangerousGetHandle();
        long pos = 0;
        while (pos < size)
        {
            long data = lseek(fd, pos, SEEK_DATA);
            if (data < 0)
            {
                int err = Marshal.GetLastPInvokeError();
                if (err == ENXIO) break;   // no data after pos
                return [(0, size)];        // SEEK_DATA not supported: all data
            }
            if (data >= size) break;
            long hole = lseek(fd, data, SEEK_HOLE);
            if (hole < 0 || hole > size) hole = size;
            ranges.Add((data, hole - data));
            pos = hole;
        }
        return ranges;
    }

    /// <summary>Opens a source file for reading; a refusal is a <see cref="PoolException"/> naming the path.</summary>
    internal static Microsoft.Win32.SafeHandles.SafeFileHandle OpenForImport(string path)
    {
        try { return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite); }
        catch (UnauthorizedAccessException) { throw Problem(path, "cannot be read: permission denied"); }
        catch (IOException e) { throw Problem(path, $"cannot be read: {e.Message}"); }
    }
}
