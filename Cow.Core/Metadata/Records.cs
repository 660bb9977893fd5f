using System.Buffers.Binary;
using Cow.Core.Format;
using LiteDB;

namespace Cow.Core.Metadata;

// Every field below is documented where it is declared with its name exactly as in format.md
// ("Metadata file"). BSON field names are the format.md names. Records are plain mutable data
// owned by whoever holds them: the engine guards live ones with its lock (see Engine).

/// <summary>Collection <c>pool</c>, the single document with <c>_id</c> = 1.</summary>
public sealed class PoolRecord
{
    /// <summary><c>pool_uuid</c>: equals <c>pool_uuid</c> in every device superblock.</summary>
    public Guid PoolUuid;
    /// <summary><c>format_version</c>: the format of this metadata file (1).</summary>
    public int FormatVersion = (int)FormatConstants.FormatVersion;
    /// <summary><c>block_size</c>: bytes per block, as in every superblock.</summary>
    public int BlockSize;
    /// <summary><c>live_gen</c>: generation of the live tree; every snapshot's gen is smaller.</summary>
    public long LiveGen = 1;
    /// <summary><c>next_ino</c>: next inode number to hand out (root is 1).</summary>
    public long NextIno = 2;
    /// <summary><c>next_rid</c>: next record id (<c>_id</c> of inodes, dirents, chunks).</summary>
    public long NextRid = 1;
    /// <summary><c>commit_seq</c>: number of metadata commits so far.</summary>
    public long CommitSeq;
    /// <summary><c>segment_seq</c>: sequence number given to the next segment header.</summary>
    public long SegmentSeq = 1;
    /// <summary><c>log_cursor</c>: log device block where the allocator resumes.</summary>
    public long LogCursor;
    /// <summary><c>created_ns</c>: pool creation time.</summary>
    public long CreatedNs;
    /// <summary><c>label</c>: the pool's label.</summary>
    public string Label = "";

    public BsonDocument ToBson() => new()
    {
        ["_id"] = 1, ["pool_uuid"] = PoolUuid, ["format_version"] = FormatVersion, ["block_size"] = BlockSize,
        ["live_gen"] = LiveGen, ["next_ino"] = NextIno, ["next_rid"] = NextRid, ["commit_seq"] = CommitSeq,
        ["segment_seq"] = SegmentSeq, ["log_cursor"] = LogCursor, ["created_ns"] = CreatedNs, ["label"] = Label,
    };

    public static PoolRecord FromBson(BsonDocument d) => new()
    {
        PoolUuid = d["pool_uuid"].AsGuid, FormatVersion = d["format_version"].AsInt32, BlockSize = d["block_size"].AsInt32,
        LiveGen = d["live_gen"].AsInt64, NextIno = d["next_ino"].AsInt64, NextRid = d["next_rid"].AsInt64,
        CommitSeq = d["commit_seq"].AsInt64, SegmentSeq = d["segment_seq"].AsInt64, LogCursor = d["log_cursor"].AsInt64,
        CreatedNs = d["created_ns"].AsInt64, Label = d["label"].AsString,
    };
}

/// <summary>Collection <c>devices</c>: the device table, <c>_id</c> = device cookie.</summary>
public sealed class DeviceRecord
{
    /// <summary><c>_id</c> / <c>device_cookie</c>: 1 base, 2 log.</summary>
    public uint Cookie;
    /// <summary><c>device_uuid</c>: equals the superblock's <c>device_uuid</c>.</summary>
    public Guid DeviceUuid;
    /// <summary><c>role</c>: as in the superblock.</summary>
    public DeviceRole Role;
    /// <summary><c>path</c>: where to find the device; relative paths are relative to the pool folder.</summary>
    public string Path = "";
    /// <summary><c>device_size</c>: bytes formatted.</summary>
    public long DeviceSize;

    public BsonDocument ToBson() => new()
    {
        ["_id"] = (int)Cookie, ["device_uuid"] = DeviceUuid, ["role"] = (int)Role, ["path"] = Path, ["device_size"] = DeviceSize,
    };

