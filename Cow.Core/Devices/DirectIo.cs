using System.Runtime.InteropServices;
using Mono.Unix.Native;

namespace Cow.Core.Devices;

/// <summary>What the O_DIRECT helpers of <see cref="FileBlockDevice"/> (<see cref="DirectReadAhead"/>,
/// <see cref="DirectWriteBehind"/>) share: whole positional transfers and their worker threads, and buffers
/// in huge pages (public: the FUSE server's request and reply buffers are such buffers too). Stateless;
/// thread-safe.</summary>
public static unsafe partial class DirectIo
{
    /// <summary>Alignment of <see cref="AllocateBuffer"/>: one transparent huge page (x86-64, arm64 with 4 KiB pages).</summary>
    public const int HugePageBytes = 2 << 20;
    private const int MADV_HUGEPAGE = 14;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int MAdvise(void* address, nuint length, int advice);

    [LibraryImport("libc", EntryPoint = "sync_file_range", SetLastError = true)]
    private static partial int SyncFileRangeNative(int fd, long offset, long nbytes, uint flags);

    // SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER (linux/fs.h).
    private const uint SyncFileRangeWriteAndWait = 1 | 2 | 4;

    /// <summary>Writes the dirty page-cache pages of [<paramref name="offset"/>, +<paramref name="length"/>) of
    /// <paramref name="fd"/> to the device and waits for them (sync_file_range: no cache flush, so not durable,
    /// but on the device where a reader that bypasses the page cache sees them). False with errno on failure.</summary>
    public static bool WriteBackRange(int fd, long offset, long length) => SyncFileRangeNative(fd, offset, length, SyncFileRangeWriteAndWait) == 0;

    /// <summary>
    /// A buffer for O_DIRECT transfers of <paramref name="bytes"/>, aligned to a huge page and marked
    /// MADV_HUGEPAGE, so that it is physically contiguous in 2 MiB pieces where the kernel has huge pages.
    /// Why: a block request holds at most max_segments pieces of physically contiguous memory (128 on a loop
    /// device); in scattered 4 KiB pages that caps a request at 512 KiB, so a 4 MiB read became eight requests,
    /// which a loop device serves one after another. In huge pages a request reaches max_sectors_kb (1280 KiB
    /// on a loop device), and pinning the pages for the transfer walks 2 MiB at a time. Without transparent
    /// huge pages the advice is ignored and the buffer works as before. The allocation is rounded up to whole
    /// huge pages (a range advised in part cannot hold one). Free with <see cref="FreeBuffer"/>.
    /// </summary>
    public static byte* AllocateBuffer(int bytes)
    {
        nuint size = ((nuint)bytes + HugePageBytes - 1) & ~(nuint)(HugePageBytes - 1);
        var p = (byte*)NativeMemory.AlignedAlloc(size, HugePageBytes);
        MAdvise(p, size, MADV_HUGEPAGE);   // advice only: failure leaves ordinary pages
        return p;
    }

    /// <summary>Frees a buffer of <see cref="AllocateBuffer"/>.</summary>
    public static void FreeBuffer(byte* buffer) => NativeMemory.AlignedFree(buffer);

    /// <summary>pread or pwrite of all <paramref name="length"/> bytes at <paramref name="offset"/>, retrying
    /// interrupted and short transfers; false on an error or end of file (the caller falls back to the ordinary
    /// descriptor, which reports the error with the device name and offset).</summary>
    internal static bool Transfer(int fd, bool write, long offset, byte* buffer, int length)
    {
        int done = 0;
        while (done < length)
        {
            long n = write
                ? Syscall.pwrite(fd, buffer + done, (ulong)(length - done), offset + done)
                : Syscall.pread(fd, buffer + done, (ulong)(length - done), offset + done);
            if (n < 0 && Stdlib.GetLastError() == Errno.EINTR) continue;
            if (n <= 0) return false;
            done += (int)n;
        }
        return true;
    }

    /// <summary>Starts <paramref name="count"/> background threads named <c>NAME.i</c> running <paramref name="body"/>.</summary>
    internal static Thread[] StartThreads(int count, string name, ThreadStart body)
    {
        var threads = new Thread[count];
        for (int i = 0; i < count; i++)
        {
            threads[i] = new Thread(body) { IsBackground = true, Name = $"{name}.{i}" };
            threads[i].Start();
        }
        return threads;
    }
}
