namespace Cow.Core.Metadata;

/// <summary>Collection <c>inodes</c>: one document per version of an inode.</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Each field is documented with its name in format.md ("Metadata file"); the BSON mapping is <see cref="InodeBson"/>.</remarks>
internal sealed class InodeRecord : VersionedRecord
{
    /// <summary><c>ino</c>: inode number, the same in the live tree and every snapshot.</summary>
    public long Ino;
    /// <summary><c>mode</c>: file type and permission bits (S_IFMT | 07777).</summary>
    public uint Mode;
    /// <summary><c>uid</c>, <c>gid</c>: owner.</summary>
    public uint Uid, Gid;
    /// <summary><c>nlink</c>: number of directory entries naming it (directories: 2 + subdirectories).</summary>
    public uint Nlink;
    /// <summary><c>size</c>: bytes.</summary>
    public long Size;
    /// <summary><c>blocks</c>: file blocks that are mapped (not holes) in this version.</summary>
    public long Blocks;
    /// <summary><c>parent</c>: directories only: inode number of the directory holding it (root: itself).</summary>
    public long Parent;
    /// <summary><c>rdev</c>: device number of character and block special files.</summary>
    public ulong Rdev;
    /// <summary><c>atime_ns</c>, <c>mtime_ns</c>, <c>ctime_ns</c>, <c>btime_ns</c>: times, ns since the epoch.</summary>
    public long AtimeNs, MtimeNs, CtimeNs, BtimeNs;
    /// <summary><c>target</c>: a symbolic link's target (absent otherwise).</summary>
    public string? Target;
    /// <summary><c>xattrs</c>: extended attributes, name → value (absent when none).</summary>
    public Dictionary<string, byte[]>? Xattrs;
    /// <summary><c>next_pos</c>: directories only: the next readdir position to give an entry (starts at 3).</summary>
    public long NextPos;
    /// <summary><c>prealloc</c>: regular files only: the file-block ranges fallocate reserved space for, as
    /// sorted, disjoint, non-adjacent pairs start, end (end exclusive), flattened; null when none.</summary>
    public long[]? Prealloc;
    /// <summary><c>prealloc_blocks</c>: log blocks this inode holds out of the free space for
    /// <see cref="Prealloc"/>: its hole blocks, plus one (the block an overwrite needs before the old one is
    /// freed at commit); 0 exactly when <see cref="Prealloc"/> is null.</summary>
    public long PreallocBlocks;

    public InodeRecord Clone()
    {
        var c = (InodeRecord)MemberwiseClone();
        if (Xattrs != null) c.Xattrs = new Dictionary<string, byte[]>(Xattrs);
        if (Prealloc != null) c.Prealloc = (long[])Prealloc.Clone();
        return c;
    }
}
