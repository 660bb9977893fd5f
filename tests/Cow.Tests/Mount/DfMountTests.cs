using System.Diagnostics;
using System.Text.Json.Nodes;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>df(1) on a mount and <c>cow df</c> on the pool report the same size, used and free bytes, and they are
/// honest: a fresh pool shows nothing used, and its size is every device's data blocks less the pool's 1 % reserve
/// (new writes go to the log, then to the base device).</summary>
[Trait("Tier", "mount")]
public class DfMountTests
{
    private static (long Size, long Used, long Avail) Df(string path)
    {
        var psi = new ProcessStartInfo("df", ["-B1", "--output=size,used,avail", path]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        var lines = p.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        var f = lines[^1].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
        return (f[0], f[1], f[2]);
    }

    private static void Sync(string path)
    {
        using var p = Process.Start("sync", ["-f", path])!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    [SkippableFact]
    public void DfOnTheMountAndCowDfAgreeAndCountOnlyWhatDataUses()
    {
        using var mp = new MountedPool(baseSize: 512L << 20, logSize: 256L << 20);
        var fresh = Df(mp.MountPoint);
        Assert.Equal(0, fresh.Used);
        Assert.Equal(fresh.Size, fresh.Avail);
        Assert.InRange(fresh.Size, 740L << 20, (768L << 20) * 99 / 100);   // both devices' data blocks, less 1 %

        File.WriteAllBytes(mp.P("f"), new byte[1 << 20].Select((_, i) => (byte)(i * 7 + 1)).ToArray());
        Sync(mp.MountPoint);
        var after = Df(mp.MountPoint);
        Assert.Equal(1L << 20, after.Used);
        Assert.Equal(fresh.Size, after.Size);
        Assert.Equal(fresh.Avail - (1L << 20), after.Avail);

        mp.UnmountNow();
        var (code, output, err) = CowProgram.Run("df", mp.PoolDir, "--json");
        Assert.True(code == 0, err);
        var doc = (JsonObject)JsonNode.Parse(output)!;
        Assert.Equal(after.Size, (long)doc["size_bytes"]!);
        Assert.Equal(after.Used, (long)doc["used_bytes"]!);
        Assert.Equal(after.Avail, (long)doc["free_bytes"]!);
        Assert.Equal((long)doc["blocks"]! * (long)doc["block_size"]!, (long)doc["size_bytes"]!);
        long bs = (long)doc["block_size"]!, data = ((JsonArray)doc["devices"]!).Sum(d => (long)d!["data_bytes"]!) / bs;
        Assert.Equal((data - data / 100) * bs, (long)doc["size_bytes"]!);
        var text = CowProgram.Run("df", mp.PoolDir);
        Assert.Contains($"size {Cli.CliCommon.Bytes(after.Size)}", text.Out.Split('\n')[0]);
        Assert.Contains("used 1.00 MiB", text.Out);
        Assert.Contains("df(1) on the mount shows the same", text.Out);
    }
}