    public static DeviceRecord FromBson(BsonDocument d) => new()
    {
        Cookie = (uint)d["_id"].AsInt32, DeviceUuid = d["device_uuid"].AsGuid, Role = (DeviceRole)d["role"].AsInt32,
        Path = d["path"].AsString, DeviceSize = d["device_size"].AsInt64,
    };
}

/// <summary>Collection <c>snapshots</c>, <c>_id</c> = the snapshot's generation. (Not the name: LiteDB
/// compares string keys without regard to case, and "A" and "a" are two snapshots.)</summary>
public sealed class SnapshotRecord
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

    /// <summary>A deep copy (callers outside the engine get copies, never the engine's records).</summary>
    public SnapshotRecord Copy() => new()
    {
        Name = Name, Gen = Gen, CreatedNs = CreatedNs, CommitSeq = CommitSeq, Holds = new List<string>(Holds),
        Properties = new SortedDictionary<string, string>(Properties, StringComparer.Ordinal),
    };

    public BsonDocument ToBson()
    {
        var d = new BsonDocument { ["_id"] = Gen, ["name"] = Name, ["created_ns"] = CreatedNs, ["commit_seq"] = CommitSeq };
        if (Holds.Count > 0) d["holds"] = new BsonArray(Holds.Select(h => new BsonValue(h)));
        if (Properties.Count > 0)
        {
            // An array of {k, v} pairs, not a document: LiteDB compares document keys without regard to case.
            d["props"] = new BsonArray(Properties.Select(kv => (BsonValue)new BsonDocument { ["k"] = kv.Key, ["v"] = kv.Value }));
        }
        return d;
    }

    public static SnapshotRecord FromBson(BsonDocument d)
    {
        var r = new SnapshotRecord { Gen = d["_id"].AsInt64, Name = d["name"].AsString, CreatedNs = d["created_ns"].AsInt64, CommitSeq = d["commit_seq"].AsInt64 };
        if (d.TryGetValue("holds", out var h) && h.IsArray)
            foreach (var t in h.AsArray) r.Holds.Add(t.AsString);
        r.Holds.Sort(StringComparer.Ordinal);
        if (d.TryGetValue("props", out var p) && p.IsArray)
            foreach (var kv in p.AsArray) r.Properties[kv["k"].AsString] = kv["v"].AsString;
        return r;
    }
}

/// <summary>Fields shared by every versioned record (inodes, dirents, chunks).</summary>
public abstract class VersionedRecord
{
    /// <summary><c>_id</c>: record id, from <c>pool.next_rid</c>; never reused.</summary>
    public long Rid;
    /// <summary><c>birth</c>: first generation that sees this version.</summary>
    public long Birth;
    /// <summary><c>death</c>: first generation that no longer sees it (<see cref="FormatConstants.Forever"/> while live).</summary>
    public long Death = FormatConstants.Forever;

    public bool VisibleAt(long gen) => Birth <= gen && gen < Death;
}

/// <summary>Collection <c>inodes</c>: one document per version of an inode.</summary>
public sealed class InodeRecord : VersionedRecord
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

    public BsonDocument ToBson()
    {
        var d = new BsonDocument
        {
            ["_id"] = Rid, ["ino"] = Ino, ["birth"] = Birth, ["death"] = Death, ["mode"] = (long)Mode, ["uid"] = (long)Uid,
            ["gid"] = (long)Gid, ["nlink"] = (long)Nlink, ["size"] = Size, ["blocks"] = Blocks, ["parent"] = Parent, ["rdev"] = (long)Rdev, ["atime_ns"] = AtimeNs,
            ["mtime_ns"] = MtimeNs, ["ctime_ns"] = CtimeNs, ["btime_ns"] = BtimeNs, ["next_pos"] = NextPos,
        };
        if (Target != null) d["target"] = Target;
        if (Prealloc is { Length: > 0 })
        {
            d["prealloc"] = new BsonArray(Prealloc.Select(v => new BsonValue(v)));
            d["prealloc_blocks"] = PreallocBlocks;
        }
        if (Xattrs is { Count: > 0 })
        {
            var x = new BsonDocument();
            foreach (var (k, v) in Xattrs) x[k] = v;
            d["xattrs"] = x;
        }
        return d;
    }

    public static InodeRecord FromBson(BsonDocument d)
    {
        var r = new InodeRecord
        {
            Rid = d["_id"].AsInt64, Ino = d["ino"].AsInt64, Birth = d["birth"].AsInt64, Death = d["death"].AsInt64,
            Mode = (uint)d["mode"].AsInt64, Uid = (uint)d["uid"].AsInt64, Gid = (uint)d["gid"].AsInt64,
            Nlink = (uint)d["nlink"].AsInt64, Size = d["size"].AsInt64, Blocks = d["blocks"].AsInt64, Parent = d["parent"].AsInt64, Rdev = (ulong)d["rdev"].AsInt64,
            AtimeNs = d["atime_ns"].AsInt64, MtimeNs = d["mtime_ns"].AsInt64, CtimeNs = d["ctime_ns"].AsInt64,
            BtimeNs = d["btime_ns"].AsInt64, NextPos = d["next_pos"].AsInt64,
        };
        if (d.TryGetValue("target", out var t)) r.Target = t.AsString;
        if (d.TryGetValue("prealloc", out var pa) && pa.AsArray.Count > 0)
        {
            r.Prealloc = pa.AsArray.Select(v => v.AsInt64).ToArray();
            r.PreallocBlocks = d["prealloc_blocks"].AsInt64;
        }
        if (d.TryGetValue("xattrs", out var x))
        {
            r.Xattrs = new Dictionary<string, byte[]>();
            foreach (var (k, v) in x.AsDocument) r.Xattrs[k] = v.AsBinary;
        }
        return r;
    }
}

