using System.Runtime.InteropServices;
using Mono.Unix.Native;

namespace Cow.Fuse.Native;

/// <summary>
/// A minimal io_uring instance (include/uapi/linux/io_uring.h) for one thread: 128-byte submission entries
/// (IORING_SETUP_SQE128, which IORING_OP_URING_CMD on /dev/fuse needs for its command area), one submitter
/// (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN: the kernel does the work of a completion in
/// the waiting thread, in <see cref="Wait"/>). Only what the FUSE ring transport uses: put one
/// URING_CMD, submit it, and take or wait for its completion.
/// Threading: not thread-safe; the thread that made it is the only one that may submit (SINGLE_ISSUER).
/// </summary>
internal sealed unsafe partial class IoUringRing : IDisposable
{
    private const long SysIoUringSetup = 425, SysIoUringEnter = 426;   // the same on every architecture
    public const uint SetupSqe128 = 1u << 10, SetupSingleIssuer = 1u << 12, SetupDeferTaskrun = 1u << 13;
    private const uint FeatSingleMmap = 1;
    private const uint EnterGetEvents = 1;
    private const long OffSqRing = 0, OffCqRing = 0x8000000, OffSqes = 0x10000000;
    public const byte OpUringCmd = 46;
    public const int SqeSize = 128, CqeSize = 16;
    /// <summary>Offset of the command area in a 128-byte SQE (the union with addr3).</summary>
    public const int SqeCmdOffset = 48;

    private readonly int _fd;
    private readonly byte* _sqRing, _cqRing, _sqes;
    private readonly nuint _sqRingBytes, _cqRingBytes, _sqesBytes;
    private readonly uint* _sqTail, _sqMask, _sqArray, _cqHead, _cqTail, _cqMask;
    private readonly byte* _cqes;
    private readonly uint _sqEntries;
    private int _disposed;

    private IoUringRing(int fd, in Params p, byte* sq, nuint sqBytes, byte* cq, nuint cqBytes, byte* sqes, nuint sqesBytes)
    {
        _fd = fd; _sqRing = sq; _sqRingBytes = sqBytes; _cqRing = cq; _cqRingBytes = cqBytes; _sqes = sqes; _sqesBytes = sqesBytes;
        _sqEntries = p.SqEntries;
        _sqTail = (uint*)(sq + p.SqOff.Tail); _sqMask = (uint*)(sq + p.SqOff.RingMask); _sqArray = (uint*)(sq + p.SqOff.Array);
        _cqHead = (uint*)(cq + p.CqOff.Head); _cqTail = (uint*)(cq + p.CqOff.Tail); _cqMask = (uint*)(cq + p.CqOff.RingMask);
        _cqes = cq + p.CqOff.Cqes;
    }

    /// <summary>Makes a ring of <paramref name="entries"/> (a power of two) submission entries. Returns the
    /// errno of io_uring_setup or mmap (ENOSYS: no io_uring; EPERM: kernel.io_uring_disabled) and no ring.</summary>
    public static Errno TryCreate(uint entries, out IoUringRing? ring)
    {
        ring = null;
        var p = new Params { Flags = SetupSqe128 | SetupSingleIssuer | SetupDeferTaskrun };
        long fd = Syscall(SysIoUringSetup, entries, (long)&p, 0, 0, 0, 0);
        if (fd < 0)
        {
            var e = LibC.LastErrno;
            // Kernels before 6.1 have no DEFER_TASKRUN: a plain SQE128 ring does the same work less cheaply.
            if (e != Errno.EINVAL) return e;
            p = new Params { Flags = SetupSqe128 };
            fd = Syscall(SysIoUringSetup, entries, (long)&p, 0, 0, 0, 0);
            if (fd < 0) return LibC.LastErrno;
        }
        nuint sqBytes = p.SqOff.Array + p.SqEntries * 4u;
        nuint cqBytes = p.CqOff.Cqes + p.CqEntries * (uint)CqeSize;
        bool single = (p.Features & FeatSingleMmap) != 0;
        if (single) sqBytes = cqBytes = Math.Max(sqBytes, cqBytes);
        byte* sq = Map(sqBytes, (int)fd, OffSqRing);
        if (sq == null) return Fail((int)fd, null, 0, null, 0);
        byte* cq = single ? sq : Map(cqBytes, (int)fd, OffCqRing);
        if (cq == null) return Fail((int)fd, sq, sqBytes, null, 0);
        nuint sqesBytes = p.SqEntries * (nuint)SqeSize;
        byte* sqes = Map(sqesBytes, (int)fd, OffSqes);
        if (sqes == null) return Fail((int)fd, sq, sqBytes, single ? null : cq, cqBytes);
        ring = new IoUringRing((int)fd, p, sq, sqBytes, cq, single ? 0 : cqBytes, sqes, sqesBytes);
        return 0;
    }

