using System.Runtime.InteropServices;
using Cow.Fuse.Mounting;
using Mono.Unix.Native;
using Spectre.Console;

namespace Cow.Cli;

public static partial class Program
{
    /// <summary>
    /// The mount point serving <paramref name="poolOrMountPoint"/>: the path itself when it is a Cow mount
    /// point, or the mount point of the pool folder it names when that pool is mounted (the server holds the
    /// pool's lock, so snapshot commands go through the mount). Null when not mounted.
    /// </summary>
    private static string? MountedAt(string poolOrMountPoint)
    {
        var path = MountTable.Normalize(poolOrMountPoint);
        List<MountEntry> mounts;
        try { mounts = MountTable.Read(); } catch (IOException) { return null; }
        var at = mounts.LastOrDefault(m => m.MountPoint == path);
        if (at != null && at.IsCow) return path;
        return mounts.LastOrDefault(m => m.IsCow && m.Source == path && m.Options.Split(',').Contains("rw"))?.MountPoint;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int syncfs(int fd);

    /// <summary>
    /// Creates (mkdir) or deletes (rmdir) MOUNT/.snapshots/NAME. Before a create, syncfs pushes the kernel's
    /// dirty pages of the mount (writeback cache) to the server, so every write that returned before this
    /// command is in the snapshot.
    /// </summary>
    private static int SnapshotThroughMount(string mountPoint, string name, bool create)
    {
        var path = Path.Combine(mountPoint, ".snapshots", name);
        if (create)
        {
            int fd = Syscall.open(mountPoint, OpenFlags.O_RDONLY | OpenFlags.O_DIRECTORY);
            if (fd >= 0) { syncfs(fd); Syscall.close(fd); }
            if (Syscall.mkdir(path, FilePermissions.ACCESSPERMS) != 0)
            {
                var e = Stdlib.GetLastError();
                return Fail(e == Errno.EEXIST ? $"a snapshot named '{name}' already exists" : $"snapshot create {name} on {mountPoint}: {Describe(e)}");
            }
            Console.WriteLine($"snapshot '{name}' of {mountPoint}");
            return 0;
        }
        if (Syscall.rmdir(path) != 0)
        {
            var e = Stdlib.GetLastError();
            return Fail(e == Errno.ENOENT ? $"no snapshot named '{name}'" : $"snapshot delete {name} on {mountPoint}: {Describe(e)}");
        }
        return 0;
    }

    private static int ListThroughMount(string mountPoint)
    {
        var dir = Path.Combine(mountPoint, ".snapshots");
        var t = new Table().AddColumn("snapshot");
        foreach (var d in Directory.EnumerateDirectories(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal)) t.AddRow(Markup.Escape(d!));
        AnsiConsole.Write(t);
        Console.WriteLine($"(pool mounted on {mountPoint}; space per snapshot is shown by 'cow snapshot list' on an unmounted pool)");
        return 0;
    }
}