/// <summary>Collection <c>dirents</c>: one document per version of a directory entry.</summary>
public sealed class DirentRecord : VersionedRecord
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

    public BsonDocument ToBson() => new()
    {
        ["_id"] = Rid, ["dir"] = Dir, ["name"] = Name, ["pos"] = Pos, ["child"] = Child, ["type"] = (int)Type,
        ["birth"] = Birth, ["death"] = Death,
    };

    public static DirentRecord FromBson(BsonDocument d) => new()
    {
        Rid = d["_id"].AsInt64, Dir = d["dir"].AsInt64, Name = d["name"].AsString, Pos = d["pos"].AsInt64,
        Child = d["child"].AsInt64, Type = (uint)d["type"].AsInt32, Birth = d["birth"].AsInt64, Death = d["death"].AsInt64,
    };
}

/// <summary>One run of a chunk's extent map: <c>count</c> file blocks starting at chunk block <c>first</c>
/// live at device block <c>addr</c> of device <c>dev</c>. 24 bytes packed in <c>map</c>.</summary>
public readonly record struct Extent(uint First, uint Count, uint Device, long Address)
{
    public uint End => First + Count;
}

/// <summary>Collection <c>chunks</c>: one document per version of one chunk (1024 file blocks) of a
/// file's extent map.</summary>
public sealed class ChunkRecord : VersionedRecord
{
    /// <summary><c>ino</c>: the file.</summary>
    public long Ino;
    /// <summary><c>index</c>: chunk number; the chunk covers file blocks index*1024 .. index*1024+1023.</summary>
    public long Index;
    /// <summary><c>map</c>: extents sorted by <c>first</c>, non-overlapping, packed as 24-byte entries
    /// (u32 first, u32 count, u32 dev, u32 reserved = 0, u64 addr), little-endian.</summary>
    public List<Extent> Extents = new();
    /// <summary><c>sums</c>: CRC-32C of each file block's data, u32 little-endian per chunk block
    /// (1024 entries); entries of unmapped blocks are zero and meaningless.</summary>
    public uint[] Sums = new uint[FormatConstants.ChunkBlocks];

    public ChunkRecord CloneAsNewVersion()
    {
        var c = (ChunkRecord)MemberwiseClone();
        c.Extents = new List<Extent>(Extents);
        c.Sums = (uint[])Sums.Clone();
        return c;
    }

    /// <summary><c>key</c>: index key, 16 bytes: ino then index, both big-endian, so a range of keys is a
    /// range of chunks of one file.</summary>
    public static byte[] Key(long ino, long index)
    {
        var k = new byte[16];
        BinaryPrimitives.WriteInt64BigEndian(k, ino);
        BinaryPrimitives.WriteInt64BigEndian(k.AsSpan(8), index);
        return k;
    }

