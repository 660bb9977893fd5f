using System.CommandLine;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Cow.Core;
using Cow.Core.Replication;
using Mono.Unix.Native;
using static Cow.Cli.CliCommon;
using static Cow.Cli.PoolLocator;
using static Cow.Cli.ServiceRouting;

namespace Cow.Cli;

/// <summary><c>cow send</c>, <c>cow receive</c> and <c>cow stream verify</c> (format.md 10): snapshot streams on a pool
/// folder (unmounted; a mounted pool through its control socket, <see cref="StreamViaService"/>). The stream goes to
/// standard output or comes from standard input unless a file is named; what is said goes to standard error. Exit codes:
/// 0 done, 1 failed (nothing changed, or for a receive that stopped part-way: what it verified is kept and the resume
/// token printed), 2 bad usage. Stateless: thread-safe.</summary>
internal static class ReplicationCommands
{
    internal static Command Send()
    {
        var snap = new Argument<string?>("snapshot") { Description = "snapshot to send (not with --resume)", Arity = ArgumentArity.ZeroOrOne };
        var from = new Option<string?>("--from", "-i") { Description = "send only what changed since this older snapshot (an incremental stream)" };
        var output = new Option<string?>("--output", "-o") { Description = "write the stream to this file instead of standard output" };
        var resume = new Option<string?>("--resume") { Description = "send the rest of an interrupted stream: the token cow receive printed (or 'cow receive POOL --token' shows)" };
        var c = new Command("send", "write a snapshot (or what changed since an older one) as a stream; 'cow send POOL SNAP | cow receive OTHER' replicates it") { PoolArg, snap, from, output, resume };
        c.SetAction(r => Guard(() =>
        {
            string? name = r.GetValue(snap), fromName = r.GetValue(from), token = r.GetValue(resume), file = r.GetValue(output);
            ResumeToken? t = null;
            if (token != null)
            {
                if (name != null || fromName != null) return Usage("--resume sends what the token names: give no snapshot or --from with it");
                t = ResumeToken.Parse(token, out var tp);
                if (t == null) return Usage(tp!);
            }
            else if (name == null) return Usage("name the snapshot to send (or --resume TOKEN)");
            if (name != null && PoolSnapshots.NameProblem(name) is { } np) return Usage(np);
            if (fromName != null && PoolSnapshots.NameProblem(fromName) is { } fp) return Usage(fp);
            if (file == null && !Console.IsOutputRedirected) return Usage("standard output is a terminal: redirect it, pipe it (| cow receive ...) or give -o FILE");
            string poolArg = PoolOf(r);
            Stream OpenSink() => file == null ? Console.OpenStandardOutput() : new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var via = ViaService(poolArg, (c, row) =>
            {
                var req = new JsonObject { ["verb"] = "send", ["pool"] = (string?)row["name"], ["name"] = name, ["from"] = fromName, ["resume"] = token };
                using var sinkVia = OpenSink();
                JsonObject resp;
                try { resp = c.Download(req, sinkVia); }
                catch (IOException ex) { return Fail($"send through {(string?)row["via"]}: {ex.Message}"); }
                return ServiceResult(resp, x =>
                {
                    Console.Error.WriteLine($"cow: sent {(long)x["stream_bytes"]!} bytes in {clock.Elapsed.TotalSeconds:F1} s through {(string?)row["via"]}: {(long)x["inodes"]!} inodes, "
                        + $"{Bytes((long)x["data_bytes"]!)} data, {Bytes((long)x["clone_bytes"]!)} shared, {Bytes((long)x["hole_bytes"]!)} holes");
                    return 0;
                });
            });
            if (via is int v) return v;
            using var pool = OpenUnmounted(poolArg, "send", "unmount it first");
            using var sink = OpenSink();
            using var buffered = new BufferedStream(sink, 1 << 20);
            SendSummary sum;
            string? problem;
            Errno e;
            try
            {
                e = t != null ? pool.Replication.Resume(t, buffered, out sum, out problem) : pool.Replication.Send(name!, fromName, buffered, out sum, out problem);
                buffered.Flush();
            }
            catch (IOException ex) { return Fail($"writing the stream failed: {ex.Message}"); }
            if (e != 0) return Fail($"send: {problem ?? Describe(e)}");
            Console.Error.WriteLine($"cow: sent {(t != null ? "the rest of the stream" : $"'{name}'" + (fromName != null ? $" from '{fromName}'" : ""))}: "
                + $"{Bytes(sum.StreamBytes)} in {clock.Elapsed.TotalSeconds:F1} s, {sum.Inodes} inodes, {Bytes(sum.DataBytes)} data, "
                + $"{Bytes(sum.CloneBytes)} shared, {Bytes(sum.HoleBytes)} holes");
            return 0;
        }));
        return c;
    }

