using Cow.Core;
using Cow.Fuse.Mounting;
using Microsoft.Extensions.Logging;
using Mono.Unix.Native;

namespace Cow.Cli.Service;

/// <summary>
/// The control socket of a <c>cow mount</c> process: the same <see cref="ControlServer"/> and verbs as
/// <c>cow serve</c>, over a <see cref="PoolMounts"/> holding the one pool this process mounted. Its path is
/// derived from the pid of the process holding the pool's lock and that process's user, so a client finds
/// it from the pool folder or the mount point alone (<see cref="SocketPath"/>): root's mounts listen on
/// <c>/run/cow/mounts/PID.sock</c> (root:cow-admin when that group exists, mode 0660), another user's on
/// <c>/run/user/UID/cow/PID.sock</c> (or <c>/tmp/cow-UID/PID.sock</c> without a runtime folder; owner only,
/// mode 0600). Stateless: thread-safe.
/// </summary>
public static class MountControl
{
    public const string RootFolder = "/run/cow/mounts";

    /// <summary>The control socket of the <c>cow mount</c> process <paramref name="pid"/> run by <paramref name="uid"/>.</summary>
    public static string SocketPath(int pid, uint uid)
    {
        if (uid == 0) return Path.Combine(RootFolder, $"{pid}.sock");
        var runtime = $"/run/user/{uid}";
        return Directory.Exists(runtime) ? Path.Combine(runtime, "cow", $"{pid}.sock") : $"/tmp/cow-{uid}/{pid}.sock";
    }

    /// <summary>The endpoint this process listens on when it mounts a pool.</summary>
    public static ControlEndpoint Endpoint()
    {
        uint uid = Syscall.getuid();
        return new ControlEndpoint(SocketPath(Environment.ProcessId, uid), null, Convert.ToInt32(uid == 0 ? "660" : "600", 8), uid, "mount",
            "mount it again (cow mount)");
    }

    /// <summary>The owner of process <paramref name="pid"/>, or null when it is gone.</summary>
    public static uint? ProcessUid(int pid) => Syscall.stat($"/proc/{pid}", out var st) == 0 ? st.st_uid : null;

    /// <summary>The pool as the control socket names it: a <c>cow mount</c> has no configured name, so its pool is
    /// called by its folder's name (the requests may also give the pool folder or the mount point).</summary>
    public static PoolConfig PoolConfigOf(string folder, MountSettings s, Core.FileSystem.CleanerSettings? cleaner) => new()
    {
        Cleaner = cleaner,
        Name = Path.GetFileName(Path.TrimEndingDirectorySeparator(folder)) is { Length: > 0 } n ? n : folder,
        Path = folder, MountPoint = s.MountPoint, WritebackCache = s.WritebackCache, PageCache = !s.DirectIo, ReadAheadKib = s.ReadAheadKib,
        MaxReadKib = s.MaxReadKib, ShowSnapshots = s.SnapshotDirVisible, Threads = s.Threads, AllowOther = s.AllowOther, Iomap = s.Iomap,
    };

    /// <summary>The served set of a <c>cow mount</c> (empty until <see cref="PoolMounts.Adopt"/> hands it the pool
    /// once mounted) and its control socket, listening already: set up before the mount appears, so that the
    /// first requests to the new mount do not wait for it. The <see cref="ControlServer"/> is null when its
    /// socket could not be made (logged: the mount works, without control requests). Until the pool is adopted,
    /// requests are answered "serves no mounted pool".</summary>
    public static (PoolMounts Mounts, ControlServer? Server) Listen(string folder, MountSettings settings, Core.FileSystem.CleanerSettings? cleaner, Action<string> logLine)
    {
        var pc = PoolConfigOf(folder, settings, cleaner);
        var mounts = new PoolMounts(new ServeConfig { Control = new ControlConfig(), Pools = [pc] }, new LineLogger<PoolMounts>(logLine))
        { RestartHint = $"mount it again (cow mount {folder} {settings.MountPoint})", EndsWhenUnmounted = true };
        var endpoint = Endpoint();
        RemoveStale(Path.GetDirectoryName(endpoint.Socket)!);
        var server = new ControlServer(endpoint, mounts, new LineLogger<ControlServer>(logLine));
        try { server.StartAsync(CancellationToken.None).GetAwaiter().GetResult(); }
        catch (ControlSocketException e)
        {
            logLine($"no control socket ({e.Message}): snapshot verbs other than create, delete and list will be refused on this mount");
            server.Dispose();
            return (mounts, null);
        }
        return (mounts, server);
    }

    /// <summary>Removes the sockets of <c>cow mount</c> processes that are gone (killed, so they could not remove their
    /// own) from <paramref name="folder"/>: only PID.sock files of this user whose process does not exist.</summary>
    private static void RemoveStale(string folder)
    {
        uint uid = Syscall.getuid();
        try
        {
            foreach (var f in Directory.EnumerateFiles(folder, "*.sock"))
                if (int.TryParse(Path.GetFileNameWithoutExtension(f), out int pid) && !Directory.Exists($"/proc/{pid}")
                    && Syscall.lstat(f, out var st) == 0 && (st.st_mode & FilePermissions.S_IFMT) == FilePermissions.S_IFSOCK && st.st_uid == uid)
                    File.Delete(f);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* housekeeping only */ }
    }

    /// <summary>Log lines of the <c>cow mount</c> process (its log file or standard error), one per message.</summary>
    private sealed class LineLogger<T>(Action<string> line) : ILogger<T>
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            var prefix = logLevel >= LogLevel.Error ? "error: " : logLevel == LogLevel.Warning ? "warning: " : "";
            line(prefix + formatter(state, exception) + (exception != null ? $"\n{exception}" : ""));
        }
    }
}
