namespace Cow.Core.Metadata;

/// <summary>
/// The metadata log stream as LiteDB sees it. LiteDB 5.0.x writes its log on a background task
/// (<c>DiskWriterQueue</c>): if a write or flush throws there, that task ends without ever signalling
/// "queue empty", and the next checkpoint — every <see cref="MetadataStore.Commit"/> makes one —
/// waits for that signal forever. So an I/O error on the metadata log hung the pool.
/// <para>This wrapper keeps the writer alive: the first failed <see cref="Write(byte[], int, int)"/> or
/// <see cref="Flush"/> is remembered instead of thrown, and from then on every write and flush is
/// dropped while every <see cref="Read(byte[], int, int)"/> and <see cref="SetLength"/> throws that
/// failure. The checkpoint that follows therefore fails on the committing thread, when it reads the
/// log back, before it copies anything into the data file; the commit fails and nothing that was not
/// written is ever taken for log content.</para>
/// Threading: LiteDB serialises the calls on the stream (its <c>ConcurrentStream</c> locks it); the
/// failure is published with a volatile write because the writer task and the committing thread both
/// read it.
/// </summary>
internal sealed class LogWriteLatchStream(Stream inner) : Stream
{
    private volatile Exception? _failure;

    /// <summary>The first write or flush failure, or null.</summary>
    public Exception? Failure => _failure;

    private void ThrowIfFailed()
    {
        if (_failure is { } f) throw new IOException($"metadata log: an earlier write failed: {f.Message}", f);
    }

    public override bool CanRead => inner.CanRead;
    public override bool CanSeek => inner.CanSeek;
    public override bool CanWrite => inner.CanWrite;
    public override long Length => inner.Length;
    public override long Position { get => inner.Position; set => inner.Position = value; }
    public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);

    public override int Read(byte[] buffer, int offset, int count)
    {
        ThrowIfFailed();
        return inner.Read(buffer, offset, count);
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        if (_failure != null) return;
        try { inner.Write(buffer, offset, count); }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { _failure = e; }
    }

    public override void Flush()
    {
        if (_failure != null) return;
        try { inner.Flush(); }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { _failure = e; }
    }

    public override void SetLength(long value)
    {
        ThrowIfFailed();
        inner.SetLength(value);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }
}
