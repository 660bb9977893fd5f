using System.CommandLine;
using Cow.Core;
using Spectre.Console;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary><c>cow mkfs</c> (with <c>--import</c>), <c>cow df</c> and <c>cow fsck</c>: making, measuring and checking a
/// pool as a whole. Stateless: thread-safe.</summary>
internal static class PoolCommands
{
    /// <summary>A size as mkfs's --base-size and --log-size and cow device add's --size take it: bytes, or a whole
    /// number with K, M, G or T (powers of 1024). Throws <see cref="FormatException"/> with the message.</summary>
    internal static long ParseSize(string text)
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

    internal static Command Mkfs()
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
        var onDevices = new Option<bool>("--on-devices") { Description = "make a pool that lives on its devices, with no folder: POOL is the log device (a block device, or an image file made with --log-size), which also holds the metadata; --base-device is required. Implied when POOL is a block device" };
        var metaSize = new Option<string?>("--metadata-size") { Description = "with --on-devices: bytes of the log device kept for the metadata (default: an eighth of it, from 64M to 16G)" };
        var cmd = new Command("mkfs", "make a new pool: sparse image files in POOL by default, or a pool on its devices (--on-devices)") { PoolArg, baseSize, logSize, blockSize, baseDev, logDev, label, import, importRoot, force, onDevices, metaSize };
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
            var poolPath = r.GetValue(PoolArg)!;
            bool devicesPool = r.GetValue(onDevices) || IsBlockDevice(poolPath);
            if (devicesPool)
            {
                if (options.LogDevice != null) return Usage($"with --on-devices, POOL ({poolPath}) is the log device: drop --log-device {options.LogDevice}");
                if (options.BaseDevice == null) return Usage("a pool on its devices needs --base-device (a block device, or an image file made with --base-size)");
                if (sources.Count > 0) return Usage("--import and --import-root make a pool in a folder; a pool on its devices starts empty (copy the files in through its mount)");
                long? msz = null;
                if (r.GetValue(metaSize) is { } ms)
                {
                    try { msz = ParseSize(ms); }
                    catch (FormatException e) { return Usage(e.Message); }
                }
                using var made = Pool.CreateOnDevices(options with { LogDevice = poolPath, MetadataSize = msz });
                Console.WriteLine($"made pool {made.Uuid} on {made.Devices.Single(d => d.Cookie == Core.Format.FormatConstants.BaseCookie).Path} (base) and {made.Source} (log, with the metadata); block size {made.BlockSize}");
                Console.WriteLine($"open it through any of its devices: cow mount {made.Source} MNT");
                return 0;
            }
            if (r.GetValue(metaSize) != null) return Usage("--metadata-size is for a pool on its devices (--on-devices)");
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
            Pool Make(Action<string> status) => Core.Import.PoolImport.Create(r.GetValue(PoolArg)!, options, plan, status, cts.Token);
            // On a terminal a spinner names the file being copied; redirected output gets the plain lines only.
            using var pool = plan != null && Interactive
                ? AnsiConsole.Status().Start("importing", ctx => Make(what => ctx.Status(Markup.Escape($"importing {what}"))))
                : Make(_ => { });
            Console.WriteLine($"made pool {pool.Source} (uuid {pool.Uuid}, block size {pool.BlockSize}{(pool.Folder == null ? "; its metadata is on its log device: open it through any of its devices" : "")})");
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

