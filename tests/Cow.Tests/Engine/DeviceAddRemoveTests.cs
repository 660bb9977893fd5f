using Cow.Core;
using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary>
/// Devices added to and removed from an open pool (format.md 5.2, 6 "Device removal", 9 "Versions"): an added log
/// takes new writes and an added base device takes what the cleaner moves; a removal moves every block off the
/// device (live, snapshot and clone mappings alike) and drops it; removals that would not fit, of the last device,
/// and adds of foreign or member devices are refused with nothing changed; an interrupted removal carries on.
/// </summary>
[Trait("Tier", "engine")]
public class DeviceAddRemoveTests(ITestOutputHelper output)
{
    private const int Mi = 1 << 20;

    private static DeviceUsage Usage(MemoryPool p, uint cookie) => p.Engine.DeviceUsage().Single(u => u.Cookie == cookie);

    private static int FormatVersion(MemoryPool p) => p.Engine.Store.LoadPool().FormatVersion;

    private static void WriteFiles(MemoryPool p, string prefix, int files, int bytes, int seed)
    {
        for (int i = 0; i < files; i++)
        {
            long ino = CreateFile(p.Live, $"/{prefix}{i}");
            WriteAt(p.Live, ino, 0, Pattern(bytes, seed + i));
            Assert.Equal(0, (int)p.Live.Fsync(ino));
        }
    }

    [Fact]
    public void An_added_log_takes_new_writes_the_pool_grows_and_it_survives_a_reopen()
    {
        using var p = new MemoryPool(baseSize: 64L * Mi, logSize: 32L * Mi);
        Assert.Equal((int)FormatConstants.FormatVersion, FormatVersion(p));
        var size0 = p.Live.StatFs().Blocks;
        var d = p.AddDevice("log2", 32L * Mi, DeviceRole.Log);
        Assert.Equal(FormatConstants.FirstAddedCookie, d.Cookie);
        Assert.Equal(DeviceRole.Log, d.Role);
        Assert.Equal((int)FormatConstants.FormatVersion, FormatVersion(p));
        Assert.True(p.Live.StatFs().Blocks > size0 + 7000, $"size {size0} -> {p.Live.StatFs().Blocks}");

        WriteFiles(p, "f", 8, 3 * Mi + 17, 1);
        long onNew = Usage(p, d.Cookie).UsedBlocks, onOld = Usage(p, FormatConstants.LogCookie).UsedBlocks;
        output.WriteLine($"log 2: {onOld} blocks, log 3: {onNew} blocks");
        Assert.True(onNew > 1000 && onOld > 1000, $"two logs share new writes: {onOld} and {onNew} blocks");
        string before = LogCleanerTests.Contents(p);
        p.AssertClean();
        p.Reopen();
        Assert.Equal(3, p.Pool.Devices.Count);
        Assert.Equal(before, LogCleanerTests.Contents(p));
        for (int i = 0; i < 8; i++) Assert.Equal(Pattern(3 * Mi + 17, 1 + i), ReadAll(p.Live, Ino(p.Live, $"/f{i}")));
        p.AssertClean();
        // The cleaner cleans both logs.
        var pass = p.Engine.CleanLog(100);
        output.WriteLine(pass.ToString());
        // All but the segment each log's allocator is filling.
        Assert.True(Usage(p, d.Cookie).UsedBlocks < FormatConstants.SegmentBlocks, $"log 3 still uses {Usage(p, d.Cookie).UsedBlocks} blocks");
        Assert.True(Usage(p, FormatConstants.LogCookie).UsedBlocks < FormatConstants.SegmentBlocks, $"log 2 still uses {Usage(p, FormatConstants.LogCookie).UsedBlocks} blocks");
        Assert.Equal(before, LogCleanerTests.Contents(p));
        p.AssertClean();
    }

    [Fact]
    public void An_added_base_device_takes_what_the_cleaner_moves()
    {
        using var p = LogCleanerTests.AgedPool(baseSize: 8L * Mi, logSize: 32L * Mi);
        string before = LogCleanerTests.Contents(p);
        var d = p.AddDevice("base2", 64L * Mi, DeviceRole.Base);
        var pass = p.Engine.CleanLog(100);
        output.WriteLine(pass.ToString());
        Assert.Equal("nothing to move", pass.Stop);
        Assert.True(Usage(p, d.Cookie).UsedBlocks > 1000, $"the new base device got {Usage(p, d.Cookie).UsedBlocks} blocks");
        Assert.Equal(before, LogCleanerTests.Contents(p));
        p.AssertClean();
        p.Reopen();
        Assert.Equal(before, LogCleanerTests.Contents(p));
        p.AssertClean();
    }

