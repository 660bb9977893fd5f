using System.Diagnostics;
using System.Text.Json.Nodes;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

/// <summary>
/// The fast front end (Cow.Cli/FrontEnd.cs: the same cow compiled ahead of time, built by .ci/setup into
/// Cow.Cli/bin/aot/cow): on a mounted pool it runs the socket verbs itself and answers exactly as the full program
/// does; a verb that would open a pool in its process, or one it does not serve, is handed over to the full program,
/// with the same result. Skipped when the front end was not built.
/// </summary>
[Trait("Tier", "mount")]
public sealed class FrontEndCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly MountScratch _scratch = new("cow-fe-");

    public void Dispose() => _scratch.Dispose();

    private static string FrontEnd
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir != null && !File.Exists(Path.Combine(dir.FullName, "cow.sln"))) dir = dir.Parent;
            return dir == null ? "" : Path.Combine(dir.FullName, "Cow.Cli", "bin", "aot", "cow");
        }
    }

    private (int Code, string Out, string Err) Fast(params string[] args)
    {
        var psi = new ProcessStartInfo(FrontEnd) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return _scratch.Run(output, psi, args, ("COW_DOTNET", "dotnet"), ("COW_DLL", CowProgram.Dll));
    }

    private (int Code, string Out, string Err) Full(params string[] args) => _scratch.RunCow(output, args);

    private static JsonNode Json(string s) => JsonNode.Parse(s)!;

    [SkippableFact]
    public void The_front_end_answers_socket_verbs_as_the_full_program_and_hands_everything_else_over()
    {
        MountedPool.RequireRootAndFuse();
        Skip.IfNot(File.Exists(FrontEnd), $"the Native AOT front end is not built ({FrontEnd}; bash .ci/setup builds it)");
        _scratch.MakePool("256M");
        var mp = _scratch.NewMountPoint();
        Assert.Equal(0, Full("mount", _scratch.PoolDir, mp).Code);

        var fast = Fast("snapshot", "create", mp, "s1");
        var full = Full("snapshot", "create", mp, "s2");
        Assert.Equal(0, fast.Code);
        Assert.Equal(full.Out.Replace("'s2'", "'s1'"), fast.Out);
        var fastList = Fast("snapshot", "list", mp, "--json");
        Assert.Equal(0, fastList.Code);
        Assert.Equal(Full("snapshot", "list", mp, "--json").Out, fastList.Out);
        Assert.Equal(["s1", "s2"], Json(fastList.Out).AsArray().Select(x => (string?)x!["name"]));
        Assert.Equal(0, Fast("snapshot", "hold", mp, "s1", "keep").Code);
        var held = Fast("snapshot", "delete", mp, "s1");
        Assert.Equal(1, held.Code);   // the same refusal as the full program's
        Assert.Equal(Full("snapshot", "delete", mp, "s1").Err, held.Err);
        Assert.Equal(0, Fast("snapshot", "release", mp, "s1", "keep").Code);
        Assert.Equal(0, Fast("snapshot", "delete", mp, "s1").Code);
        Assert.Equal(0, Fast("df", mp, "--json").Code);
        Assert.Equal(0, Full("umount", mp).Code);

        // Not mounted: the front end hands over to the full program (which opens the pool), with the same answers.
        var offline = Fast("snapshot", "list", _scratch.PoolDir, "--json");
        Assert.Equal(0, offline.Code);
        Assert.Equal(Full("snapshot", "list", _scratch.PoolDir, "--json").Out, offline.Out);
        var fsck = Fast("fsck", _scratch.PoolDir);   // a verb the front end does not serve
        Assert.Equal(0, fsck.Code);
        Assert.Contains("clean", fsck.Out);
        Assert.Equal(0, Fast("snapshot", "create", _scratch.PoolDir, "offline").Code);
        Assert.Contains("offline", Full("snapshot", "list", _scratch.PoolDir).Out);
    }
}
