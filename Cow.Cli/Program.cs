using System.CommandLine;
using Spectre.Console;

namespace Cow.Cli;

/// <summary>The <c>cow</c> command: its entry point and the table of verbs; each verb family lives in its own type
/// (<see cref="PoolCommands"/>, <see cref="FileCommands"/>, <see cref="SnapshotCommands"/>, <see cref="MountCommands"/>, <see cref="CleanCommand"/>, <see cref="DeviceCommands"/>,
/// <see cref="ServiceCommands"/>, <see cref="Service.ServeCommand"/>, <see cref="DemoCommand"/>), sharing
/// <see cref="CliCommon"/>, <see cref="PoolLocator"/> and <see cref="ServiceRouting"/>. Exit codes: 0 success, 1 the
/// operation failed (the message says why), 2 bad usage, 3 <c>cow mount --iomap on</c> refused because the kernel
/// does not grant fuse-iomap (<see cref="MountCommands.ExitIomapUnavailable"/>).</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        // Redirected output (logs, pipes, CI) has no width: Spectre would wrap every line and table at 80
        // columns, splitting values such as UUIDs and paths. Lines and tables keep their natural width there.
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 1000;
        if (FrontEnd.Active && !FrontEnd.Serves(args)) FrontEnd.HandOver();   // the fast front end runs only socket verbs
        var root = new RootCommand("Cow: a copy-on-write snapshot filesystem. Pools are folders holding image files (or naming block devices) and a metadata file.");
        root.Subcommands.Add(PoolCommands.Mkfs());
        root.Subcommands.Add(PoolCommands.PoolGroup());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(FileCommands.Put());
        root.Subcommands.Add(FileCommands.Cat());
        root.Subcommands.Add(FileCommands.Ls());
        root.Subcommands.Add(SnapshotCommands.Create());
        root.Subcommands.Add(PoolCommands.Df());
        root.Subcommands.Add(ScrubCommand.Create());
        root.Subcommands.Add(PoolCommands.Fsck());
        root.Subcommands.Add(CleanCommand.Create());
        root.Subcommands.Add(ReplicationCommands.Send());
        root.Subcommands.Add(ReplicationCommands.Receive());
        root.Subcommands.Add(ReplicationCommands.Stream());
        root.Subcommands.Add(ReplicationCommands.Replicate());
        root.Subcommands.Add(DeviceCommands.Create());
        root.Subcommands.Add(MountCommands.Mount());
        root.Subcommands.Add(MountCommands.Umount());
        root.Subcommands.Add(Service.ServeCommand.Create());
        root.Subcommands.Add(ServiceCommands.Status());
        root.Subcommands.Add(ServiceCommands.ControlRequest());
        var parsed = root.Parse(args);
        int rc = parsed.Invoke();
        // System.CommandLine reports usage errors (with help) and returns 1; scripts get 2 for bad usage.
        return parsed.Errors.Count > 0 ? 2 : rc;
    }
}
