using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// fallocate (mode 0 and KEEP_SIZE) reserves space as ext4 and btrfs do: ENOSPC with nothing changed when
/// the space is not there; writes into the reserved range cannot fail for lack of space; the reservation is
/// counted out of statfs's free space, released by truncate, punch and unlink, and survives a reopen.
/// </summary>
[Trait("Tier", "engine")]
public class FallocateReservationTests
{
    private const int Block = 4096;
    private const long MiB = 1 << 20;

    private static long Free(FileSystemView fs) => fs.StatFs().FreeBlocks;

    private static void Ok(Errno e, string what) => Assert.True(e == 0, $"{what}: {e}");

    private static long Size(FileSystemView fs, long ino)
    {
        Ok(fs.GetAttr(ino, out var a), "getattr");
        return a.Size;
    }

    /// <summary>Appends 64 KiB pieces until ENOSPC; returns the bytes written.</summary>
    private static long FillUntilFull(FileSystemView fs, long ino)
    {
        var buf = new byte[64 * 1024];
        new Random(3).NextBytes(buf);
        long off = 0;
        while (true)
        {
            var e = fs.Write(ino, off, buf, out int n);
            off += n;
            if (e == Errno.ENOSPC || (e == 0 && n < buf.Length)) return off;
            Ok(e, $"fill at {off}");
        }
    }