    [Fact]
    public void Removing_the_log_moves_every_block_of_every_view_and_writes_go_on()
    {
        using var p = LogCleanerTests.AgedPool(baseSize: 64L * Mi, logSize: 32L * Mi);
        string before = LogCleanerTests.Contents(p);
        long used = Usage(p, FormatConstants.LogCookie).UsedBlocks;
        var progress = new List<DeviceRemovalProgress>();
        var r = p.Pool.RemoveDevice("2", progress: progress.Add);
        output.WriteLine(r.ToString());
        Assert.Equal("removed", r.Stop);
        Assert.True(r.BlocksMoved > 0 && r.BlocksMoved <= used, $"{r.BlocksMoved} moved of {used} used");
        Assert.Equal(0, r.BlocksLeft);
        Assert.NotEmpty(progress);
        Assert.DoesNotContain(p.Pool.Devices, x => x.Cookie == FormatConstants.LogCookie);
        Assert.Equal((int)FormatConstants.FormatVersion, FormatVersion(p));
        // The removed device's superblock is wiped: it can be used again.
        var sb = new byte[FormatConstants.SuperblockSize];
        p.LogMem.Read(0, sb);
        Assert.Null(Superblock.TryRead(sb, out _));
        Assert.Equal(before, LogCleanerTests.Contents(p));
        p.AssertClean();
        // With no log, new writes go to the base device.
        WriteFiles(p, "after", 2, Mi, 50);
        p.AssertClean();
        p.Reopen();
        Assert.Equal(before, LogCleanerTests.Contents(p));
        Assert.Equal(Pattern(Mi, 51), ReadAll(p.Live, Ino(p.Live, "/after1")));
        p.AssertClean();
    }

    [Fact]
    public void Removing_the_base_device_moves_its_data_to_an_added_one()
    {
        using var p = LogCleanerTests.AgedPool(baseSize: 64L * Mi, logSize: 32L * Mi);
        p.Engine.CleanLog(100);   // data on the base device
        string before = LogCleanerTests.Contents(p);
        Assert.True(Usage(p, FormatConstants.BaseCookie).UsedBlocks > 1000);
        var d = p.AddDevice("base2", 64L * Mi, DeviceRole.Base);
        var r = p.Pool.RemoveDevice(FormatConstants.BaseCookie.ToString());
        Assert.Equal("removed", r.Stop);
        Assert.True(Usage(p, d.Cookie).UsedBlocks >= r.BlocksMoved, "the blocks went to the added base device");
        Assert.Equal(before, LogCleanerTests.Contents(p));
        p.AssertClean();
        p.Reopen();
        Assert.Equal([FormatConstants.LogCookie, d.Cookie], p.Pool.Devices.Select(x => x.Cookie));
        Assert.Equal(before, LogCleanerTests.Contents(p));
        p.AssertClean();
    }

    [Fact]
    public void A_removal_that_would_not_fit_is_refused_naming_the_sizes_and_changes_nothing()
    {
        using var p = new MemoryPool(baseSize: 64L * Mi, logSize: 16L * Mi);
        WriteFiles(p, "f", 4, 5 * Mi, 1);
        p.Engine.CleanLog(100);
        string before = LogCleanerTests.Contents(p);
        var e = Assert.Throws<DeviceOperationException>(() => p.Pool.RemoveDevice("1"));
        output.WriteLine(e.Message);
        Assert.Equal(Mono.Unix.Native.Errno.ENOSPC, e.Errno);
        Assert.Contains("MiB of data", e.Message);
        Assert.Contains("free", e.Message);
        Assert.All(p.Pool.Devices, x => Assert.Equal(DeviceState.InService, x.State));
        Assert.Equal((int)FormatConstants.FormatVersion, FormatVersion(p));
        Assert.Equal(before, LogCleanerTests.Contents(p));
        p.AssertClean();
    }

    [Fact]
    public void The_last_device_cannot_be_removed_and_unknown_devices_are_named()
    {
        using var p = new MemoryPool(baseSize: 64L * Mi, logSize: 16L * Mi);
        Assert.Equal("removed", p.Pool.RemoveDevice("2").Stop);
        var e = Assert.Throws<DeviceOperationException>(() => p.Pool.RemoveDevice("1"));
        Assert.Equal(Mono.Unix.Native.Errno.EINVAL, e.Errno);
        Assert.Contains("last device", e.Message);
        var missing = Assert.Throws<DeviceOperationException>(() => p.Pool.RemoveDevice("7"));
        Assert.Equal(Mono.Unix.Native.Errno.ENOENT, missing.Errno);
        Assert.Contains("cookie 7", missing.Message);
        // The pool still works on its one device.
        WriteFiles(p, "f", 2, Mi, 3);
        p.AssertClean();
    }

