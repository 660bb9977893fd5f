using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;
using static Cow.Tests.Engine.SnapshotOpsTests;

namespace Cow.Tests.Engine;

/// <summary>Snapshot restore (snapper's undochange) and copy_file_range from a snapshot's file, on memory pools:
/// what changes, what is listed, that no data block is written, and that fsck stays clean through restoring
/// and deleting the snapshot.</summary>
[Trait("Tier", "engine")]
public class SnapshotRestoreTests
{
    private static void Ok(Errno e, string what) => Assert.True(e == 0, $"{what}: {e}");

    private static List<RestoreChange> Restore(MemoryPool p, string snap, bool dryRun, params string[] paths)
    {
        var e = p.Engine.RestoreFromSnapshot(snap, paths, dryRun, out var changes, out var bad);
        Assert.True(e == 0, $"restore {string.Join(' ', paths)}: {e} at {bad}");
        return changes;
    }

    private static string Strip(string line) => string.Join(' ', line.Split(' ').Where(w => !w.StartsWith("ino=") && !w.StartsWith("ctime=")));

    private static Dictionary<string, string> Stripped(FileSystemView fs) => Dump(fs).ToDictionary(kv => kv.Key, kv => Strip(kv.Value));

    [Fact]
    public void RestoringAFileKeepsItsInodeSharesTheSnapshotsBlocksAndSurvivesTheSnapshotsDeletion()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = p.Pool.Snapshot("s")!;
        var want = Dump(snap)["/g"];
        long g = Ino(p.Live, "/g");
        WriteAt(p.Live, g, 4096, Pattern(1 << 20, 9));           // 1 MiB of the 5 MiB file rewritten
        WriteAt(p.Live, g, 5 << 20, Pattern(8192, 10));          // and grown
        Ok(p.Live.SetXattr(g, "user.b", new byte[] { 4 }), "setxattr");
        Ok(p.Live.SetAttr(g, new SetAttrRequest { Mode = 0x8000 | 0x1C0, Uid = 3 }, out _), "chmod");
        p.Engine.Commit();
        long free = p.Live.StatFs().FreeBlocks;

