using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

/// <summary>
/// POSIX behaviour written once and run on two targets (as go-fuse's posixtest runs its cases on every mount
/// type): each case here is a test of every class derived from this one, which names its tier and says which
/// <see cref="IPosixTarget"/> the cases run on (<see cref="EnginePosixCasesTests"/>: the inode API on memory
/// devices; <see cref="MountPosixCasesTests"/>: a real FUSE mount). Behaviour only one side can show (engine
/// internals; the kernel's page cache, mmap, other users) stays in that side's own test class. Errnos are
/// exact, as Linux (where it is ambiguous, ext4) answers. Each case gets a fresh, empty root and ends with
/// the pool checked clean. The cases are split by family into partial files.
/// </summary>
public abstract partial class PosixCases : IDisposable
{
    private IPosixTarget? _target;

    /// <summary>The target of this case, made on first use (inside the test, so a target that cannot run here
    /// makes the test report skipped).</summary>
    protected IPosixTarget T => _target ??= CreateTarget();

    protected abstract IPosixTarget CreateTarget();

    public void Dispose()
    {
        _target?.Dispose();
        GC.SuppressFinalize(this);
    }

    protected const int Bs = 4096;
    protected const long KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

    // ---------------------------------------------------------------- fuse-iomap

    /// <summary>The 7.2.13 fuse-iomap test kernel keeps the c/mtime of an iomap inode itself, but its fuse_do_setattr
    /// (without fuse-iomap's "is_wb = is_iomap || writeback_cache") neither takes a SETATTR's times from the request
    /// nor accepts Cow's answer for them: docs/iomap.md, "Known limits".</summary>
    protected const string IomapSetattrTimes = "fuse-iomap test kernel: the c/mtime of an iomap inode are the kernel's own, and its SETATTR "
        + "neither takes them from the request nor moves them (docs/iomap.md, Known limits)";

    /// <summary>Skips the case where the target is a mount on which the kernel granted fuse-iomap, naming
    /// <paramref name="reason"/>: a kernel limitation that Cow cannot change, documented in docs/iomap.md
    /// ("Known limits") with the case named. Everywhere else the case runs in full.</summary>
    protected void SkipUnderIomap(string reason) => Skip.If(T is MountPosixTarget { IomapGranted: true }, reason);

    // ---------------------------------------------------------------- assertions

    protected void Ok(Errno e, string what) => Assert.True(e == 0, $"{T.Name}: {what}: {e}");

    protected void Fails(Errno expected, Errno got, string what) =>
        Assert.True(got == expected, $"{T.Name}: {what}: {(got == 0 ? "succeeded" : got.ToString())}, expected {expected}");

    protected PosixStat St(string path)
    {
        Ok(T.Stat(path, out var st), $"stat {path}");
        return st;
    }

    protected PosixStat Lst(string path)
    {
        Ok(T.Lstat(path, out var st), $"lstat {path}");
        return st;
    }

    protected long Ino(string path) => St(path).Ino;

    protected Errno StatErrno(string path) => T.Stat(path, out _);

    // ---------------------------------------------------------------- files

    protected IPosixFile Open(string path, int flags, uint mode = 0x1A4)
    {
        Ok(T.Open(path, flags, mode, out var f), $"open {path} (flags 0x{flags:x})");
        return f!;
    }

    protected Errno OpenErrno(string path, int flags, uint mode = 0x1A4)
    {
        var e = T.Open(path, flags, mode, out var f);
        f?.Dispose();
        return e;
    }

    /// <summary>Creates (or opens) <paramref name="path"/> and closes it again; its inode number.</summary>
    protected long Touch(string path, uint mode = 0x1A4)
    {
        using var f = Open(path, O_WRONLY | O_CREAT, mode);
        Ok(f.Fstat(out var st), "fstat");
        return st.Ino;
    }

    protected void WriteAt(string path, long offset, ReadOnlySpan<byte> data)
    {
        using var f = Open(path, O_WRONLY | O_CREAT);
        WriteAt(f, offset, data);
    }

    protected void WriteAt(IPosixFile f, long offset, ReadOnlySpan<byte> data)
    {
        Ok(f.Pwrite(data, offset, out int n), $"write {data.Length} at {offset}");
        Assert.Equal(data.Length, n);
    }

    /// <summary>Replaces the content of <paramref name="path"/> (O_TRUNC, as File.WriteAllBytes).</summary>
    protected void WriteFile(string path, ReadOnlySpan<byte> data)
    {
        using var f = Open(path, O_WRONLY | O_CREAT | O_TRUNC);
        WriteAt(f, 0, data);
    }

    protected byte[] ReadRange(IPosixFile f, long offset, int length)
    {
        var buf = new byte[length];
        int got = 0;
        while (got < length)
        {
            Ok(f.Pread(buf.AsSpan(got), offset + got, out int n), $"read {length - got} at {offset + got}");
            if (n == 0) break;
            got += n;
        }
        return buf[..got];
    }

    protected byte[] ReadRange(string path, long offset, int length)
    {
        using var f = Open(path, O_RDONLY);
        return ReadRange(f, offset, length);
    }

    protected byte[] ReadAll(string path) => ReadRange(path, 0, (int)St(path).Size);

    // ---------------------------------------------------------------- directories

    protected List<PosixDirEntry> Entries(string dir)
    {
        Ok(T.ReadDir(dir, out var entries), $"readdir {dir}");
        return entries;
    }

    /// <summary>The names in <paramref name="dir"/> but "." and "..".</summary>
    protected HashSet<string> Names(string dir) => Entries(dir).Select(e => e.Name).Where(n => n is not ("." or "..")).ToHashSet();

    /// <summary>Syncs and asserts the free blocks. On a mount the kernel sends RELEASE after close(2) has returned,
    /// and a removed file's blocks are freed at its last release, so this syncs again until the figure is reached
    /// (10 s at most); on the inode API it holds at once.</summary>
    protected void AssertFreeBlocks(long expected, string what)
    {
        var until = DateTime.UtcNow.AddSeconds(10);
        long free;
        while (true)
        {
            T.Sync();
            free = T.FreeBlocks();
            if (free == expected || DateTime.UtcNow > until) break;
            Thread.Sleep(50);
        }
        Assert.True(free == expected, $"{T.Name}: {what}: {free} free blocks, expected {expected}");
    }

    // ---------------------------------------------------------------- data and time

    protected static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    protected static bool AllZero(ReadOnlySpan<byte> b) => !b.ContainsAnyExcept((byte)0);

    protected static long NowNs() => (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;

    /// <summary>Lets the clock move so that a later change gets a later time.</summary>
    protected static void Tick() => Thread.Sleep(20);

    /// <summary>The mode a new node gets from <paramref name="mode"/>: the caller's umask clears bits.</summary>
    protected uint Masked(uint mode) => mode & ~T.Umask;
}

/// <summary>The shared POSIX cases on the inode API (<see cref="EnginePosixTarget"/>).</summary>
[Trait("Tier", "engine")]
public sealed class EnginePosixCasesTests : PosixCases
{
    protected override IPosixTarget CreateTarget() => new EnginePosixTarget();
}

/// <summary>The shared POSIX cases on a real FUSE mount (<see cref="MountPosixTarget"/>), one mount per class.</summary>
[Trait("Tier", "mount")]
public sealed class MountPosixCasesTests(PosixMountFixture fixture) : PosixCases, IClassFixture<PosixMountFixture>
{
    protected override IPosixTarget CreateTarget() => fixture.NewTarget();
}