    [Fact]
    public void Adding_a_member_a_foreign_or_a_tiny_device_is_refused()
    {
        using var p = new MemoryPool(baseSize: 64L * Mi, logSize: 16L * Mi);
        using var other = new MemoryPool(baseSize: 8L * Mi, logSize: 8L * Mi);
        var foreign = Assert.Throws<DeviceOperationException>(() => p.Pool.AddDevice(other.LogMem, DeviceRole.Log));
        Assert.Equal(Mono.Unix.Native.Errno.EEXIST, foreign.Errno);
        Assert.Contains("--force", foreign.Message);
        var member = Assert.Throws<DeviceOperationException>(() => p.Pool.AddDevice(p.LogMem, DeviceRole.Log, force: true));
        Assert.Contains("already a device of this pool", member.Message);
        var tiny = Assert.Throws<DeviceOperationException>(() => p.Pool.AddDevice(new MemoryBlockDevice("tiny", 8 * 4096), DeviceRole.Base));
        Assert.Equal(Mono.Unix.Native.Errno.EINVAL, tiny.Errno);
        var role = Assert.Throws<DeviceOperationException>(() => p.Pool.AddDevice(new MemoryBlockDevice("x", 8L * Mi), DeviceRole.Extra));
        Assert.Equal(Mono.Unix.Native.Errno.EINVAL, role.Errno);
        Assert.Equal(2, p.Pool.Devices.Count);
        Assert.Equal((int)FormatConstants.FormatVersion, FormatVersion(p));
        // Forced, the foreign device joins.
        Assert.Equal(3u, p.Pool.AddDevice(other.BaseMem, DeviceRole.Base, force: true).Cookie);
    }

    [Fact]
    public void A_cancelled_removal_keeps_the_device_marked_takes_no_writes_and_resumes_after_a_reopen()
    {
        using var p = LogCleanerTests.AgedPool(baseSize: 64L * Mi, logSize: 64L * Mi);
        WriteFiles(p, "more", 4, 5 * Mi, 90);   // more than one batch of live blocks on the log
        string before = LogCleanerTests.Contents(p);
        using var cts = new CancellationTokenSource();
        var r = p.Pool.RemoveDevice("2", progress: _ => cts.Cancel(), token: cts.Token);
        output.WriteLine(r.ToString());
        Assert.Equal("cancelled", r.Stop);
        Assert.True(r.BlocksLeft > 0, "one batch does not empty the log");
        Assert.Equal(DeviceState.Removing, p.Pool.Devices.Single(x => x.Cookie == 2).State);
        long left = Usage(p, 2).UsedBlocks;
        WriteFiles(p, "new", 2, Mi, 70);
        Assert.True(Usage(p, 2).UsedBlocks <= left, "a device being removed takes no new block");
        Assert.False(Usage(p, 2).TakesNewWrites);
        p.AssertClean();
        p.Reopen();
        Assert.Equal(DeviceState.Removing, p.Pool.Devices.Single(x => x.Cookie == 2).State);
        Assert.Equal(before, LogCleanerTests.Contents(p));
        // The background cleaner carries it on.
        p.Pool.StartCleaner(new CleanerSettings { Poll = TimeSpan.FromMilliseconds(20), Share = 1 });
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (p.Pool.Devices.Any(x => x.Cookie == 2) && DateTime.UtcNow < deadline) Thread.Sleep(20);
        p.Pool.StopCleaner();
        Assert.DoesNotContain(p.Pool.Devices, x => x.Cookie == 2);
        Assert.Equal(before, LogCleanerTests.Contents(p));
        Assert.Equal(Pattern(Mi, 71), ReadAll(p.Live, Ino(p.Live, "/new1")));
        Assert.Equal(Pattern(5 * Mi, 93), ReadAll(p.Live, Ino(p.Live, "/more3")));
        p.AssertClean();
    }

    [Fact]
    public void Cookies_are_given_from_3_and_reused_after_a_removal()
    {
        using var p = new MemoryPool(baseSize: 16L * Mi, logSize: 16L * Mi);
        Assert.Equal(3u, p.AddDevice("a", 8L * Mi, DeviceRole.Base).Cookie);
        Assert.Equal(4u, p.AddDevice("b", 8L * Mi, DeviceRole.Log).Cookie);
        Assert.Equal("removed", p.Pool.RemoveDevice("3").Stop);
        Assert.Equal(3u, p.AddDevice("c", 8L * Mi, DeviceRole.Base).Cookie);
        p.AssertClean();
        p.Reopen();
        Assert.Equal([1u, 2u, 3u, 4u], p.Pool.Devices.Select(d => d.Cookie));
        p.AssertClean();
    }
}
