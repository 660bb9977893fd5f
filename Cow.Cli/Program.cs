using System.CommandLine;
using System.Text;
using Cow.Core;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Spectre.Console;

namespace Cow.Cli;

/// <summary>The <c>cow</c> command. Exit codes: 0 success, 1 the operation failed (the message says why),
/// 2 bad usage, 3 <c>cow mount --iomap on</c> refused because the kernel does not grant fuse-iomap.</summary>
public static partial class Program
{
    public static int Main(string[] args)
    {
        // Redirected output (logs, pipes, CI) has no width: Spectre would wrap every line and table at 80
        // columns, splitting values such as UUIDs and paths. Lines and tables keep their natural width there.
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 1000;
        var root = new RootCommand("Cow: a copy-on-write snapshot filesystem. Pools are folders holding image files (or naming block devices) and a metadata file.");
        root.Subcommands.Add(Mkfs());
        root.Subcommands.Add(Demo());
        root.Subcommands.Add(Put());
        root.Subcommands.Add(Cat());
        root.Subcommands.Add(Ls());
        root.Subcommands.Add(Snapshot());
        root.Subcommands.Add(Df());
        root.Subcommands.Add(FsckCommand());
        root.Subcommands.Add(MountCommand());
        root.Subcommands.Add(UmountCommand());
        root.Subcommands.Add(Service.ServeCommand.Create());
        root.Subcommands.Add(StatusCommand());
        root.Subcommands.Add(ControlRequestCommand());
        var parsed = root.Parse(args);
        int rc = parsed.Invoke();
        // System.CommandLine reports usage errors (with help) and returns 1; scripts get 2 for bad usage.
        return parsed.Errors.Count > 0 ? 2 : rc;
    }

    private static readonly Argument<string> PoolArg = new("pool") { Description = "pool folder" };

    /// <summary>Runs a command body, turning the administrator-facing errors into a message and exit code 1.</summary>
    private static int Guard(Func<int> body)
    {
        try { return body(); }
        catch (PoolException e) { Console.Error.WriteLine($"cow: {e.Message}"); return 1; }
        catch (IOException e) { Console.Error.WriteLine($"cow: {e.Message}"); return 1; }
        catch (UnauthorizedAccessException e) { Console.Error.WriteLine($"cow: {e.Message}"); return 1; }
    }

    /// <summary>Progress displays only when stdout is a terminal that Spectre can draw on.</summary>
    private static bool Interactive => !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Opens a pool folder for a command that works on an unmounted pool. When POOL is a Cow mount point
    /// or the folder of a pool mounted by <c>cow mount</c>, says so and what to do instead of the generic
    /// "not a Cow pool" / "already open" messages (<paramref name="instead"/>: where else the answer is).</summary>
    private static Pool OpenUnmounted(string poolArg, string verb, string instead, bool viaService = false)
    {
        if (MountedAt(poolArg) is { } mp)
            throw new PoolException($"the pool is mounted at {mp} and {verb} opens the pool folder itself: {instead.Replace("MP", mp)}, "
                                    + $"or unmount it first ('cow umount {mp}')"
                                    + (viaService ? $"; a pool mounted by cow mount or cow serve answers {verb} through its control socket, which the process holding this one does not have" : ""));
        return Pool.Open(poolArg);
    }

    private static int Fail(string message) { Console.Error.WriteLine($"cow: {message}"); return 1; }

    private static string Describe(Errno e) => $"{e} ({Syscall.strerror(e)})";

    private static long ParseSize(string text)
    {
        var s = text.Trim();
        long mult = 1;
        if (s.Length > 0 && "KMGT".Contains(char.ToUpperInvariant(s[^1])))
        {
            mult = char.ToUpperInvariant(s[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1L << 40 };
            s = s[..^1];
        }
        if (!long.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long v) || v <= 0)
            throw new FormatException($"'{text}' is not a size (use e.g. 512M, 4G)");
        if (v > long.MaxValue / mult) throw new FormatException($"'{text}' is too large a size (at most {long.MaxValue / (1L << 40)}T)");
        return v * mult;
    }