        var changes = Restore(p, "s", false, "/g");
        Assert.Equal([new RestoreChange("/g", RestoreAction.Replaced, g)], changes);
        Assert.Equal(g, Ino(p.Live, "/g"));                                  // in place: same live inode
        Assert.Equal(Strip(want), Strip(Dump(p.Live)["/g"]));                 // data, size, mode, owner, times, xattrs
        Assert.True(p.Live.StatFs().FreeBlocks >= free + 256, "the rewritten MiB is freed and nothing new is used");
        Assert.Equal(ReadAll(p.Live, g), ReadAll(p.Live, Ino(p.Live, "/d/sub/g-link")));   // the hard link is the same file
        p.AssertClean();
        Assert.Equal([new RestoreChange("/g", RestoreAction.Unchanged, g)], Restore(p, "s", false, "/g"));

        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        p.AssertClean();
        Assert.Equal(Pattern(5 << 20, 2), ReadAll(p.Live, g));
        p.Reopen();
        p.AssertClean();
        Assert.Equal(Pattern(5 << 20, 2), ReadAll(p.Live, Ino(p.Live, "/g")));
    }

    [Fact]
    public void RestoringTheWholeTreeMakesItTheSnapshotsAndListsEveryChange()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = Stripped(p.Pool.Snapshot("s")!);
        ChangeTree(p.Live, 3);
        p.Engine.Commit();
        var before = Dump(p.Live);
        long free = p.Live.StatFs().FreeBlocks;

        var plan = Restore(p, "s", true, "/");
        Assert.Equal(before, Dump(p.Live));                        // a dry run changes nothing
        Assert.Equal(free, p.Live.StatFs().FreeBlocks);
        var got = plan.Select(c => $"{c.Action} {c.Path}").ToList();
        Assert.Equal(new[]
        {
            "Attributes /", "Attributes /d", "Created /d/f", "Attributes /d/sub", "Replaced /d/sub/g-link", "Removed /d/sub/ln2",
            "Removed /d/sub/nd3", "Replaced /g", "Created /ln", "Removed /new3",
        }, got);

        var done = Restore(p, "s", false, "/");
        Assert.Equal(plan, done);
        Assert.Equal(snap, Stripped(p.Live));                     // everything but inode numbers and ctimes
        Assert.Equal(Ino(p.Live, "/g"), Ino(p.Live, "/d/sub/g-link"));
        Assert.True(p.Live.StatFs().FreeBlocks >= free, "a restore writes no data block");
        p.AssertClean();
        Assert.Equal([new RestoreChange("/", RestoreAction.Unchanged, 1)], Restore(p, "s", false, "/"));
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        p.AssertClean();
        p.Reopen();
        p.AssertClean();
        Assert.Equal(snap, Stripped(p.Live));
    }

    [Fact]
    public void ASubtreeIsRestoredEntryByEntryAndPathsTheSnapshotLacksAreRemoved()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = Stripped(p.Pool.Snapshot("s")!);
        long f = Ino(p.Live, "/d/f");
        long sub = Ino(p.Live, "/d/sub");
        ChangeTree(p.Live, 4);               // /d/f unlinked, /d chmod, /d/sub/ln2 and /d/sub/nd4 made, /new4 made
        long n = CreateFile(p.Live, "/d/sub/nd4/deep");
        WriteAt(p.Live, n, 0, Pattern(10_000, 1));

        var changes = Restore(p, "s", false, "/d", "/new4");
        // /d/sub/g-link is /g, whose data and xattrs ChangeTree changed: restored in place (so /g is too).
        Assert.Equal(new[] { "Attributes /d", "Created /d/f", "Attributes /d/sub", "Replaced /d/sub/g-link", "Removed /d/sub/ln2", "Removed /d/sub/nd4", "Removed /d/sub/nd4/deep", "Removed /new4" },
            changes.Select(c => $"{c.Action} {c.Path}"));
        var live = Stripped(p.Live);
        foreach (var path in snap.Keys.Where(k => k.StartsWith("/d/") || k == "/d")) Assert.Equal(snap[path], live[path]);
        Assert.NotEqual(f, Ino(p.Live, "/d/f"));             // made again: a new inode number
        Assert.Equal(sub, Ino(p.Live, "/d/sub"));            // kept
        Assert.Equal(Errno.ENOENT, p.Live.Resolve("/new4", out _));
        Assert.Equal(Errno.ENOENT, p.Live.Resolve("/ln", out _));   // outside the paths: left as it is (renamed into /d/sub/ln2, removed there)
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        p.AssertClean();
    }

    [Fact]
    public void OverlappingPathsAreRestoredOnce()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        Mkdir(p.Live, "/extra");
        CreateFile(p.Live, "/extra/x");
        Ok(p.Live.Unlink(Ino(p.Live, "/d"), "f"), "unlink");
        // /extra goes with its content, /d/f comes back once, whatever the order and repetition of the paths.
        var changes = Restore(p, "s", false, "/extra/x", "/d/f", "/extra", "/d", "/d/f");
        Assert.Equal(new[] { "Attributes /d", "Created /d/f", "Removed /extra", "Removed /extra/x" }, changes.Select(c => $"{c.Action} {c.Path}"));
        Assert.Equal(Stripped(p.Pool.Snapshot("s")!)["/d/f"], Stripped(p.Live)["/d/f"]);
        p.AssertClean();
    }

    [Fact]
    public void AnotherFileTypeIsReplacedAndBadPathsAreRefusedWithoutChangingAnything()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = Stripped(p.Pool.Snapshot("s")!);
        // /g becomes a directory with a file in it.
        Ok(p.Live.Unlink(1, "g"), "unlink");
        Mkdir(p.Live, "/g");
        CreateFile(p.Live, "/g/inner");
        p.Engine.Commit();
        var before = Dump(p.Live);

        string? bad;
        Assert.Equal(Errno.ENOENT, p.Engine.RestoreFromSnapshot("nope", ["/g"], false, out _, out bad));
        Assert.Null(bad);
        Assert.Equal(Errno.ENOENT, p.Engine.RestoreFromSnapshot("s", ["/g", "/no/such"], false, out _, out bad));
        Assert.Equal("/no/such", bad);
        Assert.Equal(Errno.ENOENT, p.Engine.RestoreFromSnapshot("s", ["/neither"], false, out _, out bad));
        Assert.Equal(Errno.ENOTDIR, p.Engine.RestoreFromSnapshot("s", ["/d/f/x"], false, out _, out bad));
        Assert.Equal(Errno.EINVAL, p.Engine.RestoreFromSnapshot("s", ["g"], false, out _, out bad));
        Assert.Equal(Errno.EINVAL, p.Engine.RestoreFromSnapshot("s", ["/d/../g"], false, out _, out bad));
        Assert.Equal(Errno.EINVAL, p.Engine.RestoreFromSnapshot("s", ["/.snapshots/s"], false, out _, out bad));
        Assert.Equal(before, Dump(p.Live));

        var changes = Restore(p, "s", false, "/g");
        Assert.Equal(new[] { "Replaced /g", "Removed /g/inner" }, changes.Select(c => $"{c.Action} {c.Path}"));
        Assert.Equal(snap["/g"].Replace("nlink=2", "nlink=1"), Stripped(p.Live)["/g"]);   // the link in /d/sub is another file now
        Assert.Equal(Pattern(5 << 20, 2), ReadAll(p.Live, Ino(p.Live, "/g")));
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        p.AssertClean();
    }

    [Fact]
    public void CopyFileRangeFromASnapshotSharesItsBlocksAndKeepsThemAfterTheSnapshotIsDeleted()
    {
        using var p = new MemoryPool();
        long g = CreateFile(p.Live, "/big");
        var data = Pattern((16 << 20) + 1000, 7);
        WriteAt(p.Live, g, 0, data);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = p.Pool.Snapshot("s")!;
        Ok(p.Live.Unlink(1, "big"), "unlink");
        long dst = CreateFile(p.Live, "/big");
        p.Engine.Commit();
        long free = p.Live.StatFs().FreeBlocks;

        Ok(p.Live.CopyFileRange(snap, Ino(snap, "/big"), 0, dst, 0, long.MaxValue / 2, out long copied), "copy_file_range");
        Assert.Equal(data.Length, copied);
        p.Engine.Commit();
        Assert.True(p.Live.StatFs().FreeBlocks >= free, $"no block written: {free - p.Live.StatFs().FreeBlocks} used");
        Assert.Equal(data, ReadAll(p.Live, dst));
        // An unaligned piece is copied through the write path, and a snapshot view cannot be written.
        long small = CreateFile(p.Live, "/small");
        Ok(p.Live.CopyFileRange(snap, Ino(snap, "/big"), 100, small, 0, 5000, out copied), "unaligned copy");
        Assert.Equal(data.AsSpan(100, 5000).ToArray(), ReadAll(p.Live, small));
        Assert.Equal(Errno.EROFS, snap.CopyFileRange(p.Live, dst, 0, Ino(snap, "/big"), 0, 4096, out _));
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        Assert.Equal(Errno.ESTALE, p.Live.CopyFileRange(snap, 2, 0, dst, 0, 4096, out _));
        p.AssertClean();
        p.Reopen();
        p.AssertClean();
        Assert.Equal(data, ReadAll(p.Live, Ino(p.Live, "/big")));
    }

    [Fact]
    public async Task RestoreWaitsForWritersOfTheFileItReplacesAndStaysConsistent()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        long g = Ino(p.Live, "/g");
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(() =>
        {
            var chunk = Pattern(64 << 10, 3);
            int i = 0;
            while (!stop.IsCancellationRequested) WriteAt(p.Live, g, (i++ % 64) * (64L << 10), chunk);
        });
        for (int k = 0; k < 20; k++) Restore(p, "s", false, "/g");
        stop.Cancel();
        await writer;
        Restore(p, "s", false, "/g");
        Assert.Equal(Pattern(5 << 20, 2), ReadAll(p.Live, g));
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        p.AssertClean();
    }

    /// <summary>Random trees, random changes, random paths: after a restore every restored path is the snapshot's
    /// (but for inode numbers, ctimes and link counts of files), paths the snapshot lacks are gone, everything else
    /// is as it was (but for other names of files replaced in place), and fsck stays clean through the snapshot's deletion.</summary>
    public static TheoryData<int> Seeds => new(Enumerable.Range(1, 24));

    [Theory]
    [MemberData(nameof(Seeds))]
    public void RandomTreesRestoreToTheSnapshot(int seed)
    {
        var rnd = new Random(seed);
        using var p = new MemoryPool();
        var fs = p.Live;
        var dirs = new List<string> { "" };
        var files = new List<string>();
        string NewName() => "n" + rnd.Next(40);
        void RandomOp()
        {
            int op = rnd.Next(10);
            string dir = dirs[rnd.Next(dirs.Count)];
            if (fs.Resolve(dir == "" ? "/" : dir, out var da) != 0 || !da.IsDirectory) return;
            string path = dir + "/" + NewName();
            bool exists = fs.Resolve(path, out var a) == 0;
            switch (op)
            {
                case 0 or 1 when !exists:
                    long f = CreateFile(fs, path);
                    WriteAt(fs, f, rnd.Next(3) * 4096 + rnd.Next(2) * 100, Pattern(rnd.Next(1, 200_000), rnd.Next()));
                    files.Add(path);
                    break;
                case 2 when !exists && dirs.Count < 12:
                    Mkdir(fs, path); dirs.Add(path);
                    break;
                case 3 when !exists:
                    Ok(fs.Symlink(da.Ino, path[(path.LastIndexOf('/') + 1)..], "target" + rnd.Next(5), 0, 0, out _), "symlink");
                    break;
                case 4 when exists && a.IsRegular:
                    WriteAt(fs, a.Ino, rnd.Next(300_000), Pattern(rnd.Next(1, 70_000), rnd.Next()));
                    break;
                case 5 when exists && a.IsRegular:
                    Ok(fs.SetAttr(a.Ino, new SetAttrRequest { Size = rnd.Next(250_000) }, out _), "truncate");
                    break;
                case 6 when exists && !a.IsDirectory:
                    Ok(fs.Unlink(da.Ino, path[(path.LastIndexOf('/') + 1)..]), "unlink");
                    break;
                case 7 when exists:
                    Ok(fs.SetAttr(a.Ino, new SetAttrRequest { Mode = (a.Mode & 0xF000) | (uint)rnd.Next(0x1FF), Uid = (uint)rnd.Next(3) }, out _), "chmod");
                    Ok(fs.SetXattr(a.Ino, "user.k" + rnd.Next(3), Pattern(rnd.Next(1, 50), rnd.Next())), "setxattr");
                    break;
                case 8 when exists && a.IsRegular && files.Count > 0:
                    var other = dirs[rnd.Next(dirs.Count)];
                    string ln = "h" + rnd.Next(9);
                    if (fs.Resolve(other == "" ? "/" : other, out var oa) == 0 && oa.IsDirectory && fs.Resolve(other + "/" + ln, out _) != 0)
                        Ok(fs.Link(a.Ino, oa.Ino, ln, out _), "link");
                    break;
                case 9 when exists && dirs.Count > 1:
                    var to = dirs[rnd.Next(dirs.Count)];
                    if (fs.Resolve(to == "" ? "/" : to, out var ta) == 0 && ta.IsDirectory && !(to + "/").StartsWith(path + "/"))
                        fs.Rename(da.Ino, path[(path.LastIndexOf('/') + 1)..], ta.Ino, NewName());   // may fail (EEXIST, ENOTEMPTY): fine
                    break;
            }
        }
        for (int i = 0; i < 150; i++) RandomOp();
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        var snap = p.Pool.Snapshot("s")!;
        var snapDump = Dump(snap);
        for (int i = 0; i < 120; i++) RandomOp();
        p.Engine.Commit();
        var before = Dump(p.Live);

        // Paths: some of the snapshot's, some only live ones, sometimes the root.
        var candidates = snapDump.Keys.Union(before.Keys).Where(k => k != "/").Order(StringComparer.Ordinal).ToList();
        var paths = Enumerable.Range(0, 1 + rnd.Next(4)).Select(_ => candidates[rnd.Next(candidates.Count)])
            .Where(x => snapDump.ContainsKey(x) || before.ContainsKey(x)).Distinct().ToList();
        if (seed % 3 == 0) paths.Add("/");
        // Only paths whose live parent exists can be restored.
        paths = paths.Where(x => x == "/" || before.ContainsKey(x[..Math.Max(1, x.LastIndexOf('/'))]) || x.LastIndexOf('/') == 0).ToList();
        if (paths.Count == 0) paths.Add("/");
        bool Under(string x, string top) => top == "/" || x == top || x.StartsWith(top + "/");

        var plan = Restore(p, "s", true, paths.ToArray());
        Assert.Equal(before, Dump(p.Live));
        var done = Restore(p, "s", false, paths.ToArray());
        Assert.Equal(plan, done);
        var after = Dump(p.Live);
        string S(string line) => string.Join(' ', line.Split(' ').Where(w => !w.StartsWith("ino=") && !w.StartsWith("ctime=") && !(w.StartsWith("nlink=") && !line.Contains("mode=4"))));
        foreach (var top in paths)
        {
            var want = snapDump.Where(kv => Under(kv.Key, top)).ToDictionary(kv => kv.Key, kv => S(kv.Value));
            var got = after.Where(kv => Under(kv.Key, top)).ToDictionary(kv => kv.Key, kv => S(kv.Value));
            Assert.Equal(want, got);
        }
        // Outside the paths nothing changed, but for the other names of files replaced in place or unlinked (their
        // contents or link count) and the directories holding the paths (their mtime and link count follow their entries).
        var replacedInos = done.Where(c => c.Action is RestoreAction.Replaced or RestoreAction.Removed).Select(c => c.Ino).ToHashSet();
        foreach (var (path, line) in before)
        {
            if (paths.Any(t => Under(path, t) || Under(t, path))) continue;
            long ino = long.Parse(line.Split(' ')[0][4..]);
            if (replacedInos.Contains(ino)) continue;
            Assert.True(after.TryGetValue(path, out var now), $"{path} vanished");
            Assert.Equal(line, now);
        }
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        p.AssertClean();
        p.Reopen();
        p.AssertClean();
    }
}
