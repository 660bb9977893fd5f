using System.Text;
using System.Text.Json;
using Cow.Core;
using Cow.Tests.Engine;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary><c>cow snapshot hold|release|rollback|clone|diff</c> on a pool folder: results, messages, exit codes.</summary>
[Trait("Tier", "mount")]
public class SnapshotOpsCliTests
{
    private static string NewPool()
    {
        var dir = Path.Combine(Path.GetTempPath(), "cow-cli-ops-" + Guid.NewGuid().ToString("N")[..12], "pool");
        using var p = Pool.Create(dir, new PoolCreateOptions { BaseSize = 16L << 20, LogSize = 64L << 20 });
        var f = MemoryPool.CreateFile(p.Live, "/a");
        MemoryPool.WriteAt(p.Live, f, 0, Encoding.UTF8.GetBytes("version one"));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s1", out _));
        MemoryPool.WriteAt(p.Live, f, 0, Encoding.UTF8.GetBytes("VERSION TWO"));
        MemoryPool.CreateFile(p.Live, "/b");
        return dir;
    }

    private static void Remove(string pool)
    {
        try { Directory.Delete(Path.GetDirectoryName(pool)!, recursive: true); } catch (IOException) { }
    }

    private static (int Code, string Out, string Err) Cow(params string[] args) => CowProgram.Run(args);

    [SkippableFact]
    public void HoldReleaseAndHeldDeleteThroughTheCli()
    {
        var pool = NewPool();
        try
        {
            Assert.Equal(0, Cow("snapshot", "hold", pool, "s1", "backup").Code);
            var (code, _, err) = Cow("snapshot", "hold", pool, "s1", "backup");
            Assert.Equal(1, code);
            Assert.Contains("already held by 'backup'", err);
            Assert.Equal(2, Cow("snapshot", "hold", pool, "s1", "a/b").Code);
            (code, _, err) = Cow("snapshot", "hold", pool, "nope", "t");
            Assert.Equal(1, code);
            Assert.Contains("no snapshot named 'nope'", err);
            (code, _, err) = Cow("snapshot", "delete", pool, "s1");
            Assert.Equal(1, code);
            Assert.Contains("snapshot 's1' is held by 'backup'; release it first", err);
            using (var p = Pool.Open(pool))
            {
                Assert.Equal(new[] { "backup" }, p.Engine.ListSnapshots().Single().Holds);
                Assert.Contains("is held by 'backup'; release it first", Cli.SnapshotCommands.HeldMessage(p, "s1"));
            }
            (code, _, err) = Cow("snapshot", "release", pool, "s1", "other");
            Assert.Equal(1, code);
            Assert.Contains("no hold 'other' (holds: 'backup')", err);
            Assert.Equal(0, Cow("snapshot", "release", pool, "s1", "backup").Code);
            Assert.Equal(0, Cow("snapshot", "delete", pool, "s1").Code);
        }
        finally { Remove(pool); }
    }

    [SkippableFact]
    public void DiffCloneAndRollbackThroughTheCli()
    {
        var pool = NewPool();
        try
        {
            var (code, output, err) = Cow("snapshot", "diff", pool, "s1");
            Assert.True(code == 0, err);
            Assert.Equal(new[] { "M\t/a\t(data)", "+\t/b" }, output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            (code, output, err) = Cow("snapshot", "diff", pool, "s1", "--json");
            Assert.True(code == 0, err);
            var rows = JsonDocument.Parse(output).RootElement.EnumerateArray().Select(e => $"{e.GetProperty("path").GetString()} {e.GetProperty("kind").GetString()}").ToList();
            Assert.Equal(new[] { "/a modified_data", "/b added" }, rows);
            Assert.Equal(1, Cow("snapshot", "diff", pool, "s1", "nope").Code);

            Assert.Equal(0, Cow("snapshot", "clone", pool, "s1", "/restored").Code);
            (code, _, err) = Cow("snapshot", "clone", pool, "s1", "/restored");
            Assert.Equal(1, code);
            Assert.Contains("/restored already exists", err);
            Assert.Equal(1, Cow("snapshot", "clone", pool, "s1", "/missing/x").Code);
            Assert.Equal(2, Cow("snapshot", "clone", pool, "s1", "/").Code);
            Assert.Equal(2, Cow("snapshot", "clone", pool, "s1", "/.snapshots").Code);
            using (var p = Pool.Open(pool))
                Assert.Equal("version one", Encoding.UTF8.GetString(MemoryPool.ReadAll(p.Live, MemoryPool.Ino(p.Live, "/restored/a"))));

            (code, output, err) = Cow("snapshot", "rollback", pool, "s1");
            Assert.True(code == 0, err);
            Assert.Contains("rolled back to snapshot 's1'", output);
            Assert.Equal(1, Cow("snapshot", "rollback", pool, "nope").Code);
            using (var p = Pool.Open(pool))
            {
                Assert.Equal("version one", Encoding.UTF8.GetString(MemoryPool.ReadAll(p.Live, MemoryPool.Ino(p.Live, "/a"))));
                Assert.NotEqual(0, (int)p.Live.Resolve("/b", out _));
                Assert.NotEqual(0, (int)p.Live.Resolve("/restored", out _));
                Assert.True(p.Fsck().Clean);
            }
            (code, output, _) = Cow("snapshot", "diff", pool, "s1");
            Assert.Equal(0, code);
            Assert.Equal("", output.Trim());
        }
        finally { Remove(pool); }
    }

    [SkippableFact]
    public void OperationsOnAMountedPoolAreRefusedWithWhereItIsMounted()
    {
        using var m = new MountedPool();
        using (var s = File.Create(m.P("f"))) s.Write(new byte[10]);
        Assert.Equal(0, (int)m.Pool!.Engine.CreateSnapshot("s", out _));
        foreach (var args in new[] { new[] { "hold", "s", "t" }, new[] { "release", "s", "t" }, new[] { "rollback", "s" }, new[] { "clone", "s", "/c" }, new[] { "diff", "s" } })
        {
            var (code, _, err) = Cow(["snapshot", args[0], m.PoolDir, .. args[1..]]);
            Assert.Equal(1, code);
            Assert.Contains($"the pool is mounted at {m.MountPoint} and cow snapshot {args[0]} opens", err);
            Assert.Contains($"cow umount {m.MountPoint}", err);
        }
        Assert.Empty(m.Pool.Engine.ListSnapshots().Single().Holds);
        // The pool-folder commands, given the pool folder or the mount point, say where it is mounted.
        foreach (var args in new[] { new[] { "df", m.PoolDir }, ["df", m.MountPoint], ["ls", m.MountPoint, "/"], ["cat", m.PoolDir, "/f"], ["fsck", m.MountPoint], ["put", m.MountPoint, "/g"] })
        {
            var (code, _, err) = Cow(args);
            Assert.True(code == 1, $"cow {string.Join(' ', args)}: exit {code}: {err}");
            Assert.Contains($"the pool is mounted at {m.MountPoint} and cow {args[0]} opens", err);
        }
        Assert.False(File.Exists(m.P("g")));
    }
}
