using System.Diagnostics;
using Cow.Fuse.Mounting;
using Xunit;

namespace Cow.Tests.Kernel;

/// <summary>
/// A temporary folder for kernel-device tests, and the loop devices attached to files in it. Loop devices
/// are found through sysfs (/sys/block/loopN/loop/backing_file), filtered to this folder, so that loop
/// devices other programs attach meanwhile never disturb a before/after comparison. Dispose detaches every
/// loop device still backed by a file in the folder (losetup -d), then removes the folder — also when the
/// test failed. Needs root (CI runs as root).
/// </summary>
public sealed class KernelScratch : IDisposable
{
    public string Dir { get; }

    public KernelScratch(string prefix = "cow-kdev-")
    {
        Skip.IfNot(Mounter.IsRoot, "kernel device tests need root (CI runs them as root: sudo bash .ci/run)");
        Skip.IfNot(File.Exists("/dev/loop-control"), "kernel device tests need /dev/loop-control (modprobe loop)");
        Dir = Directory.CreateTempSubdirectory(prefix).FullName;
    }

    /// <summary>A new sparse image file of <paramref name="bytes"/> bytes in the folder.</summary>
    public string Image(string name, long bytes = 64L << 20)
    {
        var path = Path.Combine(Dir, name);
        using (var f = File.Create(path)) f.SetLength(bytes);
        return path;
    }

    /// <summary>Loop device numbers whose backing file lies in the folder, by backing file.</summary>
    public Dictionary<int, string> Loops() => LoopsUnder(Dir);

    public static Dictionary<int, string> LoopsUnder(string dir)
    {
        var found = new Dictionary<int, string>();
        foreach (var d in Directory.GetDirectories("/sys/block", "loop*"))
        {
            if (!int.TryParse(Path.GetFileName(d)["loop".Length..], out int n)) continue;
            string? backing;
            try { backing = File.ReadAllText(Path.Combine(d, "loop", "backing_file")).TrimEnd('\n'); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (backing.StartsWith(dir + "/", StringComparison.Ordinal)) found[n] = backing;
        }
        return found;
    }

    /// <summary>Waits (up to 10 s: udev may hold a device open for a moment) until no loop device is backed
    /// by a file in the folder; returns what is still attached then.</summary>
    public Dictionary<int, string> WaitNoLoops()
    {
        var until = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            var left = Loops();
            if (left.Count == 0 || DateTime.UtcNow > until) return left;
            Thread.Sleep(20);
        }
    }

    public void Dispose()
    {
        foreach (var n in Loops().Keys) Run("losetup", "-d", $"/dev/loop{n}");
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Runs a program: exit code, standard output, standard error.</summary>
    public static (int Code, string Out, string Err) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var o = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in 120 s"); }
        return (p.ExitCode, o, err.Result);
    }
}
