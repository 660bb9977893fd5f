using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// The kernel keeps Cow's entries and attributes for long (RequestDispatcher.EntryTimeoutSeconds), so every change
/// made behind its back must be told to it: a clone of a snapshot into the live tree, snapshots created and deleted
/// not through the mount. Each is seen through the mount at once, with the state the kernel cached just before.
/// (Restore: SnapshotRestoreMountTests; blocks placed by writeback: PosixDataMountTests.FallocateAndPunchHole.)
/// </summary>
[Trait("Tier", "mount")]
public sealed class KernelCacheMountTests
{
    [SkippableFact]
    public void A_clone_behind_the_kernels_back_is_seen_at_once_with_its_parents_new_link_count()
    {
        using var m = new MountedPool();
        Directory.CreateDirectory(m.P("dir/sub"));
        File.WriteAllText(m.P("dir/sub/f"), "cloned");
        Directory.CreateDirectory(m.P(".snapshots/s"));
        ulong nlink = StatOf(m.P("")).st_nlink;   // cached
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("copy")));

        Assert.Equal(0, (int)m.Pool!.Snapshots.Clone("s", "/copy", "/dir"));

        Assert.Equal("cloned", File.ReadAllText(m.P("copy/sub/f")));
        Assert.Equal(nlink + 1, StatOf(m.P("")).st_nlink);
        Assert.Contains("copy", Directory.GetDirectories(m.P("")).Select(Path.GetFileName));
    }

    [SkippableFact]
    public void Snapshots_created_and_deleted_behind_the_kernels_back_are_seen_at_once()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "one");
        Directory.CreateDirectory(m.P(".snapshots/s"));   // through the mount
        Assert.Equal("one", File.ReadAllText(m.P(".snapshots/s/f")));   // dentries and attributes cached
        // .snapshots' times are the newest snapshot's creation (its attributes are cached too).
        static (long, long) Mtime(string p) { var st = StatOf(p); return (st.st_mtime, st.st_mtime_nsec); }
        var withS = Mtime(m.P(".snapshots"));

        Assert.Equal(0, (int)m.Pool!.Snapshots.Delete("s"));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s")));
        Assert.Empty(Directory.GetDirectories(m.P(".snapshots")));
        var without = Mtime(m.P(".snapshots"));
        Assert.NotEqual(withS, without);   // the mount time again

        File.WriteAllText(m.P("f"), "two");
        Assert.Equal(0, (int)m.Pool.Snapshots.Create("t", out var t));
        Assert.Equal("two", File.ReadAllText(m.P(".snapshots/t/f")));
        Assert.Equal((t!.CreatedNs / 1_000_000_000, t.CreatedNs % 1_000_000_000), Mtime(m.P(".snapshots")));

        // A snapshot deleted and made again under the same name shows the new one, not what the kernel cached.
        Assert.Equal("two", File.ReadAllText(m.P(".snapshots/t/f")));
        File.WriteAllText(m.P("f"), "three");
        Assert.Equal(0, (int)m.Pool.Snapshots.Delete("t"));
        Assert.Equal(0, (int)m.Pool.Snapshots.Create("t", out _));
        Assert.Equal("three", File.ReadAllText(m.P(".snapshots/t/f")));
    }
}
