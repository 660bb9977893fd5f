namespace Cow.Core.Metadata;

/// <summary>Collection <c>snapshots</c>, <c>_id</c> = the snapshot's generation. (Not the name: LiteDB
/// compares string keys without regard to case, and "A" and "a" are two snapshots.)</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Each field is documented with its name in format.md ("Metadata file"); the BSON mapping is <see cref="SnapshotBson"/>.</remarks>
internal sealed class SnapshotRecord
{
    /// <summary><c>name</c>: the snapshot's name, unique (compared ordinally, by the engine).</summary>
    public string Name = "";
    /// <summary><c>_id</c>: the generation this snapshot sees (records with birth &lt;= gen &lt; death).</summary>
    public long Gen;
    /// <summary><c>created_ns</c>: when it was taken.</summary>
    public long CreatedNs;
    /// <summary><c>commit_seq</c>: the metadata commit that made it durable.</summary>
    public long CommitSeq;
    /// <summary><c>holds</c>: hold tags, each keeping the snapshot from being deleted (absent or empty: none;
    /// absent in pools made before holds). Kept sorted ordinally.</summary>
    public List<string> Holds = new();
    /// <summary><c>props</c>: user properties, name → value, stored as an array of <c>{k, v}</c> documents
    /// (absent or empty: none; absent in pools made before properties).</summary>
    public SortedDictionary<string, string> Properties = new(StringComparer.Ordinal);
    /// <summary><c>source_pool</c>, <c>source_gen</c>: a received snapshot's identity on the pool that took it (format.md
    /// 10); absent (empty, 0) for a snapshot taken here, whose identity is this pool's uuid and its generation.</summary>
    public Guid SourcePool;
    public long SourceGen;

    /// <summary>A deep copy (callers outside the engine get copies, never the engine's records).</summary>
    public SnapshotRecord Copy() => new()
    {
        Name = Name, Gen = Gen, CreatedNs = CreatedNs, CommitSeq = CommitSeq, Holds = new List<string>(Holds),
        Properties = new SortedDictionary<string, string>(Properties, StringComparer.Ordinal),
        SourcePool = SourcePool, SourceGen = SourceGen,
    };
}
