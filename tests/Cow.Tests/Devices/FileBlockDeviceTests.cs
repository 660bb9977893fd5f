using System.Diagnostics;
using Cow.Core.Devices;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Devices.DeviceTestUtil;

namespace Cow.Tests.Devices;

[Trait("Tier", "unit")]
public sealed class FileBlockDeviceTests : IDisposable
{
    private readonly string _dir;

    public FileBlockDeviceTests()
    {
        _dir = Path.Combine(Path.GetTempPath(), "cow-dev-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    [SkippableFact]
    public void Contract()
    {
        using var device = FileBlockDevice.Create(PathOf("contract.img"), 4 << 20);
        Assert.Equal(PathOf("contract.img"), device.Name);
        Assert.False(device.IsBlockDevice);
        Assert.True(device.IsWritable);
        CheckContract(device, device.Flush);
    }

    [SkippableFact]
    public void CreateMakesSparseImageAndOpenSeesData()
    {
        string path = PathOf("sparse.img");
        const long length = 1L << 30;
        using (var device = FileBlockDevice.Create(path, length))
        {
            Assert.Equal(length, device.Length);
            AssertZero(device, 512L << 20, 65536);
            device.Write(700L << 20, Pattern(4096, 5));
            device.Flush();
        }

        Assert.Equal(length, new FileInfo(path).Length);
        Assert.Equal(0, Syscall.stat(path, out Stat st));
        Assert.True(st.st_blocks * 512 < 1 << 20, $"image should be sparse but uses {st.st_blocks * 512} bytes");

        using var reopened = FileBlockDevice.Open(path, writable: false);
        Assert.Equal(length, reopened.Length);
        Assert.False(reopened.IsWritable);
        Assert.Equal(Pattern(4096, 5), ReadAll(reopened, 700L << 20, 4096));
        AssertZero(reopened, 0, 8192);
    }

    [SkippableFact]
    public void CreateBeyondWhatTheFileSystemHoldsIsAnIOErrorAndLeavesNoFile()
    {
        // ext4 (this machine's /tmp) holds files up to 16 TiB: EFBIG, which .NET reports as an argument error.
        var path = PathOf("huge.img");
        var ex = Assert.Throws<IOException>(() => FileBlockDevice.Create(path, long.MaxValue & ~4095L));
        Assert.Contains(path, ex.Message);
        Assert.Contains("cannot size", ex.Message);
        Assert.False(File.Exists(path));
    }

    [SkippableFact]
    public void CreateRefusesExistingFile()
    {
        string path = PathOf("exists.img");
        File.WriteAllBytes(path, [1, 2, 3]);
        var ex = Assert.Throws<IOException>(() => FileBlockDevice.Create(path, 1 << 20));
        Assert.Contains(path, ex.Message);
        Assert.Contains("already exists", ex.Message);
        Assert.Equal([1, 2, 3], File.ReadAllBytes(path));
    }

    [SkippableFact]
    public void CreateInMissingDirectoryNamesPath()
    {
        string path = PathOf("nope/x.img");
        var ex = Assert.Throws<IOException>(() => FileBlockDevice.Create(path, 1 << 20));
        Assert.Contains(path, ex.Message);
        Assert.Contains("not found", ex.Message);
    }

    [SkippableFact]
    public void OpenMissingFileNamesPath()
    {
        string path = PathOf("log.img");
        var ex = Assert.Throws<FileNotFoundException>(() => FileBlockDevice.Open(path, writable: true));
        Assert.Equal($"device {path}: file not found", ex.Message);
        Assert.Throws<FileNotFoundException>(() => FileBlockDevice.Open(PathOf("no/dir/log.img"), writable: false));
    }

    [SkippableFact]
    public void OpenDirectoryIsRefused()
    {
        var ex = Assert.Throws<IOException>(() => FileBlockDevice.Open(_dir, writable: true));
        Assert.Equal($"device {_dir}: is a directory", ex.Message);
        ex = Assert.Throws<IOException>(() => FileBlockDevice.Create(_dir, 4096));
        Assert.Contains("is a directory", ex.Message);
    }

    [SkippableFact]
    public void OpenCharacterDeviceIsRefused()
    {
        var ex = Assert.Throws<IOException>(() => FileBlockDevice.Open("/dev/null", writable: false));
        Assert.Contains("/dev/null", ex.Message);
        Assert.Contains("not a regular file or block device", ex.Message);
    }

    [SkippableFact]
    public void OpenWithoutPermissionSaysPermissionDenied()
    {
        Skip.If(Syscall.geteuid() == 0, "root ignores file permissions");

        string path = PathOf("locked.img");
        FileBlockDevice.Create(path, 4096).Dispose();
        Assert.Equal(0, Syscall.chmod(path, 0));
        var ex = Assert.Throws<IOException>(() => FileBlockDevice.Open(path, writable: true));
        Assert.Equal($"device {path}: permission denied (opening for writing)", ex.Message);
    }

    [SkippableFact]
    public void ReadOnlyDeviceRefusesWrites()
    {
        string path = PathOf("ro.img");
        FileBlockDevice.Create(path, 1 << 20).Dispose();
        using var device = FileBlockDevice.Open(path, writable: false);
        var ex = Assert.Throws<IOException>(() => device.Write(0, new byte[16]));
        Assert.Contains(path, ex.Message);
        Assert.Contains("read-only", ex.Message);
    }

    [SkippableFact]
    public void ReadPastEndOfFileReturnsZeros()
    {
        string path = PathOf("shrunk.img");
        using var device = FileBlockDevice.Create(path, 1 << 20);
        device.Write(0, Pattern(8192, 9));
        device.Flush();   // the write has reached the file (it may be written behind until then)

        // Someone truncates the image behind our back: reads past the new end of file are zeros.
        using (var h = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
            RandomAccess.SetLength(h, 1000);

        byte[] got = ReadAll(device, 0, 8192);
        Assert.Equal(Pattern(8192, 9)[..1000], got[..1000]);
        Assert.True(got.AsSpan(1000).IndexOfAnyExcept((byte)0) < 0);
        AssertZero(device, 500_000, 4096);
    }

    [SkippableFact]
    public void ConcurrentDisjointIo()
    {
        using var device = FileBlockDevice.Create(PathOf("par.img"), 1 << 20);
        CheckConcurrentDisjointIo(device);
    }

    [SkippableFact]
    public void ReadAndWriteDoNotAllocate()
    {
        using var device = FileBlockDevice.Create(PathOf("alloc.img"), 1 << 20);
        byte[] buffer = Pattern(4096, 4);
        // Warm up past tiered compilation, then take the least of three measurements: the runtime itself
        // (JIT, a timer callback run on this thread) may allocate now and then, the device may never.
        long least = long.MaxValue;
        for (int round = 0; round < 4; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 1000; i++)
            {
                device.Write((i % 200) * 4096L, buffer);
                device.Read((i % 250) * 4096L, buffer);
            }
            if (round > 0) least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, least);
    }

    [SkippableFact]
    public void DisposedDeviceThrows()
    {
        var device = FileBlockDevice.Create(PathOf("disposed.img"), 1 << 20);
        device.Dispose();
        Assert.Throws<ObjectDisposedException>(() => device.Read(0, new byte[1]));
        Assert.Throws<ObjectDisposedException>(() => device.Write(0, new byte[1]));
        Assert.Throws<ObjectDisposedException>(() => device.Flush());
    }

    internal static (int ExitCode, string Stdout, string Stderr) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout, stderr.Result);
    }
}

