using System.Buffers.Binary;

namespace Cow.Core.Replication;

/// <summary>
/// What a sender needs to go on with a stream a receiver stopped part-way (format.md 10.6): the two snapshot
/// identities, the record offset and record count the receiver has applied durably, and the chain digest there.
/// Printed as <c>1-</c> followed by base64url of a fixed 80-byte layout (version 1). Immutable.
/// </summary>
public sealed record ResumeToken(SnapshotIdentity Snapshot, SnapshotIdentity Base, long Offset, long Records, byte[] Chain)
{
    private const int Bytes = 16 + 8 + 16 + 8 + 8 + 8 + StreamFormat.ChainBytes;

    public override string ToString()
    {
        var b = new byte[Bytes];
        Snapshot.Pool.TryWriteBytes(b, bigEndian: true, out _);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(16), Snapshot.Gen);
        Base.Pool.TryWriteBytes(b.AsSpan(24), bigEndian: true, out _);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(40), Base.Gen);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(48), Offset);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(56), Records);
        Chain.CopyTo(b, 64);
        return "1-" + Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    /// <summary>Parses a token; null (with <paramref name="problem"/>) when it is not one.</summary>
    public static ResumeToken? Parse(string text, out string? problem)
    {
        problem = null;
        if (!text.StartsWith("1-", StringComparison.Ordinal)) { problem = "a resume token begins with '1-'"; return null; }
        string s = text[2..].Replace('-', '+').Replace('_', '/');
        s += new string('=', (4 - s.Length % 4) % 4);
        byte[] b;
        try { b = Convert.FromBase64String(s); }
        catch (FormatException) { problem = "the resume token is not base64url"; return null; }
        if (b.Length != Bytes) { problem = $"the resume token holds {b.Length} bytes, not {Bytes}"; return null; }
        var t = new ResumeToken(new SnapshotIdentity(new Guid(b.AsSpan(0, 16), bigEndian: true), BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(16))),
            new SnapshotIdentity(new Guid(b.AsSpan(24, 16), bigEndian: true), BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(40))),
            BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(48)), BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(56)), b.AsSpan(64, StreamFormat.ChainBytes).ToArray());
        if (t.Offset < 0 || t.Records < 0) { problem = "the resume token's offset is negative"; return null; }
        return t;
    }
}
