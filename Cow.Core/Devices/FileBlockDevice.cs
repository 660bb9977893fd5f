using Microsoft.Win32.SafeHandles;
using Mono.Unix;
using Mono.Unix.Native;

namespace Cow.Core.Devices;

/// <summary>
/// An <see cref="IBlockDevice"/> over a regular (usually sparse) image file or a block device node
/// such as <c>/dev/loop0</c>. I/O is positional (pread/pwrite through <see cref="RandomAccess"/>);
/// <see cref="Flush"/> is fdatasync. Sequential reads are served by an O_DIRECT read-ahead of whole 4 MiB
/// chunks on a second descriptor (<see cref="DirectReadAhead"/>), which every <see cref="Write"/> and
/// <see cref="DropCached"/> keeps current. Block-aligned writes of <see cref="DirectWriteBehind.MinBytes"/> or more
/// are written behind with O_DIRECT from buffers
/// of this object's own on a third descriptor (<see cref="DirectWriteBehind"/>): <see cref="Write"/> returns once
/// the bytes are copied, a <see cref="Read"/> of a range still being written waits for it, and <see cref="Flush"/>
/// waits for every write made before it (and reports the first that failed) before the fdatasync.
/// </summary>
/// <remarks>
/// Threading: every member is thread-safe; the read-ahead and the write-behind have a lock each (neither is
/// taken while holding the other; the write-behind calls into the read-ahead only outside its own lock). Apart
/// from them, the only state is the immutable
/// <see cref="Name"/>, <see cref="Length"/>, <see cref="IsBlockDevice"/>, <see cref="IsWritable"/> and the
/// <see cref="SafeFileHandle"/>, whose reference count keeps the descriptor alive while a call uses it,
/// so <see cref="Read"/>, <see cref="Write"/> and <see cref="Flush"/> may run concurrently with each other
/// (pread/pwrite semantics: non-overlapping ranges are independent, overlapping writes have no defined
/// winner). A call racing with <see cref="Dispose"/> either completes or throws
/// <see cref="ObjectDisposedException"/>.
/// Allocation: <see cref="Read"/> and <see cref="Write"/> do not allocate except when throwing (the read-ahead and
/// write-behind buffers are allocated once, on first use, and reused).
/// Length is fixed at open: the file length for an image, lseek(SEEK_END) for a block device.
/// The file is opened with FileShare.ReadWrite; nothing stops a second opener.
/// </remarks>
public sealed class FileBlockDevice : IBlockDevice
{
    private readonly SafeFileHandle _handle;
    private readonly DirectReadAhead? _readAhead;
    private readonly DirectWriteBehind? _writeBehind;

    private FileBlockDevice(string name, SafeFileHandle handle, long length, bool isBlockDevice, bool writable)
    {
        Name = name;
        _handle = handle;
        Length = length;
        IsBlockDevice = isBlockDevice;
        IsWritable = writable;
        _readAhead = Devices.DirectReadAhead.TryOpen(name, length);
        if (writable)
            _writeBehind = DirectWriteBehind.TryOpen(name, WriteBuffered, (o, l) => _readAhead?.Invalidate(o, l));
    }

    /// <summary>Whether sequential reads are read ahead with O_DIRECT (<see cref="DirectReadAhead"/>); false
    /// where the file system refuses O_DIRECT, and then the kernel is asked to read ahead (posix_fadvise).</summary>
    public bool ReadsAheadDirect => _readAhead != null;

    /// <summary>Reads served from O_DIRECT read-ahead buffers so far.</summary>
    public long ReadAheadHits => _readAhead?.Hits ?? 0;
    /// <summary>Of <see cref="ReadAheadHits"/>, the reads lent in place (<see cref="IBlockDevice.ReadOrLend"/>) rather than copied.</summary>
    public long ReadAheadLent => _readAhead?.Lent ?? 0;

