using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// fallocate reserves space on a real mount, as on ext4 and btrfs: twice the free space is ENOSPC with
/// nothing changed; a reserved range can be written whole after another file filled the pool; statfs
/// does not count the reservation as free, punch, truncate and unlink give it back, and it survives a remount.
/// </summary>
[Trait("Tier", "mount")]
public class FallocateMountTests
{
    private const long MiB = 1 << 20;

    private static long FreeBytes(MountedPool m)
    {
        Assert.True(Syscall.statvfs(m.MountPoint, out var v) == 0, $"statvfs: {LastErrno()}");
        return (long)(v.f_bfree * v.f_frsize);
    }

    private static void Sync(MountedPool m)
    {
        int fd = Syscall.open(m.MountPoint, OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY);
        Assert.True(fd >= 0, "open the mount root");
        try { Assert.Equal(0, Native.Syncfs(fd)); } finally { Syscall.close(fd); }
    }

    private static void Ok(long r, string what) => Assert.True(r >= 0, $"{what}: {LastErrno()}");

    [SkippableFact]
    public void FallocateReservesSpace()
    {
        using var m = new MountedPool(logSize: 96 * MiB);
        long free0 = FreeBytes(m);
        using (var f = Fd.Open(m.P("f"), O_RDWR | O_CREAT))
        {
            Assert.True(Fallocate(f.Handle, 0, 0, 2 * free0) < 0, "fallocate of twice the free space succeeded");
            Assert.Equal(Errno.ENOSPC, LastErrno());
            Assert.True(Fallocate(f.Handle, FALLOC_FL_KEEP_SIZE, 0, 2 * free0) < 0);
            Assert.Equal(Errno.ENOSPC, LastErrno());
            Assert.Equal(0, f.Stat().st_size);
            Assert.Equal(0, f.Stat().st_blocks);
            Assert.Equal(free0, FreeBytes(m));

            long len = free0 * 6 / 10 / 4096 * 4096;
            Ok(Fallocate(f.Handle, 0, 0, len), "fallocate 60% of the free space");
            Assert.Equal(len, f.Stat().st_size);
            long free1 = FreeBytes(m);
            Assert.Equal(len + MiB, free0 - free1);   // the range, and 1 MiB of overwrite slack

            // Another file takes everything else.
            long filled = 0;
            using (var g = Fd.Open(m.P("g"), O_RDWR | O_CREAT))
            {
                var chunk = new byte[256 * 1024];
                new Random(1).NextBytes(chunk);
                while (true)
                {
                    long n = Pwrite(g.Handle, chunk, filled);
                    if (n < 0) { Assert.Equal(Errno.ENOSPC, LastErrno()); break; }
                    filled += n;
                    Assert.True(filled <= free1 + MiB, $"the other file got {filled} bytes of {free1} free");
                }
            }
            Assert.True(filled > free1 / 2, $"the other file got only {filled} of {free1} free bytes");
            Assert.Equal(0, FreeBytes(m));

            // The whole reserved range, twice (the second pass overwrites), then fsync.
            var data = new byte[len];
            new Random(2).NextBytes(data);
            for (int pass = 0; pass < 2; pass++)
                for (long off = 0; off < len; off += MiB)
                {
                    int n = (int)Math.Min(MiB, len - off);
                    long w = Pwrite(f.Handle, data.AsSpan((int)off, n), off);
                    Assert.True(w == n, $"pass {pass}: pwrite {n} at {off} of the reserved range: {(w < 0 ? LastErrno().ToString() : w + " bytes")}");
                }
            Ok(Fsync(f.Handle), "fsync");
            Assert.Equal(data, File.ReadAllBytes(m.P("f")));
        }

        // Unlinking the filler gives its space back; a KEEP_SIZE reservation past the end is held and survives a remount.
        File.Delete(m.P("g"));
        // Its blocks are free once the kernel's (asynchronous) RELEASE has arrived and a commit after it is durable.
        long free2 = 0;
        for (int i = 0; i < 200 && free2 == 0; i++)
        {
            Sync(m);
            free2 = FreeBytes(m);
            if (free2 == 0) Thread.Sleep(50);
        }
        Assert.True(free2 > 0, $"free {free2} after deleting the filler; reserved {m.Pool!.Engine.PreallocatedBlocks}, log {string.Join(",", m.Pool.Engine.DeviceUsage())}");
        using (var h = Fd.Open(m.P("h"), O_RDWR | O_CREAT))
            Ok(Fallocate(h.Handle, FALLOC_FL_KEEP_SIZE, 0, 8 * MiB), "fallocate keep-size 8 MiB");
        Assert.Equal(0, StatOf(m.P("h")).st_size);
        long free3 = FreeBytes(m);
        Assert.Equal(9 * MiB, free2 - free3);
        m.Remount();
        Assert.Equal(free3, FreeBytes(m));

        // Punch half of it, then truncate, then unlink: each gives space back.
        using (var h = Fd.Open(m.P("h"), O_RDWR))
        {
            Ok(Fallocate(h.Handle, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 4 * MiB, 4 * MiB), "punch");
            long free4 = FreeBytes(m);
            Assert.Equal(4 * MiB, free4 - free3);
            Ok(Ftruncate(h.Handle, 2 * MiB), "ftruncate up");   // growing keeps the reservation
            Assert.Equal(free4, FreeBytes(m));
            Ok(Ftruncate(h.Handle, 1 * MiB), "ftruncate down");
            Assert.Equal(free4 + 3 * MiB, FreeBytes(m));
        }
        File.Delete(m.P("h"));
        // Deleted when the last handle's RELEASE (asynchronous) arrives: wait for it, a few seconds at most.
        long free5 = FreeBytes(m);
        for (int i = 0; i < 200 && free5 != free2; i++) { Thread.Sleep(50); free5 = FreeBytes(m); }
        Assert.Equal(free2, free5);
    }
}
