using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Cow.Core;
using Cow.Core.FileSystem;
using Cow.Fuse.Mounting;
using Cow.Fuse.Server;
using Mono.Unix.Native;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;

namespace Cow.Cli;

/// <summary><c>cow mount</c> and <c>cow umount</c>. A mount runs in the foreground process or in a detached
/// background child (<c>--background-child</c>) that reports <see cref="ReadyLine"/> to the waiting parent; the
/// serving process hands its pool and mount to a <see cref="Service.PoolMounts"/> with a control socket, as
/// <c>cow serve</c> does. No state of its own: thread-safe.</summary>
internal static class MountCommands
{
    /// <summary>Printed by a background server on its standard output once the mount is up.</summary>
    private const string ReadyLine = "COW-MOUNT-READY";

    /// <summary>Exit code of <c>cow mount --iomap on</c> when the kernel does not grant fuse-iomap (nothing is mounted).</summary>
    public const int ExitIomapUnavailable = 3;

    internal static Command Mount()
    {
        var mountPoint = new Argument<string>("mountpoint") { Description = "directory to mount the pool on" };
        var foreground = new Option<bool>("--foreground", "-f") { Description = "stay in the foreground (logs to standard error) instead of running in the background" };
        var snapshot = new Option<string?>("--snapshot") { Description = "mount this snapshot (read-only) instead of the live tree" };
        var writeback = new Option<bool>("--writeback-cache") { Description = "let the kernel gather buffered writes in its page cache (faster small writes; fsync still makes them durable)" };
        var pageCache = new Option<bool>("--page-cache") { Description = "live files go through the FUSE page cache (the default; kept for scripts that ask for it)" };
        var directIo = new Option<bool>("--direct-io") { Description = "live files opened for writing bypass the FUSE page cache (direct I/O to the server): no second cached copy of written data, but writes arrive cut where the writer's buffer crosses a page, which costs a read-modify-write of one block per request" };
        var readAhead = new Option<int>("--read-ahead") { Description = "read-ahead of the mount in KiB (the kernel's default for FUSE is 128); 0 leaves the kernel's setting", DefaultValueFactory = _ => MountSettings.DefaultReadAheadKib };
        var maxRead = new Option<int>("--max-read") { Description = $"largest READ request in KiB (the kernel's max_read; default {MountSettings.DefaultMaxReadKib}): smaller READs spread a read-ahead window over several worker threads; 0 allows READs of up to 1 MiB", DefaultValueFactory = _ => MountSettings.DefaultMaxReadKib };
        var showSnapshots = new Option<bool>("--show-snapshots") { Description = "list .snapshots in the root directory (it is always reachable by name)" };
        var threads = new Option<int>("--threads") { Description = "FUSE worker threads", DefaultValueFactory = _ => MountSettings.DefaultThreads };
        var allowOther = new Option<bool?>("--allow-other") { Description = "let other users use the mount (default: yes when mounted by root)" };
        var fusermount = new Option<bool>("--fusermount") { Description = "mount through fusermount3 even as root (the way non-root users mount)" };
        var log = new Option<string?>("--log") { Description = "log file of a background server (default: mount.log in the pool folder; for a pool on its devices /run/cow/pool-UUID.log)" };
        var iomap = new Option<string>("--iomap")
        {
            Description = "kernel fuse-iomap (the kernel does file I/O straight to the pool's block devices; experimental kernels only, needs CAP_SYS_RAWIO): "
                + "'auto' uses it when the kernel grants it and otherwise serves I/O in userspace (logged once); 'on' requires it and otherwise refuses the mount "
                + $"with exit code {ExitIomapUnavailable}; 'off' never asks",
            DefaultValueFactory = _ => "auto",
        };
        iomap.AcceptOnlyFromAmong("auto", "on", "off");
        var options = new Option<string?>("--options", "-o")
        {
            Description = "comma-separated mount options: relatime (the default: a read updates atime when it is not newer than mtime/ctime or is a day old), strictatime (every read), noatime (never), nodiratime (listing a directory never updates its atime)",
        };
        var cleaner = new Option<string>("--cleaner")
        {
            Description = "the background log cleaner, started once the mount is up: it moves live data off the log device onto the base device "
                + "when the log runs low on free space ('on', the default; also for --snapshot mounts, whose pool is writable), or 'off'",
            DefaultValueFactory = _ => "on",
        };
        cleaner.AcceptOnlyFromAmong("on", "off");
        var cleanerStart = new Option<string?>("--cleaner-start") { Description = "a background pass starts when less than this percentage of the log is free (default 25)" };
        var cleanerStop = new Option<string?>("--cleaner-stop") { Description = "a background pass stops once this percentage of the log is free (default 40, or --cleaner-start when higher)" };
        var cleanerShare = new Option<string?>("--cleaner-share") { Description = "share of the time a background pass may spend moving data, above 0 and at most 1 (default 0.25; below 5 % free log it runs flat out)" };
        var cacheSize = new Option<string?>("--cache-size") { Description = "byte budget of the metadata caches, e.g. 128M (default: a sixteenth of the memory, from 64M to 96M); the mount's memory beyond it is the runtime's and the kernel's" };
        var daemonChild = new Option<bool>("--background-child") { Hidden = true };
        var cmd = new Command("mount", "mount a pool (or one of its snapshots) through FUSE; snapshots are browsable read-only under MOUNTPOINT/.snapshots/NAME, and 'mkdir'/'rmdir' there create and delete snapshots")
        {
            PoolArg, mountPoint, foreground, snapshot, writeback, pageCache, directIo, readAhead, maxRead, showSnapshots, threads, allowOther, fusermount, iomap, options, log,
            cleaner, cleanerStart, cleanerStop, cleanerShare, cacheSize, daemonChild,
        };
        cmd.SetAction(r => Guard(() =>
        {
            var folder = Path.GetFullPath(PoolOf(r));
            var mp = MountTable.Normalize(r.GetValue(mountPoint)!);
            int nThreads = r.GetValue(threads);
            if (nThreads < 1 || nThreads > 64) return Usage("--threads must be between 1 and 64");
            if (r.GetValue(pageCache) && r.GetValue(directIo)) return Usage("--page-cache and --direct-io exclude each other");
            int raKib = r.GetValue(readAhead);
            if (raKib < 0 || raKib > MountSettings.MaxReadAheadKib) return Usage($"--read-ahead must be between 0 and {MountSettings.MaxReadAheadKib} KiB");
            int maxReadKib = r.GetValue(maxRead);
            if (MountSettings.CheckMaxReadKib(maxReadKib) is string bad) return Usage($"--max-read {bad}");
            var atime = new AtimeOptions();
            foreach (var word in (r.GetValue(options) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                if (!AtimeOptions.TryApply(word, ref atime)) return Usage($"-o: unknown mount option '{word}' (known: relatime, strictatime, noatime, nodiratime, diratime)");
            double? Parsed(Option<string?> o, Func<string, string, (double?, string?)> parse)
            {
                if (r.GetValue(o) is not { } text) return null;
                var (v, problem) = parse(text, o.Name);
                return problem != null ? throw new FormatException(problem) : v;
            }
            Core.FileSystem.CleanerSettings? cleanerSettings;
            try
            {
                double? start = Parsed(cleanerStart, (t, n) => (CleanerOptions.Percent(t, n, out var p), p));
                double? stop = Parsed(cleanerStop, (t, n) => (CleanerOptions.Percent(t, n, out var p), p));
                double? share = Parsed(cleanerShare, (t, n) => (CleanerOptions.Share(t, n, out var p), p));
                cleanerSettings = CleanerOptions.Settings(start, stop, share, "--cleaner-start", "--cleaner-stop", out var problem);
                if (problem != null) return Usage(problem);
            }
            catch (FormatException e) { return Usage(e.Message); }
            if (r.GetValue(cleaner) == "off") cleanerSettings = null;
            long? cacheBytes = null;
            if (r.GetValue(cacheSize) is { } cacheText)
            {
                try { cacheBytes = PoolCommands.ParseSize(cacheText); }
                catch (FormatException e) { return Usage($"--cache-size: {e.Message}"); }
                if (cacheBytes < Core.Engine.CacheBudget.MinBytes) return Usage($"--cache-size must be at least {Core.Engine.CacheBudget.MinBytes >> 20}M");
            }
            var settings = new MountSettings
            {
                Atime = atime,
                MountPoint = mp, Snapshot = r.GetValue(snapshot), WritebackCache = r.GetValue(writeback),
                SnapshotDirVisible = r.GetValue(showSnapshots), DirectIo = r.GetValue(directIo), ReadAheadKib = raKib, MaxReadKib = maxReadKib, Threads = nThreads, AllowOther = r.GetValue(allowOther),
                UseFusermount = r.GetValue(fusermount),
                Iomap = r.GetValue(iomap) switch { "on" => IomapMode.On, "off" => IomapMode.Off, _ => IomapMode.Auto },
            };
            bool child = r.GetValue(daemonChild);
            if (!r.GetValue(foreground) && !child) return StartBackground(folder, mp);
            // A pool on its devices has no folder: its server logs beside its lock (/run/cow/pool-UUID.log).
            string defaultLog = Directory.Exists(folder) || Pool.LockPathOf(folder) is not { } lockPath
                ? Path.Combine(folder, "mount.log") : Path.ChangeExtension(lockPath, ".log");
            return ServeMount(folder, settings, cleanerSettings, cacheBytes, child, r.GetValue(log) ?? defaultLog);
        }));
        return cmd;
    }

    /// <summary>Runs the mount in this process until it is unmounted or a SIGINT/SIGTERM/SIGHUP arrives.</summary>
    private static int ServeMount(string folder, MountSettings settings, Core.FileSystem.CleanerSettings? cleaner, long? cacheBytes, bool backgroundChild, string logPath)
    {
        if (backgroundChild) Syscall.setsid();   // leave the terminal's session: no SIGHUP when it closes
        var logLock = new object();
        // A background server logs to its log file (errors before the mount is up also reach the waiting
        // parent through standard error); a foreground one to standard error.
        TextWriter logWriter = Console.Error;
        void Log(string line)
        {
            lock (logLock) logWriter.WriteLine($"{DateTime.Now:yyyy-MM-dd HH:mm:ss.fff} cow[{Environment.ProcessId}]: {line}");
        }
        settings = settings with { Log = Log };
        try { Mounter.CheckMountPoint(settings.MountPoint); }
        catch (MountException e) { return Fail(e.Message); }
        Pool pool;
        try { pool = Pool.Open(folder, purgeInBackground: true); }
        catch (PoolException e) { return Fail(e.Message); }
        if (cacheBytes is long budget) pool.CacheBudget = new Core.Engine.CacheBudget(budget);
        MountedFileSystem? m = null;
        Service.PoolMounts? owner = null;   // owns the pool and the mount once set
        Service.ControlServer? control = null;
        bool handedOver = false;
        try
        {
            if (settings.Snapshot != null && pool.Snapshot(settings.Snapshot) == null)
                return Fail($"pool {folder} has no snapshot named '{settings.Snapshot}'");
            if (backgroundChild)
            {
                try { logWriter = new StreamWriter(new FileStream(logPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true }; }
                catch (IOException e) { return Fail($"cannot open log file {logPath}: {e.Message}"); }
                catch (UnauthorizedAccessException e) { return Fail($"cannot open log file {logPath}: {e.Message}"); }
            }
            pool.Problem += Log;
            // The control socket listens before the mount appears; the pool is handed to it once mounted.
            (var served, control) = Service.MountControl.Listen(folder, settings, cleaner, Log);
            // Signals are taken before the mount appears: one that arrives while it is being set up stops the
            // server as soon as it is up (unmounted and committed), instead of killing it with the mount in place.
            using var stop = new ManualResetEventSlim(false);
            string? why = null;
            void OnSignal(PosixSignalContext ctx) { ctx.Cancel = true; why ??= ctx.Signal.ToString(); stop.Set(); }
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
            using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);
            try { m = MountedFileSystem.Start(pool, settings); }
            catch (MountException e) when (e.IomapUnavailable) { Fail(e.Message); return ExitIomapUnavailable; }
            catch (MountException e) { return Fail(e.Message); }
            // From here the pool and its mount belong to the served set, as under cow serve: the control socket
            // answers every snapshot verb, and a rollback unmounts and mounts again with the same settings.
            int workers = m.Session.Workers;
            bool closed = false;
            served.PoolClosed += _ => { closed = true; stop.Set(); };
            served.Adopt(Service.MountControl.PoolConfigOf(folder, settings, cleaner), settings, pool, m);   // starts the cleaner
            owner = served;
            handedOver = true;
            m = null;
            Log($"mounted {folder}{(settings.Snapshot != null ? $" (snapshot {settings.Snapshot}, read-only)" : "")} on {settings.MountPoint} with {workers} worker threads"
                + $"; cleaner {CleanerOptions.Describe(cleaner)}" + (control != null ? $"; control socket {Service.MountControl.Endpoint().Socket}" : ""));
            if (backgroundChild) DetachFromParent();
            stop.Wait();
            control?.Dispose();   // no more requests: then unmount and close
            Log(why != null && !closed ? $"{why}: unmounting {settings.MountPoint}" : $"{settings.MountPoint} was unmounted");
            owner = null;
            served.StopAsync(CancellationToken.None).GetAwaiter().GetResult();   // logs "... committed and closed"
            return 0;
        }
        finally
        {
            control?.Dispose();
            if (owner != null) owner.StopAsync(CancellationToken.None).GetAwaiter().GetResult();   // an exception after the hand-over
            else if (!handedOver)
            {
                try { m?.Unmount(lazyIfBusy: true); } catch (MountException e) { Log(e.Message); }
                pool.Dispose();
            }
        }
    }

    /// <summary>Background child: tells the waiting parent that the mount is up, then sends its own output to the log file.</summary>
    private static void DetachFromParent()
    {
        Console.Out.WriteLine(ReadyLine);
        Console.Out.Flush();
        // .NET's Console streams hold duplicates of the standard descriptors, so replace the writers too:
        // nothing may write into the parent's pipes once it has gone.
        Console.SetOut(TextWriter.Null);
        Console.SetError(TextWriter.Null);
        int devnull = Syscall.open("/dev/null", OpenFlags.O_RDWR);
        Syscall.dup2(devnull, 0);
        Syscall.dup2(devnull, 1);
        Syscall.dup2(devnull, 2);
    }

    /// <summary>Starts <c>cow mount --foreground</c> as a detached child and waits until it reports the mount up (or fails).</summary>
    private static int StartBackground(string folder, string mp)
    {
        var exe = Environment.ProcessPath ?? throw new IOException("cannot find the path of this program to start the background server");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        // Under 'dotnet cow.dll' the first argument is the assembly; under the apphost it is the program itself.
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet") psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "cow.dll"));
        foreach (var a in Environment.GetCommandLineArgs().Skip(1)) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--background-child");
        using var p = Process.Start(psi) ?? throw new IOException($"cannot start {exe}");
        var errTask = p.StandardError.ReadToEndAsync();
        p.StandardInput.Close();
        string? line;
        while ((line = p.StandardOutput.ReadLine()) != null)
        {
            if (line == ReadyLine)
            {
                Console.WriteLine($"mounted {folder} on {mp} (server pid {p.Id}; 'cow umount {mp}' to unmount)");
                return 0;
            }
            Console.WriteLine(line);
        }
        p.WaitForExit();
        var err = errTask.Result.Trim();
        Console.Error.WriteLine(err.Length > 0 ? err : $"cow: the mount server exited with code {p.ExitCode} before the mount was up");
        return p.ExitCode == 0 ? 1 : p.ExitCode;
    }

    internal static Command Umount()
    {
        var mountPoint = new Argument<string>("mountpoint") { Description = "mount point of a Cow mount (or its pool: folder or configured name)" };
        var lazy = new Option<bool>("--lazy", "-l") { Description = "detach even if busy: the mount disappears now and ends when its last open file is closed" };
        var timeout = new Option<int>("--timeout") { Description = "seconds to wait for the server to commit and close the pool", DefaultValueFactory = _ => 60 };
        var cmd = new Command("umount", "unmount a Cow mount; waits until its server has committed and closed the pool. Also clears a mount whose server died") { mountPoint, lazy, timeout };
        cmd.SetAction(r => Guard(() =>
        {
            var arg = r.GetValue(mountPoint)!;
            // Not a mount point: a pool folder or a pool name of the service's configuration names its mount.
            if (MountTable.Find(MountTable.Normalize(arg)) == null && MountedAt(ResolvePoolOrSelf(arg)) is { } mounted) arg = mounted;
            var mp = MountTable.Normalize(arg);
            var entry = MountTable.Find(mp);
            if (entry == null) return Fail($"{mp} is not mounted");
            if (!entry.IsCow) return Fail($"{mp} is a {entry.FsType} mount, not a Cow mount");
            bool dead = Mounter.IsDisconnected(mp);
            try { Mounter.Unmount(mp, r.GetValue(lazy), useFusermount: !Mounter.IsRoot); }
            catch (MountException e) when (e.Busy) { return Fail($"{e.Message}: close what uses it ('fuser -vm {mp}' lists the processes), or detach it now with 'cow umount --lazy {mp}'"); }
            catch (MountException e) { return Fail(e.Message); }
            if (dead)
            {
                Console.WriteLine($"cleared {mp}: its server had died (run 'cow fsck {entry.Source}' before mounting again)");
                return 0;
            }
            // The server sees the connection end, commits and closes the pool: wait for its lock to go.
            var lockPath = Pool.LockPathOf(entry.Source) ?? Path.Combine(entry.Source, Pool.LockFile);
            var until = DateTime.UtcNow.AddSeconds(r.GetValue(timeout));
            while (LockHolder(lockPath) is int pid)
            {
                if (DateTime.UtcNow > until) return Fail($"unmounted {mp}, but its server (pid {pid}) has not closed pool {entry.Source} after {r.GetValue(timeout)} s");
                Thread.Sleep(20);
            }
            Console.WriteLine($"unmounted {mp}; pool {entry.Source} committed and closed");
            return 0;
        }));
        return cmd;
    }
}