/// <summary><see cref="FileBlockDevice"/> on a real loop block device (root and losetup; skipped otherwise).</summary>
[Trait("Tier", "kernel")]
public sealed class FileBlockDeviceLoopTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly string _dir;

    public FileBlockDeviceLoopTests(ITestOutputHelper output)
    {
        _output = output;
        _dir = Path.Combine(Path.GetTempPath(), "cow-dev-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    [SkippableFact]
    public void LoopDeviceRoundTrip()
    {
        Skip.If(Syscall.geteuid() != 0, "loop devices need root");

        string? losetup = new[] { "/usr/sbin/losetup", "/sbin/losetup", "/usr/bin/losetup", "/bin/losetup" }
            .FirstOrDefault(File.Exists);
        Skip.If(losetup is null, "losetup not found");

        const long length = 8 << 20;
        string image = PathOf("loop.img");
        FileBlockDevice.Create(image, length).Dispose();

        (int rc, string stdout, string stderr) = FileBlockDeviceTests.Run(losetup!, "--find", "--show", image);
        string loop = stdout.Trim();
        Skip.If(rc != 0 || !loop.StartsWith("/dev/", StringComparison.Ordinal),
            $"losetup could not attach a loop device (rc {rc}): {stderr.Trim()}");

        try
        {
            _output.WriteLine($"attached {image} to {loop}");
            byte[] data = Pattern(65536, 11);
            using (var device = FileBlockDevice.Open(loop, writable: true))
            {
                Assert.True(device.IsBlockDevice);
                Assert.Equal(loop, device.Name);
                Assert.Equal(length, device.Length);
                AssertZero(device, 0, 4096);
                device.Write(1 << 20, data);
                device.Flush();
                Assert.Equal(data, ReadAll(device, 1 << 20, data.Length));
                Assert.Throws<ArgumentOutOfRangeException>(() => device.Write(length - 1, new byte[2]));
            }

            using (var device = FileBlockDevice.Open(loop, writable: false))
                Assert.Equal(data, ReadAll(device, 1 << 20, data.Length));
        }
        finally
        {
            (int drc, _, string derr) = FileBlockDeviceTests.Run(losetup!, "-d", loop);
            if (drc != 0)
                _output.WriteLine($"warning: losetup -d {loop} failed: {derr.Trim()}");
        }

        // The data went through the loop device into the image.
        using var file = FileBlockDevice.Open(image, writable: false);
        Assert.Equal(Pattern(65536, 11), ReadAll(file, 1 << 20, 65536));
    }
}
