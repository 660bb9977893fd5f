using System.Diagnostics;
using Cow.Tests.Mount;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>packaging/: the systemd unit passes systemd-analyze verify, the sample configuration is valid.</summary>
[Trait("Tier", "mount")]
public class PackagingTests
{
    private static string RepoFile(string relative)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "cow.sln"))) return Path.Combine(d.FullName, relative);
        throw new FileNotFoundException("cannot find the repository (cow.sln) above " + AppContext.BaseDirectory);
    }

    private static (int Code, string Out, string Err) Run(string exe, params string[] args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException($"{exe} did not finish in 120 s"); }
        return (p.ExitCode, output, err.Result);
    }

    /// <summary>A temporary folder with <c>cow</c>: a wrapper script running the built cow.dll (what the
    /// unit's ExecStart names once installed), and the unit with its paths pointing there.</summary>
    private static (string Dir, string Unit) UnitWithWrapper(Func<string, string>? edit = null)
    {
        var dir = Path.Combine(Path.GetTempPath(), "cow-unit-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        var wrapper = Path.Combine(dir, "cow");
        File.WriteAllText(wrapper, $"#!/bin/sh\nexec dotnet '{CowProgram.Dll}' \"$@\"\n");
        Syscall.chmod(wrapper, (FilePermissions)Convert.ToInt32("755", 8));
        var text = File.ReadAllText(RepoFile("packaging/systemd/cow.service")).Replace("/usr/local/bin/cow", wrapper);
        var unit = Path.Combine(dir, "cow.service");
        File.WriteAllText(unit, edit == null ? text : edit(text));
        return (dir, unit);
    }

    [SkippableFact]
    public void TheSystemdUnitPassesSystemdAnalyzeVerify()
    {
        var text = File.ReadAllText(RepoFile("packaging/systemd/cow.service"));
        Assert.Contains("Type=notify", text);
        Assert.Contains("ExecStart=/usr/local/bin/cow serve --config /etc/cow/cow.conf", text);
        Assert.Contains("WatchdogSec=", text);
        Assert.Contains("Restart=on-failure", text);
        Assert.Contains("DeviceAllow=/dev/fuse rw", text);
        // Options that give the service its own mount namespace would hide its mounts from everyone else.
        foreach (var ns in new[] { "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateDevices=", "ReadWritePaths=", "ProtectKernelModules=" })
            Assert.False(text.Split('\n').Any(l => l.StartsWith(ns, StringComparison.Ordinal)), $"{ns} puts the service in its own mount namespace");
        var (dir, unit) = UnitWithWrapper();
        try
        {
            var (code, output, err) = Run("systemd-analyze", "verify", unit);
            Assert.True(code == 0 && err.Trim().Length == 0, $"systemd-analyze verify: exit {code}\n{output}{err}");
            // The wrapper that ExecStart names runs the real cow.
            (code, output, err) = Run(Path.Combine(dir, "cow"), "serve", "--check", "--config", RepoFile("packaging/cow.conf.example"));
            Assert.True(code == 0, err);
            // The check can fail: a broken copy of the unit is reported.
            var (_, broken) = UnitWithWrapper(t => t.Replace("Type=notify", "Type=notifyy"));
            (code, output, err) = Run("systemd-analyze", "verify", broken);
            Assert.Contains("notifyy", output + err);
            Directory.Delete(Path.GetDirectoryName(broken)!, true);
        }
        finally { Directory.Delete(dir, true); }
    }

    [SkippableFact]
    public void TheSampleConfigurationIsValid()
    {
        var (code, output, err) = CowProgram.Run("serve", "--check", "--config", RepoFile("packaging/cow.conf.example"));
        Assert.True(code == 0, err);
        Assert.Contains("data on /srv/data", output);
    }
}