    private static Command Mkfs()
    {
        var baseSize = new Option<string>("--base-size") { Description = "size of a new base image", DefaultValueFactory = _ => "1G" };
        var logSize = new Option<string>("--log-size") { Description = "size of a new log image", DefaultValueFactory = _ => "4G" };
        var blockSize = new Option<int>("--block-size") { Description = "bytes per block (4096..65536, power of two)", DefaultValueFactory = _ => 4096 };
        var baseDev = new Option<string?>("--base-device") { Description = "block device or image file to use as the base device" };
        var logDev = new Option<string?>("--log-device") { Description = "block device or image file to use as the log device" };
        var label = new Option<string>("--label") { Description = "pool label", DefaultValueFactory = _ => "" };
        var import = new Option<string[]>("--import") { Description = "file or directory that becomes /NAME in the pool (its base name), placed on the base device with its modes, owners, times, symlinks, hard links, xattrs and ACLs, holes, fifos and device nodes (repeatable)", AllowMultipleArgumentsPerToken = true };
        var importRoot = new Option<string?>("--import-root") { Description = "directory whose contents become the pool's root (and whose own mode, owner, times and xattrs the root takes), like --import" };
        var force = new Option<bool>("--force") { Description = "format given devices even if they hold another Cow pool (destroys it)" };
        var cmd = new Command("mkfs", "make a new pool: sparse image files in POOL by default") { PoolArg, baseSize, logSize, blockSize, baseDev, logDev, label, import, importRoot, force };
        cmd.SetAction(r => Guard(() =>
        {
            long bsz, lsz;
            try { bsz = ParseSize(r.GetValue(baseSize)!); lsz = ParseSize(r.GetValue(logSize)!); }
            catch (FormatException e) { return Usage(e.Message); }   // a malformed size is bad usage: exit 2
            if (Pool.BlockSizeProblem(r.GetValue(blockSize)) is { } badBlockSize) return Usage(badBlockSize);
            // A source is named by its last path component, of its full path ('--import .' takes the current directory's name).
            var sources = (r.GetValue(import) ?? Array.Empty<string>()).Select(src => (Path: src, Name: (string?)Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(src))))).ToList();
            if (sources.FirstOrDefault(s => string.IsNullOrEmpty(s.Name)) is { Path: { } nameless })
                return Fail($"import source {nameless} has no name to take in the pool; use --import-root {nameless} to make its contents the pool's root");
            if (r.GetValue(importRoot) is { } rootSource) sources.Insert(0, (rootSource, null));
            // What can be known before the pool exists is checked first: a refused import makes no pool.
            foreach (var (src, _) in sources)
                if (!File.Exists(src) && !Directory.Exists(src) && !IsSymlink(src))
                    return Fail($"import source {src} does not exist (or cannot be reached); no pool was made");
            if (sources.Where(s => s.Name != null).GroupBy(s => s.Name).FirstOrDefault(g => g.Count() > 1) is { } twice)
                return Fail($"import sources {string.Join(" and ", twice.Select(s => s.Path))} would both become /{twice.Key}; no pool was made");
            var options = new PoolCreateOptions
            {
                BaseSize = bsz, LogSize = lsz, BlockSize = r.GetValue(blockSize), BaseDevice = r.GetValue(baseDev),
                LogDevice = r.GetValue(logDev), Label = r.GetValue(label)!, Force = r.GetValue(force),
            };
            Core.Import.ImportPlan? plan = null;
            if (sources.Count > 0)
            {
                try { plan = Core.Import.ImportPlan.Scan(sources, options.BlockSize); }
                catch (PoolException e) { return Fail($"{e.Message}; no pool was made"); }
            }
            // Ctrl-C (and SIGTERM, SIGHUP) while mkfs runs: stop, undo mkfs, exit 1.
            using var cts = new CancellationTokenSource();
            using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; cts.Cancel(); });
            using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; cts.Cancel(); });
            using var sighup = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGHUP, c => { c.Cancel = true; cts.Cancel(); });
            Pool Make(Action<string> status) => Pool.CreateWithImport(r.GetValue(PoolArg)!, options, plan, status, cts.Token);
            // On a terminal a spinner names the file being copied; redirected output gets the plain lines only.
            using var pool = plan != null && Interactive
                ? AnsiConsole.Status().Start("importing", ctx => Make(what => ctx.Status(Markup.Escape($"importing {what}"))))
                : Make(_ => { });
            Console.WriteLine($"made pool {pool.Folder} (uuid {pool.Uuid}, block size {pool.BlockSize})");
            if (plan != null)
            {
                long used = pool.DeviceUsage().Single(u => u.Cookie == Core.Format.FormatConstants.BaseCookie).UsedBlocks;
                foreach (var (src, name) in sources) Console.WriteLine($"imported {src} as /{name}{(name == null ? " (the pool's root)" : "")}");
                Console.WriteLine($"imported {plan.Files:N0} files, {plan.Directories:N0} directories, {plan.Others:N0} other nodes: "
                                  + $"{Bytes(used * pool.BlockSize)} of data on the base device");
            }
            return 0;
        }));
        return cmd;
    }

    private static bool IsSymlink(string path)
    {
        try { return new FileInfo(path).LinkTarget != null; } catch (IOException) { return false; }
    }

    private static Command Put()
    {
        var path = new Argument<string>("path") { Description = "file path inside the pool, e.g. /notes.txt" };
        var cmd = new Command("put", "write standard input to a file in the pool (created or replaced), then fsync") { PoolArg, path };
        cmd.SetAction(r => Guard(() =>
        {
            if (SnapshotOpsCore.PoolPathProblem(r.GetValue(path)!, "path") is { } notAbsolute) return Usage(notAbsolute);
            using var pool = OpenUnmounted(PoolOf(r), "cow put", "write the file under MP instead");
            using var stdin = Console.OpenStandardInput();
            var e = WriteFile(pool.Live, r.GetValue(path)!, stdin);
            return e == 0 ? 0 : Fail($"put {r.GetValue(path)}: {Describe(e)}");
        }));
        return cmd;
    }

    /// <summary>Creates or truncates <paramref name="path"/> and copies <paramref name="source"/> into it, then fsyncs.</summary>
    internal static Errno WriteFile(FileSystemView fs, string path, Stream source)
    {
        var e = fs.ResolveParent(path, out long parent, out string name);
        if (e != 0) return e;
        e = fs.Lookup(parent, name, out var attr);
        if (e == Errno.ENOENT) e = fs.Create(parent, name, 0x1A4, 0, 0, out attr);
        else if (e == 0) e = fs.SetAttr(attr.Ino, new SetAttrRequest { Size = 0 }, out attr);
        if (e != 0) return e;
        var buf = new byte[1 << 20];
        long off = 0;
        for (int n; (n = source.Read(buf)) > 0; off += n)
        {
            e = fs.Write(attr.Ino, off, buf.AsSpan(0, n), out _);
            if (e != 0) return e;
        }
        return fs.Fsync(attr.Ino);
    }

    private static readonly Option<string?> SnapOpt = new("--snapshot") { Description = "read from this snapshot instead of the live tree" };

    private static FileSystemView? View(Pool pool, string? snapshot) => snapshot == null ? pool.Live : pool.Snapshot(snapshot);

    private static Command Cat()
    {
        var path = new Argument<string>("path") { Description = "file path inside the pool" };
        var cmd = new Command("cat", "write a file of the pool (or of a snapshot) to standard output") { PoolArg, path, SnapOpt };
        cmd.SetAction(r => Guard(() =>
        {
            if (SnapshotOpsCore.PoolPathProblem(r.GetValue(path)!, "path") is { } notAbsolute) return Usage(notAbsolute);
            using var pool = OpenUnmounted(PoolOf(r), "cow cat", "read it under MP (snapshots under MP/.snapshots/NAME)");
            var fs = View(pool, r.GetValue(SnapOpt));
            if (fs == null) return Fail($"no snapshot named '{r.GetValue(SnapOpt)}'");
            var e = ReadFile(fs, r.GetValue(path)!, out var bytes);
            if (e != 0) return Fail($"cat {r.GetValue(path)}: {Describe(e)}");
            using var o = Console.OpenStandardOutput();
            o.Write(bytes);
            return 0;
        }));
        return cmd;
    }

    internal static Errno ReadFile(FileSystemView fs, string path, out byte[] bytes)
    {
        bytes = Array.Empty<byte>();
        var e = fs.Resolve(path, out var attr);
        if (e != 0) return e;
        if (attr.IsDirectory) return Errno.EISDIR;
        bytes = new byte[attr.Size];
        e = fs.Read(attr.Ino, 0, bytes, out int n);
        if (e == 0 && n != attr.Size) Array.Resize(ref bytes, n);
        return e;
    }

    private static Command Ls()
    {
        var path = new Argument<string>("path") { Description = "directory inside the pool", DefaultValueFactory = _ => "/" };
        var json = new Option<bool>("--json") { Description = "one JSON array of {name, ino, mode, size} (mode in octal text)" };
        var cmd = new Command("ls", "list a directory of the pool (or of a snapshot)") { PoolArg, path, SnapOpt, json };
        cmd.SetAction(r => Guard(() =>
        {
            if (SnapshotOpsCore.PoolPathProblem(r.GetValue(path)!, "path") is { } notAbsolute) return Usage(notAbsolute);
            using var pool = OpenUnmounted(PoolOf(r), "cow ls", "list MP itself (snapshots under MP/.snapshots)");
            var fs = View(pool, r.GetValue(SnapOpt));
            if (fs == null) return Fail($"no snapshot named '{r.GetValue(SnapOpt)}'");
            var e = fs.Resolve(r.GetValue(path)!, out var dir);
            if (e != 0) return Fail($"ls {r.GetValue(path)}: {Describe(e)}");
            var entries = new List<DirEntryInfo>();
            e = fs.ReadDir(dir.Ino, 2, int.MaxValue, entries);
            if (e != 0) return Fail($"ls {r.GetValue(path)}: {Describe(e)}");
            if (r.GetValue(json))
            {
                var rows = new System.Text.Json.Nodes.JsonArray();
                foreach (var d in entries)
                {
                    fs.GetAttr(d.Ino, out var a);
                    rows.Add(new System.Text.Json.Nodes.JsonObject { ["name"] = d.Name, ["ino"] = a.Ino, ["mode"] = Convert.ToString(a.Mode, 8), ["size"] = a.Size });
                }
                Console.WriteLine(rows.ToJsonString(JsonOut));
                return 0;
            }
            var table = new Table().AddColumn("inode").AddColumn("mode").AddColumn(new TableColumn("size").RightAligned()).AddColumn("name");
            foreach (var d in entries)
            {
                fs.GetAttr(d.Ino, out var a);
                table.AddRow(a.Ino.ToString(), Convert.ToString(a.Mode, 8), a.Size.ToString("N0"), Markup.Escape(d.Name));
            }
            AnsiConsole.Write(table);
            return 0;
        }));
        return cmd;
    }

    private static Command Snapshot()
    {
        var name = new Argument<string>("name") { Description = "snapshot name" };
        var create = new Command("create", "take a snapshot of the live tree (constant time, durable when it returns); POOL may be a pool folder or the mount point of a mounted pool") { PoolArg, name };
        create.SetAction(r => Guard(() =>
        {
            var n = r.GetValue(name)!;
            if (PoolSnapshots.NameProblem(n) is { } problem) return Usage(problem);
            var poolArg = PoolOf(r);
            if (SnapshotViaService(poolArg, n, create: true) is int viaService) return viaService;
            if (MountedAt(poolArg) is { } mp) return SnapshotThroughMount(mp, n, create: true);
            using var pool = Pool.Open(poolArg);
            var e = pool.Snapshots.Create(n, out var s);
            if (e == Errno.EEXIST) return Fail($"a snapshot named '{n}' already exists");
            if (e != 0) return Fail($"snapshot create {n}: {Describe(e)}");
            Console.WriteLine($"snapshot '{s!.Name}' at generation {s.Gen}");
            return 0;
        }));
        var delete = new Command("delete", "delete a snapshot and free what only it held") { PoolArg, name };
        delete.SetAction(r => Guard(() =>
        {
            var poolArg = PoolOf(r);
            if (SnapshotViaService(poolArg, r.GetValue(name)!, create: false) is int viaService) return viaService;
            if (MountedAt(poolArg) is { } mp) return SnapshotThroughMount(mp, r.GetValue(name)!, create: false);
            using var pool = Pool.Open(poolArg);
            var e = Busy($"deleting snapshot '{r.GetValue(name)}'", () => pool.Snapshots.Delete(r.GetValue(name)!));
            if (e == 0) Console.WriteLine($"snapshot '{r.GetValue(name)}' deleted");
            return e switch
            {
                0 => 0,
                Errno.ENOENT => Fail($"no snapshot named '{r.GetValue(name)}'"),
                Errno.EBUSY => Fail(HeldMessage(pool, r.GetValue(name)!)),
                _ => Fail(Describe(e)),
            };
        }));
        var listJson = new Option<bool>("--json") { Description = "one JSON array of {name, generation, created_utc, referenced_bytes, exclusive_bytes, holds, properties}" };
        var list = new Command("list", "list snapshots with the bytes each references and holds alone, their holds and properties") { PoolArg, listJson };
        list.SetAction(r => Guard(() =>
        {
            bool j = r.GetValue(listJson);
            var poolArg = PoolOf(r);
            if (ListViaService(poolArg, j) is int viaService) return viaService;
            if (MountedAt(poolArg) is { } mp) return ListThroughMount(mp, j);
            using var pool = Pool.Open(poolArg);
            PrintSnapshotRows(SnapshotOpsCore.SnapshotRows(pool, includeLive: false), j);
            return 0;
        }));
        return new Command("snapshot", "create, list and delete snapshots") { create, list, delete,
            SnapshotHoldCommand(),
            SnapshotReleaseCommand(),
            SnapshotRollbackCommand(),
            SnapshotCloneCommand(),
            SnapshotRestoreCommand(),
            SnapshotDiffCommand(),
            SnapshotWrapCommand(),
        };
    }

    /// <summary>Snapshot rows (<see cref="SnapshotOpsCore.SnapshotRows"/>) as a table or one JSON array.</summary>
    private static void PrintSnapshotRows(System.Text.Json.Nodes.JsonArray rows, bool json)
    {
        if (json) { Console.WriteLine(rows.ToJsonString(JsonOut)); return; }
        var t = new Table().AddColumn("snapshot").AddColumn("generation").AddColumn("created (UTC)")
            .AddColumn(new TableColumn("referenced").RightAligned()).AddColumn(new TableColumn("exclusive").RightAligned())
            .AddColumn("holds").AddColumn("properties");
        foreach (var s in rows.OfType<System.Text.Json.Nodes.JsonObject>())
        {
            var name = (string)s["name"]!;
            var holds = string.Join(", ", ((System.Text.Json.Nodes.JsonArray)s["holds"]!).Select(h => (string)h!));
            var props = string.Join(", ", ((System.Text.Json.Nodes.JsonObject)s["properties"]!).Select(kv => $"{kv.Key}={(string)kv.Value!}"));
            t.AddRow(name == "" ? "(live)" : Markup.Escape(name), ((long)s["generation"]!).ToString(),
                ((string?)s["created_utc"])?.Replace('T', ' ')[..19] ?? "",
                Bytes((long)s["referenced_bytes"]!), Bytes((long)s["exclusive_bytes"]!), Markup.Escape(holds), Markup.Escape(props));
        }
        AnsiConsole.Write(t);
    }

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

    private static string Bytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F2} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };

    private static Command Df()
    {
        var json = new Option<bool>("--json") { Description = "one JSON object {block_size, blocks, used_blocks, free_blocks, size_bytes, used_bytes, free_bytes (the pool as df(1) on the mount shows it), devices: [{cookie, role, path, size_bytes, data_bytes, used_bytes, free_bytes, takes_writes}], views: [{name (\"\" for the live tree), generation, created_utc, referenced_bytes, exclusive_bytes, holds, properties}]}" };
        var cmd = new Command("df", "space of the pool: size, used and free bytes per device, and per snapshot referenced and exclusive bytes (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, json };
        cmd.SetAction(r => Guard(() =>
        {
            int Print(System.Text.Json.Nodes.JsonObject doc)
            {
                if (r.GetValue(json))
                {
                    foreach (var k in new[] { "ok", "pool", "mountpoint" }) doc.Remove(k);
                    Console.WriteLine(doc.ToJsonString(JsonOut));
                    return 0;
                }
                long bs = (long)doc["block_size"]!, blocks = (long)doc["blocks"]!, used = (long)doc["used_blocks"]!, free = (long)doc["free_blocks"]!;
                Console.WriteLine($"pool: size {Bytes(blocks * bs)}, used {Bytes(used * bs)}, free for new writes {Bytes(free * bs)} "
                                  + $"({blocks:N0} / {used:N0} / {free:N0} blocks of {bs} bytes; df(1) on the mount shows the same)");
                Console.WriteLine("size = used + free for new writes: a device that takes no new writes (the base device) counts only its used part");
                var devices = new Table().AddColumn("device").AddColumn("role").AddColumn("path")
                    .AddColumn(new TableColumn("size").RightAligned()).AddColumn(new TableColumn("used").RightAligned())
                    .AddColumn(new TableColumn("free").RightAligned()).AddColumn("new writes");
                foreach (var d in ((System.Text.Json.Nodes.JsonArray?)doc["devices"] ?? []).OfType<System.Text.Json.Nodes.JsonObject>())
                    devices.AddRow(((long)d["cookie"]!).ToString(), Markup.Escape((string?)d["role"] ?? ""), Markup.Escape((string?)d["path"] ?? ""),
                        Bytes((long)d["size_bytes"]!), Bytes((long)d["used_bytes"]!), Bytes((long)d["free_bytes"]!), (bool)d["takes_writes"]! ? "yes" : "no");
                AnsiConsole.Write(devices);
                PrintSnapshotRows((System.Text.Json.Nodes.JsonArray)doc["views"]!, json: false);
                return 0;
            }
            var poolArg = PoolOf(r);
            var viaService = ViaService(poolArg, (c, p) =>
                ServiceResult(c.Request(new System.Text.Json.Nodes.JsonObject { ["verb"] = "df", ["pool"] = (string?)p["name"] }), Print));
            if (viaService is int rc) return rc;
            using var pool = OpenUnmounted(poolArg, "cow df", "df(1) on MP shows its free space", viaService: true);
            return Print(SnapshotOpsCore.DfDocument(pool));
        }));
        return cmd;
    }

    private static Command FsckCommand()
    {
        var noData = new Option<bool>("--no-data") { Description = "skip reading every data block to verify its checksum" };
        var cmd = new Command("fsck", "check every invariant of the pool; exit 0 if clean, 1 if not") { PoolArg, noData };
        cmd.SetAction(r => Guard(() =>
        {
            using var pool = OpenUnmounted(PoolOf(r), "cow fsck", "a mounted pool changes under a check");
            bool verify = !r.GetValue(noData);
            Core.Check.FsckReport report = null!;
            if (verify && Interactive)
                // A bar while the data blocks are read (only on a terminal: redirected output stays plain).
                AnsiConsole.Progress().AutoClear(true).Start(ctx =>
                {
                    var task = ctx.AddTask("fsck: verifying data blocks", maxValue: 1);
                    report = pool.Fsck(true, (done, total) => { task.MaxValue = Math.Max(1, total); task.Value = done; });
                    task.Value = task.MaxValue;
                });
            else report = pool.Fsck(verifyData: verify);
            Console.WriteLine(report.ToString());
            return report.Clean ? 0 : 1;
        }));
        return cmd;
    }

    private static void Check(Errno e, string what)
    {
        if (e != 0) throw new IOException($"{what}: {Describe(e)}");
    }
}
