using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Core;
using Cow.Core.Retention;
using Mono.Unix.Native;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary>
/// <c>cow snapshot wrap [--name PREFIX] POOL -- COMMAND ARGS...</c>: a pre snapshot (properties <c>kind=pre</c>,
/// <c>command</c>), the command (stdin, stdout and stderr inherited; cow ignores SIGINT and SIGQUIT meanwhile,
/// which the terminal sends to the command too, and passes SIGTERM and SIGHUP on to it), then a post snapshot
/// (<c>kind=post</c>, <c>pre</c>=the pre snapshot's name, <c>command</c>, <c>exit_code</c>); exits with the command's
/// exit code. Names: <c>PREFIX-pre-YYYYMMDD-HHMMSS</c> and <c>PREFIX-post-...</c> (UTC), with -2, -3, ... when
/// taken. The pool may be: served by <c>cow serve</c> (through the control socket, which records properties),
/// unmounted (opened directly, and closed while the command runs so the command may use it), but not mounted
/// without the service: mkdir in <c>.snapshots</c> cannot record properties, so wrap refuses before running
/// anything. Exit codes: the command's; 1 when the pre snapshot cannot be taken (the command is not run) or
/// when only the post snapshot failed and the command exited 0; 2 bad usage; 127 the command cannot be started
/// (its post snapshot is still taken, with exit_code 127). Stateless: thread-safe.
/// </summary>
internal static class SnapshotWrapCommand
{
    internal static Command Create()
    {
        var prefix = new Option<string>("--name") { Description = "prefix of the snapshot names (PREFIX-pre-..., PREFIX-post-...)", DefaultValueFactory = _ => "wrap" };
        var command = new Argument<string[]>("command") { Description = "the command and its arguments, after --", Arity = ArgumentArity.OneOrMore };
        var c = new Command("wrap", "take a pre snapshot, run a command, take a post snapshot (properties kind, command, exit_code); exit with the command's exit code") { prefix, PoolArg, command };
        c.SetAction(r => Guard(() => Wrap(PoolOf(r), r.GetValue(prefix)!, r.GetValue(command)!)));
        return c;
    }

    private static int Wrap(string pool, string prefix, string[] argv)
    {
        if (argv.Length == 0 || argv[0].Length == 0) return Usage("snapshot wrap needs a command after --, e.g. cow snapshot wrap POOL -- apt-get upgrade");
        if (PoolSnapshots.NameProblem(prefix + "-post-20000101-000000-99") is { } problem)
            return Usage($"--name '{prefix}': {problem}");
        var commandLine = QuoteCommandLine(argv);
        string stamp = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);

        var preProps = new Dictionary<string, string> { [RetentionPolicy.KindProperty] = RetentionPolicy.Pre, ["command"] = commandLine };
        var (preName, preError) = WrapSnapshot(pool, $"{prefix}-pre-{stamp}", preProps);
        if (preName == null) return Fail($"snapshot wrap: the pre snapshot was not taken, so the command was not run: {preError}");
        Console.Error.WriteLine($"cow: pre snapshot '{preName}' of {pool}");

        int exitCode = RunInheriting(argv);

