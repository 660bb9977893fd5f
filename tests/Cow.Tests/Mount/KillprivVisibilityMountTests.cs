using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// After a write by a user without CAP_FSETID clears setuid/setgid (the server's job with
/// FUSE_HANDLE_KILLPRIV_V2), stat must show the new mode at once, not after the kernel's attribute timeout.
/// </summary>
[Trait("Tier", "mount")]
public class KillprivVisibilityMountTests
{
    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void ClearedSetuidIsVisibleAtOnce(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        Assert.True(Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (FilePermissions)0x1ED) == 0, "chmod the temp folder");
        for (int round = 0; round < 6; round++)
        {
            string f = m.P($"suid{round}");
            File.WriteAllText(f, "#!/bin/sh\n");
            Assert.True(Syscall.chmod(f, (FilePermissions)0xDFF) == 0, "chmod 06777");
            // Fill the kernel's attribute cache with the setuid mode, in this process and in the writer.
            Assert.Equal(0xDFFu, Perm(StatOf(f)));
            // A write, a truncation at open (O_TRUNC) and truncate(2), each followed by stat at once.
            string how = (round % 3) switch { 0 => $"echo more >> '{f}'", 1 => $": > '{f}'", _ => $"truncate -s 1 '{f}'" };
            var r = PosixMountTests.AsNobody("sh", "-c", $"stat -c %a '{f}' && {how} && stat -c %a '{f}'");
            Assert.True(r.Code == 0, $"as nobody: exit {r.Code}, {r.Err}");
            var modes = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(["6777", "777"], modes);
            Assert.Equal(0x1FFu, Perm(StatOf(f)));   // another process, no sleep
        }
    }
}
