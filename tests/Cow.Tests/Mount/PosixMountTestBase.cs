using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Mono.Unix.Native;
using Xunit;
using Cow.Fuse.Server;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>What the mount-only POSIX test classes share: exact-errno assertions on raw syscalls, and snapshots
/// taken as `cow snapshot create` takes them.</summary>
public abstract class PosixMountTestBase
{
    protected const long KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

    // ---------------------------------------------------------------- helpers

    protected static void Ok(long result, string what) => Assert.True(result >= 0, $"{what}: {LastErrno()}");

    protected static void Fails(Errno expected, long result, string what)
    {
        var e = result < 0 ? LastErrno() : (Errno)0;
        Assert.True(result < 0, $"{what}: succeeded ({result}), expected {expected}");
        Assert.True(e == expected, $"{what}: {e}, expected {expected}");
    }

    protected static void FailsWithAny(Errno[] expected, long result, string what)
    {
        var e = result < 0 ? LastErrno() : (Errno)0;
        Assert.True(result < 0, $"{what}: succeeded ({result}), expected one of {string.Join(", ", expected)}");
        Assert.True(expected.Contains(e), $"{what}: {e}, expected one of {string.Join(", ", expected)}");
    }

    protected static void OpenFails(Errno expected, string path, int flags, string what)
    {
        var e = Fd.OpenErrno(path, flags);
        Assert.True(e == expected, $"{what}: open gave {(e == 0 ? "success" : e.ToString())}, expected {expected}");
    }

    protected static long SeekOk(int fd, long offset, int whence)
    {
        long r = Lseek(fd, offset, whence);
        Assert.True(r >= 0, $"lseek({offset}, {(whence == SEEK_DATA ? "SEEK_DATA" : whence == SEEK_HOLE ? "SEEK_HOLE" : whence.ToString())}): {LastErrno()}");
        return r;
    }

    protected static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    protected static bool AllZero(ReadOnlySpan<byte> b) => !b.ContainsAnyExcept((byte)0);

    protected static long StatIno(string path) => (long)StatOf(path).st_ino;

    /// <summary>Names in a directory as readdir gives them (no "." and "..").</summary>
    protected static HashSet<string> Ls(string dir) =>
        Directory.EnumerateFileSystemEntries(dir).Select(Path.GetFileName).Select(n => n!).ToHashSet();

    /// <summary>syncfs, then mkdir .snapshots/NAME: what `cow snapshot create` does. The syncfs matters with the
    /// writeback cache, where the kernel holds written pages and times the server has not seen yet.</summary>
    protected static void MakeSnapshot(MountedPool m, string name)
    {
        int fd = Syscall.open(m.MountPoint, OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY | OpenFlags.O_CLOEXEC);
        Assert.True(fd >= 0, "open the mount root");
        try { Assert.True(Native.Syncfs(fd) == 0, $"syncfs: {(Errno)System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}"); } finally { Syscall.close(fd); }
        Ok(Syscall.mkdir(m.P(".snapshots/" + name), (FilePermissions)0x1ED), $"mkdir .snapshots/{name}");
    }
}