    internal static Command Receive()
    {
        var name = new Option<string?>("--name") { Description = "name the received snapshot (default: its name on the sender)" };
        var input = new Option<string?>("--input", "-f") { Description = "read the stream from this file instead of standard input" };
        var token = new Option<bool>("--token") { Description = "print the resume token of the receive pending on this pool, and exit" };
        var abort = new Option<bool>("--abort") { Description = "drop the receive pending on this pool (what it staged is freed) and exit" };
        var finish = new Option<bool>("--finish") { Description = "finish a pending receive whose stream is all here and verified (when finishing was refused: files were open) and exit" };
        var c = new Command("receive", "apply a stream from cow send: the snapshot appears, read-only, only when the whole stream is applied and verified; the live tree becomes it (a mounted pool receives through the process that mounts it)") { PoolArg, name, input, token, abort, finish };
        c.SetAction(r => Guard(() =>
        {
            string poolArg = PoolOf(r);
            string? n = r.GetValue(name), file = r.GetValue(input);
            if (n != null && PoolSnapshots.NameProblem(n) is { } np) return Usage(np);
            int actions = (r.GetValue(token) ? 1 : 0) + (r.GetValue(abort) ? 1 : 0) + (r.GetValue(finish) ? 1 : 0);
            if (actions > 1) return Usage("--token, --abort and --finish go alone");
            bool streaming = actions == 0;
            if (streaming && file == null && !Console.IsInputRedirected) return Usage("standard input is a terminal: pipe a stream in (cow send ... | cow receive POOL) or give -f FILE");
            var via = ViaService(poolArg, (c, row) =>
            {
                string? served = (string?)row["name"];
                JsonObject resp;
                try
                {
                    if (!streaming)
                        resp = c.Request(new JsonObject { ["verb"] = r.GetValue(token) ? "receive-token" : r.GetValue(abort) ? "receive-abort" : "receive-finish", ["pool"] = served });
                    else
                    {
                        using var src = file == null ? Console.OpenStandardInput() : new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
                        resp = c.Upload(new JsonObject { ["verb"] = "receive", ["pool"] = served, ["name"] = n }, src);
                    }
                }
                catch (IOException ex) { return Fail($"receive through {(string?)row["via"]}: {ex.Message}"); }
                if (resp["ok"]?.GetValue<bool>() != true && (string?)resp["token"] is { } tk)
                {
                    Console.Error.WriteLine($"cow: {(string?)resp["message"]}");
                    PrintKept(tk, poolArg);
                    return 1;
                }
                return ServiceResult(resp, x =>
                {
                    if ((string?)x["token"] is { } t) Console.WriteLine(t);
                    else Console.Error.WriteLine($"cow: {(string?)x["message"]}");
                    return 0;
                });
            });
            if (via is int v) return v;
            using var pool = OpenUnmounted(poolArg, "receive", "unmount it first");
            if (r.GetValue(token))
            {
                if (pool.Replication.PendingToken() is not { } tk) return Fail("no receive is pending on this pool");
                Console.WriteLine(tk);
                return 0;
            }
            if (r.GetValue(abort))
            {
                var ae = pool.Replication.AbortReceive(out var was);
                if (ae == Errno.ENOENT) return Fail("no receive is pending on this pool");
                if (ae != 0) return Fail($"abort: {Describe(ae)}");
                Console.Error.WriteLine($"cow: the receive of '{was}' is dropped");
                return 0;
            }
            if (r.GetValue(finish))
            {
                var fe = pool.Replication.FinishReceive(out var snapName, out var fp);
                if (fe != 0) return Fail($"finish: {fp ?? Describe(fe)}");
                Console.Error.WriteLine($"cow: received snapshot '{snapName}'");
                return 0;
            }
            using var source = file == null ? Console.OpenStandardInput() : new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var e = pool.Replication.Receive(source, n, out var res);
            if (e == 0)
            {
                Console.Error.WriteLine($"cow: received snapshot '{res.Snapshot}' (generation {res.Generation}): {Bytes(res.StreamBytes)} in {clock.Elapsed.TotalSeconds:F1} s, "
                    + $"{res.Records} records, {Bytes(res.DataBytes)} data");
                return 0;
            }
            Console.Error.WriteLine($"cow: receive failed: {res.Problem ?? Describe(e)}");
            if (res.Token != null) PrintKept(res.Token, poolArg);
            else Console.Error.WriteLine("cow: nothing was changed");
            return 1;
        }));
        return c;
    }

