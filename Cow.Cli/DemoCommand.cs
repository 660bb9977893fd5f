using System.CommandLine;
using System.Diagnostics;
using System.Text;
using Cow.Core;
using Cow.Fuse.Mounting;
using Mono.Unix.Native;
using Spectre.Console;
using static Cow.Cli.CliCommon;
using static Cow.Cli.FileCommands;

namespace Cow.Cli;

/// <summary><c>cow demo</c>, the main job on an embedded default (<c>bash .ci/demo</c>): a pool of sparse image files
/// in a folder, mounted through /dev/fuse by this process; write a file, snapshot, change it, show the old version
/// under <c>.snapshots</c>, restore it sharing blocks, unmount, fsck — each step printed with the command a user
/// would type. Without root or /dev/fuse it runs the same story on the unmounted pool and says why. Stateless:
/// each run works on its own pool folder.</summary>
internal static class DemoCommand
{
    private const string DemoMarker = ".cow-demo";
    private const int DemoFileBytes = 16 << 20, DemoChangeBytes = 1 << 20;

    internal static Command Create()
    {
        var dir = new Argument<string>("pool") { Description = "pool folder to create (default ./demo-pool; a previous demo pool there is replaced)", DefaultValueFactory = _ => "demo-pool" };
        var remove = new Option<bool>("--remove") { Description = "remove the pool folder afterwards" };
        var cmd = new Command("demo", "make a pool, mount it, write a file, snapshot, change it, show the old version under .snapshots, restore it sharing blocks, unmount, fsck") { dir, remove };
        cmd.SetAction(r => Guard(() =>
        {
            var folder = Path.GetFullPath(r.GetValue(dir)!);
            bool keep = !r.GetValue(remove);
            if (Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any())
            {
                if (!File.Exists(Path.Combine(folder, DemoMarker))) return Fail($"{folder} exists, is not empty and is not a demo pool; give a new folder");
                if (MountTable.Find(MountTable.Normalize(Path.Combine(folder, "mnt"))) != null)
                    return Fail($"{Path.Combine(folder, "mnt")} is still mounted from an earlier demo; run 'cow umount {Path.Combine(folder, "mnt")}' first");
                Directory.Delete(folder, recursive: true);
            }
            try
            {
                AnsiConsole.MarkupLine($"[bold]cow demo[/] in {Markup.Escape(folder)}");
                string? why = Syscall.geteuid() != 0 ? "not running as root (mount(2) needs it; run the demo with sudo to see the mount)"
                    : !File.Exists("/dev/fuse") ? "/dev/fuse does not exist (load the fuse module: modprobe fuse)"
                    : null;
                if (why == null)
                {
                    try { return MountedDemo(folder, keep); }
                    catch (MountException e) { why = $"the mount failed: {e.Message}"; }
                    if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
                }
                AnsiConsole.MarkupLine($"[yellow]not mounting: {Markup.Escape(why)}; the demo runs on the unmounted pool instead[/]");
                return UnmountedDemo(folder, keep);
            }
            finally
            {
                if (!keep) try { Directory.Delete(folder, recursive: true); } catch (IOException) { }
            }
        }));
        return cmd;
    }

