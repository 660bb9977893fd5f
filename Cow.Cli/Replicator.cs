using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Cow.Cli;

/// <summary>
/// <c>cow replicate SOURCE TARGET</c> (and the service's <c>[replicate NAME]</c> schedule): brings TARGET up to date
/// with SOURCE's snapshots, as syncoid does for ZFS. It finds the newest snapshot both hold (by identity, format.md
/// 10.4), sends every newer one in turn as an incremental stream from the one before (all of them from a full stream of
/// the oldest when they share none and TARGET is empty), resumes a receive TARGET holds pending first, and holds the
/// newest snapshot both have on SOURCE under one tag, released from the older ones, so that retention cannot delete the
/// base of the next run.
/// <para>It is an orchestrator of <c>cow</c> commands, each a process of its own: <c>cow snapshot list --json</c>,
/// <c>cow send</c>, <c>cow receive</c>, <c>cow snapshot hold|release</c>, so a mounted pool answers through its control
/// socket and an unmounted one is opened by the command, and a TARGET <c>ssh://[user@]host[:port]/path</c> runs the
/// target's commands through <c>ssh host cow ...</c>. Stateless between runs; one run is not thread-safe.</para>
/// </summary>
/// <param name="say">Where progress goes; <paramref name="complain"/>: where failures go (default: standard error).</param>
/// <param name="env">Environment for the cow commands it runs (the service gives its control socket as COW_SOCKET).</param>
internal sealed class Replicator(string source, string target, string holdTag, string remoteCow, Action<string> say,
    IReadOnlyDictionary<string, string>? env = null, Action<string>? complain = null)
{
    /// <summary>The hold tag a run uses unless told another: <c>replicate:</c> and the target, '/' written as '|'.</summary>
    public static string DefaultHoldTag(string target) => "replicate:" + target.Replace('/', '|');

    /// <summary>What is wrong with <paramref name="target"/> as a target, or null.</summary>
    public static string? TargetProblem(string target)
    {
        if (!target.StartsWith("ssh://", StringComparison.Ordinal)) return null;
        var rest = target["ssh://".Length..];
        int slash = rest.IndexOf('/');
        if (slash <= 0 || slash == rest.Length - 1) return $"'{target}' is not ssh://[user@]host[:port]/path";
        return null;
    }

    /// <summary>One run. 0: TARGET holds every snapshot of SOURCE (or nothing needed sending); 1: a step failed (said on
    /// standard error; a receive that stopped part-way is resumed by the next run).</summary>
    public int Run(bool dryRun)
    {
        // A receive left pending by an earlier run goes on first.
        var tokenRun = RunTarget(["receive", TargetPool, "--token"], capture: true);
        if (tokenRun.Code == 0 && tokenRun.Out.Trim() is { Length: > 0 } token)
        {
            say($"resuming the receive pending on {target}");
            if (dryRun) return 0;
            if (Pipe(["send", source, "--resume", token], ["receive", TargetPool]) != 0)
                return Failed($"resuming the pending receive on {target} failed (if SOURCE no longer holds its snapshot: cow receive {TargetPool} --abort on the target)");
        }
        var src = Snapshots(RunLocal(["snapshot", "list", source, "--json"], capture: true), source);
        var dst = Snapshots(RunTarget(["snapshot", "list", TargetPool, "--json"], capture: true), target);
        if (src == null || dst == null) return 1;
        var have = dst.Select(s => s.Identity).ToHashSet(StringComparer.Ordinal);
        int common = src.FindLastIndex(s => have.Contains(s.Identity));
        if (common < 0 && dst.Count > 0)
            return Failed($"{target} holds snapshots but none of {source}'s: nothing to send an incremental stream from (an empty target takes a full stream)");
        if (common >= 0 && dst[^1].Identity != src[common].Identity)
            return Failed($"{target}'s newest snapshot '{dst[^1].Name}' is not one of {source}'s; the newest they share is '{src[common].Name}': delete the newer ones on the target first");
        var todo = src.Skip(common + 1).ToList();
        if (todo.Count == 0) say($"{target} is up to date ('{src[^1].Name}')");
        for (int i = 0; i < todo.Count; i++)
        {
            string? from = i == 0 ? (common >= 0 ? src[common].Name : null) : todo[i - 1].Name;
            say(from == null ? $"sending '{todo[i].Name}' (full)" : $"sending '{todo[i].Name}' from '{from}'");
            if (dryRun) continue;
            string[] send = from == null ? ["send", source, todo[i].Name] : ["send", source, todo[i].Name, "--from", from];
            if (Pipe(send, ["receive", TargetPool]) != 0)
                return Failed($"sending '{todo[i].Name}' to {target} failed; run again to resume or retry");
            MoveHold(src, todo[i].Name);
        }
        if (!dryRun && todo.Count == 0 && common >= 0) MoveHold(src, src[common].Name);
        return 0;
    }

    private int Failed(string why)
    {
        if (complain != null) complain(why);
        else Console.Error.WriteLine($"cow: replicate: {why}");
        return 1;
    }

    /// <summary>Holds <paramref name="name"/> on SOURCE under the tag and releases the tag from every other snapshot.</summary>
    private void MoveHold(List<Snap> src, string name)
    {
        if (!src.Any(s => s.Name == name && s.Holds.Contains(holdTag)))
            if (RunLocal(["snapshot", "hold", source, name, holdTag], capture: true) is { Code: not 0 } h)
                Failed($"holding '{name}' on {source} failed: {h.Err.Trim()}");
        foreach (var s in src.Where(s => s.Name != name && s.Holds.Contains(holdTag)))
            RunLocal(["snapshot", "release", source, s.Name, holdTag], capture: true);
    }

    private sealed record Snap(string Name, long Gen, string Identity, List<string> Holds);

    private List<Snap>? Snapshots((int Code, string Out, string Err) r, string where)
    {
        if (r.Code != 0) { Failed($"listing the snapshots of {where} failed: {r.Err.Trim()}"); return null; }
        try
        {
            return (JsonNode.Parse(r.Out) as JsonArray ?? throw new FormatException("not a JSON array")).OfType<JsonObject>()
                .Select(o => new Snap((string)o["name"]!, (long)o["generation"]!, (string?)o["identity"] ?? throw new FormatException("rows without identity: an older cow"),
                    ((JsonArray?)o["holds"])?.Select(h => (string)h!).ToList() ?? new()))
                .OrderBy(s => s.Gen).ToList();
        }
        catch (Exception e) when (e is FormatException or System.Text.Json.JsonException or InvalidOperationException)
        {
            Failed($"the snapshot list of {where} is not what this cow reads ({e.Message})");
            return null;
        }
    }

    // ---------------------------------------------------------------- processes

    private bool Remote => target.StartsWith("ssh://", StringComparison.Ordinal);

    /// <summary>The target pool's path as its own cow sees it.</summary>
    private string TargetPool => Remote ? target[(target.IndexOf('/', 6))..] : target;

    /// <summary>This program as a command: the runtime host and cow.dll under dotnet, else the program itself.</summary>
    private static (string File, string[] Prefix) Self()
    {
        var exe = Environment.ProcessPath ?? "cow";
        return Path.GetFileNameWithoutExtension(exe) == "dotnet" ? (exe, [Path.Combine(AppContext.BaseDirectory, "cow.dll")]) : (exe, []);
    }

    private ProcessStartInfo LocalInfo(string[] args)
    {
        var (file, prefix) = Self();
        var psi = new ProcessStartInfo(file);
        foreach (var a in prefix.Concat(args)) psi.ArgumentList.Add(a);
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        return psi;
    }

    private ProcessStartInfo TargetInfo(string[] args)
    {
        if (!Remote) return LocalInfo(args);
        var rest = target["ssh://".Length..];
        var hostPort = rest[..rest.IndexOf('/')];
        // $COW_SSH: the ssh command with its options (default ssh; its words split on spaces), e.g. a key or a port.
        var ssh = (Environment.GetEnvironmentVariable("COW_SSH") is { Length: > 0 } cs ? cs : "ssh").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var psi = new ProcessStartInfo(ssh[0]);
        foreach (var o in ssh.Skip(1)) psi.ArgumentList.Add(o);
        int colon = hostPort.LastIndexOf(':');
        if (colon > 0 && int.TryParse(hostPort[(colon + 1)..], out var port)) { psi.ArgumentList.Add("-p"); psi.ArgumentList.Add(port.ToString()); hostPort = hostPort[..colon]; }
        psi.ArgumentList.Add("-o"); psi.ArgumentList.Add("BatchMode=yes");
        psi.ArgumentList.Add(hostPort);
        // ssh joins its arguments into one line for the remote shell: quote each.
        psi.ArgumentList.Add(string.Join(' ', new[] { remoteCow }.Concat(args.Select(ShellQuote))));
        return psi;
    }

    private static string ShellQuote(string s) => "'" + s.Replace("'", "'\\''") + "'";

    private (int Code, string Out, string Err) RunLocal(string[] args, bool capture) => Run(LocalInfo(args), capture);
    private (int Code, string Out, string Err) RunTarget(string[] args, bool capture) => Run(TargetInfo(args), capture);

    private static (int Code, string Out, string Err) Run(ProcessStartInfo psi, bool capture)
    {
        psi.RedirectStandardOutput = capture;
        psi.RedirectStandardError = capture;
        psi.RedirectStandardInput = true;   // never the terminal: a verb reading stdin gets end of file
        using var p = Process.Start(psi) ?? throw new IOException($"cannot start {psi.FileName}");
        p.StandardInput.Close();
        var err = capture ? p.StandardError.ReadToEndAsync() : Task.FromResult("");
        string output = capture ? p.StandardOutput.ReadToEnd() : "";
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }

    /// <summary>Runs <c>cow SENDARGS | [ssh host] cow RECEIVEARGS</c>, the bytes copied through this process. 0 when both
    /// succeed; else the failing side's code (both sides' messages went to standard error).</summary>
    private int Pipe(string[] sendArgs, string[] receiveArgs)
    {
        var sendInfo = LocalInfo(sendArgs);
        sendInfo.RedirectStandardOutput = true;
        sendInfo.RedirectStandardInput = true;
        var recvInfo = TargetInfo(receiveArgs);
        recvInfo.RedirectStandardInput = true;
        recvInfo.RedirectStandardOutput = true;   // a kept receive prints its token there: the next run finds it again
        using var sender = Process.Start(sendInfo) ?? throw new IOException($"cannot start {sendInfo.FileName}");
        sender.StandardInput.Close();
        using var receiver = Process.Start(recvInfo) ?? throw new IOException($"cannot start {recvInfo.FileName}");
        var drain = receiver.StandardOutput.ReadToEndAsync();
        try
        {
            sender.StandardOutput.BaseStream.CopyTo(receiver.StandardInput.BaseStream, 1 << 20);
        }
        catch (IOException)
        {
            // The receiver stopped reading (it failed): the sender is not needed any more.
            try { sender.Kill(); } catch (InvalidOperationException) { }
        }
        try { receiver.StandardInput.Close(); } catch (IOException) { }
        sender.WaitForExit();
        receiver.WaitForExit();
        drain.Wait();
        if (receiver.ExitCode != 0) return receiver.ExitCode;
        return sender.ExitCode;
    }
}