    /// <summary>What a receive that stopped part-way says: the token on standard output (for scripts), how to go on on
    /// standard error.</summary>
    private static void PrintKept(string token, string poolArg)
    {
        Console.Error.WriteLine("cow: what was verified is kept (not visible until the receive finishes); resume with:");
        Console.Error.WriteLine($"cow:   cow send SOURCE --resume {token} | cow receive {poolArg}");
        Console.Error.WriteLine($"cow: or drop it: cow receive {poolArg} --abort");
        Console.WriteLine(token);
    }

    internal static Command Replicate()
    {
        var source = new Argument<string>("source") { Description = "pool folder or mount point whose snapshots are sent" };
        var target = new Argument<string>("target") { Description = "pool folder or mount point that receives them, or ssh://[user@]host[:port]/path (its cow runs through ssh)" };
        var tag = new Option<string?>("--hold-tag") { Description = "hold tag kept on SOURCE's newest snapshot that TARGET also holds (default: replicate:TARGET, '/' as '|')" };
        var remoteCow = new Option<string>("--remote-cow") { Description = "the cow command on an ssh target", DefaultValueFactory = _ => "cow" };
        var dry = new Option<bool>("--dry-run", "-n") { Description = "say what would be sent, send nothing" };
        var c = new Command("replicate", "send TARGET every snapshot of SOURCE it lacks, incrementally from the newest they share, resuming an interrupted receive first; holds that snapshot on SOURCE so retention keeps the next run's base") { source, target, tag, remoteCow, dry };
        c.SetAction(r => Guard(() =>
        {
            string src = r.GetValue(source)!, dst = r.GetValue(target)!;
            if (Replicator.TargetProblem(dst) is { } tp) return Usage(tp);
            string holdTag = r.GetValue(tag) ?? Replicator.DefaultHoldTag(dst);
            if (PoolSnapshots.HoldTagProblem(holdTag) is { } hp) return Usage(hp);
            FrontEnd.HandOver();
            return new Replicator(src, dst, holdTag, r.GetValue(remoteCow)!, m => Console.Error.WriteLine($"cow: replicate: {m}")).Run(r.GetValue(dry));
        }));
        return c;
    }

    internal static Command Stream()
    {
        var file = new Argument<string>("file") { Description = "stream file ('-': standard input)" };
        var verify = new Command("verify", "check a stream offline: every record's checksum and fields, and the digest over the whole stream; names the byte offset of the first damage") { file };
        verify.SetAction(r => Guard(() =>
        {
            string f = r.GetValue(file)!;
            using var s = f == "-" ? Console.OpenStandardInput() : new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            var reader = new Core.Replication.StreamReader(s);
            var counts = new SortedDictionary<StreamRecordType, long>();
            long data = 0;
            try
            {
                while (reader.Next() is { } rec)
                {
                    counts[rec.Type] = counts.GetValueOrDefault(rec.Type) + 1;
                    data += rec.Data.Length;
                }
            }
            catch (StreamDamagedException e)
            {
                Console.Error.WriteLine($"cow: {f}: {e.Message}");
                return 1;
            }
            var h = reader.Header!;
            Console.WriteLine($"stream v{StreamFormat.Version} of snapshot '{h.Name}' ({h.Snapshot}), {(h.Incremental ? $"incremental from {h.Base}" : "full")}"
                + (h.ResumeOffset > 0 ? $", resumed at offset {h.ResumeOffset}" : ""));
            Console.WriteLine($"block size {h.BlockSize}, created {DateTime.UnixEpoch.AddTicks(h.CreatedNs / 100):u}");
            Console.WriteLine($"{reader.BytesRead} bytes, {Bytes(data)} of data; records: {string.Join(", ", counts.Select(kv => $"{kv.Key} {kv.Value}"))}");
            Console.WriteLine("verified: every record checksum and the stream digest");
            return 0;
        }));
        return new Command("stream", "snapshot streams (cow send / cow receive)") { verify };
    }
}
