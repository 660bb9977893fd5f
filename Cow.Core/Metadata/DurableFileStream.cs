namespace Cow.Core.Metadata;

/// <summary>
/// The metadata file streams handed to LiteDB. LiteDB 5.0.x never asks the OS to make a commit durable
/// (its commits call <c>Flush()</c>, not <c>Flush(true)</c>; litedb-org/LiteDB#2818), so this stream turns
/// every <see cref="Flush()"/> into an fsync, and the log stream fsyncs its data-file partner before it
/// is truncated by a checkpoint. With <see cref="MetadataStore"/> checkpointing at every commit, a
/// returned commit is on stable storage.
/// Threading: as <see cref="FileStream"/> (LiteDB serialises access to each stream).
/// </summary>
public sealed class DurableFileStream : FileStream
{
    /// <summary>For the log file: the data file that must be durable before the log is truncated.</summary>
    public DurableFileStream? FlushBeforeTruncate { get; set; }

    public DurableFileStream(string path, FileMode mode)
        : base(path, mode, FileAccess.ReadWrite, FileShare.None, bufferSize: 0) { }   // unbuffered: LiteDB writes whole pages

    public override void Flush() => Flush(true);

    /// <summary>Truncating the log ends a checkpoint: the data file must be durable first (LiteDB
    /// flushes it just before; this makes it a guarantee). The truncation itself is made durable by
    /// <see cref="LogWriteLatchStream"/>, which flushes right after it: LiteDB numbers transactions
    /// from 1 again after a checkpoint, so a stale log must never reappear beside new pages.</summary>
    public override void SetLength(long value)
    {
        FlushBeforeTruncate?.Flush(true);
        base.SetLength(value);
    }
}

/// <summary>
/// A read-only view of a file that accepts writes into memory and never touches the file. Used to open
/// the metadata while a pool's devices are validated, so that a refused open writes nothing — not even
/// LiteDB's own log replay. Threading: not thread-safe (one LiteDB instance owns it).
/// </summary>
public sealed class ScratchOverlayStream : Stream
{
    private readonly Stream? _file;
    private readonly bool _ownsFile = true;
    private readonly SortedDictionary<long, byte[]> _pages = new();
    private const int Page = 4096;
    private long _length, _position;

    public ScratchOverlayStream(string path)
    {
        if (File.Exists(path))
        {
            _file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            _length = _file.Length;
        }
    }

    /// <summary>Over a readable, seekable stream (a metadata stream on a device), which it never writes, nor
    /// disposes unless <paramref name="owns"/>.</summary>
    public ScratchOverlayStream(Stream under, bool owns)
    {
        _file = under;
        _ownsFile = owns;
        _length = under.Length;
    }

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => true;
    public override long Length => _length;
    public override long Position { get => _position; set => _position = value; }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) =>
        _position = origin switch { SeekOrigin.Begin => offset, SeekOrigin.Current => _position + offset, _ => _length + offset };
    public override void SetLength(long value) => _length = value;

    private byte[] PageAt(long page)
    {
        if (_pages.TryGetValue(page, out var p)) return p;
        p = new byte[Page];
        if (_file != null && page * Page < _file.Length)
        {
            _file.Position = page * Page;
            _file.ReadAtLeast(p, (int)Math.Min(Page, _file.Length - page * Page), throwOnEndOfStream: false);
        }
        return p;
    }

    public override int Read(byte[] buffer, int offset, int count)
    {
        count = (int)Math.Max(0, Math.Min(count, _length - _position));
        for (int done = 0; done < count;)
        {
            long page = (_position + done) / Page; int inPage = (int)((_position + done) % Page);
            int n = Math.Min(count - done, Page - inPage);
            Array.Copy(PageAt(page), inPage, buffer, offset + done, n);
            done += n;
        }
        _position += count;
        return count;
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        for (int done = 0; done < count;)
        {
            long page = (_position + done) / Page; int inPage = (int)((_position + done) % Page);
            int n = Math.Min(count - done, Page - inPage);
            var p = PageAt(page);
            Array.Copy(buffer, offset + done, p, inPage, n);
            _pages[page] = p;
            done += n;
        }
        _position += count;
        _length = Math.Max(_length, _position);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && _ownsFile) _file?.Dispose();
        base.Dispose(disposing);
    }
}
