using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Attributes: what stat reports, chmod, chown, utimensat, and which changes move ctime and mtime.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void StatReportsWhatWasCreated()
    {
        long before = NowNs();
        long ino = Touch("f");
        long after = NowNs();
        var a = St("f");
        Assert.Equal(ino, a.Ino);
        Assert.Equal(S_IFREG | Masked(0x1A4), a.Mode);
        Assert.Equal(1u, a.Nlink);
        Assert.Equal(T.Uid, a.Uid);
        Assert.Equal(T.Gid, a.Gid);
        Assert.Equal(0, a.Size);
        Assert.Equal(0, a.Blocks512);
        Assert.Equal(Bs, a.BlockSize);
        Assert.Equal(0ul, a.Rdev);
        Assert.NotNull(a.BtimeNs);
        foreach (long t in new[] { a.AtimeNs, a.MtimeNs, a.CtimeNs, a.BtimeNs!.Value }) Assert.InRange(t, before, after);
        Assert.Equal(S_IFDIR, St(".").Type);
        WriteAt("f", 0, Pattern(10_000, 1));
        a = St("f");
        Assert.Equal(10_000, a.Size);
        Assert.Equal(3 * Bs / 512, a.Blocks512);
        T.AssertClean();
    }

    [SkippableFact]
    public void ChmodAndChownChangeWhatTheyNameAndMoveCtime()
    {
        Touch("f");
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        var a0 = St("f");
        Tick();
        // a mode that names another type (a directory) changes only the permission bits
        Ok(T.Chmod("f", S_IFDIR | 0xFED), "chmod");
        var a = St("f");
        Assert.Equal(S_IFREG | 0xFED, a.Mode); // setuid, setgid, sticky and rwx bits kept
        Assert.True(a.CtimeNs > a0.CtimeNs, "chmod did not advance ctime");
        Assert.Equal(a0.MtimeNs, a.MtimeNs);
        Ok(T.Chmod("d", 0x1C0), "chmod dir");
        Assert.Equal(S_IFDIR | 0x1C0, St("d").Mode);
        Ok(T.Chmod("f", 0x1A0), "chmod 0640");
        a = St("f");
        Assert.Equal(0x1A0u, a.Perm);
        Assert.Equal(S_IFREG, a.Type);
        var a1 = a;
        Tick();
        Ok(T.Chown("f", 1234, uint.MaxValue), "chown uid");
        a = St("f");
        Assert.Equal(1234u, a.Uid);
        Assert.Equal(T.Gid, a.Gid);
        Assert.True(a.CtimeNs > a1.CtimeNs, "chown did not advance ctime");
        Ok(T.Chown("f", uint.MaxValue, 4321), "chown gid");
        Assert.Equal((1234u, 4321u), (St("f").Uid, St("f").Gid));
        var a2 = St("f");
        Tick();
        Ok(T.Chown("f", 1234, 5678), "chown both");
        a = St("f");
        Assert.Equal((1234u, 5678u), (a.Uid, a.Gid));
        Assert.True(a.CtimeNs > a2.CtimeNs, "chown did not advance ctime");
        Ok(T.Chown("f", uint.MaxValue - 1, 0), "chown to the largest uid and gid 0");
        Assert.Equal((uint.MaxValue - 1, 0u), (St("f").Uid, St("f").Gid));
        Ok(T.Chown("f", uint.MaxValue, 42), "chown group only");
        Assert.Equal((uint.MaxValue - 1, 42u), (St("f").Uid, St("f").Gid));
        // special bits and directories
        Ok(T.Chmod("f", 0xDED), "chmod 06755");
        Assert.Equal(S_IFREG | 0xDED, St("f").Mode);
        Ok(T.Chmod("d", 0x3FF), "chmod 01777 dir");
        Assert.Equal(S_IFDIR | 0x3FF, St("d").Mode);
        // creating in a directory moves its mtime
        var before = St("d");
        Tick();
        WriteFile("d/new", "n"u8);
        Assert.True(St("d").MtimeNs > before.MtimeNs, "create did not advance the parent's mtime");
        Fails(Errno.ENOENT, T.Chmod("missing", 0x1A4), "chmod a missing file");
        Fails(Errno.ENOENT, T.Chown("missing", 1, 1), "chown a missing file");
        T.Reopen();
        a = St("f");
        Assert.Equal(S_IFREG | 0xDED, a.Mode);
        Assert.Equal(uint.MaxValue - 1, a.Uid);
        Assert.Equal(42u, a.Gid);
        T.AssertClean();
    }

    [SkippableFact]
    public void UtimensExplicitNowAndOmit()
    {
        SkipUnderIomap(IomapSetattrTimes + ": utimensat's times do not reach stat (a fresh mount shows them)");
        Touch("f");
        var a0 = St("f");
        Tick();
        long at = 1_000_000_000L * 1_600_000_000 + 123, mt = -1_000_000_000L * 86400 + 7; // before 1970 is allowed
        Ok(T.Utimens("f", PosixTime.At(at), PosixTime.At(mt)), "utimensat explicit");
        var a = St("f");
        Assert.Equal(at, a.AtimeNs);
        Assert.Equal(mt, a.MtimeNs);
        Assert.True(a.CtimeNs > a0.CtimeNs, "ctime moves on utimensat");
        Assert.NotEqual(mt, a.CtimeNs);
        Assert.Equal(a0.BtimeNs, a.BtimeNs);
        // only atime: mtime stays
        Ok(T.Utimens("f", PosixTime.At(5), PosixTime.Omit), "atime only");
        a = St("f");
        Assert.Equal(5, a.AtimeNs);
        Assert.Equal(mt, a.MtimeNs);
        Tick();
        long before = NowNs();
        Ok(T.Utimens("f", PosixTime.Now, PosixTime.Omit), "atime now");
        long after = NowNs();
        a = St("f");
        Assert.InRange(a.AtimeNs, before, after);
        Assert.Equal(mt, a.MtimeNs);
        Tick();
        before = NowNs();
        Ok(T.Utimens("f", PosixTime.Now, PosixTime.Now), "touch");
        after = NowNs();
        a = St("f");
        Assert.InRange(a.AtimeNs, before, after);
        Assert.InRange(a.MtimeNs, before, after);
        Assert.InRange(a.CtimeNs, before, after);
        // explicit atime with mtime now
        Ok(T.Utimens("f", PosixTime.At(at), PosixTime.Now), "mixed");
        a = St("f");
        Assert.Equal(at, a.AtimeNs);
        Assert.True(a.MtimeNs >= before);
        // nanoseconds are kept
        long at2 = 1_000_000_000L * 1_000_000_000 + 123_456_789, mt2 = 1_000_000_000L * 1_500_000_000 + 987_654_321;
        Ok(T.Utimens("f", PosixTime.At(at2), PosixTime.At(mt2)), "utimensat with nanoseconds");
        a = St("f");
        Assert.Equal((at2, mt2), (a.AtimeNs, a.MtimeNs));
        // UTIME_NOW for mtime, UTIME_OMIT for atime
        before = NowNs();
        Ok(T.Utimens("f", PosixTime.Omit, PosixTime.Now), "utimensat UTIME_OMIT/UTIME_NOW");
        a = St("f");
        Assert.Equal(at2, a.AtimeNs);
        Assert.InRange(a.MtimeNs, before, NowNs());
        // on a symlink itself
        Ok(T.Symlink("f", "l"), "symlink");
        Ok(T.Utimens("l", PosixTime.At(7_000_000_007), PosixTime.At(8_000_000_008), noFollow: true), "utimensat on a symlink");
        Assert.Equal(8_000_000_008, Lst("l").MtimeNs);
        Assert.Equal(7_000_000_007, Lst("l").AtimeNs);
        Assert.Equal(a.MtimeNs, St("f").MtimeNs);
        Fails(Errno.ENOENT, T.Utimens("missing", PosixTime.At(1), PosixTime.At(1)), "utimensat a missing file");
        Ok(T.Utimens("f", PosixTime.At(at2), PosixTime.At(mt2)), "utimensat again");
        T.Reopen();
        a = St("f");
        Assert.Equal((at2, mt2), (a.AtimeNs, a.MtimeNs));
        Assert.Equal(8_000_000_008, Lst("l").MtimeNs);
        T.AssertClean();
    }

    [SkippableFact]
    public void CtimeChangesOnEveryChange()
    {
        SkipUnderIomap(IomapSetattrTimes + ": chmod, chown, utimensat and truncate do not move ctime");
        Touch("f");
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        void Changes(string before, string after, string what, Func<Errno> change)
        {
            var b = St(before);
            Tick();
            Ok(change(), what);
            var a = St(after);
            Assert.True(a.CtimeNs > b.CtimeNs, $"{T.Name}: {what} did not move ctime of {after}");
        }
        Errno WithFile(Func<IPosixFile, Errno> op)
        {
            using var file = Open("f", O_RDWR);
            return op(file);
        }
        Changes("f", "f", "chmod", () => T.Chmod("f", 0x180));
        Changes("f", "f", "chown", () => T.Chown("f", 7, uint.MaxValue));
        Changes("f", "f", "utimens", () => T.Utimens("f", PosixTime.Omit, PosixTime.At(1)));
        Changes("f", "f", "write", () => WithFile(f => f.Pwrite(new byte[] { 1, 2, 3 }, 0, out _)));
        Changes("f", "f", "truncate", () => T.Truncate("f", 100));
        Changes("f", "f", "fallocate", () => WithFile(f => f.Fallocate(FallocateMode.None, 0, 8192)));
        Changes("f", "f", "punch", () => WithFile(f => f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 4096)));
        Changes("f", "f", "setxattr", () => T.SetXattr("f", "user.a", new byte[] { 1 }));
        Changes("f", "f", "removexattr", () => T.RemoveXattr("f", "user.a"));
        Changes("f", "f", "link", () => T.Link("f", "d/f2"));
        Changes("f", "f", "unlink of a second name", () => T.Unlink("d/f2"));
        Changes("f", "d/g", "rename", () => T.Rename("f", "d/g"));
        Changes("d", "d", "rename into the directory", () => T.Rename("d/g", "d/h"));
        Changes("d", "d", "create in the directory", () => OpenErrno("d/n", O_WRONLY | O_CREAT | O_EXCL));
        Changes("d", "d", "unlink in the directory", () => T.Unlink("d/n"));
        Changes("d", "d", "mkdir in the directory", () => T.Mkdir("d/sub", 0x1ED));
        Changes("d", "d", "rmdir in the directory", () => T.Rmdir("d/sub"));
        Changes(".", ".", "rename out of the root", () => T.Rename("d", "d2"));
        // mtime of a directory moves with its entries; a write moves the file's mtime
        var dm = St("d2").MtimeNs;
        Tick();
        Touch("d2/x");
        Assert.True(St("d2").MtimeNs > dm);
        var fm = St("d2/h").MtimeNs;
        Tick();
        WriteAt("d2/h", 0, new byte[] { 4 });
        Assert.True(St("d2/h").MtimeNs > fm);
        T.AssertClean();
    }
}
