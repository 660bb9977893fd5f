using Mono.Unix.Native;

namespace Cow.Core.FileSystem;

/// <summary>Attributes of an inode, as getattr reports them. Times are ns since the Unix epoch.</summary>
public readonly record struct InodeAttr(long Ino, uint Mode, uint Nlink, uint Uid, uint Gid, ulong Rdev, long Size,
    long Blocks512, int BlockSize, long AtimeNs, long MtimeNs, long CtimeNs, long BtimeNs)
{
    public bool IsDirectory => (Mode & 0xF000) == 0x4000;
    public bool IsRegular => (Mode & 0xF000) == 0x8000;
    public bool IsSymlink => (Mode & 0xF000) == 0xA000;
}

/// <summary>One readdir entry; <see cref="NextOffset"/> is the offset to pass to continue after it.</summary>
public readonly record struct DirEntryInfo(string Name, long Ino, uint Type, long NextOffset);

/// <summary>What setattr changes: each field null means "leave alone". <see cref="AtimeNow"/>/<see cref="MtimeNow"/>
/// mean "set to the current time" (UTIME_NOW).</summary>
public sealed record SetAttrRequest
{
    public uint? Mode { get; init; }
    public uint? Uid { get; init; }
    public uint? Gid { get; init; }
    public long? Size { get; init; }
    public long? AtimeNs { get; init; }
    public long? MtimeNs { get; init; }
    /// <summary>An explicit change time (the kernel's own, which it sends with its writeback cache); null = now.</summary>
    public long? CtimeNs { get; init; }
    public bool AtimeNow { get; init; }
    public bool MtimeNow { get; init; }
}

/// <summary>statfs figures, in blocks of <see cref="BlockSize"/>: <see cref="Blocks"/> is what the pool can hold
/// (used + free for new writes), <see cref="FreeBlocks"/> what new writes can use (see Engine.StatFs).</summary>
public readonly record struct FsStats(int BlockSize, long Blocks, long FreeBlocks, long AvailableBlocks, long Files, long FreeFiles, int NameMax)
{
    /// <summary>Blocks data occupies: <see cref="Blocks"/> − <see cref="FreeBlocks"/>.</summary>
    public long UsedBlocks => Blocks - FreeBlocks;
}

/// <summary>renameat2 flags.</summary>
[Flags]
public enum RenameFlags : uint { None = 0, NoReplace = 1, Exchange = 2, Whiteout = 4 }

/// <summary>fallocate modes (FALLOC_FL_*).</summary>
[Flags]
public enum FallocateMode : int { None = 0, KeepSize = 1, PunchHole = 2, CollapseRange = 8, ZeroRange = 0x10, InsertRange = 0x20, UnshareRange = 0x40 }

/// <summary>setxattr flags: XATTR_CREATE, XATTR_REPLACE, and Cow's own <see cref="AclKillSgid"/>: the change also
/// clears S_ISGID (FUSE_SETXATTR_ACL_KILL_SGID: the kernel asks for it when it sets an ACL for a caller neither in
/// the file's group nor with CAP_FSETID, as posix_acl_update_mode does).</summary>
[Flags]
public enum XattrSetFlags : int { None = 0, Create = 1, Replace = 2, AclKillSgid = 1 << 16 }

/// <summary>lseek whence values the engine answers itself.</summary>
public enum SeekWhence { Data = 3, Hole = 4 }

/// <summary>Per-snapshot space report: bytes the snapshot sees, and bytes that only it holds (freed if deleted).</summary>
/// <summary>Space of one pool device in blocks of the pool's block size (cow df): <paramref name="DataBlocks"/>
/// excludes the segment headers; <paramref name="UsedBlocks"/> are referenced by some view, reserved by a write in
/// flight, or freed by a commit not yet durable; <paramref name="FreeBlocks"/> = DataBlocks − UsedBlocks.
/// <paramref name="TakesNewWrites"/>: whether new writes allocate on it (every data device: the log first, format.md §1).</summary>
public readonly record struct DeviceUsage(uint Cookie, long DataBlocks, long UsedBlocks, long FreeBlocks, bool TakesNewWrites);

public readonly record struct SnapshotSpace(string Name, long Generation, long CreatedNs, long ReferencedBytes, long ExclusiveBytes);

/// <summary>What changed at a path between two trees (<see cref="Engine.Engine.DiffSnapshots"/>).</summary>
public enum ChangeKind
{
    /// <summary>The path exists only in the newer tree.</summary>
    Added,
    /// <summary>The path exists only in the older tree.</summary>
    Removed,
    /// <summary>The same inode, renamed or moved: <see cref="SnapshotChange.OldPath"/> is where it was.</summary>
    Renamed,
    /// <summary>The same inode with other data (size, extents, symlink target).</summary>
    ModifiedData,
    /// <summary>The same inode with other mode, owner, times, device number or xattrs (and the same data).</summary>
    ModifiedMetadata,
    /// <summary>The path names a different inode of another file type.</summary>
    TypeChanged,
}

/// <summary>Bytes [<see cref="Offset"/>, +<see cref="Length"/>) of a file that a diff with ranges reports as changed:
/// <see cref="Data"/>, the newer version maps them (data written or changed); else they became a hole.</summary>
public readonly record struct ByteRange(long Offset, long Length, bool Data)
{
    public long End => Offset + Length;
}

/// <summary>One change of a diff. <see cref="OldPath"/> is set for <see cref="ChangeKind.Renamed"/>. Immutable.
/// <para>A diff asked for ranges sets <see cref="SizeBefore"/>, <see cref="SizeAfter"/> and <see cref="Ranges"/> on the
/// <see cref="ChangeKind.ModifiedData"/>, <see cref="ChangeKind.Added"/> and <see cref="ChangeKind.Removed"/> rows of
/// regular files (a size is null on the side the path is absent); every other row leaves them null. The ranges are the
/// blocks whose mapping differs, in bytes, ascending, maximal per kind, clamped to the larger size; a size change
/// over blocks neither version maps (a truncate that extends with a hole) is told by the sizes alone. Equality
/// compares the ranges element by element.</para></summary>
public readonly record struct SnapshotChange(string Path, ChangeKind Kind, long Ino, string? OldPath = null)
{
    public long? SizeBefore { get; init; }
    public long? SizeAfter { get; init; }
    public IReadOnlyList<ByteRange>? Ranges { get; init; }

    public bool Equals(SnapshotChange other) =>
        Path == other.Path && Kind == other.Kind && Ino == other.Ino && OldPath == other.OldPath
        && SizeBefore == other.SizeBefore && SizeAfter == other.SizeAfter
        && (ReferenceEquals(Ranges, other.Ranges) || (Ranges != null && other.Ranges != null && Ranges.SequenceEqual(other.Ranges)));

    public override int GetHashCode() => HashCode.Combine(Path, Kind, Ino, OldPath, SizeBefore, SizeAfter, Ranges?.Count);

    private bool PrintMembers(System.Text.StringBuilder b)
    {
        b.Append($"Path = {Path}, Kind = {Kind}, Ino = {Ino}, OldPath = {OldPath}");
        if (SizeBefore != null || SizeAfter != null || Ranges != null)
            b.Append($", SizeBefore = {SizeBefore}, SizeAfter = {SizeAfter}, Ranges = [{(Ranges == null ? "" : string.Join(", ", Ranges))}]");
        return true;
    }
}
