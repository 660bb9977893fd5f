using System.Runtime.CompilerServices;

namespace Cow.Cli;

/// <summary>
/// The fast front end: this same program compiled ahead of time (Native AOT, <c>.ci/setup</c> publishes it to
/// <c>Cow.Cli/bin/aot/cow</c>), which starts in milliseconds instead of the runtime's ~100 ms. It runs only the verbs a
/// script or timer calls on a mounted pool, which talk to the mount's control socket (<see cref="Serves"/>); anything
/// that would open a pool in this process, or any other verb, is handed over to the full program (<see cref="HandOver"/>:
/// exec of <c>dotnet cow.dll</c> with the same arguments), so the engine always runs under the JIT build that the
/// tests and benchmarks measure. Stateless: thread-safe.
/// </summary>
internal static class FrontEnd
{
    /// <summary>True in the ahead-of-time build (no code generation at run time).</summary>
    public static bool Active => !RuntimeFeature.IsDynamicCodeSupported;

    /// <summary>The verbs the front end runs itself (when their pool is mounted; see <see cref="HandOver"/>).</summary>
    public static bool Serves(string[] args) => args switch
    {
        ["snapshot", "create" or "delete" or "hold" or "release" or "list", ..] => true,
        ["status", ..] or ["df", ..] => true,
        _ => false,
    };

    /// <summary>In the front end: replaces this process with the full program, same arguments (<c>$COW_DOTNET</c>, else
    /// dotnet on PATH; <c>$COW_DLL</c>, else <c>../Release/net10.0/cow.dll</c> beside this program). Returns at once in
    /// the full program.</summary>
    public static void HandOver()
    {
        if (!Active) return;
        var dotnet = Environment.GetEnvironmentVariable("COW_DOTNET") is { Length: > 0 } d ? d : "dotnet";
        var dll = Environment.GetEnvironmentVariable("COW_DLL") is { Length: > 0 } p ? p
            : Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "Release", "net10.0", "cow.dll"));
        // execvp's argv ends with a null pointer: Mono.Posix passes the array as it is.
        string?[] argv = [dotnet, dll, .. Environment.GetCommandLineArgs().Skip(1), null];
        Console.Out.Flush();
        Mono.Unix.Native.Syscall.execvp(dotnet, argv!);
        throw new IOException($"the cow front end cannot start the full program ({dotnet} {dll}): {Mono.Unix.Native.Stdlib.GetLastError()}");
    }
}
