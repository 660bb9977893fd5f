using System.Buffers.Binary;
using System.IO.Hashing;
using Cow.Core.Format;

namespace Cow.Core.Replication;

/// <summary>
/// The chain digest of a stream (format.md 10.1): starts as XXH3-128 of the domain string and the header's payload as
/// the original stream has it (<c>resume_offset</c> 0, <c>resume_chain</c> zero), so that every header field is
/// covered, and after each record (after the header, before the end) becomes XXH3-128(chain ‖ the record's frame).
/// Its state is 16 bytes, so a receive that stops part-way keeps it and a resumed stream goes on from it. It detects
/// damage (a changed, lost, repeated or reordered record), not forgery: a stream is as trusted as the pipe it came by.
/// </summary>
internal static class StreamChain
{
    public static byte[] Start(StreamHeader h)
    {
        var payload = StreamCodec.Header(h with { ResumeOffset = 0, ResumeChain = new byte[StreamFormat.ChainBytes] });
        var b = new byte[15 + payload.Length];
        "cow stream v1\0\0"u8.CopyTo(b);
        payload.CopyTo(b, 15);
        return XxHash128.Hash(b);
    }

    /// <summary>The chain after a record whose frame is <paramref name="head"/> (type, length), <paramref name="payload"/> and <paramref name="crc"/>.</summary>
    public static void Append(byte[] chain, ReadOnlySpan<byte> head, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> crc)
    {
        var h = t_hash ??= new XxHash128();
        h.Append(chain);
        h.Append(head);
        h.Append(payload);
        h.Append(crc);
        h.GetHashAndReset(chain);
    }

    [ThreadStatic] private static XxHash128? t_hash;
}

/// <summary>
/// Writes a stream's record frames (format.md 10.1) to a byte stream: u32 type, u32 length, the payload, u32 CRC-32C
/// of the three before it; keeps the record offset (bytes after the header) and the chain. Records before
/// <see cref="SkipTo"/> are counted and chained by size only and not written (a resumed send).
/// <para>The checksums, the chain and the output happen on a thread of the writer's own, a few records behind the
/// caller (each payload is copied to a pooled buffer), so that a sender reads the next data while the last is hashed
/// and written. A failure of the output there (a closed pipe) comes back from the next call. Not thread-safe: one caller;
/// <see cref="Dispose"/> stops the thread (after <see cref="WriteEnd"/>, or to give up).</para>
/// </summary>
internal sealed class StreamWriter(Stream output) : IDisposable
{
    private byte[] _chain = new byte[StreamFormat.ChainBytes];
    private readonly byte[] _head = new byte[8], _crc = new byte[4];
    private bool _headerDone;
    private readonly System.Collections.Concurrent.BlockingCollection<(StreamRecordType Type, byte[] Buffer, int Length, bool Chain)> _queue = new(boundedCapacity: 4);
    private Thread? _emitter;
    private Exception? _failure;
    private long _bytesWritten;

    /// <summary>Bytes of records written (or skipped) after the header.</summary>
    public long Offset { get; private set; }
    /// <summary>Records after the header.</summary>
    public long Records { get; private set; }
    /// <summary>Bytes actually written, header included (complete after <see cref="WriteEnd"/>).</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);
    /// <summary>Records that begin before this record offset are not written (a resumed stream).</summary>
    public long SkipTo { get; private set; }

    /// <summary>Whether the record starting at the current offset is skipped: a sender can then avoid reading its data
    /// (and pass <see cref="Write"/> a payload of the right length only).</summary>
    public bool Skipping => Offset < SkipTo;

    public void WriteHeader(StreamHeader h)
    {
        if (_headerDone) throw new InvalidOperationException("header written twice");
        _chain = h.ResumeOffset > 0 ? (byte[])h.ResumeChain.Clone() : StreamChain.Start(h);
        SkipTo = h.ResumeOffset;
        Enqueue(StreamRecordType.Header, StreamCodec.Header(h), chain: false);
        _headerDone = true;   // records before SkipTo were chained by the receiver: the chain given is their result
    }

    public void Write(StreamRecordType type, ReadOnlySpan<byte> payload)
    {
        if (!_headerDone) throw new InvalidOperationException("record before the header");
        long size = StreamFormat.FrameBytes + payload.Length;
        if (Offset < SkipTo)
        {
            if (Offset + size > SkipTo) throw new InvalidDataException($"the resume offset {SkipTo} is not at a record boundary of this stream (a record spans {Offset}..{Offset + size})");
            Offset += size; Records++;
            return;
        }
        Enqueue(type, payload, chain: true);
        Offset += size; Records++;
    }

