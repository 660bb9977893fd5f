using System.Buffers.Binary;

namespace Cow.Cli.Service;

/// <summary>
/// The bytes of a stream carried over the control socket after a request line (<c>send</c>, <c>receive</c>; see
/// <see cref="ControlProtocol"/>): chunks of a u32 little-endian length and that many bytes, ended by a chunk of
/// length 0, after which the JSON response line follows as for every verb. Framing lets the reader tell the end of the
/// data from the response without parsing the stream. Writer side; not thread-safe.
/// </summary>
internal sealed class ChunkedWriteStream(Stream inner) : Stream
{
    /// <summary>Largest chunk written.</summary>
    public const int MaxChunk = 1 << 20;
    private readonly byte[] _head = new byte[4];
    private bool _ended;

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (_ended) throw new InvalidOperationException("the chunked stream has ended");
        while (buffer.Length > 0)
        {
            int n = Math.Min(buffer.Length, MaxChunk);
            BinaryPrimitives.WriteUInt32LittleEndian(_head, (uint)n);
            inner.Write(_head);
            inner.Write(buffer[..n]);
            buffer = buffer[n..];
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    /// <summary>Writes the end chunk (once).</summary>
    public void End()
    {
        if (_ended) return;
        _ended = true;
        BinaryPrimitives.WriteUInt32LittleEndian(_head, 0);
        inner.Write(_head);
        inner.Flush();
    }

    public override void Flush() => inner.Flush();
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}

/// <summary>The reading side of <see cref="ChunkedWriteStream"/>: the data until the end chunk (then end of stream). A
/// connection that ends before the end chunk reads as an early end of stream (the stream's own framing then says it
/// was cut). Not thread-safe.</summary>
internal sealed class ChunkedReadStream(Stream inner) : Stream
{
    private readonly byte[] _head = new byte[4];
    private long _left;
    private bool _ended;

    /// <summary>Whether the end chunk was read (the writer finished; the response line follows).</summary>
    public bool Ended => _ended;

    public override int Read(Span<byte> buffer)
    {
        if (_ended || buffer.Length == 0) return 0;
        if (_left == 0)
        {
            if (!ReadFull(_head)) { _ended = true; Cut = true; return 0; }
            _left = BinaryPrimitives.ReadUInt32LittleEndian(_head);
            if (_left == 0) { _ended = true; return 0; }
            if (_left > ChunkedWriteStream.MaxChunk) throw new IOException($"a chunk of {_left} bytes on the control socket (at most {ChunkedWriteStream.MaxChunk})");
        }
        int n = inner.Read(buffer[..(int)Math.Min(buffer.Length, _left)]);
        if (n <= 0) { _ended = true; Cut = true; return 0; }
        _left -= n;
        return n;
    }

    /// <summary>The connection ended before the end chunk.</summary>
    public bool Cut { get; private set; }

    /// <summary>Reads and drops what is left up to the end chunk (a refused upload), so the response can follow.</summary>
    public void Drain()
    {
        var sink = new byte[64 * 1024];
        while (Read(sink) > 0) { }
    }

    private bool ReadFull(Span<byte> into)
    {
        int got = 0;
        while (got < into.Length)
        {
            int k = inner.Read(into[got..]);
            if (k <= 0) return false;
            got += k;
        }
        return true;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override void Flush() { }
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
