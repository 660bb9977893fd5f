using System.Buffers.Binary;
using System.Text;

namespace Cow.Core.Replication;

/// <summary>Record types of a send stream (format.md 10, "Send streams"), the <c>type</c> field of every record frame.</summary>
public enum StreamRecordType : uint
{
    Header = 1,
    Inode = 2,
    InodeGone = 3,
    Entry = 4,
    EntryGone = 5,
    Data = 6,
    Hole = 7,
    Clone = 8,
    End = 9,
}

/// <summary>Fixed numbers of stream format version 1 (format.md 10).</summary>
public static class StreamFormat
{
    /// <summary><c>magic</c> of the header record.</summary>
    public static ReadOnlySpan<byte> Magic => "COWSTRM\0"u8;
    public const uint Version = 1;
    /// <summary>Bytes of a frame around a payload: type (4), length (4) and crc (4).</summary>
    public const int FrameBytes = 12;
    /// <summary>Largest payload a reader accepts: a data record of 1 MiB plus its fixed fields, with room to spare.</summary>
    public const int MaxPayload = (1 << 20) + 4096;
    /// <summary>Bytes of file data a sender puts in one data record.</summary>
    public const int DataRecordBytes = 1 << 20;
    /// <summary>Bytes of the chain digest (XXH3-128).</summary>
    public const int ChainBytes = 16;
}

/// <summary>The identity of a snapshot across pools: the pool that took it and its generation there. A received
/// snapshot keeps its sender's identity, so a chain of replicas agrees on which snapshot is which.</summary>
public readonly record struct SnapshotIdentity(Guid Pool, long Gen)
{
    public bool IsNone => Pool == Guid.Empty && Gen == 0;
    public override string ToString() => IsNone ? "none" : $"{Pool}@{Gen}";
}

/// <summary>A stream's header (format.md 10.2).</summary>
/// <param name="BlockSize"><c>block_size</c>: the sender pool's block size; data offsets and lengths are multiples of it.</param>
/// <param name="Snapshot"><c>snap_pool</c>, <c>snap_gen</c>: the identity of the snapshot sent.</param>
/// <param name="Base"><c>base_pool</c>, <c>base_gen</c>: the identity of the base of an incremental stream (none: full).</param>
/// <param name="CreatedNs"><c>created_ns</c>: the snapshot's creation time.</param>
/// <param name="ResumeOffset"><c>resume_offset</c>: 0, or the record offset (bytes after the header) of the original
/// stream at which this resumed stream goes on.</param>
/// <param name="ResumeChain"><c>resume_chain</c>: the chain digest of the original stream at <c>resume_offset</c> (zeros when 0).</param>
/// <param name="Name"><c>name</c>: the snapshot's name on the sender.</param>
public sealed record StreamHeader(int BlockSize, SnapshotIdentity Snapshot, SnapshotIdentity Base, long CreatedNs, long ResumeOffset, byte[] ResumeChain, string Name)
{
    public bool Incremental => !Base.IsNone;
}

/// <summary>An inode's attributes in the snapshot sent (format.md 10.3, type 2).</summary>
public sealed record StreamInode(long Ino, uint Mode, uint Uid, uint Gid, uint Nlink, long Size, ulong Rdev,
    long AtimeNs, long MtimeNs, long CtimeNs, long BtimeNs, long Parent, long NextPos, string? Target,
    IReadOnlyList<KeyValuePair<string, byte[]>> Xattrs);

