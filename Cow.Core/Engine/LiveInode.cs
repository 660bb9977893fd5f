using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>A live inode and what the engine caches for it. Guarded by the engine's <c>_lock</c> (held in <see cref="LiveTreeCache"/>), except
/// <see cref="WriteGate"/>, which serialises the data writes of one file (read-modify-write of shared
/// blocks must not interleave).</summary>
internal sealed class LiveInode
{
    public InodeRecord Rec;
    public long Ino => Rec.Ino;
    public bool Deleted;
    public int OpenCount;
    /// <summary>Made by O_TMPFILE and not named yet: <see cref="Engine.Link"/> may give its first name although nlink is 0.</summary>
    public bool Linkable;
    public int Reservations;
    /// <summary>Operations between their lookup and their end: a pinned inode is never evicted.</summary>
    public int Pins;
    public long Touched;
    public DirState? Dir;
    public readonly Dictionary<long, ChunkRecord?> Chunks = new();
    public bool AllChunksLoaded;
    public readonly SemaphoreSlim WriteGate = new(1, 1);
    public LiveInode(InodeRecord rec) { Rec = rec; }
}

/// <summary>A directory's entries in memory, by name and by readdir position. Guarded by the owner's lock.</summary>
internal sealed class DirState
{
    public readonly Dictionary<string, DirentRecord> ByName = new(StringComparer.Ordinal);
    public readonly SortedList<long, DirentRecord> ByPos = new();
    public void Add(DirentRecord d) { ByName[d.Name] = d; ByPos[d.Pos] = d; }
    public void Remove(DirentRecord d) { ByName.Remove(d.Name); ByPos.Remove(d.Pos); }
    public int Count => ByName.Count;
}
