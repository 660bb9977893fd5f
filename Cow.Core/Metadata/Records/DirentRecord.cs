namespace Cow.Core.Metadata;

/// <summary>Collection <c>dirents</c>: one document per version of a directory entry.</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Each field is documented with its name in format.md ("Metadata file"); the BSON mapping is <see cref="DirentBson"/>.</remarks>
internal sealed class DirentRecord : VersionedRecord
{
    /// <summary><c>dir</c>: inode number of the directory holding the entry.</summary>
    public long Dir;
    /// <summary><c>name</c>: the entry's name, 1..255 bytes of UTF-8, no '/' or NUL, not "." or "..".</summary>
    public string Name = "";
    /// <summary><c>pos</c>: readdir position, unique and increasing within the directory, never reused.</summary>
    public long Pos;
    /// <summary><c>child</c>: inode number named by the entry.</summary>
    public long Child;
    /// <summary><c>type</c>: the child's file type (mode &gt;&gt; 12), as readdir reports it.</summary>
    public uint Type;

    public DirentRecord Clone() => (DirentRecord)MemberwiseClone();
}
