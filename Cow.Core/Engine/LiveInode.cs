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
    public readonly EntriesByPosition ByPos = new();
    public void Add(DirentRecord d) { ByName[d.Name] = d; ByPos.Set(d); }
    public void Remove(DirentRecord d) { ByName.Remove(d.Name); ByPos.Remove(d.Pos); }
    public int Count => ByName.Count;
}

/// <summary>A directory's entries in position order (readdir's order): adding, removing and finding where a readdir
/// resumes cost O(log n), so a directory of a million entries emptied one by one costs no more per entry than a small
/// one (a sorted array would move every later entry at each removal). Not thread-safe: guarded as its directory is.</summary>
internal sealed class EntriesByPosition
{
    private static readonly Comparer<DirentRecord> ByPosition = Comparer<DirentRecord>.Create((a, b) => a.Pos.CompareTo(b.Pos));
    private readonly SortedSet<DirentRecord> _set = new(ByPosition);

    public int Count => _set.Count;
    /// <summary>Every entry, by position.</summary>
    public IEnumerable<DirentRecord> Values => _set;

    /// <summary>Adds <paramref name="d"/>, replacing an entry at its position.</summary>
    public void Set(DirentRecord d)
    {
        if (!_set.Add(d)) { _set.Remove(d); _set.Add(d); }
    }

    public void Remove(long pos) => _set.Remove(new DirentRecord { Pos = pos });

    /// <summary>The entries at positions after <paramref name="offset"/>, in order.</summary>
    public IEnumerable<DirentRecord> After(long offset) =>
        offset == long.MaxValue || _set.Count == 0 ? [] : _set.GetViewBetween(new DirentRecord { Pos = offset + 1 }, new DirentRecord { Pos = long.MaxValue });
}
