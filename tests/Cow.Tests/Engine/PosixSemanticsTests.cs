using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// POSIX semantics of the inode API (<see cref="FileSystemView"/>) that only the inode API can show: inode numbers
/// that no path names (removed inodes, bad numbers), names a path cannot spell, what the API leaves to its
/// caller (the kernel's checks, killpriv), and the engine's snapshots, reopen with files open, power cuts and
/// free-block accounting. The POSIX behaviour both the inode API and a real mount show is written once in
/// <see cref="Cow.Tests.Posix.PosixCases"/> and runs on both. Every test ends with fsck.
/// </summary>
[Trait("Tier", "engine")]
public class PosixSemanticsTests
{
    private const long Root = 1;
    private const uint S_IFREG = 0x8000, S_IFIFO = 0x1000, S_IFCHR = 0x2000, S_IFBLK = 0x6000;

    // ---------------------------------------------------------------- helpers

    private static void Ok(Errno e, string what) => Assert.True(e == 0, $"{what}: {e}");

    private static InodeAttr Attr(FileSystemView fs, long ino)
    {
        Ok(fs.GetAttr(ino, out var a), $"getattr {ino}");
        return a;
    }

    private static InodeAttr Look(FileSystemView fs, long parent, string name)
    {
        Ok(fs.Lookup(parent, name, out var a), $"lookup {parent}/{name}");
        return a;
    }

    private static long Create(FileSystemView fs, long parent, string name, uint mode = 0x1A4)
    {
        Ok(fs.Create(parent, name, mode, 0, 0, out var a), $"create {name}");
        return a.Ino;
    }

    private static long Mkdir(FileSystemView fs, long parent, string name)
    {
        Ok(fs.Mkdir(parent, name, 0x1ED, 0, 0, out var a), $"mkdir {name}");
        return a.Ino;
    }

    private static List<DirEntryInfo> ReadDirAll(FileSystemView fs, long dir)
    {
        var all = new List<DirEntryInfo>();
        long off = 0;
        while (true)
        {
            var page = new List<DirEntryInfo>();
            Ok(fs.ReadDir(dir, off, 100, page), $"readdir {dir}");
            if (page.Count == 0) return all;
            all.AddRange(page);
            off = page[^1].NextOffset;
        }
    }

    private static HashSet<string> Names(FileSystemView fs, long dir) =>
        ReadDirAll(fs, dir).Select(d => d.Name).Where(n => n is not ("." or "..")).ToHashSet();

    // ---------------------------------------------------------------- what only inode numbers can show

