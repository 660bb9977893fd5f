using System.Text;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// POSIX semantics of the inode API (<see cref="FileSystemView"/>) the way Linux tools expect them, each
/// with its error cases; where Linux is ambiguous, what ext4 does. Every test ends with fsck.
/// </summary>
[Trait("Tier", "engine")]
public class PosixSemanticsTests
{
    private const long Root = 1;
    private const uint S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFLNK = 0xA000, S_IFIFO = 0x1000, S_IFSOCK = 0xC000,
        S_IFCHR = 0x2000, S_IFBLK = 0x6000;
    private const int Bs = 4096;
    private const long ChunkBytes = 1024L * Bs;

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

    private static InodeAttr SetSize(FileSystemView fs, long ino, long size)
    {
        Ok(fs.SetAttr(ino, new SetAttrRequest { Size = size }, out var a), $"truncate {ino} to {size}");
        Assert.Equal(size, a.Size);
        return a;
    }

    private static byte[] ReadRange(FileSystemView fs, long ino, long offset, int length)
    {
        var buf = new byte[length];
        Ok(fs.Read(ino, offset, buf, out int n), $"read {length} at {offset}");
        return buf[..n];
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

    private static bool AllZero(ReadOnlySpan<byte> b) => !b.ContainsAnyExcept((byte)0);

    private static long NowNs() => (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;

    /// <summary>Lets the clock move so that a later change gets a later ctime.</summary>
    private static void Tick() => Thread.Sleep(2);

    // ---------------------------------------------------------------- lookup, getattr

    [Fact]
    public void LookupFindsEntriesAndReportsErrors()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "file");
        long d = Mkdir(fs, Root, "dir");
        long sub = Mkdir(fs, d, "sub");
        Assert.Equal(f, Look(fs, Root, "file").Ino);
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "missing", out _));
        Assert.Equal(Errno.ENOENT, fs.Lookup(d, "file", out _));
        Assert.Equal(Errno.ENOTDIR, fs.Lookup(f, "x", out _));
        Assert.Equal(Errno.ENOENT, fs.Lookup(999_999, "x", out _));
        // names are at most 255 bytes (NAME_MAX), counted in UTF-8 bytes, not characters
        Assert.Equal(Errno.ENAMETOOLONG, fs.Lookup(Root, new string('a', 256), out _));
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, new string('a', 255), out _));
        Assert.Equal(Errno.ENAMETOOLONG, fs.Lookup(Root, new string('é', 128), out _));
        Assert.Equal(Errno.ENAMETOOLONG, fs.Create(Root, new string('a', 256), 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.ENAMETOOLONG, fs.Mkdir(Root, new string('é', 128), 0x1ED, 0, 0, out _));
        long longest = Create(fs, Root, new string('é', 127) + "a"); // 255 bytes
        Assert.Equal(longest, Look(fs, Root, new string('é', 127) + "a").Ino);
        // "." and ".."
        Assert.Equal(d, Look(fs, d, ".").Ino);
        Assert.Equal(Root, Look(fs, d, "..").Ino);
        Assert.Equal(d, Look(fs, sub, "..").Ino);
        Assert.Equal(Root, Look(fs, Root, "..").Ino);
        Assert.Equal(Root, Look(fs, Root, ".").Ino);
        // names are case-sensitive, and that survives a reopen
        long upper = Create(fs, Root, "File");
        Assert.NotEqual(f, upper);
        p.Reopen();
        fs = p.Live;
        Assert.Equal(f, Look(fs, Root, "file").Ino);
        Assert.Equal(upper, Look(fs, Root, "File").Ino);
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "FILE", out _));
        p.AssertClean();
    }

    [Fact]
    public void GetAttrReportsWhatWasCreated()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long before = NowNs();
        Ok(fs.Create(Root, "f", 0x1A4, 1000, 100, out var created), "create");
        long after = NowNs();
        var a = Attr(fs, created.Ino);
        Assert.Equal(created, a);
        Assert.Equal(S_IFREG | 0x1A4, a.Mode);
        Assert.True(a.IsRegular);
        Assert.Equal(1u, a.Nlink);
        Assert.Equal(1000u, a.Uid);
        Assert.Equal(100u, a.Gid);
        Assert.Equal(0, a.Size);
        Assert.Equal(0, a.Blocks512);
        Assert.Equal(Bs, a.BlockSize);
        Assert.Equal(0ul, a.Rdev);
        foreach (long t in new[] { a.AtimeNs, a.MtimeNs, a.CtimeNs, a.BtimeNs }) Assert.InRange(t, before, after);
        var root = Attr(fs, Root);
        Assert.True(root.IsDirectory);
        Assert.Equal(Root, root.Ino);
        Assert.Equal(Errno.ENOENT, fs.GetAttr(999_999, out _));
        WriteAt(fs, a.Ino, 0, Pattern(10_000, 1));
        a = Attr(fs, a.Ino);
        Assert.Equal(10_000, a.Size);
        Assert.Equal(3 * Bs / 512, a.Blocks512);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- setattr

    [Fact]
    public void SetAttrModeKeepsTheFileTypeAndOwnerChanges()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        long d = Mkdir(fs, Root, "d");
        var a0 = Attr(fs, f);
        Tick();
        // a mode that names another type (a directory) changes only the permission bits
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = S_IFDIR | 0xFED }, out var a), "chmod");
        Assert.Equal(S_IFREG | 0xFED, a.Mode); // setuid, setgid, sticky and rwx bits kept
        Assert.True(a.CtimeNs > a0.CtimeNs);
        Assert.Equal(a0.MtimeNs, a.MtimeNs);
        Ok(fs.SetAttr(d, new SetAttrRequest { Mode = 0x1C0 }, out a), "chmod dir");
        Assert.Equal(S_IFDIR | 0x1C0, a.Mode);
        var a1 = Attr(fs, f);
        Tick();
        Ok(fs.SetAttr(f, new SetAttrRequest { Uid = 1234 }, out a), "chown uid");
        Assert.Equal(1234u, a.Uid);
        Assert.Equal(0u, a.Gid);
        Assert.True(a.CtimeNs > a1.CtimeNs);
        Ok(fs.SetAttr(f, new SetAttrRequest { Gid = 4321 }, out a), "chown gid");
        Assert.Equal(1234u, a.Uid);
        Assert.Equal(4321u, a.Gid);
        Ok(fs.SetAttr(f, new SetAttrRequest { Uid = uint.MaxValue - 1, Gid = 0 }, out a), "chown both");
        Assert.Equal(uint.MaxValue - 1, a.Uid);
        Assert.Equal(0u, a.Gid);
        Assert.Equal(S_IFREG | 0xFED, a.Mode);
        Assert.Equal(Errno.ENOENT, fs.SetAttr(999_999, new SetAttrRequest { Mode = 0x1FF }, out _));
        p.Reopen();
        a = Attr(p.Live, f);
        Assert.Equal(S_IFREG | 0xFED, a.Mode);
        Assert.Equal(uint.MaxValue - 1, a.Uid);
        p.AssertClean();
    }

    [Fact]
    public void SetAttrTimesExplicitAndNow()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        var a0 = Attr(fs, f);
        Tick();
        long at = 1_000_000_000L * 1_600_000_000 + 123, mt = -1_000_000_000L * 86400 + 7; // before 1970 is allowed
        Ok(fs.SetAttr(f, new SetAttrRequest { AtimeNs = at, MtimeNs = mt }, out var a), "utimensat explicit");
        Assert.Equal(at, a.AtimeNs);
        Assert.Equal(mt, a.MtimeNs);
        Assert.True(a.CtimeNs > a0.CtimeNs, "ctime moves on utimensat");
        Assert.NotEqual(mt, a.CtimeNs);
        Assert.Equal(a0.BtimeNs, a.BtimeNs);
        // only atime: mtime stays
        Ok(fs.SetAttr(f, new SetAttrRequest { AtimeNs = 5 }, out a), "atime only");
        Assert.Equal(5, a.AtimeNs);
        Assert.Equal(mt, a.MtimeNs);
        Tick();
        long before = NowNs();
        Ok(fs.SetAttr(f, new SetAttrRequest { AtimeNow = true }, out a), "atime now");
        long after = NowNs();
        Assert.InRange(a.AtimeNs, before, after);
        Assert.Equal(mt, a.MtimeNs);
        Tick();
        before = NowNs();
        Ok(fs.SetAttr(f, new SetAttrRequest { AtimeNow = true, MtimeNow = true }, out a), "touch");
        after = NowNs();
        Assert.InRange(a.AtimeNs, before, after);
        Assert.InRange(a.MtimeNs, before, after);
        Assert.InRange(a.CtimeNs, before, after);
        // explicit atime with mtime now
        Ok(fs.SetAttr(f, new SetAttrRequest { AtimeNs = at, MtimeNow = true }, out a), "mixed");
        Assert.Equal(at, a.AtimeNs);
        Assert.True(a.MtimeNs >= before);
        p.Reopen();
        a = Attr(p.Live, f);
        Assert.Equal(at, a.AtimeNs);
        p.AssertClean();
    }

    [Fact]
    public void SetAttrSizeShrinksAndGrowsWithZeros()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        var data = Pattern(20_000, 1);
        WriteAt(fs, f, 0, data);
        var a0 = Attr(fs, f);
        Tick();
        // non-block-aligned shrink, then grow: the bytes past the shrink point read as zeros
        var a = SetSize(fs, f, 5000);
        Assert.True(a.MtimeNs > a0.MtimeNs && a.CtimeNs > a0.CtimeNs, "truncate moves mtime and ctime");
        Assert.Equal(2 * Bs / 512, a.Blocks512);
        Assert.Equal(data[..5000], ReadAll(fs, f));
        a = SetSize(fs, f, 30_000);
        Assert.Equal(2 * Bs / 512, a.Blocks512); // growing makes a hole
        var all = ReadAll(fs, f);
        Assert.Equal(data[..5000], all[..5000]);
        Assert.True(AllZero(all.AsSpan(5000)), "bytes after a shrink then grow are zeros");
        // shrink inside a block, then grow by writing past the end
        SetSize(fs, f, 4097);
        WriteAt(fs, f, 10_000, new byte[] { 9 });
        all = ReadAll(fs, f);
        Assert.Equal(10_001, all.Length);
        Assert.Equal(data[..4097], all[..4097]);
        Assert.True(AllZero(all.AsSpan(4097, 10_000 - 4097)));
        Assert.Equal(9, all[10_000]);
        // block-aligned shrink then grow
        WriteAt(fs, f, 0, data);
        SetSize(fs, f, 8192);
        Assert.Equal(2 * Bs / 512, Attr(fs, f).Blocks512);
        SetSize(fs, f, 12_000);
        all = ReadAll(fs, f);
        Assert.Equal(data[..8192], all[..8192]);
        Assert.True(AllZero(all.AsSpan(8192)));
        // to zero and back
        a = SetSize(fs, f, 0);
        Assert.Equal(0, a.Blocks512);
        a = SetSize(fs, f, 1 << 20);
        Assert.Equal(0, a.Blocks512);
        Assert.True(AllZero(ReadAll(fs, f)));
        // same size: nothing changes in the data
        WriteAt(fs, f, 0, data);
        SetSize(fs, f, 1 << 20);
        Assert.Equal(data, ReadRange(fs, f, 0, data.Length));
        // errors
        long d = Mkdir(fs, Root, "d");
        Ok(fs.Symlink(Root, "l", "f", 0, 0, out var l), "symlink");
        Ok(fs.Mknod(Root, "fifo", S_IFIFO | 0x1A4, 0, 0, 0, out var fifo), "mkfifo");
        Assert.Equal(Errno.EISDIR, fs.SetAttr(d, new SetAttrRequest { Size = 0 }, out _));
        Assert.Equal(Errno.EINVAL, fs.SetAttr(l.Ino, new SetAttrRequest { Size = 0 }, out _));
        Assert.Equal(Errno.EINVAL, fs.SetAttr(fifo.Ino, new SetAttrRequest { Size = 0 }, out _));
        Assert.Equal(Errno.EINVAL, fs.SetAttr(f, new SetAttrRequest { Size = -1 }, out _));
        Assert.Equal(Errno.EFBIG, fs.SetAttr(f, new SetAttrRequest { Size = Core.Engine.Engine.MaxFileSize + 1 }, out _));
        Assert.Equal(Errno.ENOENT, fs.SetAttr(999_999, new SetAttrRequest { Size = 0 }, out _));
        Assert.Equal(1 << 20, Attr(fs, f).Size);
        p.AssertClean();
    }

    [Fact]
    public void TruncateOfSharedBlocksLeavesTheSnapshotAlone()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        var data = Pattern(50_000, 2);
        WriteAt(fs, f, 0, data);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        SetSize(fs, f, 10_001);
        SetSize(fs, f, 40_000);
        var all = ReadAll(fs, f);
        Assert.Equal(data[..10_001], all[..10_001]);
        Assert.True(AllZero(all.AsSpan(10_001)));
        var snap = p.Pool.Snapshot("s")!;
        Assert.Equal(data, ReadAll(snap, f));
        p.AssertClean();
    }

    [Fact]
    public void TruncateInsideAHoleAllocatesNothing()
    {
        // ext4 zeroes the tail of the last block only when that block is mapped: shrinking a sparse
        // file must not allocate space.
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "sparse");
        WriteAt(fs, f, 100_000, new byte[] { 1 });
        Assert.Equal(Bs / 512, Attr(fs, f).Blocks512);
        var a = SetSize(fs, f, 50_000); // inside a hole, not block-aligned
        Assert.Equal(0, a.Blocks512);
        a = SetSize(fs, f, 100_001);
        Assert.Equal(0, a.Blocks512);
        Assert.True(AllZero(ReadAll(fs, f)));
        p.AssertClean();
    }

    [Fact]
    public void CtimeChangesOnEveryChange()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        long d = Mkdir(fs, Root, "d");
        void Changes(long ino, string what, Func<Errno> change)
        {
            var before = Attr(fs, ino);
            Tick();
            Ok(change(), what);
            var after = Attr(fs, ino);
            Assert.True(after.CtimeNs > before.CtimeNs, $"{what} did not move ctime of {ino}");
        }
        Changes(f, "chmod", () => fs.SetAttr(f, new SetAttrRequest { Mode = 0x180 }, out _));
        Changes(f, "chown", () => fs.SetAttr(f, new SetAttrRequest { Uid = 7 }, out _));
        Changes(f, "utimens", () => fs.SetAttr(f, new SetAttrRequest { MtimeNs = 1 }, out _));
        Changes(f, "write", () => fs.Write(f, 0, new byte[] { 1, 2, 3 }, out _));
        Changes(f, "truncate", () => fs.SetAttr(f, new SetAttrRequest { Size = 100 }, out _));
        Changes(f, "fallocate", () => fs.Fallocate(f, FallocateMode.None, 0, 8192));
        Changes(f, "punch", () => fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 4096));
        Changes(f, "setxattr", () => fs.SetXattr(f, "user.a", new byte[] { 1 }));
        Changes(f, "removexattr", () => fs.RemoveXattr(f, "user.a"));
        Changes(f, "link", () => fs.Link(f, d, "f2", out _));
        Changes(f, "unlink of a second name", () => fs.Unlink(d, "f2"));
        Changes(f, "rename", () => fs.Rename(Root, "f", d, "g"));
        Changes(d, "rename into the directory", () => fs.Rename(d, "g", d, "h"));
        Changes(d, "create in the directory", () => fs.Create(d, "n", 0x1A4, 0, 0, out _));
        Changes(d, "unlink in the directory", () => fs.Unlink(d, "n"));
        Changes(d, "mkdir in the directory", () => fs.Mkdir(d, "sub", 0x1ED, 0, 0, out _));
        Changes(d, "rmdir in the directory", () => fs.Rmdir(d, "sub"));
        Changes(Root, "rename out of root", () => fs.Rename(Root, "d", Root, "d2"));
        // mtime of a directory moves with its entries; a write moves the file's mtime
        var dm = Attr(fs, d).MtimeNs;
        Tick();
        Create(fs, d, "x");
        Assert.True(Attr(fs, d).MtimeNs > dm);
        var fm = Attr(fs, f).MtimeNs;
        Tick();
        WriteAt(fs, f, 0, new byte[] { 4 });
        Assert.True(Attr(fs, f).MtimeNs > fm);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- create, mknod, mkdir

    [Fact]
    public void CreateRefusesExistingNamesAndBadParents()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f", S_IFDIR | 0x1ED); // the type in the mode is ignored: always a file
        Assert.Equal(S_IFREG | 0x1ED, Attr(fs, f).Mode);
        long d = Mkdir(fs, Root, "d");
        Assert.Equal(Errno.EEXIST, fs.Create(Root, "f", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EEXIST, fs.Create(Root, "d", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EEXIST, fs.Mkdir(Root, "f", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.EEXIST, fs.Mknod(Root, "d", S_IFIFO | 0x1A4, 0, 0, 0, out _));
        Assert.Equal(Errno.EEXIST, fs.Symlink(Root, "f", "x", 0, 0, out _));
        Assert.Equal(Errno.ENOTDIR, fs.Create(f, "x", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Create(999_999, "x", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Create(Root, "a/b", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Create(Root, "", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Create(d, ".", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Mkdir(d, "..", 0x1ED, 0, 0, out _));
        // the failed creates changed nothing
        Assert.Equal(new HashSet<string> { "f", "d" }, Names(fs, Root));
        Assert.Empty(Names(fs, d));
        Assert.Equal(1u, Attr(fs, f).Nlink);
        p.AssertClean();
    }

    [Fact]
    public void MknodMakesFifosSocketsAndDevices()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        ulong chr = 0x0103, blk = (0x103UL << 32) | 0x00108801; // a 64-bit dev_t with a large major and minor
        Ok(fs.Mknod(Root, "fifo", S_IFIFO | 0x1A4, 5, 1, 2, out var fifo), "mkfifo");
        Ok(fs.Mknod(Root, "sock", S_IFSOCK | 0x1ED, 0, 0, 0, out var sock), "mknod socket");
        Ok(fs.Mknod(Root, "null", S_IFCHR | 0x1B6, chr, 0, 0, out var cdev), "mknod char");
        Ok(fs.Mknod(Root, "disk", S_IFBLK | 0x1B0, blk, 0, 6, out var bdev), "mknod block");
        Ok(fs.Mknod(Root, "plain", 0x1A4, 0, 0, 0, out var plain), "mknod without a type"); // a regular file
        Assert.Equal(S_IFIFO | 0x1A4, fifo.Mode);
        Assert.Equal(0ul, fifo.Rdev); // like ext4: only device nodes keep rdev
        Assert.Equal(1u, fifo.Uid);
        Assert.Equal(S_IFSOCK | 0x1ED, sock.Mode);
        Assert.Equal(S_IFCHR | 0x1B6, cdev.Mode);
        Assert.Equal(chr, cdev.Rdev);
        Assert.Equal(S_IFBLK | 0x1B0, bdev.Mode);
        Assert.Equal(blk, bdev.Rdev);
        Assert.Equal(S_IFREG | 0x1A4, plain.Mode);
        foreach (var n in new[] { fifo, sock, cdev, bdev }) Assert.Equal(1u, n.Nlink);
        Assert.Equal(Errno.EPERM, fs.Mknod(Root, "dir", S_IFDIR | 0x1ED, 0, 0, 0, out _)); // as mknod(2): EPERM
        Assert.Equal(Errno.EINVAL, fs.Mknod(Root, "lnk", S_IFLNK | 0x1FF, 0, 0, 0, out _));
        Assert.Equal(Errno.EINVAL, fs.Mknod(Root, "bad", 0xE000 | 0x1A4, 0, 0, 0, out _));
        Assert.Equal(Errno.EEXIST, fs.Mknod(Root, "null", S_IFCHR | 0x1B6, chr, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "dir", out _));
        // readdir types are mode >> 12 (DT_*)
        var types = ReadDirAll(fs, Root).ToDictionary(e => e.Name, e => e.Type);
        Assert.Equal(1u, types["fifo"]);
        Assert.Equal(12u, types["sock"]);
        Assert.Equal(2u, types["null"]);
        Assert.Equal(6u, types["disk"]);
        Assert.Equal(8u, types["plain"]);
        // data operations are not for special files
        Assert.Equal(Errno.EINVAL, fs.Write(cdev.Ino, 0, new byte[1], out _));
        Assert.Equal(Errno.EINVAL, fs.Read(fifo.Ino, 0, new byte[1], out _));
        // chmod keeps the type and rdev
        Ok(fs.SetAttr(cdev.Ino, new SetAttrRequest { Mode = 0x180 }, out var c2), "chmod char");
        Assert.Equal(S_IFCHR | 0x180, c2.Mode);
        Assert.Equal(chr, c2.Rdev);
        p.Reopen();
        fs = p.Live;
        Assert.Equal(chr, Look(fs, Root, "null").Rdev);
        Assert.Equal(blk, Look(fs, Root, "disk").Rdev);
        Assert.Equal(S_IFSOCK | 0x1ED, Look(fs, Root, "sock").Mode);
        Ok(fs.Unlink(Root, "null"), "unlink char");
        Ok(fs.Unlink(Root, "fifo"), "unlink fifo");
        p.AssertClean();
    }

    [Fact]
    public void MkdirGrowsTheParentLinkCount()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        Assert.Equal(2u, Attr(fs, Root).Nlink);
        long a = Mkdir(fs, Root, "a");
        Assert.Equal(3u, Attr(fs, Root).Nlink);
        var aa = Attr(fs, a);
        Assert.Equal(2u, aa.Nlink);
        Assert.Equal(S_IFDIR | 0x1ED, aa.Mode);
        Assert.True(aa.IsDirectory);
        long b = Mkdir(fs, a, "b");
        Mkdir(fs, a, "c");
        Assert.Equal(4u, Attr(fs, a).Nlink);
        Assert.Equal(3u, Attr(fs, Root).Nlink);
        Create(fs, a, "file");
        Assert.Equal(4u, Attr(fs, a).Nlink); // files do not count
        Assert.Equal(a, Look(fs, b, "..").Ino);
        Assert.Equal(Errno.EEXIST, fs.Mkdir(a, "b", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.ENOTDIR, fs.Mkdir(Look(fs, a, "file").Ino, "x", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Mkdir(999_999, "x", 0x1ED, 0, 0, out _));
        Assert.Equal(4u, Attr(fs, a).Nlink);
        // mode type bits given to mkdir are ignored
        Ok(fs.Mkdir(Root, "typed", S_IFREG | 0x1C0, 0, 0, out var t), "mkdir with a type");
        Assert.Equal(S_IFDIR | 0x1C0, t.Mode);
        p.Reopen();
        Assert.Equal(4u, Attr(p.Live, Root).Nlink);
        Assert.Equal(4u, Attr(p.Live, a).Nlink);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- unlink, rmdir

    [Fact]
    public void UnlinkRemovesNamesAndRefusesDirectories()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        WriteAt(fs, f, 0, Pattern(10_000, 3));
        long d = Mkdir(fs, Root, "d");
        Assert.Equal(Errno.EISDIR, fs.Unlink(Root, "d"));
        Assert.Equal(Errno.ENOENT, fs.Unlink(Root, "missing"));
        Assert.Equal(Errno.ENOTDIR, fs.Unlink(f, "x"));
        Assert.Equal(Errno.ENOENT, fs.Unlink(999_999, "x"));
        Assert.Equal(Errno.EISDIR, fs.Unlink(d, "."));
        Assert.Equal(Errno.EISDIR, fs.Unlink(d, ".."));
        Assert.Equal(d, Look(fs, Root, "d").Ino);
        Ok(fs.Unlink(Root, "f"), "unlink");
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "f", out _));
        Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
        Assert.Equal(Errno.ENOENT, fs.Unlink(Root, "f"));
        // symlinks and special files unlink like files
        Ok(fs.Symlink(d, "l", "/nowhere", 0, 0, out _), "symlink");
        Ok(fs.Mknod(d, "s", S_IFSOCK | 0x1ED, 0, 0, 0, out _), "mknod");
        Ok(fs.Unlink(d, "l"), "unlink symlink");
        Ok(fs.Unlink(d, "s"), "unlink socket");
        Assert.Empty(Names(fs, d));
        Assert.Equal(new HashSet<string> { "d" }, Names(fs, Root));
        p.AssertClean();
    }

    [Fact]
    public void RmdirRemovesOnlyEmptyDirectories()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long a = Mkdir(fs, Root, "a");
        long b = Mkdir(fs, Root, "b");
        long c = Mkdir(fs, a, "c");
        long f = Create(fs, b, "f");
        Assert.Equal(4u, Attr(fs, Root).Nlink);
        Assert.Equal(Errno.ENOTEMPTY, fs.Rmdir(Root, "a")); // holds only a subdirectory
        Assert.Equal(Errno.ENOTEMPTY, fs.Rmdir(Root, "b")); // holds only a file
        Assert.Equal(Errno.ENOTDIR, fs.Rmdir(b, "f"));
        Assert.Equal(Errno.ENOENT, fs.Rmdir(Root, "missing"));
        Assert.Equal(Errno.ENOTDIR, fs.Rmdir(f, "x"));
        Assert.Equal(Errno.EINVAL, fs.Rmdir(a, "."));
        Assert.Equal(Errno.ENOTEMPTY, fs.Rmdir(c, ".."));
        Assert.Equal(3u, Attr(fs, a).Nlink);
        Ok(fs.Rmdir(a, "c"), "rmdir c");
        Assert.Equal(2u, Attr(fs, a).Nlink);
        Assert.Equal(Errno.ENOENT, fs.GetAttr(c, out _));
        Assert.Equal(Errno.ENOENT, fs.Lookup(a, "c", out _));
        Ok(fs.Rmdir(Root, "a"), "rmdir a");
        Assert.Equal(3u, Attr(fs, Root).Nlink);
        Assert.Equal(Errno.ENOENT, fs.Rmdir(Root, "a"));
        Ok(fs.Unlink(b, "f"), "unlink f");
        Ok(fs.Rmdir(Root, "b"), "rmdir b");
        Assert.Equal(2u, Attr(fs, Root).Nlink);
        Assert.Empty(Names(fs, Root));
        p.Reopen();
        Assert.Equal(2u, Attr(p.Live, Root).Nlink);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- rename

    [Fact]
    public void RenameMovesNamesAndReplacesFiles()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = Mkdir(fs, Root, "d");
        long a = Create(fs, Root, "a");
        var data = Pattern(9000, 4);
        WriteAt(fs, a, 0, data);
        // plain, same directory
        Ok(fs.Rename(Root, "a", Root, "b"), "rename a b");
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "a", out _));
        Assert.Equal(a, Look(fs, Root, "b").Ino);
        // across directories
        Ok(fs.Rename(Root, "b", d, "c"), "rename b d/c");
        Assert.Equal(a, Look(fs, d, "c").Ino);
        Assert.Equal(data, ReadAll(fs, a));
        Assert.Equal(1u, Attr(fs, a).Nlink);
        // over an existing file: the old one is gone, with its blocks
        long victim = Create(fs, Root, "victim");
        WriteAt(fs, victim, 0, Pattern(100_000, 5));
        Ok(fs.Fsync(victim), "fsync");
        long free = fs.StatFs().FreeBlocks;
        Ok(fs.Rename(d, "c", Root, "victim"), "rename over a file");
        Assert.Equal(a, Look(fs, Root, "victim").Ino);
        Assert.Equal(Errno.ENOENT, fs.GetAttr(victim, out _));
        Assert.Equal(Errno.ENOENT, fs.Lookup(d, "c", out _));
        Ok(fs.Fsync(a), "fsync");
        Assert.Equal(free + 25, fs.StatFs().FreeBlocks);
        // over a file that has another name: it loses one link
        long h = Create(fs, Root, "h");
        Ok(fs.Link(h, d, "h2", out _), "link");
        Ok(fs.Rename(Root, "victim", Root, "h"), "rename over a linked file");
        Assert.Equal(1u, Attr(fs, h).Nlink);
        Assert.Equal(h, Look(fs, d, "h2").Ino);
        // two names of one inode: nothing happens
        Ok(fs.Link(a, d, "a2", out _), "link a");
        Ok(fs.Rename(Root, "h", d, "a2"), "rename onto another name of the same inode");
        Assert.Equal(a, Look(fs, Root, "h").Ino);
        Assert.Equal(a, Look(fs, d, "a2").Ino);
        Assert.Equal(2u, Attr(fs, a).Nlink);
        // onto itself
        Ok(fs.Rename(Root, "h", Root, "h"), "rename onto itself");
        Assert.Equal(a, Look(fs, Root, "h").Ino);
        // errors
        Assert.Equal(Errno.ENOENT, fs.Rename(Root, "missing", Root, "x"));
        Assert.Equal(Errno.ENOENT, fs.Rename(999_999, "x", Root, "y"));
        Assert.Equal(Errno.ENOTDIR, fs.Rename(Root, "h", a, "y"));
        Assert.Equal(Errno.EINVAL, fs.Rename(Root, "h", Root, "x/y"));
        Assert.Equal(Errno.EINVAL, fs.Rename(Root, "h", Root, "y", RenameFlags.NoReplace | RenameFlags.Exchange));
        Assert.Equal(data, ReadAll(fs, a));
        p.AssertClean();
    }

    [Fact]
    public void RenameDirectoriesFollowsLinuxRules()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long src = Mkdir(fs, Root, "src");
        long dst = Mkdir(fs, Root, "dst");
        long moving = Mkdir(fs, src, "moving");
        long inner = Mkdir(fs, moving, "inner");
        Create(fs, inner, "file");
        long empty = Mkdir(fs, dst, "empty");
        long full = Mkdir(fs, dst, "full");
        Create(fs, full, "x");
        long file = Create(fs, dst, "file");
        Assert.Equal(3u, Attr(fs, src).Nlink);
        Assert.Equal(4u, Attr(fs, dst).Nlink);
        // dir over non-empty dir, dir over file, file over dir
        Assert.Equal(Errno.ENOTEMPTY, fs.Rename(src, "moving", dst, "full"));
        Assert.Equal(Errno.ENOTDIR, fs.Rename(src, "moving", dst, "file"));
        Assert.Equal(Errno.EISDIR, fs.Rename(dst, "file", dst, "empty"));
        Assert.Equal(Errno.EISDIR, fs.Rename(dst, "file", src, "moving"));
        // a directory into itself or its own subdirectory
        Assert.Equal(Errno.EINVAL, fs.Rename(src, "moving", moving, "x"));
        Assert.Equal(Errno.EINVAL, fs.Rename(src, "moving", inner, "x"));
        Assert.Equal(Errno.EINVAL, fs.Rename(Root, "src", inner, "x"));
        Assert.Equal(moving, Look(fs, src, "moving").Ino);
        // NoReplace
        Assert.Equal(Errno.EEXIST, fs.Rename(src, "moving", dst, "empty", RenameFlags.NoReplace));
        Assert.Equal(Errno.EEXIST, fs.Rename(dst, "file", dst, "full", RenameFlags.NoReplace));
        Ok(fs.Rename(dst, "file", dst, "file2", RenameFlags.NoReplace), "noreplace to a free name");
        Assert.Equal(file, Look(fs, dst, "file2").Ino);
        // dir over an empty dir in another parent: link counts and ".." follow
        Ok(fs.Rename(src, "moving", dst, "empty"), "dir over empty dir");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(empty, out _));
        Assert.Equal(moving, Look(fs, dst, "empty").Ino);
        Assert.Equal(dst, Look(fs, moving, "..").Ino);
        Assert.Equal(2u, Attr(fs, src).Nlink);
        Assert.Equal(4u, Attr(fs, dst).Nlink);
        Assert.Equal(3u, Attr(fs, moving).Nlink);
        Assert.Equal(moving, Look(fs, inner, "..").Ino);
        Assert.Contains(ReadDirAll(fs, moving), e => e.Name == ".." && e.Ino == dst);
        // dir into another parent without a victim
        Ok(fs.Rename(dst, "empty", src, "back"), "dir move");
        Assert.Equal(3u, Attr(fs, src).Nlink);
        Assert.Equal(3u, Attr(fs, dst).Nlink);
        Assert.Equal(src, Look(fs, moving, "..").Ino);
        // dir rename inside one parent keeps the counts
        Ok(fs.Rename(src, "back", src, "renamed"), "dir rename");
        Assert.Equal(3u, Attr(fs, src).Nlink);
        // a directory up into its grandparent over an empty directory there
        long e2 = Mkdir(fs, Root, "e2");
        Ok(fs.Rename(moving, "inner", Root, "e2"), "dir up over empty dir");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(e2, out _));
        Assert.Equal(Root, Look(fs, inner, "..").Ino);
        Assert.Equal(2u, Attr(fs, moving).Nlink);
        Assert.Equal(5u, Attr(fs, Root).Nlink); // src, dst, e2 (now inner) + 2
        p.Reopen();
        fs = p.Live;
        Assert.Equal(Root, Look(fs, inner, "..").Ino);
        Assert.Equal(5u, Attr(fs, Root).Nlink);
        p.AssertClean();
    }

    [Fact]
    public void RenameExchangeSwapsAFileAndADirectoryAcrossParents()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long p1 = Mkdir(fs, Root, "p1");
        long p2 = Mkdir(fs, Root, "p2");
        long f = Create(fs, p1, "f");
        WriteAt(fs, f, 0, Pattern(5000, 6));
        long d = Mkdir(fs, p2, "d");
        long child = Mkdir(fs, d, "child");
        Assert.Equal(2u, Attr(fs, p1).Nlink);
        Assert.Equal(3u, Attr(fs, p2).Nlink);
        var fBefore = Attr(fs, f);
        Tick();
        Ok(fs.Rename(p1, "f", p2, "d", RenameFlags.Exchange), "exchange");
        Assert.Equal(d, Look(fs, p1, "f").Ino);
        Assert.Equal(f, Look(fs, p2, "d").Ino);
        Assert.Equal(3u, Attr(fs, p1).Nlink);
        Assert.Equal(2u, Attr(fs, p2).Nlink);
        Assert.Equal(p1, Look(fs, d, "..").Ino);
        Assert.Equal(d, Look(fs, child, "..").Ino);
        Assert.True(Attr(fs, f).CtimeNs > fBefore.CtimeNs);
        Assert.Equal(1u, Attr(fs, f).Nlink);
        Assert.Equal(3u, Attr(fs, d).Nlink);
        var types1 = ReadDirAll(fs, p1).ToDictionary(e => e.Name, e => e.Type);
        var types2 = ReadDirAll(fs, p2).ToDictionary(e => e.Name, e => e.Type);
        Assert.Equal(4u, types1["f"]);
        Assert.Equal(8u, types2["d"]);
        Assert.Equal(Pattern(5000, 6), ReadAll(fs, f));
        // exchange needs both names; it cannot put a directory inside itself
        Assert.Equal(Errno.ENOENT, fs.Rename(p1, "f", p2, "missing", RenameFlags.Exchange));
        Assert.Equal(Errno.ENOENT, fs.Rename(p1, "missing", p2, "d", RenameFlags.Exchange));
        Assert.Equal(Errno.ENOENT, fs.Rename(Root, "p1", child, "x", RenameFlags.Exchange)); // no target: ENOENT comes first
        long g = Create(fs, child, "g");
        Assert.Equal(Errno.EINVAL, fs.Rename(Root, "p1", child, "g", RenameFlags.Exchange));
        Assert.Equal(Errno.EINVAL, fs.Rename(child, "g", Root, "p1", RenameFlags.Exchange));
        Assert.Equal(g, Look(fs, child, "g").Ino);
        // exchange in one directory, and back across: counts stay right
        long p3 = Mkdir(fs, p1, "p3");
        Ok(fs.Rename(p1, "f", p1, "p3", RenameFlags.Exchange), "exchange two dirs in one parent");
        Assert.Equal(4u, Attr(fs, p1).Nlink);
        Assert.Equal(p3, Look(fs, p1, "f").Ino);
        Ok(fs.Rename(p1, "p3", p2, "d", RenameFlags.Exchange), "exchange back");
        Assert.Equal(3u, Attr(fs, p1).Nlink);
        Assert.Equal(3u, Attr(fs, p2).Nlink);
        Assert.Equal(p2, Look(fs, d, "..").Ino);
        Assert.Equal(f, Look(fs, p1, "p3").Ino);
        // exchanging a name with itself, or two names of one inode, changes nothing
        Ok(fs.Rename(p1, "p3", p1, "p3", RenameFlags.Exchange), "exchange with itself");
        Assert.Equal(f, Look(fs, p1, "p3").Ino);
        Ok(fs.Link(f, p2, "f2", out _), "link");
        Ok(fs.Rename(p1, "p3", p2, "f2", RenameFlags.Exchange), "exchange two links");
        Assert.Equal(f, Look(fs, p1, "p3").Ino);
        Assert.Equal(f, Look(fs, p2, "f2").Ino);
        Assert.Equal(2u, Attr(fs, f).Nlink);
        p.Reopen();
        fs = p.Live;
        Assert.Equal(p2, Look(fs, d, "..").Ino);
        Assert.Equal(3u, Attr(fs, p2).Nlink);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- link, symlink

    [Fact]
    public void LinkAddsNamesToFilesOnly()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        WriteAt(fs, f, 0, Pattern(3000, 7));
        long d = Mkdir(fs, Root, "d");
        var before = Attr(fs, f);
        Tick();
        Ok(fs.Link(f, d, "g", out var la), "link");
        Assert.Equal(f, la.Ino);
        Assert.Equal(2u, la.Nlink);
        Assert.True(la.CtimeNs > before.CtimeNs);
        Assert.Equal(f, Look(fs, d, "g").Ino);
        Assert.Equal(2u, Look(fs, Root, "f").Nlink);
        Ok(fs.Link(f, Root, "h", out la), "link 3");
        Assert.Equal(3u, la.Nlink);
        Assert.Equal(Errno.EPERM, fs.Link(d, Root, "dlink", out _));
        Assert.Equal(Errno.EPERM, fs.Link(Root, d, "rootlink", out _));
        Assert.Equal(Errno.EEXIST, fs.Link(f, Root, "d", out _));
        Assert.Equal(Errno.EEXIST, fs.Link(f, d, "g", out _));
        Assert.Equal(Errno.ENOENT, fs.Link(999_999, Root, "x", out _));
        Assert.Equal(Errno.ENOTDIR, fs.Link(f, f, "x", out _));
        Assert.Equal(Errno.ENAMETOOLONG, fs.Link(f, Root, new string('x', 256), out _));
        Assert.Equal(3u, Attr(fs, f).Nlink);
        // symlinks and special files can be linked
        Ok(fs.Symlink(Root, "l", "f", 0, 0, out var l), "symlink");
        Ok(fs.Link(l.Ino, d, "l2", out var l2), "link a symlink");
        Assert.Equal(2u, l2.Nlink);
        // every name reads the same data; removing names counts down
        Ok(fs.Unlink(Root, "f"), "unlink f");
        Assert.Equal(2u, Attr(fs, f).Nlink);
        Assert.Equal(Pattern(3000, 7), ReadAll(fs, Look(fs, Root, "h").Ino));
        Ok(fs.Unlink(d, "g"), "unlink g");
        Assert.Equal(1u, Attr(fs, f).Nlink);
        Ok(fs.Unlink(Root, "h"), "unlink h");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
        Assert.Equal(Errno.ENOENT, fs.Link(f, Root, "again", out _));
        p.AssertClean();
    }

    [Fact]
    public void SymlinkAndReadlink()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        long d = Mkdir(fs, Root, "d");
        string target = "../dir/ünïcode/file";
        Ok(fs.Symlink(d, "l", target, 5, 6, out var la), "symlink");
        Assert.Equal(S_IFLNK | 0x1FF, la.Mode);
        Assert.True(la.IsSymlink);
        Assert.Equal(Encoding.UTF8.GetByteCount(target), la.Size);
        Assert.Equal(5u, la.Uid);
        Assert.Equal(6u, la.Gid);
        Assert.Equal(1u, la.Nlink);
        Ok(fs.Readlink(la.Ino, out var t), "readlink");
        Assert.Equal(target, t);
        Assert.Equal(la.Ino, Look(fs, d, "l").Ino); // lookup does not follow
        Assert.Equal(10u, ReadDirAll(fs, d).Single(e => e.Name == "l").Type);
        Assert.Equal(Errno.EINVAL, fs.Readlink(f, out _));
        Assert.Equal(Errno.EINVAL, fs.Readlink(d, out _));
        Assert.Equal(Errno.ENOENT, fs.Readlink(999_999, out _));
        Assert.Equal(Errno.EINVAL, fs.Read(la.Ino, 0, new byte[10], out _));
        Assert.Equal(Errno.EINVAL, fs.Write(la.Ino, 0, new byte[10], out _));
        Assert.Equal(Errno.EEXIST, fs.Symlink(d, "l", "x", 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Symlink(d, "empty", "", 0, 0, out _));
        Assert.Equal(Errno.ENAMETOOLONG, fs.Symlink(d, "long", new string('x', 4096), 0, 0, out _));
        Ok(fs.Symlink(d, "longest", new string('x', 4095), 0, 0, out var longest), "4095-byte target");
        Assert.Equal(4095, longest.Size);
        Assert.Equal(Errno.ENOTDIR, fs.Symlink(f, "x", "y", 0, 0, out _));
        p.Reopen();
        fs = p.Live;
        Ok(fs.Readlink(la.Ino, out t), "readlink after reopen");
        Assert.Equal(target, t);
        Ok(fs.Readlink(longest.Ino, out t), "readlink after reopen");
        Assert.Equal(4095, t.Length);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- open, release

    [Fact]
    public void UnlinkedOpenFileLivesUntilTheLastRelease()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long free0 = fs.StatFs().FreeBlocks;
        long f = Create(fs, Root, "f");
        var data = Pattern(100_000, 8);
        WriteAt(fs, f, 0, data);
        Ok(fs.Open(f, writable: true), "open 1");
        Ok(fs.Open(f, writable: false), "open 2");
        Ok(fs.Unlink(Root, "f"), "unlink");
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "f", out _));
        Assert.Empty(Names(fs, Root));
        var a = Attr(fs, f);
        Assert.Equal(0u, a.Nlink);
        Assert.Equal(data, ReadAll(fs, f));
        // still writable and resizable
        var more = Pattern(5000, 9);
        WriteAt(fs, f, 100_000, more);
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0x180 }, out _), "chmod unlinked");
        Ok(fs.Fsync(f), "fsync unlinked");
        Assert.Equal(more, ReadRange(fs, f, 100_000, 5000));
        Assert.Equal(Errno.ENOENT, fs.Link(f, Root, "back", out _)); // no resurrection without O_TMPFILE
        Ok(fs.Release(f), "release 1");
        Assert.Equal(data, ReadRange(fs, f, 0, data.Length));
        Ok(fs.Release(f), "release 2");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
        Assert.Equal(Errno.ENOENT, fs.Read(f, 0, new byte[1], out _));
        Assert.Equal(Errno.ENOENT, fs.Write(f, 0, new byte[1], out _));
        Assert.Equal(Errno.EBADF, fs.Release(f));
        Ok(fs.Fsync(Root), "fsync");
        Assert.Equal(free0, fs.StatFs().FreeBlocks);
        // an open file that is not unlinked stays after release
        long g = Create(fs, Root, "g");
        Ok(fs.Open(g, true), "open g");
        Ok(fs.Release(g), "release g");
        Assert.Equal(g, Look(fs, Root, "g").Ino);
        Assert.Equal(Errno.EBADF, fs.Release(g));
        Assert.Equal(Errno.ENOENT, fs.Open(999_999, false));
        p.AssertClean();
    }

    [Fact]
    public void UnlinkedOpenFileReplacedByRenameLivesUntilRelease()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        WriteAt(fs, f, 0, Pattern(9000, 10));
        long g = Create(fs, Root, "g");
        Ok(fs.Open(f, false), "open");
        Ok(fs.Rename(Root, "g", Root, "f"), "rename over the open file");
        Assert.Equal(Pattern(9000, 10), ReadAll(fs, f));
        Assert.Equal(0u, Attr(fs, f).Nlink);
        Ok(fs.Release(f), "release");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
        Assert.Equal(g, Look(fs, Root, "f").Ino);
        p.AssertClean();
    }

    [Fact]
    public void RemovedOpenDirectoryTakesNoNewEntries()
    {
        // Linux marks a removed directory dead: nothing can be created in, linked or renamed into it (ENOENT).
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        long g = Create(fs, Root, "g");
        long d = Mkdir(fs, Root, "d");
        Ok(fs.Open(d, false), "opendir");
        Ok(fs.Rmdir(Root, "d"), "rmdir");
        Assert.Equal(0u, Attr(fs, d).Nlink);
        Assert.Equal(2u, Attr(fs, Root).Nlink);
        Assert.Equal(Errno.ENOENT, fs.Create(d, "x", 0x1A4, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Mkdir(d, "x", 0x1ED, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Mknod(d, "x", S_IFIFO | 0x1A4, 0, 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Symlink(d, "x", "f", 0, 0, out _));
        Assert.Equal(Errno.ENOENT, fs.Link(f, d, "x", out _));
        Assert.Equal(Errno.ENOENT, fs.Rename(Root, "f", d, "x"));
        Assert.Equal(Errno.ENOENT, fs.Rename(Root, "f", d, "x", RenameFlags.NoReplace));
        Assert.Equal(new[] { ".", ".." }, ReadDirAll(fs, d).Select(e => e.Name));
        Assert.Equal(f, Look(fs, Root, "f").Ino);
        Assert.Equal(1u, Attr(fs, f).Nlink);
        Ok(fs.Release(d), "releasedir");
        Assert.Equal(Errno.ENOENT, fs.GetAttr(d, out _));
        Assert.Equal(g, Look(fs, Root, "g").Ino);
        p.AssertClean();
    }

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

    // ---------------------------------------------------------------- read, write, fsync

    [Fact]
    public void ReadWriteSparseAppendAndSubBlock()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        // sparse: a write far past the end leaves a hole that reads as zeros
        WriteAt(fs, f, (1 << 20) + 10, new byte[] { 1, 2, 3 });
        var a = Attr(fs, f);
        Assert.Equal((1 << 20) + 13, a.Size);
        Assert.Equal(Bs / 512, a.Blocks512);
        var all = ReadAll(fs, f);
        Assert.True(AllZero(all.AsSpan(0, (1 << 20) + 10)));
        Assert.Equal(new byte[] { 1, 2, 3 }, all[((1 << 20) + 10)..]);
        // reads clamp at the end; at or past the end they return nothing
        Assert.Equal(new byte[] { 2, 3 }, ReadRange(fs, f, (1 << 20) + 11, 100));
        Assert.Empty(ReadRange(fs, f, (1 << 20) + 13, 100));
        Assert.Empty(ReadRange(fs, f, 1L << 40, 100));
        Assert.Equal(Errno.EINVAL, fs.Read(f, -1, new byte[1], out _));
        // sub-block writes against a model
        long g = Create(fs, Root, "g");
        var model = Array.Empty<byte>();
        void W(long off, byte[] d)
        {
            WriteAt(fs, g, off, d);
            if (off + d.Length > model.Length) Array.Resize(ref model, (int)(off + d.Length));
            d.CopyTo(model, off);
            Assert.Equal(model.Length, Attr(fs, g).Size);
            Assert.Equal(model, ReadAll(fs, g));
        }
        W(0, new byte[] { 7 });
        W(4095, new byte[] { 1 });
        W(4094, new byte[] { 2, 3, 4 }); // crosses a block boundary
        W(1, Pattern(10, 12));
        W(5000, Pattern(3, 13)); // past the end inside the next block: the gap is zeros
        W(2 * Bs - 1, Pattern(Bs + 2, 14)); // partial, whole, partial
        W(100, Pattern(1, 15));
        W(ChunkBytes - 3, Pattern(7, 16)); // crosses a chunk boundary of the extent map
        W(ChunkBytes - Bs, Pattern(3 * Bs, 17));
        // append goes to the end whatever the offset says
        int before = model.Length;
        Ok(fs.Write(g, 0, new byte[] { 0xAA, 0xBB }, out int n, append: true), "append");
        Assert.Equal(2, n);
        model = model.Concat(new byte[] { 0xAA, 0xBB }).ToArray();
        Assert.Equal(before + 2, Attr(fs, g).Size);
        Assert.Equal(model, ReadAll(fs, g));
        Ok(fs.Write(g, 12345, new byte[] { 0xCC }, out n, append: true), "append");
        Assert.Equal(0xCC, ReadRange(fs, g, before + 2, 1)[0]);
        // empty writes change nothing
        Ok(fs.Write(g, 1L << 30, ReadOnlySpan<byte>.Empty, out n), "empty write");
        Assert.Equal(0, n);
        Assert.Equal(before + 3, Attr(fs, g).Size);
        // errors
        long d0 = Mkdir(fs, Root, "d");
        Assert.Equal(Errno.EISDIR, fs.Write(d0, 0, new byte[1], out _));
        Assert.Equal(Errno.EISDIR, fs.Read(d0, 0, new byte[1], out _));
        Assert.Equal(Errno.ENOENT, fs.Write(999_999, 0, new byte[1], out _));
        Assert.Equal(Errno.ENOENT, fs.Read(999_999, 0, new byte[1], out _));
        Assert.Equal(Errno.EINVAL, fs.Write(g, -1, new byte[1], out _));
        Assert.Equal(Errno.EFBIG, fs.Write(g, Core.Engine.Engine.MaxFileSize, new byte[1], out _));
        p.Reopen();
        fs = p.Live;
        Assert.Equal((1 << 20) + 13, Attr(fs, f).Size);
        Assert.Equal(new byte[] { 1, 2, 3 }, ReadRange(fs, f, (1 << 20) + 10, 3));
        Assert.Equal(model, ReadRange(fs, g, 0, model.Length));
        p.AssertClean();
    }

    [Fact]
    public void HugeSparseFilesUpToTheSizeLimit()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long max = Core.Engine.Engine.MaxFileSize;
        long f = Create(fs, Root, "huge");
        WriteAt(fs, f, 0, new byte[] { 1 });
        WriteAt(fs, f, 1L << 30, new byte[] { 2 });
        WriteAt(fs, f, max - 1, new byte[] { 3 });
        var a = Attr(fs, f);
        Assert.Equal(max, a.Size);
        Assert.Equal(3 * Bs / 512, a.Blocks512);
        Assert.Equal(new byte[] { 3 }, ReadRange(fs, f, max - 1, 100));
        Assert.Equal(new byte[] { 0, 2, 0 }, ReadRange(fs, f, (1L << 30) - 1, 3));
        Assert.True(AllZero(ReadRange(fs, f, max - (1 << 20), (1 << 20) - 1)));
        long r;
        Ok(fs.Seek(f, 1, SeekWhence.Data, out r), "data in the first block"); Assert.Equal(1, r);
        Ok(fs.Seek(f, 1, SeekWhence.Hole, out r), "hole after the first block"); Assert.Equal(Bs, r);
        Ok(fs.Seek(f, Bs, SeekWhence.Data, out r), "data after the first hole"); Assert.Equal(1L << 30, r);
        Ok(fs.Seek(f, (1L << 30) + Bs, SeekWhence.Data, out r), "data near the end"); Assert.Equal(max - Bs, r);
        Ok(fs.Seek(f, (1L << 30), SeekWhence.Hole, out r), "hole after 1 GiB"); Assert.Equal((1L << 30) + Bs, r);
        Ok(fs.Seek(f, max - Bs, SeekWhence.Hole, out r), "virtual hole at the limit"); Assert.Equal(max, r);
        Assert.Equal(Errno.EFBIG, fs.Write(f, max, new byte[] { 4 }, out _));
        Ok(fs.Write(f, max - 2, new byte[] { 4, 5, 6 }, out int n), "write across the limit"); // short, as Linux
        Assert.Equal(2, n);
        Assert.Equal(new byte[] { 4, 5 }, ReadRange(fs, f, max - 2, 3));
        Assert.Equal(max, Attr(fs, f).Size);
        Assert.Equal(Errno.EFBIG, fs.Write(f, 0, new byte[] { 4 }, out _, append: true));
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 1L << 20, max - (1L << 20)), "punch nearly all");
        a = Attr(fs, f);
        Assert.Equal(max, a.Size);
        Assert.Equal(Bs / 512, a.Blocks512);
        WriteAt(fs, f, max - 1, new byte[] { 3 });
        WriteAt(fs, f, 1L << 30, new byte[] { 2 });
        Assert.Equal(new byte[] { 3 }, ReadRange(fs, f, max - 1, 1));
        a = SetSize(fs, f, 1); // spans far more chunks than are mapped
        Assert.Equal(Bs / 512, a.Blocks512);
        Assert.Equal(new byte[] { 1 }, ReadAll(fs, f));
        p.AssertClean();
    }

    [Fact]
    public void RandomOperationsMatchAModel()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        var rnd = new Random(42);
        var model = new byte[0];
        const int Max = (int)ChunkBytes + 200_000; // spans a chunk boundary
        var snaps = new List<(string Name, byte[] Data)>();
        for (int i = 0; i < 1200; i++)
        {
            int op = i % 120 == 119 ? 9 : rnd.Next(9);
            long off = rnd.Next(0, Max);
            int len = rnd.Next(1, rnd.Next(2) == 0 ? 300 : 40_000);
            string what = "";
            if (op < 5)
            {
                var d = Pattern(len, i);
                what = $"write {len} at {off}";
                WriteAt(fs, f, off, d);
                if (off + len > model.Length) Array.Resize(ref model, (int)(off + len));
                d.CopyTo(model, off);
            }
            else if (op == 5)
            {
                what = $"truncate {off}";
                SetSize(fs, f, off);
                Array.Resize(ref model, (int)off);
            }
            else if (op == 6)
            {
                what = $"punch {off}+{len}";
                Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, off, len), what);
                if (off < model.Length) Array.Clear(model, (int)off, (int)Math.Min(len, model.Length - off));
            }
            else if (op == 7)
            {
                bool keep = rnd.Next(2) == 0;
                what = $"zero range {off}+{len} keep {keep}";
                Ok(fs.Fallocate(f, FallocateMode.ZeroRange | (keep ? FallocateMode.KeepSize : 0), off, len), what);
                if (!keep && off + len > model.Length) Array.Resize(ref model, (int)(off + len));
                if (off < model.Length) Array.Clear(model, (int)off, (int)Math.Min(len, model.Length - off));
            }
            else if (op == 8)
            {
                what = $"fallocate {off}+{len}";
                Ok(fs.Fallocate(f, FallocateMode.None, off, len), what);
                if (off + len > model.Length) Array.Resize(ref model, (int)(off + len));
            }
            else
            {
                what = $"snapshot {i}";
                Ok(p.Engine.CreateSnapshot($"s{i}", out _), what);
                snaps.Add(($"s{i}", model.ToArray()));
            }
            var a = Attr(fs, f);
            Assert.True(model.Length == a.Size, $"after op {i} ({what}): size {a.Size}, expected {model.Length}");
            long lo = Math.Max(0, Math.Min(off, model.Length) - 5000);
            int n = (int)Math.Min(model.Length - lo, len + 10_000);
            var got = ReadRange(fs, f, lo, n);
            Assert.True(model.AsSpan((int)lo, n).SequenceEqual(got), $"after op {i} ({what}): data differs near {lo}");
            Assert.True(a.Blocks512 <= (model.Length + Bs - 1) / Bs * (Bs / 512), $"after op {i} ({what}): {a.Blocks512} sectors for {model.Length} bytes");
            if (i % 300 == 299)
            {
                Assert.Equal(model, ReadAll(fs, f));
                p.AssertClean();
                p.Reopen();
                fs = p.Live;
            }
        }
        foreach (var (name, data) in snaps) Assert.Equal(data, ReadAll(p.Pool.Snapshot(name)!, f));
        p.Reopen();
        Assert.Equal(model, ReadAll(p.Live, f));
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

    // ---------------------------------------------------------------- fallocate

    [Fact]
    public void FallocateModes()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        // mode 0 extends the size (and, as on ext4, mtime with it); the new range reads zeros
        var t0 = Attr(fs, f);
        Tick();
        Ok(fs.Fallocate(f, FallocateMode.None, 0, 10_000), "fallocate");
        var t1 = Attr(fs, f);
        Assert.Equal(10_000, t1.Size);
        Assert.True(t1.MtimeNs > t0.MtimeNs && t1.CtimeNs > t0.CtimeNs, "fallocate growing the file moves mtime and ctime");
        Assert.True(AllZero(ReadAll(fs, f)));
        Tick();
        Ok(fs.Fallocate(f, FallocateMode.None, 0, 100), "fallocate inside");
        var t2 = Attr(fs, f);
        Assert.Equal(t1.MtimeNs, t2.MtimeNs); // not growing: only ctime moves
        Assert.True(t2.CtimeNs > t1.CtimeNs);
        // inside the file: no change to size or data
        var data = Pattern(64 * 1024, 20);
        WriteAt(fs, f, 0, data);
        Ok(fs.Fallocate(f, FallocateMode.None, 100, 1000), "fallocate inside");
        Assert.Equal(data, ReadAll(fs, f));
        // KeepSize does not change the size
        Ok(fs.Fallocate(f, FallocateMode.KeepSize, 60_000, 100_000), "fallocate keep size");
        Assert.Equal(64 * 1024, Attr(fs, f).Size);
        Assert.Equal(data, ReadAll(fs, f));
        // punch hole: zeros, blocks freed, size kept
        long blocks = Attr(fs, f).Blocks512;
        Assert.Equal(16 * Bs / 512, blocks);
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 5000, 20_000), "punch");
        var a = Attr(fs, f);
        Assert.Equal(64 * 1024, a.Size);
        Assert.Equal(blocks - 4 * Bs / 512, a.Blocks512); // blocks 2..5 are wholly inside [5000, 25000)
        var expect = data.ToArray();
        Array.Clear(expect, 5000, 20_000);
        Assert.Equal(expect, ReadAll(fs, f));
        Ok(fs.Seek(f, 5000, SeekWhence.Hole, out long hole), "seek hole");
        Assert.Equal(2 * Bs, hole);
        // punching past the end changes nothing beyond it
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 60 * 1024, 1 << 20), "punch past the end");
        Assert.Equal(64 * 1024, Attr(fs, f).Size);
        Array.Clear(expect, 60 * 1024, 4 * 1024);
        Assert.Equal(expect, ReadAll(fs, f));
        // punching to the end of a file whose size is not block-aligned frees its last block too (as ext4)
        long u = Create(fs, Root, "u");
        WriteAt(fs, u, 0, Pattern(3 * Bs + 100, 32));
        Ok(fs.Fallocate(u, FallocateMode.PunchHole | FallocateMode.KeepSize, Bs, 1 << 20), "punch to past the end");
        var ua = Attr(fs, u);
        Assert.Equal(3 * Bs + 100, ua.Size);
        Assert.Equal(Bs / 512, ua.Blocks512);
        Assert.Equal(Pattern(Bs, 32), ReadRange(fs, u, 0, Bs));
        Assert.True(AllZero(ReadRange(fs, u, Bs, 3 * Bs)));
        Ok(fs.Fallocate(u, FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 3 * Bs + 100), "punch exactly to the end");
        Assert.Equal(0, Attr(fs, u).Blocks512);
        SetSize(fs, u, 5 * Bs);
        Assert.True(AllZero(ReadAll(fs, u)));
        // punching a hole that is already a hole (unaligned) allocates nothing
        long b0 = Attr(fs, f).Blocks512;
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 3 * Bs + 100, 200), "punch in a hole");
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 2 * Bs + 5, 2 * Bs), "punch across holes");
        Assert.Equal(b0, Attr(fs, f).Blocks512);
        Assert.Equal(expect, ReadAll(fs, f));
        // zero range: zeros, size kept with KeepSize, extended without
        WriteAt(fs, f, 0, data);
        Ok(fs.Fallocate(f, FallocateMode.ZeroRange | FallocateMode.KeepSize, 1000, 3000), "zero range");
        expect = data.ToArray();
        Array.Clear(expect, 1000, 3000);
        Assert.Equal(expect, ReadAll(fs, f));
        Ok(fs.Fallocate(f, FallocateMode.ZeroRange | FallocateMode.KeepSize, 60_000, 100_000), "zero range keep size past the end");
        Array.Clear(expect, 60_000, expect.Length - 60_000);
        Assert.Equal(expect, ReadAll(fs, f));
        Ok(fs.Fallocate(f, FallocateMode.ZeroRange, 50_000, 50_000), "zero range extending");
        Assert.Equal(100_000, Attr(fs, f).Size);
        Array.Resize(ref expect, 100_000);
        Array.Clear(expect, 50_000, 50_000);
        Assert.Equal(expect, ReadAll(fs, f));
        // errors
        Assert.Equal(Errno.EOPNOTSUPP, fs.Fallocate(f, FallocateMode.PunchHole, 0, 100));
        Assert.Equal(Errno.EOPNOTSUPP, fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.ZeroRange | FallocateMode.KeepSize, 0, 100));
        Assert.Equal(Errno.EOPNOTSUPP, fs.Fallocate(f, FallocateMode.CollapseRange, 0, Bs));
        Assert.Equal(Errno.EOPNOTSUPP, fs.Fallocate(f, FallocateMode.InsertRange, 0, Bs));
        Assert.Equal(Errno.EOPNOTSUPP, fs.Fallocate(f, FallocateMode.UnshareRange, 0, Bs));
        Assert.Equal(Errno.EOPNOTSUPP, fs.Fallocate(f, (FallocateMode)0x80, 0, Bs));
        Assert.Equal(Errno.EINVAL, fs.Fallocate(f, FallocateMode.None, 0, 0));
        Assert.Equal(Errno.EINVAL, fs.Fallocate(f, FallocateMode.None, -1, 10));
        Assert.Equal(Errno.EFBIG, fs.Fallocate(f, FallocateMode.None, Core.Engine.Engine.MaxFileSize, 1));
        long d = Mkdir(fs, Root, "d");
        Assert.Equal(Errno.EISDIR, fs.Fallocate(d, FallocateMode.None, 0, 100));
        Assert.Equal(Errno.EISDIR, fs.Fallocate(d, FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 100));
        Ok(fs.Mknod(Root, "fifo", S_IFIFO | 0x1A4, 0, 0, 0, out var fifo), "mkfifo");
        Assert.NotEqual(0, (int)fs.Fallocate(fifo.Ino, FallocateMode.None, 0, 100)); // the kernel answers ESPIPE itself
        Assert.Equal(0, Attr(fs, fifo.Ino).Size);
        Assert.Equal(Errno.ENOENT, fs.Fallocate(999_999, FallocateMode.None, 0, 100));
        Assert.Equal(100_000, Attr(fs, f).Size);
        p.AssertClean();
    }

    [Fact]
    public void PunchHoleFreesBlocksAndLeavesSnapshotsAlone()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        var data = Pattern(1 << 20, 21);
        WriteAt(fs, f, 0, data);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 1 << 20), "punch all");
        Assert.Equal(0, Attr(fs, f).Blocks512);
        Assert.True(AllZero(ReadAll(fs, f)));
        Assert.Equal(data, ReadAll(p.Pool.Snapshot("s")!, f));
        Ok(p.Engine.DeleteSnapshot("s"), "delete snapshot");
        Ok(fs.Fsync(f), "fsync");
        long free = fs.StatFs().FreeBlocks;
        WriteAt(fs, f, 0, data);
        Ok(fs.Fsync(f), "fsync");
        Assert.Equal(free - 256, fs.StatFs().FreeBlocks);
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, Bs, 10 * Bs), "punch 10 blocks");
        Ok(fs.Fsync(f), "fsync");
        Assert.Equal(free - 246, fs.StatFs().FreeBlocks);
        Assert.Equal((256 - 10) * Bs / 512, Attr(fs, f).Blocks512);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- readdir

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
    public void ReadDirOfRootAndEmptyDirectories()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        var root = ReadDirAll(fs, Root);
        Assert.Equal(2, root.Count);
        Assert.Equal((".", Root, 4u), (root[0].Name, root[0].Ino, root[0].Type));
        Assert.Equal(("..", Root, 4u), (root[1].Name, root[1].Ino, root[1].Type));
        long d = Mkdir(fs, Root, "d");
        long f = Create(fs, Root, "f");
        var list = ReadDirAll(fs, Root);
        Assert.Equal(new[] { ".", "..", "d", "f" }, list.Select(e => e.Name));
        Assert.Equal(d, list[2].Ino);
        Assert.Equal(4u, list[2].Type);
        Assert.Equal(f, list[3].Ino);
        Assert.Equal(8u, list[3].Type);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- xattrs

    [Fact]
    public void ExtendedAttributes()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        long d = Mkdir(fs, Root, "d");
        Ok(fs.Symlink(Root, "l", "f", 0, 0, out var l), "symlink");
        Ok(fs.ListXattr(f, out var names), "listxattr");
        Assert.Empty(names);
        var v1 = Pattern(100, 22);
        var input = v1.ToArray();
        Ok(fs.SetXattr(f, "user.one", input), "setxattr");
        input[0] ^= 0xFF; // the caller's buffer is not kept
        Ok(fs.GetXattr(f, "user.one", out var got), "getxattr");
        Assert.Equal(v1, got);
        Ok(fs.SetXattr(f, "user.empty", Array.Empty<byte>()), "empty value");
        Ok(fs.GetXattr(f, "user.empty", out got), "get empty");
        Assert.Empty(got);
        Ok(fs.SetXattr(f, "trusted.a.b.c", new byte[] { 1 }), "dotted name");
        Ok(fs.SetXattr(f, "user.ünï", new byte[] { 2 }), "unicode name");
        Ok(fs.ListXattr(f, out names), "listxattr");
        Assert.Equal(new[] { "trusted.a.b.c", "user.empty", "user.one", "user.ünï" }.OrderBy(x => x, StringComparer.Ordinal), names);
        // Create and Replace
        Assert.Equal(Errno.EEXIST, fs.SetXattr(f, "user.one", new byte[] { 9 }, XattrSetFlags.Create));
        Assert.Equal(Errno.ENODATA, fs.SetXattr(f, "user.none", new byte[] { 9 }, XattrSetFlags.Replace));
        Assert.Equal(Errno.ENODATA, fs.GetXattr(f, "user.none", out _));
        Ok(fs.SetXattr(f, "user.one", new byte[] { 9 }, XattrSetFlags.Replace), "replace");
        Ok(fs.SetXattr(f, "user.two", new byte[] { 8 }, XattrSetFlags.Create), "create");
        Ok(fs.GetXattr(f, "user.one", out got), "get replaced");
        Assert.Equal(new byte[] { 9 }, got);
        Ok(fs.SetXattr(f, "user.one", new byte[] { 7, 7 }), "overwrite");
        Ok(fs.GetXattr(f, "user.one", out got), "get overwritten");
        Assert.Equal(new byte[] { 7, 7 }, got);
        // remove
        Ok(fs.RemoveXattr(f, "user.two"), "removexattr");
        Assert.Equal(Errno.ENODATA, fs.RemoveXattr(f, "user.two"));
        Assert.Equal(Errno.ENODATA, fs.GetXattr(f, "user.two", out _));
        Assert.Equal(Errno.ENODATA, fs.RemoveXattr(d, "user.none"));
        // limits and missing inodes
        Assert.Equal(Errno.ERANGE, fs.SetXattr(f, "user." + new string('x', 251), new byte[1]));
        Ok(fs.SetXattr(f, "user." + new string('x', 250), new byte[1]), "255-byte name");
        Assert.Equal(Errno.E2BIG, fs.SetXattr(f, "user.big", new byte[65537]));
        Ok(fs.SetXattr(f, "user.big", Pattern(65536, 23)), "64 KiB value");
        Assert.NotEqual(0, (int)fs.SetXattr(f, "", new byte[1])); // the kernel answers ERANGE itself
        Assert.Equal(Errno.ENOENT, fs.SetXattr(999_999, "user.x", new byte[1]));
        Assert.Equal(Errno.ENOENT, fs.GetXattr(999_999, "user.x", out _));
        Assert.Equal(Errno.ENOENT, fs.ListXattr(999_999, out _));
        Assert.Equal(Errno.ENOENT, fs.RemoveXattr(999_999, "user.x"));
        // directories and symlinks have xattrs too
        Ok(fs.SetXattr(d, "user.dir", new byte[] { 3 }), "dir xattr");
        Ok(fs.SetXattr(l.Ino, "trusted.link", new byte[] { 4 }), "symlink xattr");
        // a snapshot keeps the values it saw
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        Ok(fs.SetXattr(f, "user.one", new byte[] { 1, 1, 1 }), "overwrite after snapshot");
        Ok(fs.RemoveXattr(f, "user.empty"), "remove after snapshot");
        var snap = p.Pool.Snapshot("s")!;
        Ok(snap.GetXattr(f, "user.one", out got), "snapshot getxattr");
        Assert.Equal(new byte[] { 7, 7 }, got);
        Ok(snap.GetXattr(f, "user.empty", out got), "snapshot getxattr of a removed name");
        Ok(fs.GetXattr(f, "user.one", out got), "live getxattr");
        Assert.Equal(new byte[] { 1, 1, 1 }, got);
        Assert.Equal(Errno.ENODATA, fs.GetXattr(f, "user.empty", out _));
        // everything survives a reopen
        p.Reopen();
        fs = p.Live;
        Ok(fs.ListXattr(f, out names), "listxattr after reopen");
        Assert.Equal(new[] { "trusted.a.b.c", "user." + new string('x', 250), "user.big", "user.one", "user.ünï" }.OrderBy(x => x, StringComparer.Ordinal), names);
        Ok(fs.GetXattr(f, "user.big", out got), "big after reopen");
        Assert.Equal(Pattern(65536, 23), got);
        Ok(fs.GetXattr(f, "user.ünï", out got), "unicode after reopen");
        Assert.Equal(new byte[] { 2 }, got);
        Ok(fs.GetXattr(d, "user.dir", out got), "dir xattr after reopen");
        Ok(fs.GetXattr(l.Ino, "trusted.link", out got), "symlink xattr after reopen");
        Ok(p.Pool.Snapshot("s")!.GetXattr(f, "user.empty", out _), "snapshot after reopen");
        // removing every xattr leaves an empty list
        foreach (var n in names) Ok(fs.RemoveXattr(f, n), $"remove {n}");
        Ok(fs.ListXattr(f, out names), "listxattr");
        Assert.Empty(names);
        p.Reopen();
        Ok(p.Live.ListXattr(f, out names), "listxattr");
        Assert.Empty(names);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- statfs

    [Fact]
    public void StatFsFreeBlocksFollowWritesAndDeletes()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        var s0 = fs.StatFs();
        Assert.Equal(Bs, s0.BlockSize);
        Assert.Equal(255, s0.NameMax);
        Assert.True(s0.Blocks > 0 && s0.FreeBlocks > 0 && s0.FreeBlocks <= s0.Blocks);
        Assert.True(s0.AvailableBlocks <= s0.FreeBlocks);
        long f = Create(fs, Root, "f");
        Assert.True(fs.StatFs().FreeFiles < s0.FreeFiles);
        WriteAt(fs, f, 0, Pattern(1 << 20, 24));
        var s1 = fs.StatFs();
        Assert.Equal(s0.FreeBlocks - 256, s1.FreeBlocks);
        // overwriting in place (copy on write) costs nothing once committed
        WriteAt(fs, f, 0, Pattern(1 << 20, 25));
        Ok(fs.Fsync(f), "fsync");
        Assert.Equal(s1.FreeBlocks, fs.StatFs().FreeBlocks);
        Ok(fs.Unlink(Root, "f"), "unlink");
        Ok(fs.Fsync(Root), "fsync");
        Assert.Equal(s0.FreeBlocks, fs.StatFs().FreeBlocks);
        Assert.Equal(s0.Blocks, fs.StatFs().Blocks);
        p.AssertClean();
    }

    // ---------------------------------------------------------------- SEEK_DATA, SEEK_HOLE

    [Fact]
    public void SeekDataAndHole()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = Create(fs, Root, "f");
        // empty file: ENXIO both ways
        Assert.Equal(Errno.ENXIO, fs.Seek(f, 0, SeekWhence.Data, out _));
        Assert.Equal(Errno.ENXIO, fs.Seek(f, 0, SeekWhence.Hole, out _));
        // leading hole, then data, then a trailing hole
        long dataAt = 1 << 20;
        WriteAt(fs, f, dataAt, Pattern(2 * Bs, 26));
        SetSize(fs, f, 3 << 20);
        long size = 3 << 20;
        long r;
        Ok(fs.Seek(f, 0, SeekWhence.Data, out r), "data from 0"); Assert.Equal(dataAt, r);
        Ok(fs.Seek(f, 5, SeekWhence.Data, out r), "data from 5"); Assert.Equal(dataAt, r);
        Ok(fs.Seek(f, dataAt + 100, SeekWhence.Data, out r), "data inside data"); Assert.Equal(dataAt + 100, r);
        Ok(fs.Seek(f, 0, SeekWhence.Hole, out r), "hole from 0"); Assert.Equal(0, r);
        Ok(fs.Seek(f, 7, SeekWhence.Hole, out r), "hole inside a hole"); Assert.Equal(7, r);
        Ok(fs.Seek(f, dataAt, SeekWhence.Hole, out r), "hole from data"); Assert.Equal(dataAt + 2 * Bs, r);
        Ok(fs.Seek(f, dataAt + 2 * Bs + 1, SeekWhence.Hole, out r), "hole in the trailing hole"); Assert.Equal(dataAt + 2 * Bs + 1, r);
        Assert.Equal(Errno.ENXIO, fs.Seek(f, dataAt + 2 * Bs, SeekWhence.Data, out _)); // only a hole follows
        Assert.Equal(Errno.ENXIO, fs.Seek(f, size, SeekWhence.Data, out _));
        Assert.Equal(Errno.ENXIO, fs.Seek(f, size, SeekWhence.Hole, out _));
        Assert.Equal(Errno.ENXIO, fs.Seek(f, size + 1000, SeekWhence.Hole, out _));
        Assert.Equal(Errno.ENXIO, fs.Seek(f, -1, SeekWhence.Data, out _));
        Ok(fs.Seek(f, size - 1, SeekWhence.Hole, out r), "hole at the last byte"); Assert.Equal(size - 1, r);
        // a file that ends in data: the hole is at EOF (the virtual hole), even mid-block
        long g = Create(fs, Root, "g");
        WriteAt(fs, g, 0, Pattern(3 * Bs + 10, 27));
        Ok(fs.Seek(g, 0, SeekWhence.Hole, out r), "virtual hole"); Assert.Equal(3 * Bs + 10, r);
        Ok(fs.Seek(g, 3 * Bs + 5, SeekWhence.Data, out r), "data in the last block"); Assert.Equal(3 * Bs + 5, r);
        Assert.Equal(Errno.ENXIO, fs.Seek(g, 3 * Bs + 10, SeekWhence.Data, out _));
        // data across a chunk boundary of the extent map, then a hole, then data in a later chunk
        long h = Create(fs, Root, "h");
        WriteAt(fs, h, ChunkBytes - 2 * Bs, Pattern(4 * Bs, 28));
        WriteAt(fs, h, 3 * ChunkBytes + Bs, Pattern(Bs, 29));
        Ok(fs.Seek(h, 0, SeekWhence.Data, out r), "data h"); Assert.Equal(ChunkBytes - 2 * Bs, r);
        Ok(fs.Seek(h, ChunkBytes - 2 * Bs, SeekWhence.Hole, out r), "hole h"); Assert.Equal(ChunkBytes + 2 * Bs, r);
        Ok(fs.Seek(h, ChunkBytes + 2 * Bs, SeekWhence.Data, out r), "data h 2"); Assert.Equal(3 * ChunkBytes + Bs, r);
        Ok(fs.Seek(h, 2 * ChunkBytes, SeekWhence.Hole, out r), "hole in an empty chunk"); Assert.Equal(2 * ChunkBytes, r);
        Ok(fs.Seek(h, 3 * ChunkBytes + Bs, SeekWhence.Hole, out r), "virtual hole h"); Assert.Equal(3 * ChunkBytes + 2 * Bs, r);
        // a hole punched in the middle of data
        Ok(fs.Fallocate(g, FallocateMode.PunchHole | FallocateMode.KeepSize, Bs, Bs), "punch");
        Ok(fs.Seek(g, 0, SeekWhence.Hole, out r), "punched hole"); Assert.Equal(Bs, r);
        Ok(fs.Seek(g, Bs, SeekWhence.Data, out r), "data after the punched hole"); Assert.Equal(2 * Bs, r);
        // the same answers from a snapshot
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = p.Pool.Snapshot("s")!;
        Ok(snap.Seek(f, 0, SeekWhence.Data, out r), "snapshot data"); Assert.Equal(dataAt, r);
        Ok(snap.Seek(h, ChunkBytes - 2 * Bs, SeekWhence.Hole, out r), "snapshot hole"); Assert.Equal(ChunkBytes + 2 * Bs, r);
        Assert.Equal(Errno.ENOENT, fs.Seek(999_999, 0, SeekWhence.Data, out _));
        p.AssertClean();
    }

    // ---------------------------------------------------------------- snapshots are read-only

    [Fact]
    public void EveryChangeOnASnapshotIsErofsWhileReadsWork()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long d = Mkdir(fs, Root, "d");
        long f = Create(fs, d, "f");
        var data = Pattern(20_000, 30);
        WriteAt(fs, f, 0, data);
        Ok(fs.Symlink(d, "l", "f", 0, 0, out var l), "symlink");
        Ok(fs.SetXattr(f, "user.x", new byte[] { 1 }), "setxattr");
        long e = Mkdir(fs, d, "e");
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = p.Pool.Snapshot("s")!;
        Assert.True(snap.ReadOnly);
        Assert.Equal("s", snap.SnapshotName);
        Assert.False(fs.ReadOnly);
        // reads
        Assert.Equal(Attr(fs, f), Attr(snap, f));
        Assert.Equal(f, Look(snap, d, "f").Ino);
        Assert.Equal(d, Look(snap, e, "..").Ino);
        Assert.Equal(new[] { ".", "..", "f", "l", "e" }, ReadDirAll(snap, d).Select(x => x.Name));
        Ok(snap.Readlink(l.Ino, out var t), "readlink"); Assert.Equal("f", t);
        Assert.Equal(data, ReadAll(snap, f));
        Ok(snap.GetXattr(f, "user.x", out var v), "getxattr"); Assert.Equal(new byte[] { 1 }, v);
        Ok(snap.ListXattr(f, out var names), "listxattr"); Assert.Equal(new[] { "user.x" }, names);
        Ok(snap.Seek(f, 0, SeekWhence.Hole, out long h), "seek"); Assert.Equal(20_000, h);
        Ok(snap.Open(f, writable: false), "open read-only");
        Ok(snap.Release(f), "release");
        Ok(snap.Fsync(f), "fsync");
        Assert.Equal(fs.StatFs().BlockSize, snap.StatFs().BlockSize);
        Ok(snap.Resolve("/d/f", out var ra), "resolve"); Assert.Equal(f, ra.Ino);
        Assert.Equal(Errno.ENOENT, snap.Lookup(d, "missing", out _));
        Assert.Equal(Errno.ENOENT, snap.Open(999_999, false));
        // every change
        var ro = new Dictionary<string, Errno>
        {
            ["create"] = snap.Create(d, "n", 0x1A4, 0, 0, out _),
            ["mknod"] = snap.Mknod(d, "n", S_IFIFO | 0x1A4, 0, 0, 0, out _),
            ["mkdir"] = snap.Mkdir(d, "n", 0x1ED, 0, 0, out _),
            ["symlink"] = snap.Symlink(d, "n", "x", 0, 0, out _),
            ["link"] = snap.Link(f, d, "n", out _),
            ["unlink"] = snap.Unlink(d, "f"),
            ["rmdir"] = snap.Rmdir(d, "e"),
            ["rename"] = snap.Rename(d, "f", d, "n"),
            ["rename exchange"] = snap.Rename(d, "f", d, "e", RenameFlags.Exchange),
            ["chmod"] = snap.SetAttr(f, new SetAttrRequest { Mode = 0x1FF }, out _),
            ["chown"] = snap.SetAttr(f, new SetAttrRequest { Uid = 5 }, out _),
            ["utimens"] = snap.SetAttr(f, new SetAttrRequest { AtimeNow = true }, out _),
            ["truncate"] = snap.SetAttr(f, new SetAttrRequest { Size = 0 }, out _),
            ["open for writing"] = snap.Open(f, writable: true),
            ["write"] = snap.Write(f, 0, new byte[] { 1 }, out _),
            ["append"] = snap.Write(f, 0, new byte[] { 1 }, out _, append: true),
            ["fallocate"] = snap.Fallocate(f, FallocateMode.None, 0, 1 << 20),
            ["punch"] = snap.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 0, 100),
            ["setxattr"] = snap.SetXattr(f, "user.y", new byte[] { 2 }),
            ["removexattr"] = snap.RemoveXattr(f, "user.x"),
            ["create in missing"] = snap.Create(999_999, "n", 0x1A4, 0, 0, out _),
            ["iomap write"] = snap.IomapBegin(f, 0, 4096, Core.Engine.IomapOp.Write, out _),
        };
        foreach (var (what, err) in ro) Assert.True(err == Errno.EROFS, $"{what} on a snapshot: {err}, expected EROFS");
        // nothing changed in either view
        Assert.Equal(data, ReadAll(snap, f));
        Assert.Equal(data, ReadAll(fs, f));
        Assert.Equal(new[] { ".", "..", "f", "l", "e" }, ReadDirAll(snap, d).Select(x => x.Name));
        Assert.Equal(1u, Attr(snap, f).Nlink);
        // the live tree moves on, the snapshot does not
        WriteAt(fs, f, 0, Pattern(100, 31));
        Ok(fs.Unlink(d, "l"), "unlink live");
        Ok(fs.Rename(d, "e", Root, "e2"), "rename live");
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0x100 }, out _), "chmod live");
        Assert.Equal(data, ReadAll(snap, f));
        Assert.Equal(S_IFREG | 0x1A4, Attr(snap, f).Mode);
        Assert.Equal(d, Look(snap, e, "..").Ino);
        Assert.Equal(Root, Look(fs, e, "..").Ino);
        Assert.Equal(l.Ino, Look(snap, d, "l").Ino);
        Assert.Equal(3u, Attr(snap, d).Nlink);
        Assert.Equal(2u, Attr(fs, d).Nlink);
        p.AssertClean();
    }
}
