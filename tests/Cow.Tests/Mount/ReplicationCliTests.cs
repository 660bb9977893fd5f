using System.Diagnostics;
using System.Text.Json.Nodes;
using Cow.Core;
using Cow.Tests.Engine;
using Xunit;
using Xunit.Abstractions;
using static Cow.Tests.Mount.MountScratch;

namespace Cow.Tests.Mount;

/// <summary>The replication commands as an administrator runs them (the real cow program): send and receive through
/// files, a damaged stream named by offset and resumed with its token, a receive into a pool mounted by cow mount
/// (through its control socket), cow replicate between two pool folders and to ssh://localhost (an sshd the test
/// starts), with find -printf listings of both sides compared through mounts. Root only.</summary>
[Trait("Tier", "mount")]
public sealed class ReplicationCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-repl-");
    public void Dispose() => _scratch.Dispose();

    private (int Code, string Out, string Err) Cow(params string[] args) => _scratch.RunCow(output, args);
    private string At(string name) => Path.Combine(_scratch.Root, name);

    /// <summary>A pool folder with a small tree (files, a hard link, a symlink, a sparse file, an xattr) and snapshot s0,
    /// then more changes and snapshot s1.</summary>
    private string MakeSource()
    {
        MountedPool.RequireRootAndFuse();
        var dir = At("src");
        using var p = Pool.Create(dir, new PoolCreateOptions { BaseSize = 32L << 20, LogSize = 256L << 20 });
        var fs = p.Live;
        Assert.Equal(0, (int)fs.Mkdir(1, "docs", 0x1ED, 1000, 1000, out _));
        long a = MemoryPool.CreateFile(fs, "/docs/a.txt");
        MemoryPool.WriteAt(fs, a, 0, MemoryPool.Pattern(3 * 4096 + 17, 1));
        Assert.Equal(0, (int)fs.Link(a, 1, "a-link", out _));
        Assert.Equal(0, (int)fs.Symlink(1, "sym", "docs/a.txt", 0, 0, out _));
        long sparse = MemoryPool.CreateFile(fs, "/sparse");
        MemoryPool.WriteAt(fs, sparse, 100L << 20, MemoryPool.Pattern(4096, 2));
        Assert.Equal(0, (int)fs.SetXattr(a, "user.tag", "blue"u8.ToArray()));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s0", out _));
        MemoryPool.WriteAt(fs, a, 4096, MemoryPool.Pattern(4096, 3));
        MemoryPool.WriteAt(fs, MemoryPool.CreateFile(fs, "/docs/b.txt"), 0, MemoryPool.Pattern(9000, 4));
        Assert.Equal(0, (int)fs.Unlink(1, "a-link"));
        Assert.Equal(0, (int)p.Engine.CreateSnapshot("s1", out _));
        return dir;
    }

    private string MakeEmpty(string name)
    {
        var dir = At(name);
        Ok(Cow("mkfs", dir, "--base-size", "32M", "--log-size", "256M"));
        return dir;
    }

    /// <summary>What find -printf shows of a snapshot through a mount of its pool: every path below the snapshot root
    /// with inode number, mode, links, owner, size, allocated blocks, mtime and ctime; and the bytes of every file.</summary>
    private string Listing(string pool, string snapshot)
    {
        var mp = _scratch.NewMountPoint();
        Ok(Cow("mount", pool, mp));
        try
        {
            var psi = new ProcessStartInfo("sh", ["-c", $"cd '{mp}/.snapshots/{snapshot}' && find . -mindepth 1 -printf '%p %i %m %n %U %G %s %b %T@ %C@ %l\\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum && getfattr -R -d . 2>/dev/null"])
            { RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            var text = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.NotEmpty(text);
            return text;
        }
        finally { Ok(Cow("umount", mp)); }
    }

    [SkippableFact]
    public void Streams_through_files_arrive_identical_and_a_damaged_one_resumes_with_its_token()
    {
        var src = MakeSource();
        var dst = MakeEmpty("dst");
        Ok(Cow("send", src, "s0", "-o", At("s0.cowstream")));
        Ok(Cow("send", src, "s1", "--from", "s0", "-o", At("s1.cowstream")));
        Assert.Contains("full", Ok(Cow("stream", "verify", At("s0.cowstream"))));
        Assert.Contains("incremental", Ok(Cow("stream", "verify", At("s1.cowstream"))));
        Ok(Cow("receive", dst, "-f", At("s0.cowstream")));

        // A byte of the incremental stream flipped in the middle: verify names the offset; receive keeps what came before.
        var bytes = File.ReadAllBytes(At("s1.cowstream"));
        int at = bytes.Length / 2;
        bytes[at] ^= 0x5A;
        File.WriteAllBytes(At("bad.cowstream"), bytes);
        var (code, _, err) = Cow("stream", "verify", At("bad.cowstream"));
        Assert.Equal(1, code);
        Assert.Contains("damaged at byte", err);
        (code, var stdout, err) = Cow("receive", dst, "-f", At("bad.cowstream"));
        Assert.Equal(1, code);
        Assert.Contains("resume with", err);
        string token = stdout.Trim();
        Assert.StartsWith("1-", token);
        Assert.Equal(token, Ok(Cow("receive", dst, "--token")).Trim());
        Assert.DoesNotContain("s1", Ok(Cow("snapshot", "list", dst)));
        Ok(Cow("send", src, "--resume", token, "-o", At("rest.cowstream")));
        Assert.True(new FileInfo(At("rest.cowstream")).Length < new FileInfo(At("s1.cowstream")).Length);
        Ok(Cow("receive", dst, "-f", At("rest.cowstream")));
        Assert.Contains("clean", Ok(Cow("fsck", dst)));
        Assert.Equal(Listing(src, "s1"), Listing(dst, "s1"));
        Assert.Equal(Listing(src, "s0"), Listing(dst, "s0"));
    }

    [SkippableFact]
    public void A_mounted_pool_receives_through_its_control_socket()
    {
        var src = MakeSource();
        var dst = MakeEmpty("dst");
        Ok(Cow("send", src, "s0", "-o", At("s0.cowstream")));
        Ok(Cow("send", src, "s1", "--from", "s0", "-o", At("s1.cowstream")));
        var mp = _scratch.NewMountPoint();
        Ok(Cow("mount", dst, mp));
        Ok(Cow("receive", mp, "-f", At("s0.cowstream")));
        Assert.True(Directory.Exists(Path.Combine(mp, ".snapshots", "s0")));
        Ok(Cow("receive", mp, "-f", At("s1.cowstream")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(mp, "docs", "b.txt")), File.ReadAllBytes(Path.Combine(mp, ".snapshots", "s1", "docs", "b.txt")));
        Assert.False(File.Exists(Path.Combine(mp, "a-link")));
        // Sending from the mounted pool goes through the socket too.
        Ok(Cow("send", mp, "s1", "--from", "s0", "-o", At("again.cowstream")));
        Assert.Contains("incremental", Ok(Cow("stream", "verify", At("again.cowstream"))));
        Ok(Cow("umount", mp));
        Assert.Contains("clean", Ok(Cow("fsck", dst)));
        Assert.Equal(Listing(src, "s1"), Listing(dst, "s1"));
    }

    [SkippableFact]
    public void Replicate_sends_what_the_target_lacks_and_keeps_a_hold_on_the_newest_common_snapshot()
    {
        var src = MakeSource();
        var dst = MakeEmpty("dst");
        Ok(Cow("replicate", src, dst));
        var rows = JsonNode.Parse(Ok(Cow("snapshot", "list", dst, "--json")))!.AsArray();
        Assert.Equal(["s0", "s1"], rows.Select(r => (string)r!["name"]!).ToArray());
        var srcRows = JsonNode.Parse(Ok(Cow("snapshot", "list", src, "--json")))!.AsArray();
        Assert.Equal(srcRows.Select(r => (string)r!["identity"]!), rows.Select(r => (string)r!["identity"]!));
        var held = srcRows.Single(r => (string)r!["name"]! == "s1")!["holds"]!.AsArray().Select(h => (string)h!).ToList();
        Assert.Contains(held, h => h.StartsWith("replicate:", StringComparison.Ordinal));
        Assert.Contains("up to date", Cow("replicate", src, dst).Err);
        // The held base cannot be deleted; a new snapshot goes over incrementally and the hold moves to it.
        Assert.Equal(1, Cow("snapshot", "delete", src, "s1").Code);
        using (var p = Pool.Open(src))
        {
            MemoryPool.WriteAt(p.Live, MemoryPool.CreateFile(p.Live, "/new"), 0, MemoryPool.Pattern(5000, 9));
            Assert.Equal(0, (int)p.Engine.CreateSnapshot("s2", out _));
        }
        var (code, _, err) = Cow("replicate", src, dst);
        Assert.True(code == 0, err);
        Assert.Contains("sending 's2' from 's1'", err);
        Assert.Contains("clean", Ok(Cow("fsck", dst)));
        Assert.Equal(Listing(src, "s2"), Listing(dst, "s2"));
        Ok(Cow("snapshot", "delete", src, "s1"));
    }

    [SkippableFact]
    public void The_service_schedule_runs_replicate_and_logs_what_it_sent()
    {
        var src = MakeSource();
        var dst = MakeEmpty("dst");
        // The scheduler replicates from the pool's mount point; here the "mount point" is the pool folder itself
        // (not mounted), which the cow commands it runs open directly. The socket it hands them names nothing.
        var config = global::Cow.Cli.Service.ServeConfig.Parse(
            $"[control]\nsocket = {At("none.sock")}\n[pool data]\npath = {At("unused")}\nmountpoint = {src}\n[replicate data]\ntarget = {dst}\nevery = 1h\n",
            "test.conf", out var errors);
        Assert.True(config != null, string.Join("\n", errors));
        var log = new ListLogger();
        var scheduler = new global::Cow.Cli.Service.ReplicationScheduler(config, new AlwaysMounted(), TimeProvider.System, log);
        Assert.Equal(0, scheduler.Run(config.Pools[0], DateTime.UtcNow));
        Assert.Contains(log.Lines, l => l.Contains("sending 's1' from 's0'"));
        Assert.Contains(log.Lines, l => l.Contains($"replicated to {dst}"));
        Assert.Equal(Listing(src, "s1"), Listing(dst, "s1"));
        Assert.Equal(0, scheduler.Run(config.Pools[0], DateTime.UtcNow));
        Assert.Contains(log.Lines, l => l.Contains("up to date"));
    }

    private sealed class AlwaysMounted : global::Cow.Cli.Service.IServedPools
    {
        public bool Use(string poolName, Action<Pool, string?> action) { action(null!, null); return true; }
    }

    private sealed class ListLogger : Microsoft.Extensions.Logging.ILogger<global::Cow.Cli.Service.ReplicationScheduler>
    {
        public readonly List<string> Lines = new();
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        { lock (Lines) Lines.Add(formatter(state, exception)); }
    }

    [SkippableFact]
    public void Replicate_to_ssh_localhost()
    {
        Skip.IfNot(File.Exists("/usr/sbin/sshd"), "no sshd here (.ci/setup installs openssh-server)");
        var src = MakeSource();
        var dst = MakeEmpty("dst");
        using var sshd = LocalSshd.Start(At("ssh"));
        var remoteCow = $"dotnet {CowProgram.Dll}";
        var env = ("COW_SSH", sshd.SshCommand);
        var (code, _, err) = _scratch.RunCow(output, ["replicate", src, $"ssh://root@127.0.0.1:{sshd.Port}{dst}", "--remote-cow", remoteCow], env);
        Assert.True(code == 0, err);
        Assert.Equal(Listing(src, "s1"), Listing(dst, "s1"));
        Assert.Contains("up to date", _scratch.RunCow(output, ["replicate", src, $"ssh://root@127.0.0.1:{sshd.Port}{dst}", "--remote-cow", remoteCow], env).Err);
    }

    /// <summary>An sshd of the test's own: a host key, a client key authorized for root, a free port, no other login.</summary>
    private sealed class LocalSshd : IDisposable
    {
        private Process? _process;
        public int Port { get; private init; }
        public required string SshCommand { get; init; }

        public static LocalSshd Start(string dir)
        {
            Directory.CreateDirectory(dir);
            Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", Path.Combine(dir, "host"));
            Run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", Path.Combine(dir, "client"));
            File.Copy(Path.Combine(dir, "client.pub"), Path.Combine(dir, "authorized_keys"));
            var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            probe.Start();
            int port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            File.WriteAllText(Path.Combine(dir, "sshd_config"), $"""
                Port {port}
                ListenAddress 127.0.0.1
                HostKey {dir}/host
                AuthorizedKeysFile {dir}/authorized_keys
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PermitRootLogin prohibit-password
                StrictModes no
                UsePAM no
                PidFile {dir}/sshd.pid
                SetEnv PATH={Environment.GetEnvironmentVariable("PATH")} DOTNET_ROOT={Environment.GetEnvironmentVariable("DOTNET_ROOT") ?? ""}
                """);
            Directory.CreateDirectory("/run/sshd");
            var psi = new ProcessStartInfo("/usr/sbin/sshd", ["-D", "-e", "-f", Path.Combine(dir, "sshd_config")]) { RedirectStandardError = true };
            var s = new LocalSshd
            {
                Port = port,
                SshCommand = $"ssh -i {dir}/client -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
                _process = Process.Start(psi),
            };
            _ = s._process!.StandardError.ReadToEndAsync();
            for (int i = 0; i < 50; i++)
            {
                using var c = new System.Net.Sockets.TcpClient();
                try { c.Connect(System.Net.IPAddress.Loopback, port); return s; }
                catch (System.Net.Sockets.SocketException) { Thread.Sleep(100); }
            }
            s.Dispose();
            throw new SkipException("the test's sshd did not start");
        }

        private static void Run(string file, params string[] args)
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true })!;
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.Equal(0, p.ExitCode);
        }

        public void Dispose()
        {
            try { _process?.Kill(true); } catch (InvalidOperationException) { }
            _process?.Dispose();
        }
    }
}
