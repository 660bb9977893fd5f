using System.Diagnostics;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>
/// Every way the real <c>cow mkfs --import</c> can fail leaves nothing behind: a source too large for the base
/// device and an unreadable file or directory are refused before anything is written (no pool folder); an import
/// interrupted half way (SIGTERM; SIGINT from Ctrl-C does the same) removes the folder it made, or, in a folder and on device images that
/// existed, removes only what mkfs made and puts the devices' first block back (zeroed where data was written).
/// </summary>
[Trait("Tier", "mount")]
public sealed class ImportFailureTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "cow-import-fail-" + Guid.NewGuid().ToString("N")[..12]);
    private string Pool => Path.Combine(_root, "pool");

    public ImportFailureTests() => Directory.CreateDirectory(_root);

    public void Dispose() { try { Directory.Delete(_root, recursive: true); } catch (IOException) { } }

    private static void NonZeroFile(string path, long bytes)
    {
        var block = new byte[1 << 20];
        new Random(5).NextBytes(block);
        for (int i = 0; i < block.Length; i++) block[i] |= 1;
        using var f = File.Create(path);
        for (long left = bytes; left > 0; left -= block.Length) f.Write(block, 0, (int)Math.Min(left, block.Length));
    }

    [SkippableFact]
    public void ASourceLargerThanTheBaseDeviceIsRefusedWithBothSizesBeforeAnythingIsWritten()
    {
        var src = Path.Combine(_root, "src");
        Directory.CreateDirectory(src);
        NonZeroFile(Path.Combine(src, "big"), 20 << 20);
        File.WriteAllText(Path.Combine(src, "small"), "x");
        var (code, _, err) = CowProgram.Run("mkfs", Pool, "--base-size", "16M", "--log-size", "64M", "--import", src);
        Assert.Equal(1, code);
        // 20 MiB + one block; a 16 MiB image holds 4096 blocks less 4 segment headers.
        Assert.Contains("the import needs 5,121 data blocks (20.00 MiB) on the base device, which holds 4,092 (15.98 MiB)", err);
        Assert.Contains("--base-size (at least 21.00 MiB)", err);
        Assert.Contains("nothing was written", err);
        Assert.False(Directory.Exists(Pool));
        // The size it names is enough.
        var ok = CowProgram.Run("mkfs", Pool, "--base-size", "21M", "--log-size", "64M", "--import", src);
        Assert.True(ok.Code == 0, ok.Err);
    }

    [SkippableFact]
    public void AnUnreadableFileOrDirectoryIsRefusedBeforeAnythingIsWritten()
    {
        MountedPool.RequireRootAndFuse();
        Syscall.chmod(_root, (FilePermissions)Convert.ToUInt32("777", 8));
        var src = Path.Combine(_root, "src");
        Directory.CreateDirectory(Path.Combine(src, "sub"));
        File.WriteAllText(Path.Combine(src, "a.txt"), "readable");
        File.WriteAllText(Path.Combine(src, "sub", "secret"), "root only");
        Syscall.chmod(Path.Combine(src, "sub", "secret"), (FilePermissions)Convert.ToUInt32("600", 8));
        Syscall.chmod(src, (FilePermissions)Convert.ToUInt32("755", 8));
        Syscall.chmod(Path.Combine(src, "sub"), (FilePermissions)Convert.ToUInt32("755", 8));

        var (code, _, err) = AsNobody("mkfs", Pool, "--base-size", "16M", "--log-size", "64M", "--import", src);
        Assert.Equal(1, code);
        Assert.Contains($"import source {Path.Combine(src, "sub", "secret")}: cannot be read: permission denied; no pool was made", err);
        Assert.False(Directory.Exists(Pool));

        Syscall.chmod(Path.Combine(src, "sub"), (FilePermissions)Convert.ToUInt32("700", 8));
        (code, _, err) = AsNobody("mkfs", Pool, "--base-size", "16M", "--log-size", "64M", "--import", src);
        Assert.Equal(1, code);
        Assert.Contains($"import source {Path.Combine(src, "sub")}: cannot list the directory", err);
        Assert.False(Directory.Exists(Pool));
    }

    private static (int Code, string Out, string Err) AsNobody(params string[] args)
    {
        var psi = new ProcessStartInfo("setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--reuid=65534", "--regid=65534", "--clear-groups", "dotnet", CowProgram.Dll }.Concat(args)) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_HOME"] = "/tmp";
        psi.Environment["HOME"] = "/tmp";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("cow did not finish in 120 s"); }
        return (p.ExitCode, output, err.Result);
    }

    /// <summary>Starts mkfs importing 1 GiB of data, sends SIGTERM (Ctrl-C's SIGINT takes the same path, but a child
    /// of the test host may start with SIGINT ignored, as background jobs do) while it copies, and returns its exit code and standard error.</summary>
    private (int Code, string Err) InterruptedImport(params string[] extra)
    {
        var src = Path.Combine(_root, "src");
        Directory.CreateDirectory(src);
        NonZeroFile(Path.Combine(src, "a-big"), 1L << 30);
        var psi = CowProgram.StartInfo(["mkfs", Pool, "--base-size", "2G", "--log-size", "64M", "--import", src, .. extra]);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEndAsync();
        // Wait until the copy is under way: 64 MiB of data have reached the base image (sparse: its allocated size grows).
        var baseImg = extra.Length > 1 && extra[0] == "--base-device" ? extra[1] : Path.Combine(Pool, Cow.Core.Pool.BaseImage);
        var sw = Stopwatch.StartNew();
        while (!p.HasExited && sw.Elapsed < TimeSpan.FromSeconds(60) && !(Syscall.stat(baseImg, out var st) == 0 && st.st_blocks * 512 > 64L << 20)) Thread.Sleep(2);
        var seen = sw.Elapsed;
        if (p.HasExited) Assert.Fail($"mkfs ended before it could be interrupted: {output.Result} {err.Result}");
        int rc = Syscall.kill(p.Id, Signum.SIGTERM);
        Assert.True(rc == 0, $"kill {p.Id}: {Stdlib.GetLastError()}; exited {p.HasExited}: {(p.HasExited ? output.Result + err.Result : "")}");
        var killed = sw.Elapsed;
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("mkfs did not stop"); }
        Assert.True(p.ExitCode != 0, $"mkfs was not interrupted: pool seen at {seen}, signal at {killed}, exit at {sw.Elapsed}, output: {output.Result}");
        return (p.ExitCode, err.Result);
    }

    private static byte[] FirstBlock(string path)
    {
        using var f = File.OpenRead(path);
        var b = new byte[4096];
        f.ReadExactly(b);
        return b;
    }

    [SkippableFact]
    public void AnInterruptedImportRemovesThePoolFolderItMade()
    {
        var (code, err) = InterruptedImport();
        Assert.Equal(1, code);
        Assert.Contains($"mkfs was interrupted; no pool was made: the pool folder {Pool} was removed", err);
        Assert.False(Directory.Exists(Pool));
    }

    [SkippableFact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void AnInterruptedImportLeavesAFolderAndDevicesThatExistedAsTheyWere()
    {
        Directory.CreateDirectory(Pool);
        File.WriteAllText(Path.Combine(Pool, "keep.txt"), "mine");
        Syscall.chmod(Pool, (FilePermissions)Convert.ToUInt32("755", 8));
        var baseImg = Path.Combine(_root, "base.img");
        var logImg = Path.Combine(_root, "log.img");
        var first = new byte[4096];
        new Random(9).NextBytes(first);
        foreach (var img in new[] { baseImg, logImg })
        {
            using var f = File.Create(img);
            f.SetLength(img == baseImg ? 2L << 30 : 64L << 20);
            f.Write(first);
        }
        var (code, err) = InterruptedImport("--base-device", baseImg, "--log-device", logImg);
        Assert.True(code == 1, err);
        Assert.True(err.Contains($"the base device {baseImg} holds part of the import"), err);
        Assert.Contains($"the pool folder {Pool} is as it was before", err);
        Assert.Contains($"the base device {baseImg} holds part of the import and its Cow superblock was wiped", err);
        Assert.Contains($"the log device {logImg} has its first 4096 bytes back as they were", err);
        Assert.Equal(["keep.txt"], Directory.GetFileSystemEntries(Pool).Select(Path.GetFileName));
        Assert.Equal("755", Convert.ToString((int)File.GetUnixFileMode(Pool), 8));
        Assert.Equal(new byte[4096], FirstBlock(baseImg));
        Assert.Equal(first, FirstBlock(logImg));
        // Nothing there is taken for a pool: mkfs formats the images again without --force.
        var again = CowProgram.Run("mkfs", Pool, "--base-device", baseImg, "--log-device", logImg);
        Assert.True(again.Code == 0, again.Err);
    }
}