    private static Errno Fail(int fd, byte* a, nuint aBytes, byte* b, nuint bBytes)
    {
        var e = LibC.LastErrno;
        if (a != null) Munmap(a, aBytes);
        if (b != null) Munmap(b, bBytes);
        LibC.Close(fd);
        return e;
    }

    private static byte* Map(nuint bytes, int fd, long offset)
    {
        void* m = Mmap(null, bytes, 3 /* PROT_READ|PROT_WRITE */, 0x01 | 0x8000 /* MAP_SHARED|MAP_POPULATE */, fd, offset);
        return m == (void*)-1 ? null : (byte*)m;
    }

    /// <summary>
    /// Puts one IORING_OP_URING_CMD on <paramref name="fd"/> with <paramref name="cmdOp"/>, sqe.addr/len
    /// <paramref name="addr"/>/<paramref name="len"/> and <paramref name="cmd"/> in the command area, and submits it
    /// (a command the kernel refuses at once has its completion ready when this returns: <see cref="TryTake"/>).
    /// Returns 0 or the errno of io_uring_enter.
    /// </summary>
    public Errno Submit(int fd, uint cmdOp, ulong addr, uint len, ReadOnlySpan<byte> cmd, ulong userData)
    {
        uint tail = *_sqTail;
        uint index = tail & *_sqMask;
        byte* sqe = _sqes + index * SqeSize;
        new Span<byte>(sqe, SqeSize).Clear();
        sqe[0] = OpUringCmd;
        *(int*)(sqe + 4) = fd;
        *(uint*)(sqe + 8) = cmdOp;
        *(ulong*)(sqe + 16) = addr;
        *(uint*)(sqe + 24) = len;
        *(ulong*)(sqe + 32) = userData;
        cmd.CopyTo(new Span<byte>(sqe + SqeCmdOffset, SqeSize - SqeCmdOffset));
        _sqArray[index] = index;
        Volatile.Write(ref *_sqTail, tail + 1);   // release: the entry is written before the tail moves
        while (true)
        {
            // GETEVENTS with min_complete 0: also runs the deferred completion work, without waiting.
            long r = Syscall(SysIoUringEnter, _fd, 1, 0, EnterGetEvents, 0, 0);
            if (r >= 0) return r == 1 ? 0 : Errno.EAGAIN;
            var e = LibC.LastErrno;
            if (e is Errno.EINTR) continue;
            return e;
        }
    }

    /// <summary>Takes one completion if there is one: its result (0 or -errno) and user data.</summary>
    public bool TryTake(out int result, out ulong userData)
    {
        uint head = *_cqHead;
        if (head == Volatile.Read(ref *_cqTail)) { result = 0; userData = 0; return false; }
        byte* cqe = _cqes + (head & *_cqMask) * CqeSize;
        userData = *(ulong*)cqe;
        result = *(int*)(cqe + 8);
        Volatile.Write(ref *_cqHead, head + 1);
        return true;
    }

    /// <summary>Waits until a completion arrives and takes it. Returns 0, or the errno of io_uring_enter
    /// (never EINTR: it waits again).</summary>
    public Errno Wait(out int result, out ulong userData)
    {
        while (true)
        {
            if (TryTake(out result, out userData)) return 0;
            long r = Syscall(SysIoUringEnter, _fd, 0, 1, EnterGetEvents, 0, 0);
            if (r < 0)
            {
                var e = LibC.LastErrno;
                if (e is Errno.EINTR or Errno.EAGAIN) continue;
                return e;
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Munmap(_sqes, _sqesBytes);
        if (_cqRingBytes != 0) Munmap(_cqRing, _cqRingBytes);
        Munmap(_sqRing, _sqRingBytes);
        LibC.Close(_fd);
    }

    /// <summary>struct io_uring_params (120 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd, Resv0, Resv1, Resv2;
        public SqRingOffsets SqOff;
        public CqRingOffsets CqOff;
    }

    /// <summary>struct io_sqring_offsets (40 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct SqRingOffsets { public uint Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1; public ulong UserAddr; }

    /// <summary>struct io_cqring_offsets (40 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct CqRingOffsets { public uint Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1; public ulong UserAddr; }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* addr, nuint length);
}
