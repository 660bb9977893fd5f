using Xunit;

namespace Cow.Tests.Mount;

/// <summary>Exit codes scripts rely on (README): 0 success, 1 the operation failed, 2 bad usage.</summary>
[Trait("Tier", "mount")]
public class CliExitCodeTests
{
    [SkippableTheory]
    [InlineData("mount")]                          // missing arguments
    [InlineData("snapshot", "create")]
    [InlineData("no-such-command")]
    [InlineData("fsck", "/tmp", "--no-such-option")]
    [InlineData("mkfs", "/nonexistent/cow-bad-size", "--base-size", "")]           // sizes: empty, zero, unknown unit,
    [InlineData("mkfs", "/nonexistent/cow-bad-size", "--base-size", "0")]          // beyond a long
    [InlineData("mkfs", "/nonexistent/cow-bad-size", "--log-size", "12Q")]
    [InlineData("mkfs", "/nonexistent/cow-bad-size", "--log-size", "99999999999T")]
    [InlineData("mkfs", "/nonexistent/cow-bad-size", "--block-size", "1000")]
    [InlineData("cat", "/nonexistent/pool", "relative/path")]                      // paths inside a pool start with /
    [InlineData("ls", "/nonexistent/pool", "etc")]
    [InlineData("put", "/nonexistent/pool", "notes.txt")]
    [InlineData("snapshot", "clone", "/nonexistent/pool", "s", "restored")]
    [InlineData("snapshot", "clone", "/nonexistent/pool", "s", "/restored", "--from", "etc")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--threads", "0")]                  // mount options
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--page-cache", "--direct-io")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--read-ahead", "-1")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--read-ahead", "9999999")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--max-read", "6")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--max-read", "2048")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "-o", "noatime,bogus")]              // not an atime option
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--cleaner", "sometimes")]           // cleaner options
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--cleaner-start", "101")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--cleaner-stop", "lots")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--cleaner-share", "0")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--cleaner-share", "1.5")]
    [InlineData("mount", "/nonexistent/pool", "/nonexistent/mnt", "-f", "--cleaner-start", "50", "--cleaner-stop", "30")]
    [InlineData("clean", "/nonexistent/pool", "--until", "101")]                                             // cow clean
    [InlineData("clean", "/nonexistent/pool", "--until", "half")]
    [InlineData("clean")]
    public void BadUsageExitsWithTwo(params string[] args)
    {
        var (code, _, err) = CowProgram.Run(args);
        Assert.True(code == 2, $"cow {string.Join(' ', args)}: exit {code}, expected 2; stderr: {err}");
    }

    [SkippableFact]
    public void HelpExitsWithZeroAndAFailedOperationWithOne()
    {
        Assert.Equal(0, CowProgram.Run("--help").Code);
        Assert.Equal(0, CowProgram.Run("snapshot", "--help").Code);
        var missing = Path.Combine(Path.GetTempPath(), "cow-no-such-pool-" + Guid.NewGuid().ToString("N"));
        var (code, _, err) = CowProgram.Run("fsck", missing);
        Assert.Equal(1, code);
        Assert.Contains(missing, err);
    }
}