    /// <summary>As <see cref="Write"/>, taking over <paramref name="rented"/> (from <see cref="System.Buffers.ArrayPool{T}.Shared"/>,
    /// payload in its first <paramref name="length"/> bytes): no copy; the writer returns it.</summary>
    public void WriteRented(StreamRecordType type, byte[] rented, int length)
    {
        if (!_headerDone) throw new InvalidOperationException("record before the header");
        long size = StreamFormat.FrameBytes + length;
        if (Offset < SkipTo)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            if (Offset + size > SkipTo) throw new InvalidDataException($"the resume offset {SkipTo} is not at a record boundary of this stream (a record spans {Offset}..{Offset + size})");
            Offset += size; Records++;
            return;
        }
        if (_failure != null)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            throw new IOException($"writing the stream failed: {_failure.Message}", _failure);
        }
        StartEmitter();
        _queue.Add((type, rented, length, true));
        Offset += size; Records++;
    }

    /// <summary>Writes the end record (records so far and the chain), waits until everything is written and flushed.</summary>
    public void WriteEnd()
    {
        if (Offset < SkipTo) throw new InvalidDataException($"the resume offset {SkipTo} is past the end of this stream ({Offset} bytes of records)");
        var count = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(count, Records);
        Enqueue(StreamRecordType.End, count, chain: false);   // the emitter appends the chain
        Finish();
        if (_failure != null) throw new IOException($"writing the stream failed: {_failure.Message}", _failure);
    }

    private void Enqueue(StreamRecordType type, ReadOnlySpan<byte> payload, bool chain)
    {
        if (_failure != null) throw new IOException($"writing the stream failed: {_failure.Message}", _failure);
        StartEmitter();
        var buf = System.Buffers.ArrayPool<byte>.Shared.Rent(payload.Length + (type == StreamRecordType.End ? StreamFormat.ChainBytes : 0));
        payload.CopyTo(buf);
        _queue.Add((type, buf, payload.Length, chain));
    }

    private void StartEmitter()
    {
        if (_emitter != null) return;
        _emitter = new Thread(Emit) { IsBackground = true, Name = "cow stream writer" };
        _emitter.Start();
    }

    private void Emit()
    {
        foreach (var (type, buf, length, chain) in _queue.GetConsumingEnumerable())
        {
            try
            {
                if (_failure != null) continue;
                int n = length;
                if (type == StreamRecordType.End) { _chain.CopyTo(buf, length); n += StreamFormat.ChainBytes; }
                Frame(type, buf.AsSpan(0, n), chain);
                if (type == StreamRecordType.End) output.Flush();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException) { _failure = e; }
            finally { System.Buffers.ArrayPool<byte>.Shared.Return(buf); }
        }
    }

    private void Finish()
    {
        if (!_queue.IsAddingCompleted) _queue.CompleteAdding();
        _emitter?.Join();
    }

    /// <summary>Stops the writer's thread (what was queued is still written, unless the output failed).</summary>
    public void Dispose()
    {
        Finish();
        _queue.Dispose();
    }

    private void Frame(StreamRecordType type, ReadOnlySpan<byte> payload, bool chain)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(_head, (uint)type);
        BinaryPrimitives.WriteUInt32LittleEndian(_head.AsSpan(4), (uint)payload.Length);
        uint crc = Crc32C.Append(Crc32C.Append(~0u, _head), payload);
        BinaryPrimitives.WriteUInt32LittleEndian(_crc, ~crc);
        output.Write(_head);
        output.Write(payload);
        output.Write(_crc);
        Interlocked.Add(ref _bytesWritten, StreamFormat.FrameBytes + payload.Length);
        if (chain) StreamChain.Append(_chain, _head, payload, _crc);
    }
}

/// <summary>What is wrong with a stream, and where: <see cref="Offset"/> is the byte offset from the start of the
/// stream (header included) of the frame at fault.</summary>
public sealed class StreamDamagedException(long offset, string message, bool truncated = false, bool fatal = false)
    : IOException($"stream damaged at byte {offset}: {message}")
{
    public long Offset => offset;
    /// <summary>The stream ended early (not a damaged byte): what came before it is good.</summary>
    public bool Truncated => truncated;
    /// <summary>The end record does not match the records (digest or count): no record before it can be trusted.</summary>
    public bool Fatal => fatal;
}

/// <summary>
/// Reads and checks a stream's frames (format.md 10.1): each record's CRC as it is read, the chain and the record
/// count at the end record. <see cref="Next"/> returns the header first and the end record last; any fault throws
/// <see cref="StreamDamagedException"/> naming the byte offset of the frame at fault. A record's data is a slice of
/// the reader's buffer, valid until the next call. Not thread-safe.
/// </summary>
public sealed class StreamReader(Stream input)
{
    private readonly byte[] _head = new byte[8], _crc = new byte[4];
    private byte[] _buf = new byte[64 * 1024];
    private byte[] _chain = new byte[StreamFormat.ChainBytes];
    private long _pos;          // bytes consumed from input
    private long _headerBytes;  // bytes of the header frame
    private bool _ended;

