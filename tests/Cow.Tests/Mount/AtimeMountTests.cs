using System.Diagnostics;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// Access times on a real mount, per mount option (relatime by default, strictatime, noatime, nodiratime):
/// reads through new descriptors (so the page cache, dropped at open, sends READs to the server), stat
/// from this process right after (the kernel drops its cached atime after a READ or READDIR).
/// </summary>
[Trait("Tier", "mount")]
public class AtimeMountTests
{
    private static long AtimeNs(string path)
    {
        var st = StatOf(path);
        return st.st_atime * 1_000_000_000L + st.st_atime_nsec;
    }

    private static long MtimeNs(string path)
    {
        var st = StatOf(path);
        return st.st_mtime * 1_000_000_000L + st.st_mtime_nsec;
    }

    /// <summary>The per-mount options of the mount point in /proc/self/mountinfo (field 6).</summary>
    private static string[] MountOptions(MountedPool m) =>
        File.ReadAllLines("/proc/self/mountinfo").Select(l => l.Split(' ')).Single(f => f[4] == m.MountPoint)[5].Split(',');

    private static MountedPool Mount(AtimeOptions atime, bool writebackCache = false) => new(writebackCache: writebackCache, adjust: s => s with { Atime = atime });

    private static void ReadAll(string path)
    {
        Thread.Sleep(25);   // the clock moves between reads, past Engine.CoarseClockSlackNs
        Assert.NotNull(File.ReadAllBytes(path));
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void RelatimeUpdatesOnceAfterAChange(bool writebackCache)
    {
        using var m = Mount(new AtimeOptions(), writebackCache);
        string f = m.P("f");
        File.WriteAllText(f, "data");
        long created = AtimeNs(f);
        ReadAll(f);
        long first = AtimeNs(f);
        Assert.True(first > created, $"the first read after the write left atime at {created}");
        Assert.True(first > MtimeNs(f));
        ReadAll(f);
        ReadAll(f);
        Assert.Equal(first, AtimeNs(f));
        // Another write: the next read updates again, once.
        Thread.Sleep(5);
        File.AppendAllText(f, "more");
        ReadAll(f);
        long second = AtimeNs(f);
        Assert.True(second > first);
        ReadAll(f);
        Assert.Equal(second, AtimeNs(f));
        // The update rode a commit: it is on the devices.
        m.Remount();
        Assert.Equal(second, AtimeNs(f));
        // Directories: a listing after a change updates the directory's atime.
        Directory.CreateDirectory(m.P("d"));
        File.WriteAllText(m.P("d/x"), "x");
        long dirBefore = AtimeNs(m.P("d"));
        Thread.Sleep(5);
        Assert.Single(Directory.GetFileSystemEntries(m.P("d")));
        Assert.True(AtimeNs(m.P("d")) > dirBefore, "ls did not update the directory's atime");
    }

    [SkippableFact]
    public void StrictatimeUpdatesOnEveryRead()
    {
        using var m = Mount(new AtimeOptions(AtimePolicy.Strictatime));
        string f = m.P("f");
        File.WriteAllText(f, "data");
        long last = AtimeNs(f);
        for (int i = 0; i < 3; i++)
        {
            ReadAll(f);
            long now = AtimeNs(f);
            Assert.True(now > last, $"read {i} left atime at {last}");
            last = now;
        }
    }

    [SkippableFact]
    public void NoatimeNeverUpdatesButTouchStillSetsIt()
    {
        using var m = Mount(new AtimeOptions(AtimePolicy.Noatime));
        Assert.Contains("noatime", MountOptions(m));
        string f = m.P("f");
        File.WriteAllText(f, "data");
        long created = AtimeNs(f);
        ReadAll(f);
        ReadAll(f);
        Assert.Equal(created, AtimeNs(f));
        Directory.CreateDirectory(m.P("d"));
        File.WriteAllText(m.P("d/x"), "x");
        long dir = AtimeNs(m.P("d"));
        Thread.Sleep(5);
        Assert.Single(Directory.GetFileSystemEntries(m.P("d")));
        Assert.Equal(dir, AtimeNs(m.P("d")));
        // An explicit time is always honoured.
        var psi = new ProcessStartInfo("touch") { UseShellExecute = false };
        foreach (var a in new[] { "-a", "-d", "2001-02-03 04:05:06 UTC", f }) psi.ArgumentList.Add(a);
        using (var p = Process.Start(psi)!) { p.WaitForExit(); Assert.Equal(0, p.ExitCode); }
        Assert.Equal(new DateTimeOffset(2001, 2, 3, 4, 5, 6, TimeSpan.Zero).ToUnixTimeSeconds(), StatOf(f).st_atime);
    }

    [SkippableFact]
    public void NodiratimeLeavesDirectoriesButNotFiles()
    {
        using var m = Mount(new AtimeOptions(AtimePolicy.Relatime, NoDirAtime: true));
        Assert.Contains("nodiratime", MountOptions(m));
        Directory.CreateDirectory(m.P("d"));
        File.WriteAllText(m.P("d/x"), "x");
        long dir = AtimeNs(m.P("d"));
        Thread.Sleep(5);
        Assert.Single(Directory.GetFileSystemEntries(m.P("d")));
        Assert.Equal(dir, AtimeNs(m.P("d")));
        long file = AtimeNs(m.P("d/x"));
        ReadAll(m.P("d/x"));
        Assert.True(AtimeNs(m.P("d/x")) > file, "nodiratime must not stop file atime updates");
    }

    [SkippableFact]
    public void SnapshotFilesNeverChange()
    {
        using var m = Mount(new AtimeOptions(AtimePolicy.Strictatime));
        File.WriteAllText(m.P("f"), "data");
        int fd = Syscall.open(m.MountPoint, OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY);
        Assert.True(fd >= 0);
        try { Assert.Equal(0, Native.Syncfs(fd)); } finally { Syscall.close(fd); }
        Assert.Equal(0, Syscall.mkdir(m.P(".snapshots/s"), (FilePermissions)0x1ED));
        string sf = m.P(".snapshots/s/f");
        long before = AtimeNs(sf);
        ReadAll(sf);
        Assert.Equal(before, AtimeNs(sf));
    }
}
