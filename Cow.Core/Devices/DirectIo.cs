using Mono.Unix.Native;

namespace Cow.Core.Devices;

/// <summary>What the O_DIRECT helpers of <see cref="FileBlockDevice"/> (<see cref="DirectReadAhead"/>,
/// <see cref="DirectWriteBehind"/>) share: whole positional transfers and their worker threads. Stateless;
/// thread-safe.</summary>
internal static unsafe class DirectIo
{
    /// <summary>pread or pwrite of all <paramref name="length"/> bytes at <paramref name="offset"/>, retrying
    /// interrupted and short transfers; false on an error or end of file (the caller falls back to the ordinary
    /// descriptor, which reports the error with the device name and offset).</summary>
    public static bool Transfer(int fd, bool write, long offset, byte* buffer, int length)
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
    public static Thread[] StartThreads(int count, string name, ThreadStart body)
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
