using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>Access-time updates on read (<see cref="AtimePolicy"/>) at the engine: the relatime rule, and
/// that an update is a plain metadata change (no new record version when nothing changes).</summary>
[Trait("Tier", "engine")]
public class AtimeTests
{
    private const long Day = Core.Engine.Engine.RelatimeIntervalNs, Slack = Core.Engine.Engine.CoarseClockSlackNs;

    [Theory]
    [InlineData(Slack + 100, 99, 99, Slack + 101, false)]        // atime after mtime and ctime, fresh: keep
    [InlineData(Slack + 100, 100, 50, Slack + 101, true)]        // atime == mtime + the clock slack: update (Linux compares >=)
    [InlineData(100, 100, 50, 101, true)]                        // atime == mtime
    [InlineData(Slack + 100, 50, 150, Slack + 151, true)]        // ctime (+ slack) after atime: update
    [InlineData(Slack + 100, 50, 50, Slack + 100 + Day - 1, false)]
    [InlineData(Slack + 100, 50, 50, Slack + 100 + Day, true)]   // a day old: update
    public void RelatimeRule(long atime, long mtime, long ctime, long now, bool update) =>
        Assert.Equal(update, Core.Engine.InodeAttributes.RelatimeNeedsUpdate(atime, mtime, ctime, now));

    private static long Atime(FileSystemView fs, long ino)
    {
        Assert.Equal((Errno)0, fs.GetAttr(ino, out var a));
        return a.AtimeNs;
    }

    [Fact]
    public void PoliciesOnTheLiveTreeAndNeverOnASnapshot()
    {
        using var mp = new MemoryPool();
        var fs = mp.Live;
        Assert.Equal((Errno)0, fs.Create(fs.RootIno, "f", 0x1A4, 0, 0, out var c));
        long f = c.Ino;
        long created = Atime(fs, f);
        Assert.Equal((Errno)0, fs.Accessed(f, AtimePolicy.Noatime));
        Assert.Equal(created, Atime(fs, f));
        Thread.Sleep(20);   // past the clock slack: a read then is after the change
        Assert.Equal((Errno)0, fs.Accessed(f, AtimePolicy.Relatime));   // atime == mtime == ctime after create
        long first = Atime(fs, f);
        Assert.True(first > created, "relatime: the first read after a change updates atime");
        Thread.Sleep(20);   // past the clock slack
        Assert.Equal((Errno)0, fs.Accessed(f, AtimePolicy.Relatime));
        Assert.Equal(first, Atime(fs, f));
        Assert.Equal((Errno)0, fs.Accessed(f, AtimePolicy.Strictatime));
        long strict = Atime(fs, f);
        Assert.True(strict > first, "strictatime: every read updates atime");
        // A write makes the next relatime read update again.
        Thread.Sleep(20);
        Assert.Equal((Errno)0, fs.Write(f, 0, "x"u8, out _));
        Assert.Equal((Errno)0, fs.Accessed(f, AtimePolicy.Relatime));
        Assert.True(Atime(fs, f) > strict);
        Assert.Equal(Errno.ENOENT, fs.Accessed(999_999, AtimePolicy.Strictatime));

        // A snapshot's view never changes.
        long before = Atime(fs, f);
        Assert.Equal((Errno)0, mp.Engine.CreateSnapshot("s", out _));
        var snap = mp.Pool.Snapshot("s")!;
        Assert.Equal((Errno)0, snap.Accessed(f, AtimePolicy.Strictatime));
        Assert.Equal(before, Atime(snap, f));
        Thread.Sleep(2);
        Assert.Equal((Errno)0, fs.Accessed(f, AtimePolicy.Strictatime));   // live file shared with the snapshot: a new version
        long after = Atime(fs, f);
        Assert.True(after > before);
        Assert.Equal(before, Atime(snap, f));
        // A diff does not report an atime a read moved, but does report one set explicitly (ctime moves too).
        Assert.Equal((Errno)0, mp.Engine.DiffSnapshots("s", null, out var changes));
        Assert.Empty(changes);
        Assert.Equal((Errno)0, fs.SetAttr(f, new SetAttrRequest { AtimeNs = 1_000_000_000 }, out _));
        Assert.Equal((Errno)0, mp.Engine.DiffSnapshots("s", null, out changes));
        Assert.Single(changes);
    }
}