/// <summary>A decoded record: its type, where its frame starts (record offset, bytes after the header) and the fields
/// of its type.</summary>
public sealed class StreamRecord
{
    public StreamRecordType Type;
    public long Offset;
    public StreamHeader? Header;
    public StreamInode? Inode;
    /// <summary>Inode gone, entry, data, hole, clone: the inode (entry: the directory).</summary>
    public long Ino;
    /// <summary>Entry: readdir position; data, hole, clone: byte offset in the file.</summary>
    public long Pos;
    /// <summary>Entry: the child; clone: the source inode.</summary>
    public long Other;
    /// <summary>Hole, clone: bytes; end: records before it.</summary>
    public long Length;
    /// <summary>Clone: the source's byte offset.</summary>
    public long OtherPos;
    /// <summary>Entry: the child's file type.</summary>
    public uint EntryType;
    public string? Name;
    /// <summary>Data: the bytes (a slice of the reader's buffer, valid until the next read).</summary>
    public ReadOnlyMemory<byte> Data;
    /// <summary>End: the chain digest over every record before it.</summary>
    public byte[]? Chain;
    /// <summary>A data record read with <see cref="StreamReader.DetachData"/>: the pooled buffer <see cref="Data"/> lies in,
    /// which its taker returns to <see cref="System.Buffers.ArrayPool{T}.Shared"/>.</summary>
    public byte[]? Rented;
}

/// <summary>Encodes record payloads (format.md 10.3). Little-endian throughout; strings are u16 length + UTF-8.</summary>
internal static class StreamCodec
{
    public static byte[] Header(StreamHeader h)
    {
        var name = Encoding.UTF8.GetBytes(h.Name);
        var b = new byte[8 + 4 + 4 + 16 + 8 + 16 + 8 + 8 + 8 + StreamFormat.ChainBytes + 2 + name.Length];
        var s = b.AsSpan();
        StreamFormat.Magic.CopyTo(s);
        int p = 8;
        U32(s, ref p, StreamFormat.Version);
        U32(s, ref p, (uint)h.BlockSize);
        Uuid(s, ref p, h.Snapshot.Pool); I64(s, ref p, h.Snapshot.Gen);
        Uuid(s, ref p, h.Base.Pool); I64(s, ref p, h.Base.Gen);
        I64(s, ref p, h.CreatedNs);
        I64(s, ref p, h.ResumeOffset);
        h.ResumeChain.CopyTo(s[p..]); p += StreamFormat.ChainBytes;
        Str(s, ref p, name);
        return b;
    }

    public static StreamHeader ReadHeader(ReadOnlySpan<byte> s)
    {
        if (s.Length < 8 || !s[..8].SequenceEqual(StreamFormat.Magic)) throw new InvalidDataException("not a Cow send stream (no COWSTRM magic)");
        int p = 8;
        uint v = RU32(s, ref p);
        if (v != StreamFormat.Version) throw new InvalidDataException($"stream format version {v} is not supported (this build reads version {StreamFormat.Version})");
        int bs = (int)RU32(s, ref p);
        if (bs < 4096 || bs > 65536 || (bs & (bs - 1)) != 0) throw new InvalidDataException($"block size {bs} is not a power of two between 4096 and 65536");
        var snap = new SnapshotIdentity(RUuid(s, ref p), RI64(s, ref p));
        var bas = new SnapshotIdentity(RUuid(s, ref p), RI64(s, ref p));
        long created = RI64(s, ref p), resume = RI64(s, ref p);
        var chain = Need(s, p, StreamFormat.ChainBytes).ToArray(); p += StreamFormat.ChainBytes;
        string name = RStr(s, ref p);
        End(s, p);
        if (resume < 0) throw new InvalidDataException($"resume offset {resume} is negative");
        return new StreamHeader(bs, snap, bas, created, resume, chain, name);
    }

    public static byte[] Inode(StreamInode r)
    {
        var target = r.Target == null ? null : Encoding.UTF8.GetBytes(r.Target);
        int n = 8 + 4 * 4 + 8 + 8 + 8 * 4 + 8 + 8 + 4 + (target?.Length ?? 0) + 2;
        foreach (var (k, v) in r.Xattrs) n += 2 + Encoding.UTF8.GetByteCount(k) + 4 + v.Length;
        var b = new byte[n];
        var s = b.AsSpan();
        int p = 0;
        I64(s, ref p, r.Ino); U32(s, ref p, r.Mode); U32(s, ref p, r.Uid); U32(s, ref p, r.Gid); U32(s, ref p, r.Nlink);
        I64(s, ref p, r.Size); I64(s, ref p, (long)r.Rdev);
        I64(s, ref p, r.AtimeNs); I64(s, ref p, r.MtimeNs); I64(s, ref p, r.CtimeNs); I64(s, ref p, r.BtimeNs);
        I64(s, ref p, r.Parent); I64(s, ref p, r.NextPos);
        if (target == null) U32(s, ref p, uint.MaxValue);
        else { U32(s, ref p, (uint)target.Length); target.CopyTo(s[p..]); p += target.Length; }
        BinaryPrimitives.WriteUInt16LittleEndian(s[p..], (ushort)r.Xattrs.Count); p += 2;
        foreach (var (k, v) in r.Xattrs)
        {
            Str(s, ref p, Encoding.UTF8.GetBytes(k));
            U32(s, ref p, (uint)v.Length); v.CopyTo(s[p..]); p += v.Length;
        }
        return b;
    }

