using System.CommandLine;
using Cow.Core;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Spectre.Console;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;

namespace Cow.Cli;

/// <summary><c>cow put</c>, <c>cow cat</c> and <c>cow ls</c>: files and directories of an unmounted pool (or of one of
/// its snapshots) through the engine's file API, and the <see cref="WriteFile"/> and <see cref="ReadFile"/> helpers
/// the demo uses too. Stateless: thread-safe.</summary>
internal static class FileCommands
{
    internal static Command Put()
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

    internal static Command Cat()
    {
        var path = new Argument<string>("path") { Description = "file path inside the pool" };
        var cmd = new Command("cat", "write a file of the pool (or of a snapshot) to standard output") { PoolArg, path, SnapOpt };
        cmd.SetAction(r => Guard(() =>
        {
            if (SnapshotOpsCore.PoolPathProblem(r.GetValue(path)!, "path") is { } notAbsolute) return Usage(notAbsolute);
            using var pool = OpenUnmounted(PoolOf(r), "cow cat", "read it under MP (snapshots under MP/.snapshots/NAME)");
            var fs = View(pool, r.GetValue(SnapOpt));
            if (fs == null) return Fail($"no snapshot named '{r.GetValue(SnapOpt)}'");
            using var o = Console.OpenStandardOutput();
            var e = CopyFile(fs, r.GetValue(path)!, o);
            if (e != 0) return Fail($"cat {r.GetValue(path)}: {Describe(e)}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>Copies the file at <paramref name="path"/> to <paramref name="output"/> 1 MiB at a time (a file of any
    /// size: not held in memory).</summary>
    internal static Errno CopyFile(FileSystemView fs, string path, Stream output)
    {
        var e = fs.Resolve(path, out var attr);
        if (e != 0) return e;
        if (attr.IsDirectory) return Errno.EISDIR;
        var buf = new byte[1 << 20];
        for (long off = 0; off < attr.Size;)
        {
            e = fs.Read(attr.Ino, off, buf.AsSpan(0, (int)Math.Min(buf.Length, attr.Size - off)), out int n);
            if (e != 0) return e;
            if (n == 0) break;
            output.Write(buf, 0, n);
            off += n;
        }
        return 0;
    }

    /// <summary>The whole file at <paramref name="path"/> in memory (small files: the demo's); EFBIG past 1 GiB.</summary>
    internal static Errno ReadFile(FileSystemView fs, string path, out byte[] bytes)
    {
        bytes = Array.Empty<byte>();
        var e = fs.Resolve(path, out var attr);
        if (e != 0) return e;
        if (attr.IsDirectory) return Errno.EISDIR;
        if (attr.Size > 1 << 30) return Errno.EFBIG;
        bytes = new byte[attr.Size];
        e = fs.Read(attr.Ino, 0, bytes, out int n);
        if (e == 0 && n != attr.Size) Array.Resize(ref bytes, n);
        return e;
    }

    internal static Command Ls()
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
                    rows.Add((System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject { ["name"] = d.Name, ["ino"] = a.Ino, ["mode"] = Convert.ToString(a.Mode, 8), ["size"] = a.Size });
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
}
