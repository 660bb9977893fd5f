using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// Directory permission rules that need a caller other than root (setpriv as nobody, see
/// <see cref="PosixMountTests.AsNobody"/>), so they run on a mount only: the inode API checks no permissions (the
/// kernel does, with default_permissions) and leaves the setgid-directory rule to the FUSE layer. In a sticky
/// directory only a name's owner (or the directory's, or root) may remove or rename it; in a setgid directory new
/// nodes take the directory's group, and new directories its setgid bit.
/// </summary>
[Trait("Tier", "mount")]
public class StickyAndSetgidMountTests
{
    private static void Ok(long result, string what) => Assert.True(result >= 0, $"{what}: {LastErrno()}");

    private static void AsNobodyOk(string what, string script)
    {
        var r = PosixMountTests.AsNobody("sh", "-c", script);
        Assert.True(r.Code == 0, $"{what} as nobody: exit {r.Code}, {r.Err}");
    }

    private static void AsNobodyRefused(string what, string script)
    {
        var r = PosixMountTests.AsNobody("sh", "-c", script);
        Assert.True(r.Code != 0, $"{what} as nobody: succeeded");
        Assert.Contains("Operation not permitted", r.Err);
    }

    [SkippableFact]
    public void OnlyTheOwnerRemovesOrRenamesInAStickyDirectory()
    {
        using var m = new MountedPool();
        Ok(Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (FilePermissions)0x1ED), "chmod the temp folder");
        Directory.CreateDirectory(m.P("tmp"));
        Ok(Syscall.chmod(m.P("tmp"), (FilePermissions)0x3FF), "chmod 01777");
        File.WriteAllText(m.P("tmp/roots"), "root's");
        Ok(Syscall.chmod(m.P("tmp/roots"), (FilePermissions)0x1B6), "chmod 0666");
        AsNobodyRefused("rm of root's file in a sticky directory", $"rm -f '{m.P("tmp/roots")}'");
        AsNobodyRefused("mv of root's file in a sticky directory", $"mv '{m.P("tmp/roots")}' '{m.P("tmp/moved")}'");
        Assert.Equal("root's", File.ReadAllText(m.P("tmp/roots")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("tmp/moved")));
        // its own names are nobody's to rename and remove; a world-writable file is still writable
        AsNobodyOk("create, rename and remove its own file", $"echo n > '{m.P("tmp/mine")}' && mv '{m.P("tmp/mine")}' '{m.P("tmp/mine2")}' && rm '{m.P("tmp/mine2")}'");
        AsNobodyOk("write to root's 0666 file", $"echo more >> '{m.P("tmp/roots")}'");
        // without the sticky bit a writable directory lets anyone remove any name
        Ok(Syscall.chmod(m.P("tmp"), (FilePermissions)0x1FF), "chmod 0777");
        AsNobodyOk("rm of root's file without the sticky bit", $"rm -f '{m.P("tmp/roots")}'");
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("tmp/roots")));
        // root may remove anything in a sticky directory
        AsNobodyOk("create", $"echo n > '{m.P("tmp/nobodys")}'");
        Ok(Syscall.chmod(m.P("tmp"), (FilePermissions)0x3FF), "chmod 01777");
        Ok(Syscall.unlink(m.P("tmp/nobodys")), "root removes nobody's file");
    }

    [SkippableFact]
    public void NewNodesInASetgidDirectoryTakeItsGroup()
    {
        using var m = new MountedPool();
        Ok(Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (FilePermissions)0x1ED), "chmod the temp folder");
        Directory.CreateDirectory(m.P("sg"));
        Ok(Syscall.chown(m.P("sg"), 0, 4242), "chown 0:4242");
        Ok(Syscall.chmod(m.P("sg"), (FilePermissions)0x5FF), "chmod 02777");
        AsNobodyOk("create a file and a directory", $"echo n > '{m.P("sg/f")}' && mkdir '{m.P("sg/sub")}'");
        var f = StatOf(m.P("sg/f"));
        Assert.Equal((65534u, 4242u), (f.st_uid, f.st_gid));
        var sub = StatOf(m.P("sg/sub"));
        Assert.Equal((65534u, 4242u), (sub.st_uid, sub.st_gid));
        Assert.True((Perm(sub) & 0x400) != 0, $"a new directory in a setgid directory lost S_ISGID: {Convert.ToString(Perm(sub), 8)}");
        // outside it, nobody's own group
        Directory.CreateDirectory(m.P("plain"));
        Ok(Syscall.chmod(m.P("plain"), (FilePermissions)0x1FF), "chmod 0777");
        AsNobodyOk("create outside", $"echo n > '{m.P("plain/f")}'");
        Assert.Equal(65534u, StatOf(m.P("plain/f")).st_gid);
        m.Remount();
        Assert.Equal(4242u, StatOf(m.P("sg/f")).st_gid);
        Assert.True((Perm(StatOf(m.P("sg/sub"))) & 0x400) != 0, "S_ISGID of the new directory did not survive a remount");
    }
}
