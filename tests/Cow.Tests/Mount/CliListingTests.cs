using System.Text.Json.Nodes;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>Every listing of the real <c>cow</c> program on an unmounted pool, as a table and as --json: exit 0,
/// nothing on stderr, and the documented fields (README) with the pool's real figures. A listing that only
/// worked through the service (or only as JSON) would fail here.</summary>
[Trait("Tier", "mount")]
public class CliListingTests : IDisposable
{
    private readonly string _pool = Path.Combine(Path.GetTempPath(), "cow-listing-" + Guid.NewGuid().ToString("N"));

    public CliListingTests()
    {
        Ok(CowProgram.Run("mkfs", _pool, "--base-size", "16M", "--log-size", "64M"));
        Put("/a.txt", 10000);
        Ok(CowProgram.Run("snapshot", "create", _pool, "s1"));
        Put("/b.txt", 100);   // so that the diff has a row
    }

    private void Put(string path, int bytes)
    {
        var put = CowProgram.StartInfo("put", _pool, path);
        put.RedirectStandardInput = true;
        using var p = System.Diagnostics.Process.Start(put)!;
        p.StandardInput.Write(new string('x', bytes));
        p.StandardInput.Close();
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    public void Dispose()
    {
        try { Directory.Delete(_pool, recursive: true); } catch (IOException) { }
    }

    private static string Ok((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");
        Assert.DoesNotContain("exception", r.Err, StringComparison.OrdinalIgnoreCase);
        return r.Out;
    }

    [SkippableTheory]
    [InlineData("df")]
    [InlineData("snapshot", "list")]
    [InlineData("snapshot", "diff", "@s1")]
    [InlineData("ls", "@/")]
    [InlineData("status")]
    public void EveryListingPrintsATableAndAJsonDocument(params string[] verb)
    {
        var args = verb.Select(a => a == "@s1" ? "s1" : a == "@/" ? "/" : a).ToList();
        if (verb[0] != "status") args.Insert(verb[0] == "snapshot" ? 2 : 1, _pool);
        var text = Ok(CowProgram.Run(args.ToArray()));
        Assert.False(string.IsNullOrWhiteSpace(text), "a table was expected on stdout");
        args.Add("--json");
        var doc = JsonNode.Parse(Ok(CowProgram.Run(args.ToArray())));
        Assert.NotNull(doc);
    }

    [SkippableFact]
    public void DfShowsEveryDeviceWithItsSizeUseAndFreeSpace()
    {
        var text = Ok(CowProgram.Run("df", _pool));
        Assert.Contains("base", text);
        Assert.Contains("log", text);
        var df = (JsonObject)JsonNode.Parse(Ok(CowProgram.Run("df", _pool, "--json")))!;
        var devices = ((JsonArray)df["devices"]!).OfType<JsonObject>().ToArray();
        Assert.Equal(["base", "log"], devices.Select(d => (string)d["role"]!));
        Assert.Equal(16L << 20, (long)devices[0]["size_bytes"]!);
        Assert.Equal(64L << 20, (long)devices[1]["size_bytes"]!);
        Assert.Equal(Path.Combine(_pool, "log.img"), (string)devices[1]["path"]!);
        foreach (var d in devices)
            Assert.Equal((long)d["data_bytes"]!, (long)d["used_bytes"]! + (long)d["free_bytes"]!);
        // 10,000 + 100 bytes of file data: three and one 4 KiB blocks on the log, where new writes go first; the base
        // device takes them once the log is full.
        Assert.Equal(4 * 4096L, (long)devices[1]["used_bytes"]!);
        Assert.Equal(0L, (long)devices[0]["used_bytes"]!);
        Assert.All(devices, d => Assert.True((bool)d["takes_writes"]!));
        // The pool's size is every device's data blocks less a 1 % reserve; free is every device's free blocks less it.
        long bs = (long)df["block_size"]!, data = devices.Sum(d => (long)d["data_bytes"]!) / bs, reserve = data / 100;
        Assert.Equal((data - reserve) * bs, (long)df["size_bytes"]!);
        Assert.Equal(devices.Sum(d => (long)d["free_bytes"]!) - reserve * bs, (long)df["free_bytes"]!);
        Assert.Equal(4 * 4096L, (long)df["used_bytes"]!);
        // The cleaner: not running on an unmounted pool; the log's free share.
        var cleaner = (JsonObject)df["cleaner"]!;
        Assert.False((bool)cleaner["background"]!);
        Assert.Equal((long)devices[1]["free_bytes"]!, (long)cleaner["log_free_bytes"]!);
        Assert.Contains("cleaner: no background cleaner", text);
    }
}