    [Fact]
    public void TwiceTheFreeSpaceIsEnospcAndChangesNothing()
    {
        using var mp = new MemoryPool(logSize: 64 * MiB);
        var fs = mp.Live;
        long f = CreateFile(fs, "/f");
        long free = Free(fs);
        Assert.Equal(Errno.ENOSPC, fs.Fallocate(f, FallocateMode.None, 0, 2 * free * Block));
        Assert.Equal(Errno.ENOSPC, fs.Fallocate(f, FallocateMode.KeepSize, 0, 2 * free * Block));
        Assert.Equal(0, Size(fs, f));
        Assert.Equal(free, Free(fs));
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);
    }

    [Fact]
    public void WritesIntoTheReservedRangeSucceedOnAFullPool()
    {
        using var mp = new MemoryPool(logSize: 64 * MiB);
        var fs = mp.Live;
        long f = CreateFile(fs, "/f");
        long free = Free(fs);
        long len = free * 6 / 10 * Block;
        Ok(fs.Fallocate(f, FallocateMode.None, 0, len), "fallocate 60%");
        Assert.Equal(len, Size(fs, f));
        long after = Free(fs);
        Assert.Equal(len / Block + 256, free - after);   // the range, and 1 MiB of overwrite slack

        long other = CreateFile(fs, "/other");
        long filled = FillUntilFull(fs, other);
        Assert.True(filled > 0 && filled <= after * Block, $"the other file took {filled} bytes, {after * Block} were free");
        Assert.Equal(0, Free(fs));
        Assert.Equal(Errno.ENOSPC, fs.Fallocate(other, FallocateMode.KeepSize, filled, 1 << 20));

        // Every byte of the reserved range, in pieces, then over again (overwrites on a full pool).
        var data = new byte[len];
        new Random(5).NextBytes(data);
        for (int pass = 0; pass < 2; pass++)
            for (long off = 0; off < len; off += 60 * 1024 + 17)
            {
                int n = (int)Math.Min(60 * 1024 + 17, len - off);
                var e = fs.Write(f, off, data.AsSpan((int)off, n), out int w);
                Assert.True(e == 0 && w == n, $"pass {pass}: write {n} at {off} of the reserved range: {e}, {w} written");
            }
        Assert.Equal(data, ReadAll(fs, f));
        mp.AssertClean();
    }

    [Fact]
    public void ReleasedByTruncatePunchAndUnlinkAndKeptAcrossReopen()
    {
        using var mp = new MemoryPool(logSize: 64 * MiB);
        var fs = mp.Live;
        long f = CreateFile(fs, "/f");
        long free = Free(fs);
        Ok(fs.Fallocate(f, FallocateMode.KeepSize, 0, 4 * MiB), "fallocate keep-size 4 MiB");
        Assert.Equal(0, Size(fs, f));
        Assert.Equal(free - 1024 - 256, Free(fs));
        // A second fallocate of the same range reserves nothing more; a write into it changes nothing either.
        Ok(fs.Fallocate(f, FallocateMode.KeepSize, 0, 4 * MiB), "again");
        Assert.Equal(free - 1280, Free(fs));
        WriteAt(fs, f, 0, new byte[MiB]);
        Assert.Equal(free - 1280, Free(fs));

        Ok(fs.Fsync(f), "fsync");
        mp.Reopen();
        fs = mp.Live;
        Assert.Equal(free - 1280, Free(fs));
        Assert.Equal(768 + 256, mp.Engine.PreallocatedBlocks);   // the 768 holes left, and the slack

        // Punch [2 MiB, 3 MiB): 256 reserved holes go back.
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 2 * MiB, MiB), "punch");
        Assert.Equal(512 + 256, mp.Engine.PreallocatedBlocks);
        // Truncate to 512 KiB: everything past it (past the size too, KEEP_SIZE) goes.
        Ok(fs.SetAttr(f, new SetAttrRequest { Size = 512 * 1024 }, out _), "truncate");
        Assert.Equal(128, mp.Engine.PreallocatedBlocks);   // the range [0, 512 KiB) is written: only its slack (128 blocks) is left
        Ok(fs.Fallocate(f, FallocateMode.None, 0, 2 * MiB), "fallocate 2 MiB");
        Assert.Equal(384 + 256, mp.Engine.PreallocatedBlocks);
        Ok(fs.Unlink(fs.RootIno, "f"), "unlink");
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);
        Ok(fs.Fsync(fs.RootIno), "fsync");
        mp.Reopen();
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);
        mp.AssertClean();
    }

    [Fact]
    public void FsckChecksTheReservationCount()
    {
        using var mp = new MemoryPool(logSize: 64 * MiB);
        var fs = mp.Live;
        long f = CreateFile(fs, "/f");
        Ok(fs.Fallocate(f, FallocateMode.None, 0, 2 * MiB), "fallocate");
        WriteAt(fs, f, 4096, new byte[8192]);
        Ok(fs.Fsync(f), "fsync");
        mp.AssertClean();
        // A record that holds more than its ranges need (a bug the check is there for).
        mp.Engine.Live(f)!.Rec.PreallocBlocks += 7;
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0x180 }, out _), "chmod");   // rewrites the record
        Ok(fs.Fsync(f), "fsync");
        var report = mp.Pool.Fsck();
        Assert.Contains(report.Problems, p => p.Kind == "prealloc" && p.Ino == f && p.Message.Contains("holds 773 blocks") && p.Message.Contains("need 766"));
    }

    [Fact]
    public void RollbackBringsTheSnapshotsReservationsBackAndACloneHasNone()
    {
        using var mp = new MemoryPool(logSize: 64 * MiB);
        var fs = mp.Live;
        long f = CreateFile(fs, "/f");
        Ok(fs.Fallocate(f, FallocateMode.KeepSize, 0, 2 * MiB), "fallocate");
        long held = mp.Engine.PreallocatedBlocks;
        Assert.Equal(512 + 256, held);
        Assert.Equal((Errno)0, mp.Engine.CreateSnapshot("s", out _));
        Ok(fs.Unlink(fs.RootIno, "f"), "unlink");
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);
        Assert.Equal((Errno)0, mp.Engine.CloneSnapshot("s", "/copy"));
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);   // a copy holds no reservation
        Assert.Equal((Errno)0, mp.Engine.RollbackToSnapshot("s"));
        Assert.Equal(held, mp.Engine.PreallocatedBlocks);
        mp.AssertClean();
        mp.Reopen();
        Assert.Equal(held, mp.Engine.PreallocatedBlocks);
    }

    [Fact]
    public void ARestoreReplacingAReservedFilesContentsReleasesItsReservationAndARestoredCopyHoldsNone()
    {
        using var mp = new MemoryPool(logSize: 64 * MiB);
        var fs = mp.Live;
        long f = CreateFile(fs, "/f");
        Ok(fs.Fallocate(f, FallocateMode.KeepSize, 0, 8 * MiB), "fallocate");   // past the extent map's first chunk
        long held = mp.Engine.PreallocatedBlocks;
        Assert.Equal((Errno)0, mp.Engine.CreateSnapshot("s", out _));
        WriteAt(fs, f, 0, new byte[8192]);   // changed in place: the restore replaces its contents
        Assert.Equal((Errno)0, mp.Engine.RestoreFromSnapshot("s", ["/f"], false, out var changes, out _));
        Assert.Contains(changes, c => c.Path == "/f");
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);
        Ok(fs.Unlink(fs.RootIno, "f"), "unlink");
        Assert.Equal((Errno)0, mp.Engine.RestoreFromSnapshot("s", ["/f"], false, out _, out _));   // made anew from the snapshot
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);
        mp.AssertClean();
        mp.Reopen();
        Assert.Equal(0, mp.Engine.PreallocatedBlocks);
        Assert.True(held > 0);
    }

    [Fact]
    public void RangeSetArithmetic()
    {
        var r = Core.Engine.FallocateReservations.RangeAdd(null, 10, 20);
        r = Core.Engine.FallocateReservations.RangeAdd(r, 30, 40);
        Assert.Equal([10L, 20, 30, 40], r);
        Assert.Equal([5L, 40], Core.Engine.FallocateReservations.RangeAdd(r, 5, 30));
        Assert.Equal([10L, 20, 25, 26, 30, 40], Core.Engine.FallocateReservations.RangeAdd(r, 25, 26));
        Assert.Equal([10L, 12, 35, 40], Core.Engine.FallocateReservations.RangeRemove(r, 12, 35)!);
        Assert.Null(Core.Engine.FallocateReservations.RangeRemove(r, 0, 100));
    }
}