    /// <summary>Whether block-aligned writes of <see cref="DirectWriteBehind.MinBytes"/> or more are written behind with O_DIRECT (<see cref="DirectWriteBehind"/>);
    /// false when read-only or where the file system refuses O_DIRECT (then writes go through the page cache).</summary>
    public bool WritesBehindDirect => _writeBehind != null;

    /// <summary>Writes (of at most <see cref="DirectWriteBehind.BufferBytes"/>) written behind so far.</summary>
    public long WritesBehind => _writeBehind?.Queued ?? 0;

    /// <summary>The path the device was opened with.</summary>
    public string Name { get; }

    /// <inheritdoc />
    public long Length { get; }

    /// <summary>True when the path is a block device node (e.g. /dev/loop0, /dev/sdb), false for an
    /// image file.</summary>
    public bool IsBlockDevice { get; }

    /// <summary>True when opened for writing; <see cref="Write"/> on a read-only device throws
    /// <see cref="IOException"/>.</summary>
    public bool IsWritable { get; }

    /// <summary>
    /// Creates a new sparse image file of <paramref name="length"/> bytes (ftruncate: no blocks are
    /// allocated) and opens it for reading and writing.
    /// </summary>
    /// <exception cref="IOException">The file already exists, its directory does not exist, permission
    /// is denied, or the file system refuses the size. The message names the path.</exception>
    public static FileBlockDevice Create(string path, long length)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (Directory.Exists(path))
            throw new IOException($"device {path}: is a directory");
        if (File.Exists(path))
            throw new IOException($"device {path}: file already exists (refusing to overwrite it)");

        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite);
        }
        catch (DirectoryNotFoundException e)
        {
            throw new IOException($"device {path}: directory {Path.GetDirectoryName(Path.GetFullPath(path))} not found", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new IOException($"device {path}: permission denied", e);
        }
        catch (IOException e) when (File.Exists(path))
        {
            throw new IOException($"device {path}: file already exists (refusing to overwrite it)", e);
        }
        catch (IOException e)
        {
            throw new IOException($"device {path}: cannot create: {e.Message}", e);
        }

        try
        {
            RandomAccess.SetLength(handle, length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException)
        {
            // ArgumentOutOfRangeException: EFBIG, a length beyond what the file system can hold.
            handle.Dispose();
            TryDelete(path);
            throw new IOException($"device {path}: cannot size the new image to {length} bytes: {e.Message}", e);
        }

        return new FileBlockDevice(path, handle, length, isBlockDevice: false, writable: true);
    }

    /// <summary>
    /// Opens an existing image file or block device node.
    /// </summary>
    /// <param name="path">Image file or block device path.</param>
    /// <param name="writable">Open for reading and writing; otherwise read-only.</param>
    /// <exception cref="FileNotFoundException">The path does not exist ("device X: file not found").</exception>
    /// <exception cref="IOException">Permission denied, the path is a directory or another kind of file,
    /// or the size cannot be determined. The message names the path.</exception>
    public static FileBlockDevice Open(string path, bool writable)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
            throw new IOException($"device {path}: is a directory");

        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read,
                FileShare.ReadWrite);
        }
        catch (FileNotFoundException e)
        {
            throw new FileNotFoundException($"device {path}: file not found", path, e);
        }
        catch (DirectoryNotFoundException e)
        {
            throw new FileNotFoundException($"device {path}: file not found", path, e);
        }
        catch (UnauthorizedAccessException e)
        {
            if (Directory.Exists(path))
                throw new IOException($"device {path}: is a directory", e);
            throw new IOException($"device {path}: permission denied{(writable ? " (opening for writing)" : "")}", e);
        }
        catch (IOException e)
        {
            throw new IOException($"device {path}: cannot open: {e.Message}", e);
        }

        try
        {
            int fd = (int)handle.DangerousGetHandle();
            if (Syscall.fstat(fd, out Stat st) != 0)
                throw new IOException($"device {path}: cannot stat: {LastError()}");

            FilePermissions type = st.st_mode & FilePermissions.S_IFMT;
            long length;
            bool isBlock;
            if (type == FilePermissions.S_IFREG)
            {
                isBlock = false;
                length = RandomAccess.GetLength(handle);
            }
            else if (type == FilePermissions.S_IFBLK)
            {
                isBlock = true;
                length = Syscall.lseek(fd, 0, SeekFlags.SEEK_END);
                if (length < 0)
                    throw new IOException($"device {path}: cannot determine the size of the block device: {LastError()}");
            }
            else if (type == FilePermissions.S_IFDIR)
            {
                throw new IOException($"device {path}: is a directory");
            }
            else
            {
                throw new IOException($"device {path}: is not a regular file or block device");
            }

            return new FileBlockDevice(path, handle, length, isBlock, writable);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public void Read(long offset, Span<byte> buffer) => ReadOrLend(offset, buffer, default, null);

    /// <inheritdoc />
    public DeviceReadResult ReadOrLend(long offset, Span<byte> buffer, Span<uint> blockSums, ReadSegments? lend)
    {
        DeviceRange.Check(Name, Length, offset, buffer.Length);
        _writeBehind?.WaitForOverlapping(offset, buffer.Length);
        if (_readAhead != null)
        {
            if (_readAhead.TryRead(offset, buffer, blockSums, lend) is { } served) return served;
        }
        else ReadAhead(offset, buffer.Length);
        ReadFromDevice(offset, buffer);
        return DeviceReadResult.Read;
    }

    private void ReadFromDevice(long offset, Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int n;
            try
            {
                n = RandomAccess.Read(_handle, buffer, offset);
            }
            catch (IOException e)
            {
                throw ReadFailed(offset, buffer.Length, e);
            }

            if (n == 0)
            {
                // End of file: the image is shorter than Length (e.g. truncated behind our back).
                // Bytes never written read as zero.
                buffer.Clear();
                return;
            }

            buffer = buffer[n..];
            offset += n;
        }
    }

    /// <summary>Bytes asked for ahead of a sequential reader (posix_fadvise WILLNEED).</summary>
    public const long ReadAheadBytes = 8 << 20;
    // End of the last read and how far read-ahead was asked; racy by design (a hint, not state).
    private long _lastReadEnd = -1, _readAheadEnd;

    /// <summary>
    /// Device-level read-ahead where O_DIRECT is refused: a read that continues the previous one (a file written sequentially lies
    /// sequentially on the log device) asks the kernel to start reading the next <see cref="ReadAheadBytes"/>
    /// in the background, so a sequential reader through FUSE direct I/O (which has no kernel read-ahead
    /// of its own) finds its next blocks in the page cache. Never fails: it is only a hint.
    /// </summary>
    private void ReadAhead(long offset, int length)
    {
        long end = offset + length;
        bool sequential = offset == Volatile.Read(ref _lastReadEnd);
        Volatile.Write(ref _lastReadEnd, end);
        if (!sequential || end + ReadAheadBytes / 2 <= Volatile.Read(ref _readAheadEnd) || end >= Length) return;
        long from = Math.Max(end, Volatile.Read(ref _readAheadEnd));
        long to = Math.Min(Length, end + ReadAheadBytes);
        Volatile.Write(ref _readAheadEnd, to);
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            Mono.Unix.Native.Syscall.posix_fadvise((int)_handle.DangerousGetHandle(), from, to - from, Mono.Unix.Native.PosixFadviseAdvice.POSIX_FADV_WILLNEED);
        }
        catch (ObjectDisposedException) { }
        finally { if (added) _handle.DangerousRelease(); }
    }

    /// <inheritdoc />
    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        DeviceRange.Check(Name, Length, offset, data.Length);
        if (!IsWritable)
            throw ReadOnly(offset);
        if (data.IsEmpty)
            return;
        if (_writeBehind != null)
        {
            if (_writeBehind.TryWrite(offset, data)) return;   // read-ahead of the range is dropped once it landed
            _writeBehind.WaitForOverlapping(offset, data.Length);
        }
        WriteBuffered(offset, data);
    }

    private void WriteBuffered(long offset, ReadOnlySpan<byte> data)
    {
        try
        {
            RandomAccess.Write(_handle, data, offset);
        }
        catch (IOException e)
        {
            throw WriteFailed(offset, data.Length, e);
        }
        finally
        {
            // After the write (also a failed one, which may have written part): a chunk read ahead before it is stale.
            _readAhead?.Invalidate(offset, data.Length);
        }
    }

    /// <inheritdoc />
    public void Flush()
    {
        _writeBehind?.Drain();
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            if (Syscall.fdatasync((int)_handle.DangerousGetHandle()) != 0)
                throw new IOException($"device {Name}: flush (fdatasync) failed: {LastError()}");
        }
        finally
        {
            if (added)
                _handle.DangerousRelease();
        }
    }

    /// <summary>Forgets [<paramref name="offset"/>, +<paramref name="length"/>): the O_DIRECT read-ahead's
    /// chunks, and the clean pages the kernel's page cache of this file or block device holds of it (reads that
    /// <see cref="DirectReadAhead"/> does not serve go through that cache, and the kernel's own read-ahead of
    /// them fills it past what was asked). With fuse-iomap the kernel writes the range with bios straight to the
    /// device, which leaves pages cached earlier in place: read through them, an ioend's checksums (and every
    /// later read, in this process or the next) would see the bytes from before the write.</summary>
    public void DropCached(long offset, long length)
    {
        _readAhead?.Invalidate(offset, length);
        if (length <= 0) return;
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            Syscall.posix_fadvise((int)_handle.DangerousGetHandle(), offset, length, PosixFadviseAdvice.POSIX_FADV_DONTNEED);
        }
        catch (ObjectDisposedException) { }
        finally { if (added) _handle.DangerousRelease(); }
    }

    /// <summary>Puts every write made through <see cref="Write"/> to [<paramref name="offset"/>, +<paramref name="length"/>)
    /// on the device: writes held back by the write-behind land, and writes it left to the page cache (small ones,
    /// or every one where O_DIRECT is refused) are written back from it (sync_file_range). With fuse-iomap the
    /// kernel reads the range with bios straight from the device, past that page cache.</summary>
    public void Settle(long offset, long length)
    {
        _writeBehind?.WaitForOverlapping(offset, length);
        if (length <= 0) return;
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            if (!DirectIo.WriteBackRange((int)_handle.DangerousGetHandle(), offset, length))
                throw new IOException($"device {Name}: writing back [{offset}, +{length}) (sync_file_range) failed: {LastError()}");
        }
        finally { if (added) _handle.DangerousRelease(); }
    }

    /// <summary>Writes what is written behind (without fdatasync) and closes the file descriptors.</summary>
    public void Dispose()
    {
        _writeBehind?.Dispose();
        _readAhead?.Dispose();
        _handle.Dispose();
    }

    /// <inheritdoc />
    public override string ToString() => IsBlockDevice ? $"block device {Name}" : $"image {Name}";

    private IOException ReadFailed(long offset, int count, IOException e) =>
        new($"device {Name}: read of {count} bytes at offset {offset} failed: {e.Message}", e);

    private IOException WriteFailed(long offset, int count, IOException e) =>
        new($"device {Name}: write of {count} bytes at offset {offset} failed: {e.Message}", e);

    private IOException ReadOnly(long offset) =>
        new($"device {Name}: write at offset {offset} refused: the device is open read-only");

    private static string LastError()
    {
        Errno errno = Stdlib.GetLastError();
        return $"{UnixMarshal.GetErrorDescription(errno)} ({errno})";
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
