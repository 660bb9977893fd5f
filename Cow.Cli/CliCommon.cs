using System.Text.Json;
using Cow.Core;
using Mono.Unix.Native;
using Spectre.Console;

namespace Cow.Cli;

/// <summary>What every verb family of the <c>cow</c> command shares: the error-to-exit-code guard, the exit-code
/// helpers (<see cref="Fail"/> 1, <see cref="Usage"/> 2), how errnos, byte counts and --json documents are written,
/// and whether progress may be drawn. Stateless apart from the immutable <see cref="JsonOut"/>: thread-safe.</summary>
internal static class CliCommon
{
    /// <summary>Runs a command body, turning the administrator-facing errors into a message and exit code 1.</summary>
    internal static int Guard(Func<int> body)
    {
        try { return body(); }
        catch (PoolException e) { Console.Error.WriteLine($"cow: {e.Message}"); return 1; }
        catch (IOException e) { Console.Error.WriteLine($"cow: {e.Message}"); return 1; }
        catch (UnauthorizedAccessException e) { Console.Error.WriteLine($"cow: {e.Message}"); return 1; }
    }

    /// <summary>Progress displays only when stdout is a terminal that Spectre can draw on.</summary>
    internal static bool Interactive => !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs <paramref name="work"/> under a spinner naming it when stdout is a terminal (long rollbacks,
    /// clones, diffs and deletions of large trees); plain otherwise. Nothing may be printed inside it.</summary>
    internal static T Busy<T>(string what, Func<T> work)
    {
        if (!Interactive) return work();
        T result = default!;
        AnsiConsole.Status().Start(Markup.Escape(what), _ => result = work());
        return result;
    }

    /// <summary>As <see cref="Busy{T}(string, Func{T})"/>, with a way for <paramref name="work"/> to say how far it
    /// got (shown after <paramref name="what"/> on the spinner). On a terminal the spinner shows each report; when
    /// stdout is not one, a report goes to standard error as a line at most every <paramref name="lineEvery"/>
    /// (none when null). <paramref name="work"/> may report from any thread.</summary>
    internal static T Busy<T>(string what, Func<Action<string>, T> work, TimeSpan? lineEvery)
    {
        if (Interactive)
        {
            T result = default!;
            AnsiConsole.Status().Start(Markup.Escape(what), ctx => result = work(text => ctx.Status(Markup.Escape($"{what}: {text}"))));
            return result;
        }
        if (lineEvery is not { } every) return work(_ => { });
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var gate = new object();
        TimeSpan next = every;
        return work(text =>
        {
            lock (gate)
            {
                if (clock.Elapsed < next) return;
                next = clock.Elapsed + every;
                Console.Error.WriteLine($"cow: {what}: {text}");
            }
        });
    }

    /// <summary>Prints "cow: MESSAGE" to standard error; exit code 1 (the operation failed).</summary>
    internal static int Fail(string message) { Console.Error.WriteLine($"cow: {message}"); return 1; }

    /// <summary>Prints "cow: MESSAGE" to standard error; exit code 2 (bad usage).</summary>
    internal static int Usage(string message) { Console.Error.WriteLine($"cow: {message}"); return 2; }

    internal static string Describe(Errno e) => $"{e} ({Syscall.strerror(e)})";

    /// <summary>Throws an <see cref="IOException"/> (exit 1 under <see cref="Guard"/>) when <paramref name="e"/> is an error.</summary>
    internal static void Check(Errno e, string what)
    {
        if (e != 0) throw new IOException($"{what}: {Describe(e)}");
    }

    internal static string Bytes(long b) => b switch
    {
        >= 1L << 50 => $"{b / (double)(1L << 50):F2} PiB",
        >= 1L << 40 => $"{b / (double)(1L << 40):F2} TiB",
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F2} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };

    /// <summary>How every --json document is written: indented, readable text, one document.</summary>
    internal static readonly JsonSerializerOptions JsonOut = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Until disposed, the first SIGINT, SIGTERM or SIGHUP cancels <paramref name="cts"/> (the work stops at its
    /// next safe point and reports "cancelled"; nothing is printed here, as a spinner or bar may be drawing); a second
    /// one has its default action and ends the process.</summary>
    internal static IDisposable CancelOnFirstSignal(CancellationTokenSource cts)
    {
        int count = 0;
        void Cancel(System.Runtime.InteropServices.PosixSignalContext ctx)
        {
            if (Interlocked.Increment(ref count) > 1) return;
            ctx.Cancel = true;
            cts.Cancel();
        }
        var regs = new[] { System.Runtime.InteropServices.PosixSignal.SIGINT, System.Runtime.InteropServices.PosixSignal.SIGTERM, System.Runtime.InteropServices.PosixSignal.SIGHUP }
            .Select(sig => System.Runtime.InteropServices.PosixSignalRegistration.Create(sig, Cancel)).ToArray();
        return new Registrations(regs);
    }

    private sealed class Registrations(IDisposable[] all) : IDisposable
    {
        public void Dispose() { foreach (var r in all) r.Dispose(); }
    }
}
