using System.Runtime.InteropServices;
using Mono.Unix.Native;
using Spectre.Console;
using static Cow.Cli.CliCommon;

namespace Cow.Cli;

/// <summary>Snapshots of a pool mounted by a process without a control socket, taken through the mount itself:
/// mkdir and rmdir in MOUNT/.snapshots (after a syncfs of the mount), listing by reading that directory. The
/// service uses <see cref="SnapshotOnMount"/> and <see cref="SyncMount"/> for the pools it mounts. Stateless:
/// thread-safe.</summary>
internal static class MountedSnapshots
{
    [DllImport("libc", SetLastError = true)]
    private static extern int syncfs(int fd);

    /// <summary>
    /// Creates (mkdir) or deletes (rmdir) MOUNT/.snapshots/NAME. Before a create, syncfs pushes the kernel's
    /// dirty pages of the mount (writeback cache) to the server, so every write that returned before this
    /// call is in the snapshot. Returns 0, or the errno and a message for the administrator. Thread-safe
    /// (the control socket calls it from several connections).
    /// </summary>
    internal static (Errno Code, string? Message) SnapshotOnMount(string mountPoint, string name, bool create)
    {
        var path = Path.Combine(mountPoint, ".snapshots", name);
        if (create)
        {
            if (SyncMount(mountPoint, name) is { } fail) return fail;
            if (Syscall.mkdir(path, FilePermissions.ACCESSPERMS) != 0)
            {
                var e = Stdlib.GetLastError();
                return (e, e == Errno.EEXIST ? $"a snapshot named '{name}' already exists" : $"snapshot create {name} on {mountPoint}: {Describe(e)}");
            }
            return (0, null);
        }
        if (Syscall.rmdir(path) != 0)
        {
            var e = Stdlib.GetLastError();
            return (e, e == Errno.ENOENT ? $"no snapshot named '{name}'" : $"snapshot delete {name} on {mountPoint}: {Describe(e)}");
        }
        return (0, null);
    }

    /// <summary>syncfs of a mount before snapshot <paramref name="name"/> is taken; null when done, else the errno
    /// and a message. Thread-safe.</summary>
    internal static (Errno Code, string Message)? SyncMount(string mountPoint, string name)
    {
        int fd = Syscall.open(mountPoint, OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY | OpenFlags.O_CLOEXEC);
        if (fd < 0) { var oe = Stdlib.GetLastError(); return (oe, $"snapshot create {name}: cannot open {mountPoint}: {Describe(oe)}"); }
        int rc = syncfs(fd);
        Errno se = rc != 0 ? Stdlib.GetLastError() : 0;
        Syscall.close(fd);
        if (rc != 0) return (se, $"snapshot create {name}: syncfs of {mountPoint} failed ({Describe(se)}): writes not yet on the pool would be missing from the snapshot, so none was taken");
        return null;
    }

    internal static int SnapshotThroughMount(string mountPoint, string name, bool create)
    {
        var (code, message) = SnapshotOnMount(mountPoint, name, create);
        if (code != 0) return Fail(message!);
        if (create) Console.WriteLine($"snapshot '{name}' of {mountPoint}");
        return 0;
    }

    /// <summary>The snapshot names of a mounted pool (its .snapshots directory), or an error message.</summary>
    internal static (string? Error, string[]? Names) ListSnapshotsOnMount(string mountPoint)
    {
        try { return (null, Directory.EnumerateDirectories(Path.Combine(mountPoint, ".snapshots")).Select(d => Path.GetFileName(d)!).Order(StringComparer.Ordinal).ToArray()); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return ($"cannot list {mountPoint}/.snapshots: {e.Message}", null); }
    }

    internal static int ListThroughMount(string mountPoint, bool json)
    {
        var (err, names) = ListSnapshotsOnMount(mountPoint);
        if (err != null) return Fail(err);
        if (json)
        {
            // Only the names are known through a mount: the other fields of the row are absent.
            var rows = new System.Text.Json.Nodes.JsonArray(names!.Select(n => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject { ["name"] = n }).ToArray());
            Console.WriteLine(rows.ToJsonString(JsonOut));
            return 0;
        }
        PrintSnapshotNames(names!);
        Console.WriteLine($"(pool mounted on {mountPoint}; space per snapshot is shown by 'cow snapshot list' on an unmounted pool)");
        return 0;
    }

    private static void PrintSnapshotNames(IEnumerable<string> names)
    {
        var t = new Table().AddColumn("snapshot");
        foreach (var d in names) t.AddRow(Markup.Escape(d));
        AnsiConsole.Write(t);
    }
}
