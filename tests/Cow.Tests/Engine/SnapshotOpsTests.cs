using System.Text;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>Snapshot holds, properties, rollback, clone and diff on memory pools, fsck after every operation.</summary>
[Trait("Tier", "engine")]
public class SnapshotOpsTests
{
    private static void Ok(Errno e, string what) => Assert.True(e == 0, $"{what}: {e}");

    /// <summary>Everything a tree shows, path by path: inode, attributes, xattrs, link target, data.</summary>
    internal static SortedDictionary<string, string> Dump(FileSystemView fs, bool withIno = true)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        void Walk(long ino, string path)
        {
            Ok(fs.GetAttr(ino, out var a), $"getattr {path}");
            var sb = new StringBuilder();
            if (withIno) sb.Append($"ino={a.Ino} ");
            sb.Append($"mode={Convert.ToString(a.Mode, 8)} nlink={a.Nlink} uid={a.Uid} gid={a.Gid} size={a.Size} mtime={a.MtimeNs} atime={a.AtimeNs}");
            if (!a.IsDirectory) sb.Append($" ctime={a.CtimeNs}");
            Ok(fs.ListXattr(ino, out var names), "listxattr");
            foreach (var n in names.OrderBy(n => n, StringComparer.Ordinal))
            {
                Ok(fs.GetXattr(ino, n, out var v), "getxattr");
                sb.Append($" x:{n}={Convert.ToHexString(v)}");
            }
            if (a.IsSymlink) { Ok(fs.Readlink(ino, out var t), "readlink"); sb.Append($" -> {t}"); }
            if (a.IsRegular) sb.Append(" data=" + Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(ReadAll(fs, ino))));
            result[path == "" ? "/" : path] = sb.ToString();
            if (!a.IsDirectory) return;
            var entries = new List<DirEntryInfo>();
            Ok(fs.ReadDir(ino, 2, 100_000, entries), "readdir");
            foreach (var e in entries) Walk(e.Ino, path + "/" + e.Name);
        }
        Walk(1, "");
        return result;
    }

    internal static long Mkdir(FileSystemView fs, string path)
    {
        Ok(fs.ResolveParent(path, out var parent, out var name), $"parent of {path}");
        Ok(fs.Mkdir(parent, name, 0x1ED, 0, 0, out var a), $"mkdir {path}");
        return a.Ino;
    }

    // ---------------------------------------------------------------- holds

    [Fact]
    public void HeldSnapshotIsNotDeletedUntilEveryHoldIsReleased()
    {
        using var p = new MemoryPool();
        Ok(p.Engine.CreateSnapshot("s", out _), "snapshot");
        Ok(p.Engine.HoldSnapshot("s", "backup"), "hold");
        Ok(p.Engine.HoldSnapshot("s", "Backup"), "hold, other case");
        Assert.Equal(Errno.EEXIST, p.Engine.HoldSnapshot("s", "backup"));
        Assert.Equal(Errno.EINVAL, p.Engine.HoldSnapshot("s", "a/b"));
        Assert.Equal(Errno.EINVAL, p.Engine.HoldSnapshot("s", ""));
        Assert.Equal(Errno.ENOENT, p.Engine.HoldSnapshot("nope", "t"));
        p.AssertClean();
        Assert.Equal(Errno.EBUSY, p.Engine.DeleteSnapshot("s"));
        Assert.Equal(new[] { "Backup", "backup" }, p.Engine.SnapshotHolds("s"));
        p.Reopen();
        Assert.Equal(new[] { "Backup", "backup" }, p.Engine.ListSnapshots().Single().Holds);
        Assert.Equal(Errno.EBUSY, p.Engine.DeleteSnapshot("s"));
        Assert.Equal(Errno.ESRCH, p.Engine.ReleaseSnapshot("s", "other"));
        Ok(p.Engine.ReleaseSnapshot("s", "backup"), "release");
        Assert.Equal(Errno.EBUSY, p.Engine.DeleteSnapshot("s"));
        Assert.Equal(new[] { "Backup" }, p.Engine.SnapshotHolds("s"));
        Ok(p.Engine.ReleaseSnapshot("s", "Backup"), "release");
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        Assert.Null(p.Engine.SnapshotHolds("s"));
        p.AssertClean();
    }

    [Fact]
    public void APoolFromBeforeHoldsAndBirthIndexesOpensAndRollsBack()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        WriteAt(p.Live, f, 0, Pattern(9000, 1));
        Ok(p.Engine.CreateSnapshot("old", out _), "snapshot");
        WriteAt(p.Live, f, 0, Pattern(9000, 2));
        p.Pool.Dispose();
        // What the previous build left: no birth indexes, snapshot documents without holds or props.
        using (var db = new LiteDB.LiteDatabase(Core.Devices.BlockDeviceStream.Open(p.MetaMem), logStream: Core.Devices.BlockDeviceStream.Open(p.MetaLogMem)))
        {
            foreach (var c in new[] { "inodes", "dirents", "chunks" }) Assert.True(db.GetCollection(c).DropIndex("birth"));
            Assert.True(db.GetCollection("dirents").DropIndex("child"));
            var snap = db.GetCollection("snapshots").FindAll().Single();
            Assert.False(snap.ContainsKey("holds") || snap.ContainsKey("props"));
            db.Checkpoint();
        }
        p.Reopen();
        var s = p.Engine.ListSnapshots().Single();
        Assert.Empty(s.Holds);
        Assert.Empty(s.Properties);
        p.AssertClean();
        Ok(p.Engine.DiffSnapshots("old", null, out var diff), "diff");
        Assert.Equal(new SnapshotChange("/f", ChangeKind.ModifiedData, f), diff.Single());
        Ok(p.Engine.RollbackToSnapshot("old"), "rollback");
        Assert.Equal(Pattern(9000, 1), ReadAll(p.Live, f));
        p.AssertClean();
        p.Pool.Dispose();
        using (var db = new LiteDB.LiteDatabase(Core.Devices.BlockDeviceStream.Open(p.MetaMem), logStream: Core.Devices.BlockDeviceStream.Open(p.MetaLogMem)))
        {
            var indexes = db.GetCollection("$indexes").FindAll().Select(d => $"{d["collection"].AsString}.{d["name"].AsString}").ToList();
            foreach (var c in new[] { "inodes", "dirents", "chunks" }) Assert.Contains($"{c}.birth", indexes);
            Assert.Contains("dirents.child", indexes);
        }
        p.Reopen();
        p.AssertClean();
    }

    // ---------------------------------------------------------------- properties

    [Fact]
    public void PropertiesAreSetAtCreationChangedLaterAndSurviveReopen()
    {
        using var p = new MemoryPool();
        var props = new Dictionary<string, string> { ["kind"] = "pre", ["command"] = "apt upgrade", ["Kind"] = "case differs" };
        Ok(p.Engine.CreateSnapshot("pre-1", props, out var rec), "create");
        Assert.Equal("pre", rec.Properties["kind"]);
        Assert.Equal(Errno.EINVAL, p.Engine.CreateSnapshot("bad", new Dictionary<string, string> { ["a=b"] = "x" }, out _));
        Assert.Equal(Errno.EINVAL, p.Engine.CreateSnapshot("bad", new Dictionary<string, string> { ["v"] = "x\0y" }, out _));
        Assert.DoesNotContain(p.Engine.ListSnapshots(), s => s.Name == "bad");
        Ok(p.Engine.CreateSnapshot("post-1", new Dictionary<string, string> { ["kind"] = "post", ["pre"] = "pre-1" }, out _), "create");
        Ok(p.Engine.SetSnapshotProperties("post-1", new Dictionary<string, string?> { ["exit_code"] = "0", ["pre"] = null }), "set");
        Assert.Equal(Errno.EINVAL, p.Engine.SetSnapshotProperties("post-1", new Dictionary<string, string?> { ["ok"] = "1", [""] = "x" }));
        Assert.Equal(Errno.ENOENT, p.Engine.SetSnapshotProperties("nope", new Dictionary<string, string?> { ["a"] = "1" }));
        p.AssertClean();
        p.Reopen();
        var list = p.Engine.ListSnapshots();
        Assert.Equal(new Dictionary<string, string> { ["Kind"] = "case differs", ["command"] = "apt upgrade", ["kind"] = "pre" }, list[0].Properties);
        Assert.Equal(new Dictionary<string, string> { ["exit_code"] = "0", ["kind"] = "post" }, list[1].Properties);
        // What ListSnapshots returns is a copy.
        list[1].Properties["kind"] = "changed";
        Assert.Equal("post", p.Engine.ListSnapshots()[1].Properties["kind"]);
        p.AssertClean();
    }

    [Fact]
    public void TooManyPropertiesAreRefusedAndNothingChanges()
    {
        using var p = new MemoryPool();
        Ok(p.Engine.CreateSnapshot("s", out _), "create");
        var many = Enumerable.Range(0, Core.Engine.Engine.MaxSnapshotProperties + 1).ToDictionary(i => $"p{i}", i => (string?)"v");
        Assert.Equal(Errno.EINVAL, p.Engine.SetSnapshotProperties("s", many));
        Assert.Empty(p.Engine.ListSnapshots()[0].Properties);
    }

    // ---------------------------------------------------------------- rollback

    internal static void BuildTree(FileSystemView fs)
    {
        Mkdir(fs, "/d");
        Mkdir(fs, "/d/sub");
        long f = CreateFile(fs, "/d/f");
        WriteAt(fs, f, 0, Pattern(3 * 4096 + 100, 1));
        long g = CreateFile(fs, "/g");
        WriteAt(fs, g, 0, Pattern(5 << 20, 2));
        Ok(fs.SetXattr(g, "user.a", new byte[] { 1, 2, 3 }), "setxattr");
        Ok(fs.Link(g, Ino(fs, "/d/sub"), "g-link", out _), "link");
        Ok(fs.Symlink(1, "ln", "d/f", 0, 0, out _), "symlink");
        Ok(fs.SetAttr(f, new SetAttrRequest { Mode = 0x8000 | 0x180, Uid = 7, Gid = 8 }, out _), "setattr");
    }

    internal static void ChangeTree(FileSystemView fs, int seed)
    {
        long g = Ino(fs, "/g");
        WriteAt(fs, g, 4096 * 7, Pattern(10_000, seed));
        Ok(fs.SetXattr(g, "user.a", new byte[] { 9 }), "setxattr");
        if (fs.Resolve("/d/f", out _) == 0) Ok(fs.Unlink(Ino(fs, "/d"), "f"), "unlink");
        if (fs.Resolve("/ln", out _) == 0) Ok(fs.Rename(1, "ln", Ino(fs, "/d/sub"), "ln2"), "rename");
        else Ok(fs.Rename(Ino(fs, "/d/sub"), "ln2", 1, "ln3"), "rename");
        long n = CreateFile(fs, $"/new{seed}");
        WriteAt(fs, n, 0, Pattern(70_000, seed + 1));
        Mkdir(fs, $"/d/sub/nd{seed}");
        Ok(fs.SetAttr(Ino(fs, "/d"), new SetAttrRequest { Mode = 0x4000 | 0x1C0 }, out _), "chmod");
    }

    [Fact]
    public void RollbackRestoresTheSnapshotExactlyAndKeepsNewerSnapshots()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s1", out _), "s1");
        var s1 = Dump(p.Pool.Snapshot("s1")!);
        Assert.Equal(s1, Dump(p.Live));
        ChangeTree(p.Live, 10);
        Ok(p.Engine.CreateSnapshot("s2", out _), "s2");
        var s2 = Dump(p.Pool.Snapshot("s2")!);
        ChangeTree(p.Live, 20);
        p.Live.Fsync(Ino(p.Live, "/g"));
        long free = p.Live.StatFs().FreeBlocks;
        Ok(p.Engine.RollbackToSnapshot("s1"), "rollback");
        p.AssertClean();
        Assert.Equal(s1, Dump(p.Live));
        Assert.Equal(s2, Dump(p.Pool.Snapshot("s2")!));
        Assert.Equal(s1, Dump(p.Pool.Snapshot("s1")!));
        // What only the live tree held after s2 is free again: new20's 18 blocks and the 3 blocks of g rewritten.
        Assert.Equal(free + 18 + 3, p.Live.StatFs().FreeBlocks);
        p.Reopen();
        Assert.Equal(s1, Dump(p.Live));
        Assert.Equal(s2, Dump(p.Pool.Snapshot("s2")!));
        p.AssertClean();

        // The restored live tree goes on as usual, without touching what the snapshots hold.
        long g = Ino(p.Live, "/g");
        WriteAt(p.Live, g, 0, Pattern(1 << 20, 99));
        Assert.Equal(s1, Dump(p.Pool.Snapshot("s1")!));
        Assert.Equal(s2, Dump(p.Pool.Snapshot("s2")!));
        p.AssertClean();
        // Rolling forward to the newer snapshot works too, and then deleting both leaves a clean pool.
        Ok(p.Engine.RollbackToSnapshot("s2"), "rollback to s2");
        Assert.Equal(s2, Dump(p.Live));
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s1"), "delete s1");
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s2"), "delete s2");
        p.AssertClean();
        Assert.Equal(s2, Dump(p.Live));
    }

    [Fact]
    public void RollbackAndCloneAreDurableWhenTheyReturn()
    {
        using var p = new MemoryPool(faulty: true);
        p.Engine.CommitInterval = TimeSpan.Zero;
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "s");
        var s = Dump(p.Pool.Snapshot("s")!);
        ChangeTree(p.Live, 1);
        Ok(p.Engine.RollbackToSnapshot("s"), "rollback");
        p.PowerCutAndReboot();
        Assert.Equal(s, Dump(p.Live));
        p.AssertClean();
        Ok(p.Engine.CloneSnapshot("s", "/c"), "clone");
        p.PowerCutAndReboot();
        Assert.Equal(ReadAll(p.Live, Ino(p.Live, "/g")), ReadAll(p.Live, Ino(p.Live, "/c/g")));
        p.AssertClean();
    }

    [Fact]
    public void RollbackIsRefusedWhileALiveFileIsOpenAndChangesNothing()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        WriteAt(p.Live, f, 0, Pattern(5000, 1));
        Ok(p.Engine.CreateSnapshot("s", out _), "s");
        WriteAt(p.Live, f, 0, Pattern(5000, 2));
        Ok(p.Live.Open(f, writable: true), "open");
        var before = Dump(p.Live);
        Assert.Equal(Errno.EBUSY, p.Engine.RollbackToSnapshot("s"));
        Assert.Equal(Errno.ENOENT, p.Engine.RollbackToSnapshot("nope"));
        Assert.Equal(before, Dump(p.Live));
        // An unlinked file kept alive by its handle also blocks it.
        Ok(p.Live.Unlink(1, "f"), "unlink");
        Assert.Equal(Errno.EBUSY, p.Engine.RollbackToSnapshot("s"));
        p.AssertClean();
        Ok(p.Live.Release(f), "release");
        Ok(p.Engine.RollbackToSnapshot("s"), "rollback");
        Assert.Equal(Pattern(5000, 1), ReadAll(p.Live, Ino(p.Live, "/f")));
        p.AssertClean();
    }

    [Fact]
    public void RollbackDoesNotBringBackAFileUnlinkedWhileOpenAtTheSnapshot()
    {
        using var p = new MemoryPool();
        long f = CreateFile(p.Live, "/f");
        WriteAt(p.Live, f, 0, Pattern(9000, 1));
        Ok(p.Live.Open(f, writable: false), "open");
        Ok(p.Live.Unlink(1, "f"), "unlink");
        Ok(p.Engine.CreateSnapshot("s", out _), "s");
        Ok(p.Live.Release(f), "release");
        CreateFile(p.Live, "/other");
        Ok(p.Engine.RollbackToSnapshot("s"), "rollback");
        Assert.Equal(new[] { "/" }, Dump(p.Live).Keys);
        Assert.Equal(Errno.ENOENT, p.Live.GetAttr(f, out _));
        p.AssertClean();
        p.Reopen();
        p.AssertClean();
    }

    // ---------------------------------------------------------------- clone

    [Fact]
    public void CloneSharesEveryExtentAndLaterWritesLeaveTheSnapshotAlone()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "s");
        var snapDump = Dump(p.Pool.Snapshot("s")!);
        p.Engine.Commit();
        long free = p.Live.StatFs().FreeBlocks;
        Ok(p.Engine.CloneSnapshot("s", "/copy"), "clone");
        Assert.Equal(free, p.Live.StatFs().FreeBlocks); // no data block used
        p.AssertClean();
        var copy = Dump(p.Live).Where(kv => kv.Key.StartsWith("/copy/")).ToDictionary(kv => kv.Key[5..], kv => kv.Value);
        foreach (var (path, line) in snapDump.Where(kv => kv.Key != "/"))
        {
            // Same everything but the inode number and ctime.
            string Strip(string s) => string.Join(' ', s.Split(' ').Where(w => !w.StartsWith("ino=") && !w.StartsWith("ctime=")));
            Assert.Equal(Strip(line), Strip(copy[path]));
            Assert.NotEqual(line.Split(' ')[0], copy[path].Split(' ')[0]);
        }
        Assert.Equal(snapDump.Count - 1, copy.Count);
        // Hard links stay hard links within the copy.
        Assert.Equal(Ino(p.Live, "/copy/g"), Ino(p.Live, "/copy/d/sub/g-link"));
        Assert.NotEqual(Ino(p.Live, "/g"), Ino(p.Live, "/copy/g"));
        // Writes to the copy go out of place.
        WriteAt(p.Live, Ino(p.Live, "/copy/g"), 0, Pattern(1 << 20, 5));
        Ok(p.Live.Unlink(Ino(p.Live, "/copy/d"), "f"), "unlink");
        Assert.Equal(snapDump, Dump(p.Pool.Snapshot("s")!));
        p.AssertClean();
        // Clone of a sub-path; refusals.
        Ok(p.Engine.CloneSnapshot("s", "/d/sub/f-copy", "/d/f"), "clone a file");
        Assert.Equal(ReadAll(p.Pool.Snapshot("s")!, Ino(p.Pool.Snapshot("s")!, "/d/f")), ReadAll(p.Live, Ino(p.Live, "/d/sub/f-copy")));
        Assert.Equal(Errno.EEXIST, p.Engine.CloneSnapshot("s", "/copy"));
        Assert.Equal(Errno.ENOENT, p.Engine.CloneSnapshot("s", "/missing/copy"));
        Assert.Equal(Errno.ENOTDIR, p.Engine.CloneSnapshot("s", "/g/copy"));
        Assert.Equal(Errno.ENOENT, p.Engine.CloneSnapshot("nope", "/x"));
        Assert.Equal(Errno.ENOENT, p.Engine.CloneSnapshot("s", "/x", "/no/such"));
        Assert.Equal(Errno.EINVAL, p.Engine.CloneSnapshot("s", "/"));
        p.AssertClean();
        p.Reopen();
        p.AssertClean();
        Ok(p.Engine.DeleteSnapshot("s"), "delete");
        p.AssertClean();
        Assert.Equal(Pattern(5 << 20, 2)[(1 << 20)..], ReadAll(p.Live, Ino(p.Live, "/copy/g"))[(1 << 20)..]);
    }

    /// <summary>A clone reads the snapshot's tree without the engine's state lock: the mount serves meanwhile (here, a
    /// create from another thread completes while the clone has read its source and not yet inserted it), and a
    /// destination taken meanwhile makes the clone EEXIST with nothing of it in the live tree.</summary>
    [Fact]
    public void A_clone_reads_its_source_while_the_live_tree_keeps_changing()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "s");
        bool createdDuringRead = false;
        p.Engine.CommitFaultHook = at =>
        {
            if (at == "clone-read")
                createdDuringRead = Task.Run(() => CreateFile(p.Live, "/made-during-clone")).Wait(TimeSpan.FromSeconds(10));
        };
        Ok(p.Engine.CloneSnapshot("s", "/copy"), "clone");
        Assert.True(createdDuringRead, "a create from another thread waited for the clone's read");
        Assert.Equal(Dump(p.Pool.Snapshot("s")!).Count - 1, Dump(p.Live).Keys.Count(k => k.StartsWith("/copy/")));

        p.Engine.CommitFaultHook = at => { if (at == "clone-read") Task.Run(() => p.Live.Mkdir(1, "taken", 0x1ED, 0, 0, out _)).Wait(); };
        Assert.Equal(Errno.EEXIST, p.Engine.CloneSnapshot("s", "/taken"));
        p.Engine.CommitFaultHook = null;
        Assert.DoesNotContain(Dump(p.Live).Keys, k => k.StartsWith("/taken/"));
        p.AssertClean();
    }

    // ---------------------------------------------------------------- diff

    [Fact]
    public void DiffListsExactlyTheChangesOfAScriptedSequence()
    {
        using var p = new MemoryPool();
        BuildTree(p.Live);
        long keep = CreateFile(p.Live, "/keep");
        WriteAt(p.Live, keep, 0, Pattern(4096, 3));
        CreateFile(p.Live, "/becomes-dir");
        Ok(p.Engine.CreateSnapshot("a", out _), "a");
        var fs = p.Live;
        WriteAt(fs, Ino(fs, "/g"), 100, new byte[] { 1 });                         // data
        Ok(fs.SetXattr(Ino(fs, "/d/f"), "user.x", new byte[] { 1 }), "xattr");      // metadata
        Ok(fs.Rename(1, "ln", Ino(fs, "/d"), "ln-moved"), "rename");                 // renamed
        Ok(fs.Unlink(Ino(fs, "/d/sub"), "g-link"), "unlink a link");                 // removed link (g keeps /g)
        Ok(fs.Unlink(1, "becomes-dir"), "unlink");
        Mkdir(fs, "/becomes-dir");                                                   // type changed
        CreateFile(fs, "/added");                                                    // added
        var changes = Diff(p, "a", null);
        Assert.Equal(new[]
        {
            "/added Added",
            "/becomes-dir TypeChanged",
            "/d/f ModifiedMetadata",
            "/d/ln-moved Renamed /ln",
            "/d/sub/g-link Removed",
            "/g ModifiedData",
        }, changes); // directories whose only change is their entries are not listed themselves
        // Snapshot to snapshot, and the reverse direction.
        Ok(p.Engine.CreateSnapshot("b", out _), "b");
        Assert.Equal(changes, Diff(p, "a", "b"));
        Assert.Equal(new[]
        {
            "/added Removed", "/becomes-dir TypeChanged", "/d/f ModifiedMetadata", "/d/sub/g-link Added", "/g ModifiedData", "/ln Renamed /d/ln-moved",
        }, Diff(p, "b", "a"));
        Assert.Empty(Diff(p, "b", null));
        Ok(p.Live.SetAttr(keep, new SetAttrRequest { Uid = 5 }, out _), "chown");
        Assert.Equal(new[] { "/keep ModifiedMetadata" }, Diff(p, "b", null));
        Assert.Equal(Errno.ENOENT, p.Engine.DiffSnapshots("nope", null, out _));
        Assert.Equal(Errno.ENOENT, p.Engine.DiffSnapshots("a", "nope", out _));
        p.AssertClean();
    }

    // ---------------------------------------------------------------- concurrency

    [Fact]
    public async Task SnapshotOperationsRunWhileWritersWrite()
    {
        using var p = new MemoryPool(logSize: 512 << 20);
        p.Engine.CommitEveryBlocks = 256;
        BuildTree(p.Live);
        Ok(p.Engine.CreateSnapshot("s", out _), "s");
        var snap = Dump(p.Pool.Snapshot("s")!);
        const int writers = 3;
        var files = Enumerable.Range(0, writers).Select(i => CreateFile(p.Live, $"/w{i}")).ToArray();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var deadline = DateTime.UtcNow.AddSeconds(3);
        var tasks = new List<Task>();
        for (int w = 0; w < writers; w++)
        {
            int id = w;
            tasks.Add(Task.Run(() =>
            {
                var rnd = new Random(id);
                while (DateTime.UtcNow < deadline)
                {
                    var data = new byte[rnd.Next(1, 30000)]; rnd.NextBytes(data);
                    var e = p.Live.Write(files[id], rnd.Next(1 << 20), data, out _);
                    // A rollback removes the file (it is not in the snapshot): ENOENT from then on is expected.
                    if (e == Mono.Unix.Native.Errno.ENOENT) return;
                    if (e != 0) { errors.Enqueue($"writer {id}: {e}"); return; }
                }
            }));
        }
        tasks.Add(Task.Run(() =>
        {
            int n = 0;
            while (DateTime.UtcNow < deadline)
            {
                n++;
                var e = p.Engine.CloneSnapshot("s", $"/clone{n}");
                if (e != 0) errors.Enqueue($"clone {n}: {e}");
                if (p.Engine.HoldSnapshot("s", $"t{n}") != 0 || p.Engine.ReleaseSnapshot("s", $"t{n}") != 0) errors.Enqueue($"hold/release {n}");
                if (p.Engine.DiffSnapshots("s", null, out var d) != 0 || !d.Any(c => c.Path == $"/clone{n}" && c.Kind == ChangeKind.Added))
                    errors.Enqueue($"diff {n} does not list /clone{n}");
                if (n == 5)
                {
                    // Writers are busy: refused (EBUSY) or done between two writes; both leave a consistent pool.
                    e = p.Engine.RollbackToSnapshot("s");
                    if (e is not (0 or Mono.Unix.Native.Errno.EBUSY)) errors.Enqueue($"rollback: {e}");
                }
            }
        }));
        await Task.WhenAll(tasks);
        Assert.Empty(errors);
        p.AssertClean();
        Assert.Equal(snap, Dump(p.Pool.Snapshot("s")!));
        Ok(p.Engine.RollbackToSnapshot("s"), "final rollback");
        Assert.Equal(snap, Dump(p.Live));
        p.AssertClean();
    }

    private static List<string> Diff(MemoryPool p, string from, string? to)
    {
        Ok(p.Engine.DiffSnapshots(from, to, out var changes), "diff");
        return changes.Select(c => $"{c.Path} {c.Kind}" + (c.OldPath != null ? " " + c.OldPath : "")).ToList();
    }
}
