using System.Runtime.InteropServices;
using Xunit;

namespace Cow.Tests.Iomap;

/// <summary>
/// The two ends of a <c>socketpair(AF_UNIX, SOCK_SEQPACKET)</c>: one for the server (a FuseSession reads
/// requests from it and writes replies and notifications to it, as on /dev/fuse: one message per read or
/// write, boundaries kept), one for the test that plays the kernel. Not thread-safe: one test thread.
/// </summary>
internal sealed unsafe partial class SocketKernel : IDisposable
{
    private const int AF_UNIX = 1, SOCK_SEQPACKET = 5, SOCK_CLOEXEC = 0x80000, POLLIN = 1;

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    private static partial int socketpair_(int domain, int type, int protocol, int* sv);
    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint read_(int fd, byte* buf, nint count);
    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint write_(int fd, byte* buf, nint count);
    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int close_(int fd);
    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int poll_(PollFd* fds, nuint n, int timeoutMs);

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd { public int Fd; public short Events; public short Revents; }

    /// <summary>The end a FuseSession serves (the session closes it).</summary>
    public int ServerFd { get; }
    /// <summary>The test's ("kernel's") end.</summary>
    public int KernelFd { get; private set; }
    private readonly byte[] _buffer = new byte[4 << 20];

    public SocketKernel()
    {
        int* sv = stackalloc int[2];
        if (socketpair_(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
            throw new IOException($"socketpair failed: errno {Marshal.GetLastPInvokeError()}");
        KernelFd = sv[0];
        ServerFd = sv[1];
    }

    /// <summary>Sends one message to the server.</summary>
    public void Send(ReadOnlySpan<byte> message)
    {
        fixed (byte* p = message)
        {
            nint n = write_(KernelFd, p, message.Length);
            Assert.True(n == message.Length, $"write to the server socket: {n} (errno {Marshal.GetLastPInvokeError()})");
        }
    }

    /// <summary>Receives one message from the server; fails the test after <paramref name="timeoutMs"/>.</summary>
    public byte[] Receive(int timeoutMs = 30_000)
    {
        var pfd = new PollFd { Fd = KernelFd, Events = POLLIN };
        int r = poll_(&pfd, 1, timeoutMs);
        Assert.True(r > 0, r == 0 ? $"the server sent nothing within {timeoutMs} ms" : $"poll failed: errno {Marshal.GetLastPInvokeError()}");
        fixed (byte* b = _buffer)
        {
            nint n = read_(KernelFd, b, _buffer.Length);
            Assert.True(n > 0, $"read from the server socket: {n} (errno {Marshal.GetLastPInvokeError()})");
            return _buffer.AsSpan(0, (int)n).ToArray();
        }
    }

    /// <summary>True when a message is waiting (without reading it).</summary>
    public bool HasMessage()
    {
        var pfd = new PollFd { Fd = KernelFd, Events = POLLIN };
        return poll_(&pfd, 1, 0) > 0 && (pfd.Revents & POLLIN) != 0;
    }

    /// <summary>Closes the test's end: the server reads end of file and its worker ends.</summary>
    public void CloseKernelEnd()
    {
        if (KernelFd >= 0) close_(KernelFd);
        KernelFd = -1;
    }

    public void Dispose() => CloseKernelEnd();
}