        var postProps = new Dictionary<string, string>
        {
            [RetentionPolicy.KindProperty] = RetentionPolicy.Post, ["pre"] = preName, ["command"] = commandLine,
            ["exit_code"] = exitCode.ToString(CultureInfo.InvariantCulture),
        };
        var (postName, postError) = WrapSnapshot(pool, $"{prefix}-post-{DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}", postProps);
        if (postName == null)
        {
            Console.Error.WriteLine($"cow: snapshot wrap: the command exited with {exitCode} but the post snapshot was not taken: {postError}");
            return exitCode != 0 ? exitCode : 1;
        }
        Console.Error.WriteLine($"cow: post snapshot '{postName}' of {pool} (command exited with {exitCode})");
        return exitCode;
    }

    /// <summary>Takes snapshot <paramref name="name"/> (or NAME-2, NAME-3, ... when taken) with properties, through
    /// the service, or on the unmounted pool. Returns the name taken, or null and why not.</summary>
    private static (string? Name, string? Error) WrapSnapshot(string pool, string name, Dictionary<string, string> props)
    {
        string? taken = null, error = null;
        int? viaService = ViaService(pool, (c, p) =>
        {
            var propsJson = new JsonObject();
            foreach (var (k, v) in props) propsJson[k] = v;
            for (int i = 1; i < 1000; i++)
            {
                var candidate = i == 1 ? name : $"{name}-{i}";
                var r = c.Request(new JsonObject { ["verb"] = "snapshot-create", ["pool"] = (string?)p["name"], ["name"] = candidate, ["properties"] = propsJson.DeepClone() });
                if (r["ok"]?.GetValue<bool>() == true) { taken = candidate; return 0; }
                if ((string?)r["error"] == "EEXIST") continue;
                error = $"{(string?)r["message"]} ({(string?)r["error"]})";
                return 1;
            }
            error = $"snapshot names {name} to {name}-999 are all taken";
            return 1;
        });
        if (viaService != null) return (taken, error);
        if (MountedAt(pool) is { } mp)
            return (null, $"pool {pool} is mounted at {mp} without the Cow service (no service serving it answers on {ControlClient.SocketPath}): a snapshot taken through the mount cannot record the pre/post properties. Run the pool under cow serve, or unmount it");
        using var opened = OpenPool(pool);
        var (code, n, message) = ServiceSnapshots.Create(opened, null, name, props);
        return code == 0 ? (n, null) : (null, message);
    }

    /// <summary>Runs the command with this process's stdio; its exit code (127 when it cannot be started).</summary>
    private static int RunInheriting(string[] argv)
    {
        var psi = new ProcessStartInfo(argv[0]) { UseShellExecute = false };
        foreach (var a in argv.Skip(1)) psi.ArgumentList.Add(a);
        Process child;
        try { child = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception e)
        {
            Console.Error.WriteLine($"cow: snapshot wrap: cannot run '{argv[0]}': {e.Message}");
            return 127;
        }
        using (child)
        {
            // The terminal sends SIGINT/SIGQUIT to the whole foreground group: the command gets them; cow stays
            // for the post snapshot. SIGTERM/SIGHUP sent to cow alone are passed on to the command.
            void Ignore(PosixSignalContext ctx) => ctx.Cancel = true;
            void Forward(PosixSignalContext ctx) { ctx.Cancel = true; try { Syscall.kill(child.Id, ctx.Signal == PosixSignal.SIGTERM ? Signum.SIGTERM : Signum.SIGHUP); } catch (InvalidOperationException) { } }
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Ignore);
            using var sigquit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, Ignore);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Forward);
            using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, Forward);
            child.WaitForExit();
            return child.ExitCode;
        }
    }

    /// <summary>The command line as a shell would take it back (single quotes where needed), at most the
    /// longest property value (cut with "...").</summary>
    private static string QuoteCommandLine(string[] argv)
    {
        var s = string.Join(' ', argv.Select(a => a.Length > 0 && a.All(ch => char.IsAsciiLetterOrDigit(ch) || "-_./=:,+@%".Contains(ch)) ? a : "'" + a.Replace("'", "'\\''") + "'"));
        s = new string(s.Select(ch => char.IsControl(ch) ? ' ' : ch).ToArray());
        int max = PoolSnapshots.MaxPropertyValue - 3;
        if (Encoding.UTF8.GetByteCount(s) <= max + 3) return s;
        while (Encoding.UTF8.GetByteCount(s) > max) s = s[..(s.Length - Math.Max(1, (Encoding.UTF8.GetByteCount(s) - max) / 4))];
        return s + "...";
    }
}