    public StreamHeader? Header { get; private set; }
    /// <summary>Records read after the header (the original stream's count when resumed: the records before
    /// <see cref="StreamHeader.ResumeOffset"/> are counted as given by the caller).</summary>
    public long Records { get; private set; }
    /// <summary>Record offset (bytes after the header, in the original stream) of the next frame.</summary>
    public long Offset => Header == null ? 0 : Header.ResumeOffset + _pos - _headerBytes;
    /// <summary>The chain over every record verified so far.</summary>
    public byte[] Chain => (byte[])_chain.Clone();
    /// <summary>Bytes read from the input.</summary>
    public long BytesRead => _pos;

    /// <summary>Records the original stream had before the resume offset (a receive that resumes knows them).</summary>
    public long RecordsBefore { get; set; }

    /// <summary>Data records are read into a buffer of their own, rented from <see cref="System.Buffers.ArrayPool{T}.Shared"/>
    /// and handed over in <see cref="StreamRecord.Rented"/> (the caller returns it), so the data outlives the next call
    /// without a copy.</summary>
    public bool DetachData { get; set; }

    /// <summary>The next record, or null after the end record. The first is the header.</summary>
    public StreamRecord? Next()
    {
        if (_ended) return null;
        long at = _pos;
        int got = ReadFull(_head);
        if (got == 0 && Header != null) throw new StreamDamagedException(at, "the stream ends before its end record", truncated: true);
        if (got < 8) throw new StreamDamagedException(at, got == 0 ? "the stream is empty" : "the stream ends inside a record frame", truncated: true);
        var type = (StreamRecordType)BinaryPrimitives.ReadUInt32LittleEndian(_head);
        uint len = BinaryPrimitives.ReadUInt32LittleEndian(_head.AsSpan(4));
        if (len > StreamFormat.MaxPayload) throw new StreamDamagedException(at, $"a record claims {len} bytes (at most {StreamFormat.MaxPayload})");
        byte[] buf;
        if (DetachData && type == StreamRecordType.Data && Header != null) buf = System.Buffers.ArrayPool<byte>.Shared.Rent((int)len);
        else
        {
            if (_buf.Length < len) _buf = new byte[Math.Max(len, _buf.Length * 2)];
            buf = _buf;
        }
        bool handedOver = false;
        try
        {
            var r = Frame(type, len, at, buf);
            handedOver = buf != _buf && r != null;
            if (handedOver) r!.Rented = buf;
            return r;
        }
        finally { if (!handedOver && buf != _buf) System.Buffers.ArrayPool<byte>.Shared.Return(buf); }
    }

    /// <summary>The rest of <see cref="Next"/>: the payload and checksum of a frame whose head is read, into <paramref name="buf"/>.</summary>
    private StreamRecord? Frame(StreamRecordType type, uint len, long at, byte[] buf)
    {
        if (ReadFull(buf.AsSpan(0, (int)len)) < len || ReadFull(_crc) < 4)
            throw new StreamDamagedException(at, "the stream ends inside a record", truncated: true);
        var payload = buf.AsMemory(0, (int)len);
        uint want = BinaryPrimitives.ReadUInt32LittleEndian(_crc);
        uint crc = ~Crc32C.Append(Crc32C.Append(~0u, _head), payload.Span);
        if (crc != want) throw new StreamDamagedException(at, $"record checksum mismatch (type {(uint)type}, {len} bytes)");
        var r = new StreamRecord { Type = type, Offset = Header == null ? 0 : Offset - (_pos - at) };
        try
        {
            if (Header == null)
            {
                if (type != StreamRecordType.Header) throw new InvalidDataException($"the stream does not begin with a header record (type {(uint)type})");
                r.Header = Header = StreamCodec.ReadHeader(payload.Span);
                _headerBytes = _pos;
                _chain = Header.ResumeOffset > 0 ? (byte[])Header.ResumeChain.Clone() : StreamChain.Start(Header);
                r.Offset = 0;
                return r;
            }
            if (type == StreamRecordType.Header) throw new InvalidDataException("a second header record");
            StreamCodec.Read(type, payload, r);
        }
        // The frame's checksum held: the sender wrote these fields, so sending them again cannot help (fatal).
        catch (InvalidDataException e) { throw new StreamDamagedException(at, e.Message, fatal: Header != null); }
        if (type == StreamRecordType.End)
        {
            long total = RecordsBefore + Records;
            if (r.Length != total) throw new StreamDamagedException(at, $"the end record counts {r.Length} records, the stream had {total}", fatal: true);
            if (!r.Chain!.AsSpan().SequenceEqual(_chain)) throw new StreamDamagedException(at, "the stream digest does not match its records", fatal: true);
            _ended = true;
            if (input.ReadByte() >= 0) throw new StreamDamagedException(_pos, "bytes follow the end record", fatal: true);
            return r;
        }
        StreamChain.Append(_chain, _head, payload.Span, _crc);
        Records++;
        return r;
    }

    private int ReadFull(Span<byte> into)
    {
        int n = 0;
        while (n < into.Length)
        {
            int k = input.Read(into[n..]);
            if (k <= 0) break;
            n += k;
        }
        _pos += n;
        return n;
    }
}