    /// <summary><c>cow pool scan [PATH...] [--json]</c>: the Cow pools whose devices are on this machine's block devices
    /// (and in or beside the PATHs given: folders or image files), each with its label, uuid, where its metadata is
    /// and the devices found. Reads block 0 of each device; writes nothing; needs read access to the devices.</summary>
    internal static Command PoolGroup()
    {
        var paths = new Argument<string[]>("path") { Description = "folders or image files to look in besides the block devices", Arity = ArgumentArity.ZeroOrMore };
        var json = new Option<bool>("--json") { Description = "a JSON array of {uuid, label, metadata_device, devices: [{path, cookie, role, format_version, size_bytes}]}" };
        var scan = new Command("scan", "list the Cow pools found on this machine's block devices (and in or beside the paths given); a pool on its devices mounts with 'cow mount DEVICE MNT'") { paths, json };
        scan.SetAction(r => Guard(() =>
        {
            var found = Pool.Scan(r.GetValue(paths) ?? []);
            if (r.GetValue(json))
            {
                var arr = new System.Text.Json.Nodes.JsonArray();
                foreach (var p in found)
                    arr.Add((System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
                    {
                        ["uuid"] = p.Uuid.ToString(), ["label"] = p.Label, ["metadata_device"] = p.MetadataDevice,
                        ["devices"] = new System.Text.Json.Nodes.JsonArray(p.Devices.Select(d => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
                        {
                            ["path"] = d.Path, ["cookie"] = d.Cookie, ["role"] = d.Role.ToString().ToLowerInvariant(),
                            ["format_version"] = d.FormatVersion, ["size_bytes"] = d.SizeBytes,
                        }).ToArray()),
                    });
                Console.WriteLine(arr.ToJsonString(JsonOut));
                return 0;
            }
            if (found.Count == 0) { Console.WriteLine("no Cow pool found"); return 0; }
            foreach (var p in found)
            {
                Console.WriteLine($"pool {p.Uuid}{(p.Label.Length > 0 ? $" ({p.Label})" : "")}: "
                    + (p.MetadataDevice != null ? $"metadata on {p.MetadataDevice}; mount with: cow mount {p.MetadataDevice} MNT"
                        : "metadata in a pool folder (not on its devices), or on a device not found"));
                foreach (var d in p.Devices)
                    Console.WriteLine($"  {d.Cookie,4}  {d.Role.ToString().ToLowerInvariant(),-4}  {Bytes(d.SizeBytes),10}  {d.Path}");
            }
            return 0;
        }));
        return new Command("pool", "pools as a whole: find them on this machine's devices") { scan };
    }

    private static bool IsBlockDevice(string path) =>
        Mono.Unix.Native.Syscall.stat(path, out var st) == 0 && (st.st_mode & Mono.Unix.Native.FilePermissions.S_IFMT) == Mono.Unix.Native.FilePermissions.S_IFBLK;

    private static bool IsSymlink(string path)
    {
        try { return new FileInfo(path).LinkTarget != null; } catch (IOException) { return false; }
    }

    internal static Command Df()
    {
        var json = new Option<bool>("--json") { Description = "one JSON object {block_size, blocks, used_blocks, free_blocks, size_bytes, used_bytes, free_bytes (the pool as df(1) on the mount shows it), devices: [{cookie, role, path, size_bytes, data_bytes, used_bytes, free_bytes, takes_writes}], views: [{name (\"\" for the live tree), generation, created_utc, referenced_bytes, exclusive_bytes, holds, properties}], cleaner: {background, state, blocks_moved, bytes_moved, segments_cleaned, passes, log_data_blocks, log_free_blocks, log_free_bytes, log_free_percent, last_pass}}" };
        var cmd = new Command("df", "space of the pool: size, used and free bytes per device, per snapshot referenced and exclusive bytes, and what the log cleaner has done (on a mounted pool through the process that mounted it: cow mount or cow serve)") { PoolArg, json };
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
                Console.WriteLine("size = every device's data blocks less a 1 % reserve; new writes go to the log device, and to the base device when the log is full");
                if (doc["cleaner"] is System.Text.Json.Nodes.JsonObject cleaner)
                    foreach (var line in CleanerReport.StatusLines(cleaner)) Console.WriteLine(line);
                var devices = new Table().AddColumn("device").AddColumn("role").AddColumn("path")
                    .AddColumn(new TableColumn("size").RightAligned()).AddColumn(new TableColumn("used").RightAligned())
                    .AddColumn(new TableColumn("free").RightAligned()).AddColumn("new writes");
                foreach (var d in ((System.Text.Json.Nodes.JsonArray?)doc["devices"] ?? []).OfType<System.Text.Json.Nodes.JsonObject>())
                    devices.AddRow(((long)d["cookie"]!).ToString(), Markup.Escape((string?)d["role"] ?? ""), Markup.Escape((string?)d["path"] ?? ""),
                        Bytes((long)d["size_bytes"]!), Bytes((long)d["used_bytes"]!), Bytes((long)d["free_bytes"]!), (bool)d["takes_writes"]! ? "yes" : "no");
                AnsiConsole.Write(devices);
                SnapshotCommands.PrintSnapshotRows((System.Text.Json.Nodes.JsonArray)doc["views"]!, json: false);
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

    internal static Command Fsck()
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
}
