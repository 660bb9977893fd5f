using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// Snapshots: a read-only tree (EROFS for every change, as a read-only mount answers) that keeps what it saw.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void EveryChangeInASnapshotIsErofsWhileReadsWork()
    {
        Ok(T.Mkdir("d", 0x1ED), "mkdir");
        var data = Pattern(20_000, 30);
        WriteAt("d/f", 0, data);
        Ok(T.Symlink("f", "d/l"), "symlink");
        Ok(T.SetXattr("d/f", "user.x", new byte[] { 1 }), "setxattr");
        Ok(T.Mkdir("d/e", 0x1ED), "mkdir");
        WriteFile("frozen", "frozen"u8);
        string s = T.Snapshot("s") + "/";
        // reads
        var live = St("d/f");
        var snap = St(s + "d/f");
        Assert.Equal((live.Mode, live.Nlink, live.Uid, live.Gid, live.Size, live.Blocks512, live.MtimeNs, live.CtimeNs),
            (snap.Mode, snap.Nlink, snap.Uid, snap.Gid, snap.Size, snap.Blocks512, snap.MtimeNs, snap.CtimeNs));
        Assert.Equal(Ino(s + "d"), Ino(s + "d/e/.."));
        Assert.Equal(new[] { ".", "..", "f", "l", "e" }, Entries(s + "d").Select(x => x.Name));
        Ok(T.Readlink(s + "d/l", out var t), "readlink");
        Assert.Equal("f", t);
        Assert.Equal(data, ReadAll(s + "d/f"));
        Assert.Equal(data, ReadAll(s + "d/l"));
        Assert.Equal("frozen"u8.ToArray(), ReadAll(s + "frozen"));
        Ok(T.GetXattr(s + "d/f", "user.x", out var v), "getxattr");
        Assert.Equal(new byte[] { 1 }, v);
        Ok(T.ListXattr(s + "d/f", out var names), "listxattr");
        Assert.Equal(new[] { "user.x" }, names);
        using (var f = Open(s + "d/f", O_RDONLY))
        {
            Ok(f.Seek(0, SeekWhence.Hole, out long h), "seek");
            Assert.Equal(20_000, h);
            Ok(f.Fsync(), "fsync");
        }
        Fails(Errno.ENOENT, StatErrno(s + "d/missing"), "stat a missing name in a snapshot");
        // every change
        var ro = new Dictionary<string, Errno>
        {
            ["create"] = OpenErrno(s + "d/n", O_RDWR | O_CREAT),
            ["mknod"] = T.Mknod(s + "d/n", S_IFIFO | 0x1A4, 0),
            ["mkdir"] = T.Mkdir(s + "d/n", 0x1ED),
            ["symlink"] = T.Symlink("x", s + "d/n"),
            ["link"] = T.Link(s + "d/f", s + "d/n"),
            ["unlink"] = T.Unlink(s + "d/f"),
            ["rmdir"] = T.Rmdir(s + "d/e"),
            ["rename"] = T.Rename(s + "d/f", s + "d/n"),
            ["rename exchange"] = T.Rename(s + "d/f", s + "d/e", RenameFlags.Exchange),
            ["chmod"] = T.Chmod(s + "d/f", 0x1FF),
            ["chmod of the case's root"] = T.Chmod(s.TrimEnd('/'), 0x1FF),
            ["chown"] = T.Chown(s + "d/f", 5, 5),
            ["utimens"] = T.Utimens(s + "d/f", PosixTime.Now, PosixTime.Now),
            ["utimens explicit"] = T.Utimens(s + "d/f", PosixTime.At(1_000_000_001), PosixTime.At(1_000_000_001)),
            ["truncate"] = T.Truncate(s + "d/f", 0),
            ["open for writing"] = OpenErrno(s + "d/f", O_WRONLY),
            ["open read-write"] = OpenErrno(s + "d/f", O_RDWR),
            ["O_TRUNC"] = OpenErrno(s + "d/f", O_RDONLY | O_TRUNC),
            ["setxattr"] = T.SetXattr(s + "d/f", "user.y", new byte[] { 2 }),
            ["removexattr"] = T.RemoveXattr(s + "d/f", "user.x"),
        };
        foreach (var (what, err) in ro) Assert.True(err == Errno.EROFS, $"{T.Name}: {what} in a snapshot: {err}, expected EROFS");
        // nothing changed in either tree
        Assert.Equal(data, ReadAll(s + "d/f"));
        Assert.Equal(data, ReadAll("d/f"));
        Assert.Equal(new[] { ".", "..", "f", "l", "e" }, Entries(s + "d").Select(x => x.Name));
        Assert.Equal(1u, St(s + "d/f").Nlink);
        Assert.Equal(St("d/f").Perm, St(s + "d/f").Perm);
        Assert.Equal(new HashSet<string> { "d", "frozen" }, Names(s));
        Assert.Equal("frozen"u8.ToArray(), ReadAll("frozen"));
        // the live tree moves on, the snapshot does not
        WriteAt("d/f", 0, Pattern(100, 31));
        Ok(T.Unlink("d/l"), "unlink live");
        Ok(T.Rename("d/e", "e2"), "rename live");
        Ok(T.Chmod("d/f", 0x100), "chmod live");
        Assert.Equal(data, ReadAll(s + "d/f"));
        Assert.Equal(S_IFREG | Masked(0x1A4), St(s + "d/f").Mode);
        Assert.Equal(Ino(s + "d"), Ino(s + "d/e/.."));
        Assert.Equal(Ino("."), Ino("e2/.."));
        Assert.Equal(S_IFLNK, Lst(s + "d/l").Type);
        Assert.Equal(3u, St(s + "d").Nlink);
        Assert.Equal(2u, St("d").Nlink);
        T.AssertClean();
    }

    [SkippableFact]
    public void TruncateOfSharedBlocksLeavesTheSnapshotAlone()
    {
        var data = Pattern(50_000, 2);
        WriteAt("f", 0, data);
        string s = T.Snapshot("s") + "/";
        Ok(T.Truncate("f", 10_001), "truncate");
        Ok(T.Truncate("f", 40_000), "truncate grow");
        var all = ReadAll("f");
        Assert.Equal(data[..10_001], all[..10_001]);
        Assert.True(AllZero(all.AsSpan(10_001)));
        Assert.Equal(data, ReadAll(s + "f"));
        T.AssertClean();
    }

    [SkippableFact]
    public void PunchHoleFreesBlocksAndLeavesSnapshotsAlone()
    {
        var data = Pattern(1 << 20, 21);
        WriteAt("f", 0, data);
        string s = T.Snapshot("s") + "/";
        using (var f = Open("f", O_RDWR))
        {
            Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 1 << 20), "punch all");
            Ok(f.Fstat(out var a), "fstat");
            Assert.Equal(0, a.Blocks512);
        }
        Assert.True(AllZero(ReadAll("f")));
        Assert.Equal(data, ReadAll(s + "f"));
        T.DeleteSnapshot("s");
        T.Sync();
        long free = T.FreeBlocks();
        using (var f = Open("f", O_RDWR))
        {
            WriteAt(f, 0, data);
            Ok(f.Fsync(), "fsync");
            Assert.Equal(free - 256, T.FreeBlocks());
            Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, Bs, 10 * Bs), "punch 10 blocks");
            Ok(f.Fsync(), "fsync");
            Assert.Equal(free - 246, T.FreeBlocks());
            Ok(f.Fstat(out var a), "fstat");
            Assert.Equal((256 - 10) * Bs / 512, a.Blocks512);
        }
        T.AssertClean();
    }

    [SkippableFact]
    public void XattrsOfASnapshotStayAsTheyWere()
    {
        Touch("f");
        Ok(T.SetXattr("f", "user.one", new byte[] { 7, 7 }), "setxattr");
        Ok(T.SetXattr("f", "user.empty", Array.Empty<byte>()), "empty value");
        string s = T.Snapshot("s") + "/";
        Ok(T.SetXattr("f", "user.one", new byte[] { 1, 1, 1 }), "overwrite after snapshot");
        Ok(T.RemoveXattr("f", "user.empty"), "remove after snapshot");
        Ok(T.GetXattr(s + "f", "user.one", out var got), "snapshot getxattr");
        Assert.Equal(new byte[] { 7, 7 }, got);
        Ok(T.GetXattr(s + "f", "user.empty", out _), "snapshot getxattr of a removed name");
        Ok(T.GetXattr("f", "user.one", out got), "live getxattr");
        Assert.Equal(new byte[] { 1, 1, 1 }, got);
        Fails(Errno.ENODATA, T.GetXattr("f", "user.empty", out _), "live getxattr of a removed name");
        T.Reopen();
        Ok(T.GetXattr(s + "f", "user.empty", out _), "snapshot after reopen");
        T.AssertClean();
    }

    [SkippableFact]
    public void SeekInASnapshotAnswersAsInTheLiveTree()
    {
        long dataAt = 1 << 20;
        using (var f = Open("f", O_RDWR | O_CREAT))
        {
            WriteAt(f, dataAt, Pattern(2 * Bs, 26));
            Ok(f.Ftruncate(3 << 20), "ftruncate");
        }
        using (var h = Open("h", O_RDWR | O_CREAT))
        {
            WriteAt(h, ChunkBytes - 2 * Bs, Pattern(4 * Bs, 28));
            WriteAt(h, 3 * ChunkBytes + Bs, Pattern(Bs, 29));
        }
        string s = T.Snapshot("s") + "/";
        long r;
        using (var f = Open(s + "f", O_RDONLY)) { Ok(f.Seek(0, SeekWhence.Data, out r), "snapshot data"); Assert.Equal(dataAt, r); }
        using (var h = Open(s + "h", O_RDONLY)) { Ok(h.Seek(ChunkBytes - 2 * Bs, SeekWhence.Hole, out r), "snapshot hole"); Assert.Equal(ChunkBytes + 2 * Bs, r); }
        T.AssertClean();
    }
}
