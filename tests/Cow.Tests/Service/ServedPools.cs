using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Cow.Core;
using Cow.Fuse.Mounting;
using Cow.Tests.Mount;
using Mono.Unix.Native;

namespace Cow.Tests.Service;

/// <summary>
/// Pools in a temporary folder served by a real <c>cow serve</c> child process, with a NOTIFY_SOCKET this
/// fixture listens on (a Unix datagram socket: every sd_notify message is recorded in order). Dispose stops
/// the service (SIGTERM, then SIGKILL), unmounts whatever is left and removes the folder, even when the test
/// failed. Needs root and /dev/fuse.
/// </summary>
public sealed class ServedPools : IDisposable
{
    public string Root { get; }
    public string ConfigFile => Path.Combine(Root, "cow.conf");
    public string SocketPath => Path.Combine(Root, "cow.sock");
    public string NotifyPath => Path.Combine(Root, "notify.sock");
    public string PoolDir(int i) => Path.Combine(Root, $"pool{i}");
    public string MountPoint(int i) => Path.Combine(Root, $"mnt{i}");
    public Process? Process { get; private set; }
    public BlockingCollection<string> Notifications { get; } = new();
    public StringBuilder Output { get; } = new();
    private readonly Socket _notify;
    private readonly Thread _notifyThread;
    private readonly int _pools;

    public ServedPools(int pools = 1, Func<ServedPools, string>? config = null, bool makePools = true)
    {
        MountedPool.RequireRootAndFuse();
        _pools = pools;
        Root = Path.Combine(Path.GetTempPath(), "cow-sv-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
        Syscall.chmod(Root, (FilePermissions)Convert.ToInt32("755", 8));   // setpriv'd clients must reach the socket
        for (int i = 0; i < pools; i++)
        {
            Directory.CreateDirectory(MountPoint(i));
            if (makePools) Pool.Create(PoolDir(i), new PoolCreateOptions { BaseSize = 32L << 20, LogSize = 512L << 20 }).Dispose();
        }
        File.WriteAllText(ConfigFile, config?.Invoke(this) ?? DefaultConfig());
        _notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        _notify.Bind(new UnixDomainSocketEndPoint(NotifyPath));
        _notifyThread = new Thread(() =>
        {
            var buf = new byte[4096];
            try
            {
                while (true)
                {
                    int n = _notify.Receive(buf);
                    foreach (var msg in Encoding.UTF8.GetString(buf, 0, n).Split('\n', StringSplitOptions.RemoveEmptyEntries)) Notifications.Add(msg);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        })
        { IsBackground = true };
        _notifyThread.Start();
    }

    public string DefaultConfig()
    {
        var sb = new StringBuilder($"[control]\nsocket = {SocketPath}\nmode = 0666\n");
        for (int i = 0; i < _pools; i++) sb.Append($"\n[pool p{i}]\npath = {PoolDir(i)}\nmountpoint = {MountPoint(i)}\nthreads = 2\n");
        return sb.ToString();
    }

    /// <summary>Starts <c>cow serve --config</c> with NOTIFY_SOCKET (and WATCHDOG_USEC when given); with
    /// <paramref name="sighupIgnored"/>, as nohup would: SIGHUP ignored (inherited SIG_IGN), through a shell that
    /// execs it (same pid).</summary>
    public void Start(long? watchdogUsec = null, bool sighupIgnored = false)
    {
        var psi = CowProgram.StartInfo("serve", "--config", ConfigFile);
        if (sighupIgnored)
        {
            var args = psi.ArgumentList.ToArray();
            psi.FileName = "bash";
            psi.ArgumentList.Clear();
            foreach (var a in (string[])["-c", "trap '' HUP; exec \"$@\"", "bash", "dotnet", .. args]) psi.ArgumentList.Add(a);
        }
        psi.Environment["NOTIFY_SOCKET"] = NotifyPath;
        psi.Environment.Remove("WATCHDOG_PID");
        if (watchdogUsec != null) psi.Environment["WATCHDOG_USEC"] = watchdogUsec.Value.ToString();
        else psi.Environment.Remove("WATCHDOG_USEC");
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (Output) Output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (Output) Output.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        Process = p;
    }

    public string Log { get { lock (Output) return Output.ToString(); } }

    /// <summary>The next notification, or null after <paramref name="timeout"/>.</summary>
    public string? Next(TimeSpan timeout) => Notifications.TryTake(out var m, timeout) ? m : null;

    /// <summary>Waits for <paramref name="message"/>; fails naming what came instead.</summary>
    public void WaitFor(string message, int seconds = 60)
    {
        var seen = new List<string>();
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < until)
        {
            var m = Next(TimeSpan.FromMilliseconds(200));
            if (m == message) return;
            if (m != null) seen.Add(m);
            if (m == null && Process!.HasExited && Notifications.Count == 0)
                throw new Xunit.Sdk.XunitException($"cow serve exited ({Process.ExitCode}) before sending {message}; got [{string.Join(", ", seen)}]; log:\n{Log}");
        }
        throw new Xunit.Sdk.XunitException($"no {message} in {seconds} s; got [{string.Join(", ", seen)}]; log:\n{Log}");
    }

    public static bool IsMounted(string mountPoint)
        => File.ReadLines("/proc/self/mountinfo").Any(l => l.Split(' ')[4] == mountPoint);

    public void Terminate()
    {
        if (Process == null || Process.HasExited) return;
        Syscall.kill(Process.Id, Signum.SIGTERM);
    }

    public int WaitExit(int seconds = 120)
    {
        if (!Process!.WaitForExit(seconds * 1000)) throw new Xunit.Sdk.XunitException($"cow serve did not exit in {seconds} s; log:\n{Log}");
        Process.WaitForExit();
        return Process.ExitCode;
    }

    /// <summary>Runs the cow CLI with COW_SOCKET pointing at this service's socket, optionally through a setpriv prefix.</summary>
    public (int Code, string Out, string Err) Cli(string[]? asUser, params string[] args)
    {
        ProcessStartInfo psi;
        if (asUser == null) psi = CowProgram.StartInfo(args);
        else
        {
            psi = new ProcessStartInfo("setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in asUser) psi.ArgumentList.Add(a);
            psi.ArgumentList.Add("dotnet");
            psi.ArgumentList.Add(CowProgram.Dll);
            foreach (var a in args) psi.ArgumentList.Add(a);
            psi.Environment["DOTNET_CLI_HOME"] = "/tmp";
            psi.Environment["HOME"] = "/tmp";
        }
        psi.Environment["COW_SOCKET"] = SocketPath;
        using var p = System.Diagnostics.Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("cow CLI did not finish in 120 s"); }
        return (p.ExitCode, output, err.Result);
    }

    public void Dispose()
    {
        try
        {
            if (Process != null && !Process.HasExited)
            {
                Syscall.kill(Process.Id, Signum.SIGTERM);
                if (!Process.WaitForExit(60_000)) Process.Kill(true);
            }
        }
        catch (InvalidOperationException) { }
        for (int i = 0; i < _pools; i++) MountedPool.ForceUnmount(MountPoint(i));
        Process?.Dispose();
        _notify.Dispose();
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