    [Fact]
    public void BadInodeNumbersAndNamesAreRefused()
    {
        // Every call on an inode number that names nothing is ENOENT; a name with a slash, an empty name, "." and
        // ".." are not names to create (a path walk never hands them to the file system).
        using var p = new MemoryPool();
        var fs = p.Live;
        const long Missing = 999_999;
        long f = Create(fs, Root, "f");
        long d = Mkdir(fs, Root, "d");
        Assert.Equal(Errno.ENOENT, fs.Lookup(Missing, "x", out _));
        Assert.Equal(Errno.ENOTDIR, fs.Lookup(f, "x", out _));
        Assert.Equal(Errno.ENOENT, fs.GetAttr(Missing, out _));
        Assert.Equal(Errno.ENOENT, fs.SetAttr(Missing, new SetAttrRequest { Mode = 0x1FF }, out _));
        Assert.Equal(Errno.ENOENT, fs.SetAttr(Missing, new SetAttrRequest { Size = 0 }, out _));
        Assert.Equal(Errno.ENOENT, fs.Create(Missing, "x", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Mkdir(Missing, "x", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Unlink(Missing, "x"));
        Assert.Equal(Errno.ENOENT, fs.Rename(Missing, "x", Root, "y"));
        Assert.Equal(Errno.ENOENT, fs.Link(Missing, Root, "x", out _));
        Assert.Equal(Errno.ENOENT, fs.Readlink(Missing, out _));
        Assert.Equal(Errno.ENOENT, fs.Open(Missing, false));
        Assert.Equal(Errno.ENOENT, fs.Write(Missing, 0, new byte[1], out _));
        Assert.Equal(Errno.ENOENT, fs.Read(Missing, 0, new byte[1], out _));
        Assert.Equal(Errno.ENOENT, fs.Fallocate(Missing, FallocateMode.None, 0, 100));
        Assert.Equal(Errno.ENOENT, fs.SetXattr(Missing, "user.x", new byte[1]));
        Assert.Equal(Errno.ENOENT, fs.GetXattr(Missing, "user.x", out _));
        Assert.Equal(Errno.ENOENT, fs.ListXattr(Missing, out _));
        Assert.Equal(Errno.ENOENT, fs.RemoveXattr(Missing, "user.x"));
        Assert.Equal(Errno.ENOENT, fs.ReadDir(Missing, 0, 10, new List<DirEntryInfo>()));
        Assert.Equal(Errno.ENOENT, fs.Seek(Missing, 0, SeekWhence.Data, out _));
        // the root's "." and ".." are the root
        Assert.Equal(Root, Look(fs, Root, "..").Ino);
        Assert.Equal(Root, Look(fs, Root, ".").Ino);
        // names no path can spell
        Assert.Equal(Errno.EINVAL, fs.Create(Root, "a/b", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Create(Root, "", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Create(d, ".", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Mkdir(d, "..", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Rename(Root, "f", Root, "x/y"));
        Assert.Equal(new HashSet<string> { "f", "d" }, Names(fs, Root));
        Assert.Empty(Names(fs, d));
        p.AssertClean();
    }

    [Fact]
    public void CreateAnswersWhatGetattrReportsWithTheGivenOwner()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        Ok(fs.Create(Root, "f", 0x1A4, 1000, 100, out var created), "create");
        var a = Attr(fs, created.Ino);
        Assert.Equal(created, a);
        Assert.Equal((1000u, 100u), (a.Uid, a.Gid));
        Ok(fs.Symlink(Root, "l", "f", 5, 6, out var l), "symlink");
        Assert.Equal((5u, 6u), (l.Uid, l.Gid));
        Assert.Equal(l, Attr(fs, l.Ino));
        var root = Attr(fs, Root);
        Assert.True(root.IsDirectory);
        Assert.Equal(Root, root.Ino);
        p.AssertClean();
    }

    [Fact]
    public void ChownKeepsSetuidAndSetgidOnTheInodeApi()
    {
        // Clearing S_ISUID/S_ISGID on a chown is the FUSE layer's job (FUSE_HANDLE_KILLPRIV_V2: the kernel says
        // when); the inode API changes only what the request names.
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0xFED }, out _), "chmod 07755");
        Ok(fs.SetAttr(f, new SetAttrRequest { Uid = 1234 }, out var a), "chown uid");
        Assert.Equal(S_IFREG | 0xFED, a.Mode);
        Ok(fs.SetAttr(f, new SetAttrRequest { Uid = uint.MaxValue - 1, Gid = 0 }, out a), "chown both");
        Assert.Equal(S_IFREG | 0xFED, a.Mode);
        p.Reopen();
        Assert.Equal(S_IFREG | 0xFED, Attr(p.Live, f).Mode);
        p.AssertClean();
    }

    [Fact]
    public void InodesOfRemovedNamesAreGone()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        // unlink, rmdir, rename over a file or an empty directory: the inode that lost its last name is gone
        long f = Create(fs, Root, "f");
        Ok(fs.Unlink(Root, "f"), "unlink");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
        Assert.Equal(Errno.ENOENT, fs.Link(f, Root, "again", out _));
        long d = Mkdir(fs, Root, "d");
        Ok(fs.Rmdir(Root, "d"), "rmdir");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(d, out _));
        long a = Create(fs, Root, "a");
        long victim = Create(fs, Root, "victim");
        Ok(fs.Rename(Root, "a", Root, "victim"), "rename over a file");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(victim, out _));
        Assert.Equal(a, Look(fs, Root, "victim").Ino);
        long moving = Mkdir(fs, Root, "moving");
        long empty = Mkdir(fs, Root, "empty");
        Ok(fs.Rename(Root, "moving", Root, "empty"), "rename over an empty directory");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(empty, out _));
        Assert.Equal(moving, Look(fs, Root, "empty").Ino);
        // an unlinked open file goes with its last release; a release without an open is EBADF
        long o = Create(fs, Root, "o");
        WriteAt(fs, o, 0, Pattern(10_000, 8));
        Ok(fs.Open(o, true), "open 1");
        Ok(fs.Open(o, false), "open 2");
        Ok(fs.Unlink(Root, "o"), "unlink");
        Assert.Equal(0u, Attr(fs, o).Nlink);
        Ok(fs.Release(o), "release 1");
        Assert.Equal(Pattern(10_000, 8), ReadAll(fs, o));
        Ok(fs.Release(o), "release 2");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(o, out _));
        Assert.Equal(Errno.ENOENT, fs.Read(o, 0, new byte[1], out _));
        Assert.Equal(Errno.ENOENT, fs.Write(o, 0, new byte[1], out _));
        Assert.Equal(Errno.EBADF, fs.Release(o));
        long g = Create(fs, Root, "g");
        Ok(fs.Open(g, true), "open g");
        Ok(fs.Release(g), "release g");
        Assert.Equal(g, Look(fs, Root, "g").Ino);
        Assert.Equal(Errno.EBADF, fs.Release(g));
        // replaced by a rename while open: gone at the release
        long r = Create(fs, Root, "r");
        Ok(fs.Open(r, false), "open r");
        Ok(fs.Rename(Root, "g", Root, "r"), "rename over the open file");
        Assert.Equal(0u, Attr(fs, r).Nlink);
        Ok(fs.Release(r), "release r");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(r, out _));
        Assert.Equal(g, Look(fs, Root, "r").Ino);
        p.AssertClean();
    }

    [Fact]
    public void DataCallsOnInodesThatHoldNoData()
    {
        // The kernel refuses most of these before a file system sees them (a directory cannot be opened for
        // writing, a symlink cannot be opened, a device node opens the device); the inode API refuses them too.
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = Mkdir(fs, Root, "d");
        long f = Create(fs, Root, "f");
        Ok(fs.Symlink(Root, "l", "f", 0, 0, out var l), "symlink");
        Ok(fs.Mknod(Root, "fifo", S_IFIFO | 0x1A4, 5, 1, 2, out var fifo), "mkfifo");
        Assert.Equal((1u, 2u), (fifo.Uid, fifo.Gid));
        Ok(fs.Mknod(Root, "null", S_IFCHR | 0x1B6, 0x0103, 0, 0, out var cdev), "mknod char");
        Assert.Equal(S_IFCHR | 0x1B6, cdev.Mode);
        Assert.Equal(Errno.EISDIR, fs.Write(d, 0, new byte[1], out _));
        Assert.Equal(Errno.EISDIR, fs.Read(d, 0, new byte[1], out _));
        Assert.Equal(Errno.EISDIR, fs.Fallocate(d, FallocateMode.None, 0, 100));
        Assert.Equal(Errno.EISDIR, fs.Fallocate(d, FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 100));
        Assert.Equal(Errno.EINVAL, fs.Read(l.Ino, 0, new byte[10], out _));
        Assert.Equal(Errno.EINVAL, fs.Write(l.Ino, 0, new byte[10], out _));
        Assert.Equal(Errno.EINVAL, fs.SetAttr(l.Ino, new SetAttrRequest { Size = 0 }, out _)); // truncate(2) follows it
        Assert.Equal(Errno.EINVAL, fs.Write(cdev.Ino, 0, new byte[1], out _));
        Assert.Equal(Errno.EINVAL, fs.Read(fifo.Ino, 0, new byte[1], out _));
        Assert.Equal(0, Attr(fs, f).Size);
        // a 64-bit dev_t with a large major and minor (mknod(2) passes only 32 bits, the inode API keeps 64)
        ulong blk = (0x103UL << 32) | 0x00108801;
        Ok(fs.Mknod(Root, "disk", S_IFBLK | 0x1B0, blk, 0, 6, out var bdev), "mknod block");
        Assert.Equal(S_IFBLK | 0x1B0, bdev.Mode);
        Assert.Equal(blk, bdev.Rdev);
        Assert.Equal(6u, bdev.Gid);
        p.Reopen();
        Assert.Equal(blk, Look(p.Live, Root, "disk").Rdev);
        p.AssertClean();
    }

    [Fact]
    public void RemovedOpenDirectoryListsOnlyDotAndDotDotUntilItsRelease()
    {
        // What the shared case PosixCases.RemovedOpenDirectoryTakesNoNewEntries cannot show: the inode API lists a
        // removed directory as "." and ".." (the kernel's getdents refuses a dead directory itself) and the inode
        // goes with the release.
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        long d = Mkdir(fs, Root, "d");
        Ok(fs.Open(d, false), "opendir");
        Ok(fs.Rmdir(Root, "d"), "rmdir");
        Assert.Equal(Errno.ENOENT, fs.Create(d, "x", 0x1A4, 0, 0, out _));
        Assert.Equal(new[] { ".", ".." }, ReadDirAll(fs, d).Select(e => e.Name));
        Ok(fs.Release(d), "releasedir");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(d, out _));
        Assert.Equal(f, Look(fs, Root, "f").Ino);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- reopen with files open, snapshots, power cuts, readdir offsets

    [Fact]
    public void UnlinkedOpenFileAtCloseDoesNotLeak()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long free0 = fs.StatFs().FreeBlocks;
        long f = Create(fs, Root, "f");
        WriteAt(fs, f, 0, Pattern(1 << 20, 11));
        long d = Mkdir(fs, Root, "d");
        Ok(fs.Open(f, true), "open");
        Ok(fs.Open(d, false), "opendir");
        Ok(fs.Unlink(Root, "f"), "unlink");
        Ok(fs.Rmdir(Root, "d"), "rmdir");
        Assert.Equal(Errno.ENOENT, fs.Create(d, "x", 0x1A4, 0, 0, out _)); // a removed directory takes no entries
        p.Reopen(); // closed with the file still open
        fs = p.Live;
        Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
        Assert.Equal(Errno.ENOENT, fs.GetAttr(d, out _));
        Assert.Equal(free0, fs.StatFs().FreeBlocks);
        Assert.Equal(2u, Attr(fs, Root).Nlink);
        p.AssertClean();
        p.Reopen();
        p.AssertClean();
    }

    [Fact]
    public void UnlinkedOpenFileSharedWithASnapshotAtCloseDoesNotLeak()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long free0 = fs.StatFs().FreeBlocks;
        long f = Create(fs, Root, "f");
        var data = Pattern(300_000, 33);
        WriteAt(fs, f, 0, data);
        Ok(p.Engine.CreateSnapshot("before", out _), "snapshot");
        Ok(fs.Open(f, true), "open");
        WriteAt(fs, f, 0, Pattern(5000, 34)); // some blocks now differ from the snapshot's
        Ok(fs.Unlink(Root, "f"), "unlink");
        p.Reopen();
        fs = p.Live;
        Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
        Assert.Equal(data, ReadAll(p.Pool.Snapshot("before")!, f));
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("before"), "delete snapshot");
        Assert.Equal(free0, fs.StatFs().FreeBlocks);
        p.AssertClean();
    }

    [Fact]
    public void FsyncMakesWritesDurable()
    {
        using var p = new MemoryPool(faulty: true);
        p.Engine.CommitInterval = TimeSpan.Zero; // no timed commits: count them exactly
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        var data = Pattern(70_000, 18);
        WriteAt(fs, f, 0, data);
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0x1C0 }, out _), "chmod");
        long commits = p.Engine.CommitCount;
        Ok(fs.Fsync(f), "fsync");
        Assert.Equal(commits + 1, p.Engine.CommitCount);
        WriteAt(fs, f, 0, Pattern(100, 19)); // not synced: may be lost, but the file stays consistent
        p.PowerCutAndReboot();
        fs = p.Live;
        var a = Look(fs, Root, "f");
        Assert.Equal(S_IFREG | 0x1C0, a.Mode);
        Assert.Equal(70_000, a.Size);
        Assert.Equal(data.AsSpan(100).ToArray(), ReadAll(fs, a.Ino)[100..]);
        Assert.Equal(Errno.ENOENT, fs.GetAttr(999_999, out _));
        p.AssertClean();
    }

    [Fact]
    public void ReadDirOffsetsAreStableWhileTheDirectoryChanges()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = Mkdir(fs, Root, "d");
        for (int i = 0; i < 1000; i++) Create(fs, d, $"f{i:D4}");
        var rnd = new Random(3);
        var present = Enumerable.Range(0, 1000).Select(i => $"f{i:D4}").ToHashSet();
        var throughout = present.ToHashSet(); // existed during the whole listing
        var seen = new List<string>();
        var offsets = new List<long>();
        long off = 0;
        int created = 0, pages = 0;
        while (true)
        {
            var page = new List<DirEntryInfo>();
            Ok(fs.ReadDir(d, off, 37, page), "readdir");
            Assert.True(page.Count <= 37);
            if (page.Count == 0) break;
            if (pages++ == 0)
            {
                Assert.Equal(".", page[0].Name);
                Assert.Equal(d, page[0].Ino);
                Assert.Equal("..", page[1].Name);
                Assert.Equal(Root, page[1].Ino);
            }
            foreach (var e in page)
            {
                seen.Add(e.Name);
                offsets.Add(e.NextOffset);
                if (e.Name is not ("." or "..")) Assert.True(present.Contains(e.Name), $"readdir returned {e.Name}, which is gone");
            }
            off = page[^1].NextOffset;
            // change the directory between pages (until the listing is near the end, or it never ends):
            // delete some entries, read and unread, and create some
            if (pages > 25) continue;
            for (int k = 0; k < 5; k++)
            {
                var victim = present.ElementAt(rnd.Next(present.Count));
                Ok(fs.Unlink(d, victim), $"unlink {victim}");
                present.Remove(victim);
                throughout.Remove(victim);
            }
            for (int k = 0; k < 4; k++)
            {
                string n = $"new{created++}";
                Create(fs, d, n);
                present.Add(n);
            }
            if (pages == 10) { p.Reopen(); fs = p.Live; } // offsets survive a remount
        }
        Assert.Equal(seen.Count, seen.Distinct().Count()); // nothing twice
        foreach (var n in throughout) Assert.Contains(n, seen); // nothing that stayed was skipped
        for (int i = 1; i < offsets.Count; i++) Assert.True(offsets[i] > offsets[i - 1], "offsets increase");
        // a full listing now matches the directory exactly
        var now = ReadDirAll(fs, d);
        Assert.Equal(new[] { ".", ".." }, now.Take(2).Select(e => e.Name));
        Assert.Equal(present, now.Skip(2).Select(e => e.Name).ToHashSet());
        Assert.Equal(present.Count + 2, now.Count);
        foreach (var e in now.Skip(2)) Assert.Equal(Look(fs, d, e.Name).Ino, e.Ino);
        // restarting from any offset returns exactly what follows it
        var mid = now[500];
        var rest = new List<DirEntryInfo>();
        Ok(fs.ReadDir(d, mid.NextOffset, 10_000, rest), "readdir from the middle");
        Assert.Equal(now.Skip(501).Select(e => e.Name), rest.Select(e => e.Name));
        var afterDot = new List<DirEntryInfo>();
        Ok(fs.ReadDir(d, 1, 1, afterDot), "readdir after .");
        Assert.Equal("..", afterDot.Single().Name);
        // errors
        long f = Look(fs, d, present.First()).Ino;
        Assert.Equal(Errno.ENOTDIR, fs.ReadDir(f, 0, 10, new List<DirEntryInfo>()));
        Assert.Equal(Errno.ENOENT, fs.ReadDir(999_999, 0, 10, new List<DirEntryInfo>()));
        var empty = new List<DirEntryInfo>();
        Ok(fs.ReadDir(d, now[^1].NextOffset, 10, empty), "readdir at the end");
        Assert.Empty(empty);
        p.AssertClean();
    }

    [Fact]
    public void ASnapshotViewIsReadOnlyWithTheLiveInodeNumbers()
    {
        // What the shared case PosixCases.EveryChangeInASnapshotIsErofsWhileReadsWork cannot show: a snapshot view
        // has the live tree's inode numbers and attributes, and refuses the data calls the kernel never lets through
        // (no descriptor on a snapshot is writable) and the iomap write mapping.
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = Mkdir(fs, Root, "d");
        long f = Create(fs, d, "f");
        var data = Pattern(20_000, 30);
        WriteAt(fs, f, 0, data);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = p.Pool.Snapshot("s")!;
        Assert.True(snap.ReadOnly);
        Assert.Equal("s", snap.SnapshotName);
        Assert.False(fs.ReadOnly);
        Assert.Equal(Attr(fs, f), Attr(snap, f));
        Assert.Equal(f, Look(snap, d, "f").Ino);
        Ok(snap.Open(f, writable: false), "open read-only");
        Ok(snap.Release(f), "release");
        Assert.Equal(fs.StatFs().BlockSize, snap.StatFs().BlockSize);
        Ok(snap.Resolve("/d/f", out var ra), "resolve"); Assert.Equal(f, ra.Ino);
        Assert.Equal(Errno.ENOENT, snap.Open(999_999, false));
        var ro = new Dictionary<string, Errno>
        {
            ["open for writing"] = snap.Open(f, writable: true),
            ["write"] = snap.Write(f, 0, new byte[] { 1 }, out _),
            ["append"] = snap.Write(f, 0, new byte[] { 1 }, out _, append: true),
            ["fallocate"] = snap.Fallocate(f, FallocateMode.None, 0, 1 << 20),
            ["punch"] = snap.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 100),
            ["create in missing"] = snap.Create(999_999, "n", 0x1A4, 0, 0, out _),
            ["iomap write"] = snap.IomapBegin(f, 0, 4096, Core.Engine.IomapOp.Write, out _),
        };
        foreach (var (what, err) in ro) Assert.True(err == Errno.EROFS, $"{what} on a snapshot: {err}, expected EROFS");
        Assert.Equal(data, ReadAll(snap, f));
        Assert.Equal(data, ReadAll(fs, f));
        p.AssertClean();
    }
}
