using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>
/// A scratch folder for tests that run the real <c>cow</c> program: a pool folder (<see cref="PoolDir"/>,
/// made by <see cref="MakePool"/> with <c>cow mkfs</c>) and mount points (<see cref="NewMountPoint"/>).
/// <see cref="Dispose"/> unmounts every mount point still mounted (<c>cow umount --lazy</c>, then by force) and deletes the
/// folder, also when the test failed. Not thread-safe: one per test.
/// </summary>
public sealed class MountScratch(string prefix) : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N")[..12]);
    private readonly List<string> _mounts = new();

    public string PoolDir => Path.Combine(Root, "pool");

    /// <summary>The working folder of the cow processes <see cref="RunCow"/> starts (null: this process's).</summary>
    public string? WorkingDirectory { get; set; }
    public IReadOnlyList<string> MountPoints => _mounts;

    public string NewMountPoint()
    {
        var mp = Path.Combine(Root, "mnt" + _mounts.Count);
        Directory.CreateDirectory(mp);
        _mounts.Add(mp);
        return mp;
    }

    /// <summary>Runs cow to completion with no service reachable (COW_SOCKET and COW_CONFIG name nothing in this
    /// folder), with <paramref name="env"/> added; logs the command and what it printed to <paramref name="output"/>.</summary>
    public (int Code, string Out, string Err) RunCow(ITestOutputHelper output, string[] args, params (string Key, string Value)[] env) =>
        Run(output, CowProgram.StartInfo(args), args, env);

    /// <summary>The standard output of a cow run that must have succeeded (exit 0; else the assertion names its stderr).</summary>
    public static string Ok((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");
        return r.Out;
    }

    /// <summary><see cref="RunCow"/> with another program (<paramref name="psi"/>, given <paramref name="args"/>): the
    /// fast front end.</summary>
    public (int Code, string Out, string Err) Run(ITestOutputHelper output, ProcessStartInfo psi, string[] args, params (string Key, string Value)[] env)
    {
        if (WorkingDirectory != null) psi.WorkingDirectory = WorkingDirectory;
        psi.Environment["COW_SOCKET"] = Path.Combine(Root, "no-service.sock");
        psi.Environment["COW_CONFIG"] = Path.Combine(Root, "no-such.conf");
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException($"cow {string.Join(' ', args)} did not finish in 120 s"); }
        var r = (p.ExitCode, stdout, err.Result);
        output.WriteLine($"cow {string.Join(' ', args)} -> {r.ExitCode}\n{r.stdout}{r.Item3}");
        return r;
    }

    /// <summary><c>cow mkfs PoolDir</c> with a 64 MiB base and a <paramref name="logSize"/> log (root and /dev/fuse required).</summary>
    public void MakePool(string logSize)
    {
        MountedPool.RequireRootAndFuse();
        var (code, _, err) = CowProgram.Run("mkfs", PoolDir, "--base-size", "64M", "--log-size", logSize);
        Assert.True(code == 0, err);
    }

    /// <summary>Unmounts what is still mounted; <paramref name="beforeDelete"/> runs before the folder goes.</summary>
    public void Dispose() => Dispose(null);

    public void Dispose(Action? beforeDelete)
    {
        foreach (var mp in _mounts)
        {
            // A live server commits and closes the pool on umount; a dead one's mount is cleared.
            if (Cow.Fuse.Mounting.MountTable.Find(mp) is { IsCow: true }) CowProgram.Run("umount", "--lazy", mp);
            MountedPool.ForceUnmount(mp);
        }
        beforeDelete?.Invoke();
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