    public static StreamInode ReadInode(ReadOnlySpan<byte> s)
    {
        int p = 0;
        long ino = RI64(s, ref p);
        uint mode = RU32(s, ref p), uid = RU32(s, ref p), gid = RU32(s, ref p), nlink = RU32(s, ref p);
        long size = RI64(s, ref p); ulong rdev = (ulong)RI64(s, ref p);
        long at = RI64(s, ref p), mt = RI64(s, ref p), ct = RI64(s, ref p), bt = RI64(s, ref p);
        long parent = RI64(s, ref p), nextPos = RI64(s, ref p);
        uint tl = RU32(s, ref p);
        string? target = null;
        if (tl != uint.MaxValue)
        {
            if (tl > 4096) throw new InvalidDataException($"symlink target of {tl} bytes");
            target = Strict(Need(s, p, (int)tl)); p += (int)tl;
        }
        int nx = BinaryPrimitives.ReadUInt16LittleEndian(Need(s, p, 2)); p += 2;
        var xattrs = new List<KeyValuePair<string, byte[]>>(nx);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < nx; i++)
        {
            string k = RStr(s, ref p);
            if (k.Length == 0 || k.Contains('\0') || Encoding.UTF8.GetByteCount(k) > 255 || !seen.Add(k))
                throw new InvalidDataException($"inode {ino}: xattr name '{k}' is empty, too long, has a NUL or comes twice");
            uint vl = RU32(s, ref p);
            if (vl > 65536) throw new InvalidDataException($"xattr value of {vl} bytes");
            xattrs.Add(new(k, Need(s, p, (int)vl).ToArray())); p += (int)vl;
        }
        End(s, p);
        if (ino < 1) throw new InvalidDataException($"inode number {ino}");
        if (size < 0) throw new InvalidDataException($"inode {ino} has size {size}");
        return new StreamInode(ino, mode, uid, gid, nlink, size, rdev, at, mt, ct, bt, parent, nextPos, target, xattrs);
    }

    public static byte[] Entry(long dir, long pos, long child, uint type, string name)
    {
        var nb = Encoding.UTF8.GetBytes(name);
        var b = new byte[8 + 8 + 8 + 4 + 2 + nb.Length];
        int p = 0;
        I64(b, ref p, dir); I64(b, ref p, pos); I64(b, ref p, child); U32(b, ref p, type); Str(b, ref p, nb);
        return b;
    }

    public static byte[] EntryGone(long dir, string name)
    {
        var nb = Encoding.UTF8.GetBytes(name);
        var b = new byte[8 + 2 + nb.Length];
        int p = 0;
        I64(b, ref p, dir); Str(b, ref p, nb);
        return b;
    }

    public static byte[] Longs(params long[] values)
    {
        var b = new byte[values.Length * 8];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(i * 8), values[i]);
        return b;
    }

    /// <summary>Decodes the payload of a record other than the header into <paramref name="r"/>.</summary>
    public static void Read(StreamRecordType type, ReadOnlyMemory<byte> payload, StreamRecord r)
    {
        var s = payload.Span;
        int p = 0;
        switch (type)
        {
            case StreamRecordType.Inode: r.Inode = ReadInode(s); return;
            case StreamRecordType.InodeGone: r.Ino = RI64(s, ref p); break;
            case StreamRecordType.Entry:
                r.Ino = RI64(s, ref p); r.Pos = RI64(s, ref p); r.Other = RI64(s, ref p); r.EntryType = RU32(s, ref p); r.Name = RStr(s, ref p);
                CheckName(r.Name);
                break;
            case StreamRecordType.EntryGone: r.Ino = RI64(s, ref p); r.Name = RStr(s, ref p); CheckName(r.Name); break;
            case StreamRecordType.Data:
                r.Ino = RI64(s, ref p); r.Pos = RI64(s, ref p);
                r.Data = payload[p..]; p = s.Length;
                break;
            case StreamRecordType.Hole: r.Ino = RI64(s, ref p); r.Pos = RI64(s, ref p); r.Length = RI64(s, ref p); break;
            case StreamRecordType.Clone:
                r.Ino = RI64(s, ref p); r.Pos = RI64(s, ref p); r.Length = RI64(s, ref p); r.Other = RI64(s, ref p); r.OtherPos = RI64(s, ref p);
                break;
            case StreamRecordType.End:
                r.Length = RI64(s, ref p); r.Chain = Need(s, p, StreamFormat.ChainBytes).ToArray(); p += StreamFormat.ChainBytes;
                break;
            default: throw new InvalidDataException($"unknown record type {(uint)type}");
        }
        End(s, p);
        if (r.Pos < 0 || r.Length < 0 || r.OtherPos < 0) throw new InvalidDataException("a negative offset or length");
    }

    private static void CheckName(string name)
    {
        if (name.Length == 0 || name is "." or ".." || name.Contains('/') || name.Contains('\0') || Encoding.UTF8.GetByteCount(name) > 255)
            throw new InvalidDataException($"invalid entry name '{name}'");
    }

    private static void U32(Span<byte> s, ref int p, uint v) { BinaryPrimitives.WriteUInt32LittleEndian(s[p..], v); p += 4; }
    private static void I64(Span<byte> s, ref int p, long v) { BinaryPrimitives.WriteInt64LittleEndian(s[p..], v); p += 8; }
    private static void Uuid(Span<byte> s, ref int p, Guid g) { g.TryWriteBytes(s[p..], bigEndian: true, out _); p += 16; }
    private static void Str(Span<byte> s, ref int p, byte[] v)
    {
        if (v.Length > ushort.MaxValue) throw new ArgumentException("string too long for a stream record");
        BinaryPrimitives.WriteUInt16LittleEndian(s[p..], (ushort)v.Length); p += 2; v.CopyTo(s[p..]); p += v.Length;
    }

    private static ReadOnlySpan<byte> Need(ReadOnlySpan<byte> s, int p, int n) =>
        p + n <= s.Length && n >= 0 ? s.Slice(p, n) : throw new InvalidDataException("record shorter than its fields");
    private static uint RU32(ReadOnlySpan<byte> s, ref int p) { uint v = BinaryPrimitives.ReadUInt32LittleEndian(Need(s, p, 4)); p += 4; return v; }
    private static long RI64(ReadOnlySpan<byte> s, ref int p) { long v = BinaryPrimitives.ReadInt64LittleEndian(Need(s, p, 8)); p += 8; return v; }
    private static Guid RUuid(ReadOnlySpan<byte> s, ref int p) { var g = new Guid(Need(s, p, 16), bigEndian: true); p += 16; return g; }
    private static string RStr(ReadOnlySpan<byte> s, ref int p)
    {
        int n = BinaryPrimitives.ReadUInt16LittleEndian(Need(s, p, 2)); p += 2;
        var v = Need(s, p, n);
        p += n;
        return Strict(v);
    }

    private static readonly UTF8Encoding StrictUtf8 = new(false, true);

    private static string Strict(ReadOnlySpan<byte> v)
    {
        try { return StrictUtf8.GetString(v); }
        catch (DecoderFallbackException) { throw new InvalidDataException("a name or symlink target is not valid UTF-8"); }
    }

    private static void End(ReadOnlySpan<byte> s, int p)
    {
        if (p != s.Length) throw new InvalidDataException($"record has {s.Length - p} bytes past its fields");
    }
}