    /// <summary>Prints one step: the command a user would type, then what it did.</summary>
    private static void Step(string command, string? comment = null)
    {
        AnsiConsole.WriteLine();
        AnsiConsole.MarkupLine($"[bold]$ {Markup.Escape(command)}[/]{(comment != null ? $"   [grey]# {Markup.Escape(comment)}[/]" : "")}");
    }

    private static byte[] DemoText(string line, int bytes)
    {
        var b = new byte[bytes];
        var l = Encoding.ASCII.GetBytes(line + "\n");
        for (int i = 0; i < bytes; i++) b[i] = l[i % l.Length];
        return b;
    }

    private static string Head(string path, int n = 24)
    {
        var buf = new byte[n];
        using var f = File.OpenRead(path);
        int got = f.ReadAtLeast(buf, n, throwOnEndOfStream: false);
        return Encoding.ASCII.GetString(buf, 0, got).TrimEnd('\n');
    }

    private static long FreeBytes(string mountPoint)
    {
        if (Syscall.statvfs(mountPoint, out var v) != 0) throw new IOException($"statvfs {mountPoint}: {Stdlib.GetLastError()}");
        return (long)(v.f_bfree * v.f_frsize);
    }

    private static int MountedDemo(string folder, bool keep)
    {
        var mnt = Path.Combine(folder, "mnt");
        string P(string rel) => Path.Combine(mnt, rel);
        string pool = Path.GetRelativePath(Environment.CurrentDirectory, folder), m = Path.GetRelativePath(Environment.CurrentDirectory, mnt);

        Step($"cow mkfs {pool} --base-size 256M --log-size 1G");
        using (var created = Pool.Create(folder, new PoolCreateOptions { BaseSize = 256L << 20, LogSize = 1L << 30 }))
            AnsiConsole.WriteLine($"base.img 256 MiB + log.img 1 GiB (sparse files), pool uuid {created.Uuid}");
        File.WriteAllText(Path.Combine(folder, DemoMarker), "made by cow demo; cow demo replaces this folder\n");
        Directory.CreateDirectory(mnt);

        Step($"mkdir {m} && cow mount {pool} {m}", "the demo serves the mount from its own process");
        var log = new List<string>();
        var p = Pool.Open(folder);
        MountedFileSystem? mount = null;
        try
        {
            mount = MountedFileSystem.Start(p, new MountSettings { MountPoint = mnt, Log = l => { lock (log) log.Add(l); } });
            AnsiConsole.WriteLine($"mounted {pool} on {m} through /dev/fuse");

            var v1 = DemoText("version one of the file", DemoFileBytes);
            Step($"yes 'version one of the file' | head -c 16M > {m}/data.txt && sync");
            using (var f = new FileStream(P("data.txt"), FileMode.Create, FileAccess.Write)) { f.Write(v1); f.Flush(flushToDisk: true); }
            AnsiConsole.WriteLine($"wrote {v1.Length:N0} bytes");

            Step($"mkdir {m}/.snapshots/before", "takes a snapshot; 'cow snapshot create' does the same");
            var sw = Stopwatch.StartNew();
            Directory.CreateDirectory(P(".snapshots/before"));
            AnsiConsole.WriteLine($"snapshot 'before' taken in {sw.Elapsed.TotalMilliseconds:F1} ms; it shares every block with the live file");

            Step($"yes 'VERSION TWO, overwritten' | head -c 1M | dd of={m}/data.txt conv=notrunc && sync", "change the first MiB in place");
            using (var f = new FileStream(P("data.txt"), FileMode.Open, FileAccess.Write)) { f.Write(DemoText("VERSION TWO, overwritten", DemoChangeBytes)); f.Flush(flushToDisk: true); }

            Step($"head -c 24 {m}/data.txt; head -c 24 {m}/.snapshots/before/data.txt");
            AnsiConsole.MarkupLine($"[green]{Markup.Escape(Head(P("data.txt")))}[/]");
            AnsiConsole.MarkupLine($"[green]{Markup.Escape(Head(P(".snapshots/before/data.txt")))}[/]");
            if (!Head(P("data.txt")).StartsWith("VERSION TWO") || !Head(P(".snapshots/before/data.txt")).StartsWith("version one"))
                return Fail("the versions read back through the mount are wrong");

            Step($"cow snapshot list {pool}", "each side holds alone only the MiB it changed (exclusive)");
            AnsiConsole.Write(SpaceTable(p, snapshotsOnly: false));
            long freeBefore = FreeBytes(mnt);

            Step($"cow snapshot restore {pool} before /data.txt", "the live file becomes the snapshot's again, sharing its blocks");
            var e = p.Snapshots.Restore("before", ["/data.txt"], dryRun: false, out var changes, out _);
            if (e != 0) return Fail($"restore: {Describe(e)}");
            foreach (var c in changes) AnsiConsole.WriteLine($"{SnapshotRestoreOps.ActionName(c.Action),-10}  {c.Path}");
            long freeAfter = FreeBytes(mnt);

            Step($"head -c 24 {m}/data.txt", "read through the mount at once: the kernel was told to drop its cached pages");
            AnsiConsole.MarkupLine($"[green]{Markup.Escape(Head(P("data.txt")))}[/]");
            if (!File.ReadAllBytes(P("data.txt")).AsSpan().SequenceEqual(v1)) return Fail("the restored file does not read back as the snapshot's version");

            Step($"cow snapshot list {pool}; df -B1 {m}", "the restore wrote no data: it freed the changed MiB");
            AnsiConsole.Write(SpaceTable(p, snapshotsOnly: false));
            AnsiConsole.WriteLine($"free space {Bytes(freeBefore)} before the restore, {Bytes(freeAfter)} after ({(freeAfter - freeBefore >= 0 ? "+" : "")}{Bytes(freeAfter - freeBefore)}): every block of the 16 MiB file is shared with 'before'");

            if (File.Exists("/bin/cp") || File.Exists("/usr/bin/cp"))
            {
                Step($"cp {m}/.snapshots/before/data.txt {m}/copy.txt && sync", "cp uses copy_file_range, which shares the snapshot's blocks too");
                long f0 = FreeBytes(mnt);
                var psi = new ProcessStartInfo("cp") { UseShellExecute = false, RedirectStandardError = true };
                psi.ArgumentList.Add(P(".snapshots/before/data.txt"));
                psi.ArgumentList.Add(P("copy.txt"));
                using (var cp = Process.Start(psi)!) { var err = cp.StandardError.ReadToEnd(); cp.WaitForExit(); if (cp.ExitCode != 0) return Fail($"cp: {err.Trim()}"); }
                Syscall.sync();
                AnsiConsole.WriteLine($"copied {new FileInfo(P("copy.txt")).Length:N0} bytes using {Bytes(Math.Max(0, f0 - FreeBytes(mnt)))} of new space");
            }

            Step($"cow umount {m}");
            mount.Unmount(lazyIfBusy: true);
            mount = null;
            p.Dispose();
            AnsiConsole.WriteLine($"unmounted {m}; the pool is committed and closed");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            lock (log) foreach (var l in log) Console.Error.WriteLine(l);
            return Fail($"{ex.Message}");
        }
        finally
        {
            try { mount?.Unmount(lazyIfBusy: true); } catch (MountException) { }
            p.Dispose();
        }

        Step($"cow fsck {pool}");
        using (var q = Pool.Open(folder))
        {
            var report = q.Fsck();
            AnsiConsole.MarkupLine(Markup.Escape(report.ToString()));
            if (keep)
            {
                AnsiConsole.WriteLine();
                AnsiConsole.MarkupLine($"the pool stays in {Markup.Escape(pool)}: try [bold]cow mount {Markup.Escape(pool)} {Markup.Escape(m)}[/], [bold]ls {Markup.Escape(m)}/.snapshots/before[/], [bold]cow snapshot list {Markup.Escape(pool)}[/], [bold]cow umount {Markup.Escape(m)}[/]");
            }
            return report.Clean ? 0 : 1;
        }
    }

    /// <summary>The same story without a mount (no root or no /dev/fuse): through the engine's file API, with the
    /// equivalent commands printed.</summary>
    private static int UnmountedDemo(string folder, bool keep)
    {
        string pool = Path.GetRelativePath(Environment.CurrentDirectory, folder);
        Step($"cow mkfs {pool} --base-size 256M --log-size 1G");
        using (var created = Pool.Create(folder, new PoolCreateOptions { BaseSize = 256L << 20, LogSize = 1L << 30 }))
            AnsiConsole.WriteLine($"base.img 256 MiB + log.img 1 GiB (sparse files), pool uuid {created.Uuid}");
        File.WriteAllText(Path.Combine(folder, DemoMarker), "made by cow demo; cow demo replaces this folder\n");
        using (var p = Pool.Open(folder))
        {
            var v1 = DemoText("version one of the file", DemoFileBytes);
            Step($"yes 'version one of the file' | head -c 16M | cow put {pool} /data.txt");
            Check(WriteFile(p.Live, "/data.txt", new MemoryStream(v1)), "write");
            AnsiConsole.WriteLine($"wrote {v1.Length:N0} bytes (fsync'd)");
            Step($"cow snapshot create {pool} before");
            var sw = Stopwatch.StartNew();
            Check(p.Snapshots.Create("before", out _), "snapshot");
            AnsiConsole.WriteLine($"snapshot 'before' taken in {sw.Elapsed.TotalMilliseconds:F1} ms");
            Step("(change the first MiB of /data.txt in place)");
            Check(p.Live.Resolve("/data.txt", out var f), "lookup");
            Check(p.Live.Write(f.Ino, 0, DemoText("VERSION TWO, overwritten", DemoChangeBytes), out _), "overwrite");
            Check(p.Live.Fsync(f.Ino), "fsync");
            Step($"cow cat {pool} /data.txt | head -c 24; cow cat {pool} /data.txt --snapshot before | head -c 24");
            Check(ReadFile(p.Live, "/data.txt", out var live), "read live");
            Check(ReadFile(p.Snapshot("before")!, "/data.txt", out var old), "read snapshot");
            AnsiConsole.MarkupLine($"[green]{Markup.Escape(Encoding.ASCII.GetString(live, 0, 24).TrimEnd())}[/]");
            AnsiConsole.MarkupLine($"[green]{Markup.Escape(Encoding.ASCII.GetString(old, 0, 23).TrimEnd())}[/]");
            if (!old.AsSpan().StartsWith("version one"u8) || !live.AsSpan().StartsWith("VERSION TWO"u8)) return Fail("the versions read back are wrong");
            Step($"cow snapshot list {pool}");
            AnsiConsole.Write(SpaceTable(p, snapshotsOnly: false));
            long free0 = p.Live.StatFs().FreeBlocks;
            Step($"cow snapshot restore {pool} before /data.txt");
            Check(p.Snapshots.Restore("before", ["/data.txt"], false, out var changes, out _), "restore");
            foreach (var c in changes) AnsiConsole.WriteLine($"{SnapshotRestoreOps.ActionName(c.Action),-10}  {c.Path}");
            Check(ReadFile(p.Live, "/data.txt", out live), "read live");
            if (!live.AsSpan().SequenceEqual(v1)) return Fail("the restored file does not read back as the snapshot's version");
            Step($"cow snapshot list {pool}", "the restore wrote no data: the live file shares every block with 'before'");
            AnsiConsole.Write(SpaceTable(p, snapshotsOnly: false));
            AnsiConsole.WriteLine($"free space went from {Bytes(free0 * p.Live.StatFs().BlockSize)} to {Bytes(p.Live.StatFs().FreeBlocks * p.Live.StatFs().BlockSize)}");
        }
        Step($"cow fsck {pool}");
        using (var q = Pool.Open(folder))
        {
            var report = q.Fsck();
            AnsiConsole.MarkupLine(Markup.Escape(report.ToString()));
            if (keep)
                AnsiConsole.MarkupLine($"the pool stays in {Markup.Escape(pool)}: try [bold]cow ls {Markup.Escape(pool)} /[/], [bold]cow cat {Markup.Escape(pool)} /data.txt --snapshot before[/], [bold]cow snapshot list {Markup.Escape(pool)}[/]");
            return report.Clean ? 0 : 1;
        }
    }

    /// <summary>Referenced and exclusive bytes per snapshot (and of the live tree unless <paramref name="snapshotsOnly"/>).</summary>
    private static Table SpaceTable(Pool pool, bool snapshotsOnly)
    {
        var t = new Table().AddColumn("snapshot").AddColumn("generation").AddColumn("created (UTC)")
            .AddColumn(new TableColumn("referenced").RightAligned()).AddColumn(new TableColumn("exclusive").RightAligned());
        foreach (var s in pool.Snapshots.SpaceReport())
        {
            if (snapshotsOnly && s.Name == "") continue;
            t.AddRow(s.Name == "" ? "(live)" : Markup.Escape(s.Name), s.Generation.ToString(),
                s.Name == "" ? "" : DateTime.UnixEpoch.AddTicks(s.CreatedNs / 100).ToString("yyyy-MM-dd HH:mm:ss"),
                Bytes(s.ReferencedBytes), Bytes(s.ExclusiveBytes));
        }
        return t;
    }
}