    public BsonDocument ToBson()
    {
        var map = new byte[Extents.Count * 24];
        for (int i = 0; i < Extents.Count; i++)
        {
            var s = map.AsSpan(i * 24);
            var e = Extents[i];
            BinaryPrimitives.WriteUInt32LittleEndian(s, e.First);
            BinaryPrimitives.WriteUInt32LittleEndian(s[4..], e.Count);
            BinaryPrimitives.WriteUInt32LittleEndian(s[8..], e.Device);
            BinaryPrimitives.WriteInt64LittleEndian(s[16..], e.Address);
        }
        var sums = new byte[Sums.Length * 4];
        for (int i = 0; i < Sums.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(sums.AsSpan(i * 4), Sums[i]);
        return new BsonDocument
        {
            ["_id"] = Rid, ["ino"] = Ino, ["index"] = Index, ["key"] = Key(Ino, Index), ["birth"] = Birth,
            ["death"] = Death, ["map"] = map, ["sums"] = sums,
        };
    }

    public static ChunkRecord FromBson(BsonDocument d)
    {
        var r = new ChunkRecord
        {
            Rid = d["_id"].AsInt64, Ino = d["ino"].AsInt64, Index = d["index"].AsInt64, Birth = d["birth"].AsInt64,
            Death = d["death"].AsInt64,
        };
        var map = d["map"].AsBinary;
        if (map.Length % 24 != 0) throw new InvalidDataException($"chunk record {r.Rid} (inode {r.Ino}, chunk {r.Index}): map is {map.Length} bytes, not a multiple of 24");
        for (int i = 0; i < map.Length; i += 24)
        {
            var s = map.AsSpan(i);
            r.Extents.Add(new Extent(BinaryPrimitives.ReadUInt32LittleEndian(s), BinaryPrimitives.ReadUInt32LittleEndian(s[4..]),
                BinaryPrimitives.ReadUInt32LittleEndian(s[8..]), BinaryPrimitives.ReadInt64LittleEndian(s[16..])));
        }
        var sums = d["sums"].AsBinary;
        if (sums.Length != FormatConstants.ChunkBlocks * 4) throw new InvalidDataException($"chunk record {r.Rid} (inode {r.Ino}, chunk {r.Index}): sums is {sums.Length} bytes, expected {FormatConstants.ChunkBlocks * 4}");
        for (int i = 0; i < r.Sums.Length; i++) r.Sums[i] = BinaryPrimitives.ReadUInt32LittleEndian(sums.AsSpan(i * 4));
        return r;
    }
}

/// <summary>Collection <c>spacemaps</c>: reference counts of one segment (1024 blocks) of one device.
/// <c>_id</c> = device cookie × 2^40 + segment index. Absent documents mean all counts are zero.</summary>
public sealed class SpaceMapRecord
{
    /// <summary><c>dev</c>: device cookie.</summary>
    public uint Device;
    /// <summary><c>segment</c>: segment index (device block / 1024).</summary>
    public long Segment;
    /// <summary><c>refs</c>: u32 little-endian per block: how many chunk records (of any generation) reference it.</summary>
    public uint[] Refs = new uint[FormatConstants.SegmentBlocks];

    public static long Id(uint dev, long segment) => ((long)dev << 40) + segment;

    public BsonDocument ToBson()
    {
        var refs = new byte[Refs.Length * 4];
        for (int i = 0; i < Refs.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(refs.AsSpan(i * 4), Refs[i]);
        return new BsonDocument { ["_id"] = Id(Device, Segment), ["dev"] = (int)Device, ["segment"] = Segment, ["refs"] = refs };
    }

    public static SpaceMapRecord FromBson(BsonDocument d)
    {
        var r = new SpaceMapRecord { Device = (uint)d["dev"].AsInt32, Segment = d["segment"].AsInt64 };
        var refs = d["refs"].AsBinary;
        if (refs.Length != FormatConstants.SegmentBlocks * 4) throw new InvalidDataException($"space map of device {r.Device} segment {r.Segment}: refs is {refs.Length} bytes");
        for (int i = 0; i < r.Refs.Length; i++) r.Refs[i] = BinaryPrimitives.ReadUInt32LittleEndian(refs.AsSpan(i * 4));
        return r;
    }
}
