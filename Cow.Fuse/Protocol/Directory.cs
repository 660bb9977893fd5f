// FUSE kernel protocol 7.45: directory entries (READDIR/READDIRPLUS) and namespace requests
// (MKNOD/MKDIR/RENAME/RENAME2/LINK).
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_dirent</c> without its flexible <c>name[]</c> (24 bytes = FUSE_NAME_OFFSET).
/// Each record is padded to FUSE_DIRENT_ALIGN (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseDirent
{
    public const int Size = 24;
    public ulong Ino;
    /// <summary>off: offset of the NEXT entry (the cookie the kernel sends back in read_in.offset).</summary>
    public ulong Off;
    public uint NameLen;
    /// <summary>type: DT_* (mode &gt;&gt; 12).</summary>
    public uint Type;
}

/// <summary>Layout helpers for fuse_dirent / fuse_direntplus records (FUSE_DIRENT_ALIGN, FUSE_DIRENT_SIZE,
/// FUSE_DIRENTPLUS_SIZE), and writers that append one record to a reply buffer.</summary>
public static class FuseDirentLayout
{
    /// <summary>FUSE_NAME_OFFSET = offsetof(struct fuse_dirent, name).</summary>
    public const int NameOffset = FuseDirent.Size;
    /// <summary>FUSE_NAME_OFFSET_DIRENTPLUS = offsetof(struct fuse_direntplus, dirent.name) = 152.</summary>
    public const int NameOffsetDirentplus = FuseEntryOut.Size + FuseDirent.Size;
    /// <summary>Size of struct fuse_direntplus without the name: fuse_entry_out + fuse_dirent.</summary>
    public const int DirentplusSize = NameOffsetDirentplus;

    /// <summary>FUSE_REC_ALIGN / FUSE_DIRENT_ALIGN: round up to a multiple of 8.</summary>
    public static int Align(int x) => (x + 7) & ~7;

    /// <summary>FUSE_DIRENT_SIZE for a name of <paramref name="nameLength"/> bytes.</summary>
    public static int DirentSize(int nameLength) => Align(NameOffset + nameLength);

    /// <summary>FUSE_DIRENTPLUS_SIZE for a name of <paramref name="nameLength"/> bytes.</summary>
    public static int DirentplusRecordSize(int nameLength) => Align(NameOffsetDirentplus + nameLength);

    /// <summary>Appends one fuse_dirent record (header, name, zero padding) at the start of <paramref name="dst"/>.
    /// Returns false, writing nothing, when the aligned record does not fit.</summary>
    /// <exception cref="ArgumentException">The name is empty.</exception>
    public static bool TryWriteDirent(Span<byte> dst, ulong ino, ulong nextOffset, uint type, ReadOnlySpan<byte> name, out int written)
    {
        if (name.IsEmpty) throw new ArgumentException("A directory entry name cannot be empty.", nameof(name));
        int size = DirentSize(name.Length);
        if (size > dst.Length) { written = 0; return false; }
        var d = new FuseDirent { Ino = ino, Off = nextOffset, NameLen = (uint)name.Length, Type = type };
        MemoryMarshal.Write(dst, in d);
        name.CopyTo(dst[NameOffset..]);
        dst[(NameOffset + name.Length)..size].Clear();
        written = size;
        return true;
    }

    /// <summary>Appends one fuse_direntplus record (fuse_entry_out, fuse_dirent, name, zero padding).
    /// The dirent's ino is taken from <paramref name="entry"/>.Attr.Ino. Returns false, writing nothing,
    /// when the aligned record does not fit.</summary>
    /// <exception cref="ArgumentException">The name is empty.</exception>
    public static bool TryWriteDirentplus(Span<byte> dst, in FuseEntryOut entry, ulong nextOffset, uint type, ReadOnlySpan<byte> name, out int written)
    {
        if (name.IsEmpty) throw new ArgumentException("A directory entry name cannot be empty.", nameof(name));
        int size = DirentplusRecordSize(name.Length);
        if (size > dst.Length) { written = 0; return false; }
        MemoryMarshal.Write(dst, in entry);
        var d = new FuseDirent { Ino = entry.Attr.Ino, Off = nextOffset, NameLen = (uint)name.Length, Type = type };
        MemoryMarshal.Write(dst[FuseEntryOut.Size..], in d);
        name.CopyTo(dst[NameOffsetDirentplus..]);
        dst[(NameOffsetDirentplus + name.Length)..size].Clear();
        written = size;
        return true;
    }
}

/// <summary>Kernel <c>struct fuse_mknod_in</c> (16 bytes); the name follows.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseMknodIn
{
    public const int Size = 16;
    public uint Mode;
    public uint Rdev;
    public uint Umask;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_mkdir_in</c> (8 bytes); the name follows.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseMkdirIn
{
    public const int Size = 8;
    public uint Mode;
    public uint Umask;
}

/// <summary>Kernel <c>struct fuse_rename_in</c> (8 bytes); old and new names follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseRenameIn
{
    public const int Size = 8;
    public ulong NewDir;
}

/// <summary>Kernel <c>struct fuse_rename2_in</c> (16 bytes); old and new names follow.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseRename2In
{
    public const int Size = 16;
    public ulong NewDir;
    /// <summary>flags: RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT.</summary>
    public uint Flags;
    public uint Padding;
}

/// <summary>Kernel <c>struct fuse_link_in</c> (8 bytes); the new name follows.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseLinkIn
{
    public const int Size = 8;
    public ulong OldNodeId;
}
