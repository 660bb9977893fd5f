namespace Cow.Core.Metadata;

/// <summary>
/// The metadata log stream as LiteDB 5.0.x sees it: it makes LiteDB's write-ahead log safe against
/// I/O errors, torn writes and writes that a power cut persists in any order.
/// <para><b>Latching.</b> LiteDB writes its log on a background task (<c>DiskWriterQueue</c>): if a
/// write or flush throws there, that task ends without ever signalling "queue empty", and the next
/// checkpoint — every <see cref="MetadataStore.Commit"/> makes one — waits for that signal forever.
/// So the first failed write or flush is remembered instead of thrown; from then on every write and
/// flush is dropped while every read and truncation throws that failure. The checkpoint that follows
/// therefore fails on the committing thread, when it reads the log back, before it copies anything
/// into the data file.</para>
/// <para><b>Commit records.</b> LiteDB marks a transaction committed by a flag in its last page and
/// has no checksums, and after every checkpoint it numbers transactions from 1 again. A confirmed last
/// page that reached the disk without the pages before it, or torn, makes recovery replay a mix into
/// the data file. So a page written with the confirmed flag is written twice: first with the flag
/// cleared, then flush (that page and every earlier page of the transaction are durable), then as
/// given, then flush. The second write differs from what is on disk only in the flag byte, in the
/// first sector: torn or not, the page reads whole, confirmed or not. And because the confirmed page
/// is durable before LiteDB's writer reports its queue empty, the log holds the transaction before the
/// checkpoint starts copying it into the data file (LiteDB itself flushes the log only after reporting
/// the queue empty, racing the checkpoint).</para>
/// <para><b>LiteDB's own flushes are not passed on.</b> Its writer task flushes the log every time its
/// queue runs dry, which during a large commit (chunk maps and space maps of 256 MiB written) happened
/// hundreds of times: 807 fsyncs of the log during one 1 GiB sequential write through the mount, 0.7 s
/// of them, each a device cache flush that stalled the data writes of the same disk. Nothing written
/// before a commit record needs to be durable before that record, and writing the record makes them
/// durable first (above); a transaction without its record is discarded by recovery. So
/// <see cref="Flush"/> does nothing (15 fsyncs of the log for the same write).</para>
/// <para><b>Truncation.</b> A checkpoint ends by truncating the log; the truncation is flushed at once,
/// so that pages of the next transaction can never appear beside the old log's pages, which carry the
/// same transaction numbers (LiteDB numbers transactions from 1 again after every checkpoint). The
/// data file is durable by then: LiteDB flushes it before truncating.</para>
/// Threading: LiteDB's <c>ConcurrentStream</c> serialises each Position+Read/Write pair (it locks this
/// object); in addition every call on the inner stream is made under <c>_gate</c>, so the commit-record
/// writes of LiteDB's writer task, truncation by the checkpointing thread and reads never overlap.
/// <c>_failure</c> is guarded by <c>_gate</c>.
/// </summary>
internal sealed class LogWriteLatchStream(Stream inner) : Stream
{
    /// <summary>LiteDB 5 page layout: page size, and the offset of the "is confirmed" byte in the page header.</summary>
    private const int PageSize = 8192, ConfirmedFlag = 18;

    private readonly object _gate = new();
    private Exception? _failure;

    private void ThrowIfFailed()
    {
        if (_failure is { } f) throw new IOException($"metadata log: an earlier write failed: {f.Message}", f);
    }

    public override bool CanRead => inner.CanRead;
    public override bool CanSeek => inner.CanSeek;
    public override bool CanWrite => inner.CanWrite;
    public override long Length { get { lock (_gate) return inner.Length; } }
    public override long Position
    {
        get { lock (_gate) return inner.Position; }
        set { lock (_gate) inner.Position = value; }
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        lock (_gate) return inner.Seek(offset, origin);
    }

    public override int Read(byte[] buffer, int offset, int count)
    {
        lock (_gate)
        {
            ThrowIfFailed();
            return inner.Read(buffer, offset, count);
        }
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        lock (_gate)
        {
            if (_failure != null) return;
            try
            {
                if (count == PageSize && buffer[offset + ConfirmedFlag] != 0)
                {
                    // The transaction's pages, this last one still unconfirmed, become durable; then the flag.
                    long at = inner.Position;
                    var unconfirmed = buffer.AsSpan(offset, count).ToArray();
                    unconfirmed[ConfirmedFlag] = 0;
                    inner.Write(unconfirmed);
                    inner.Flush();
                    inner.Position = at;
                    inner.Write(buffer, offset, count);
                    inner.Flush();
                }
                else inner.Write(buffer, offset, count);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException) { _failure = e; }
        }
    }

    /// <summary>Does nothing: pages become durable when their transaction's commit record is written, or when
    /// the log is truncated (see the class summary). The inner stream buffers nothing (DurableFileStream).</summary>
    public override void Flush() { }

    public override void SetLength(long value)
    {
        lock (_gate)
        {
            ThrowIfFailed();
            inner.SetLength(value);
            inner.Flush();
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }
}
