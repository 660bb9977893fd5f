using Xunit;

namespace Cow.Tests.Mount;

/// <summary>What the real <c>cow mkfs</c> can refuse before making anything: an import source that does not
/// exist, two sources that would land on the same name; and a pool command given a file instead of a folder.</summary>
[Trait("Tier", "mount")]
public sealed class MkfsRefusalTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "cow-mkfs-refusal-" + Guid.NewGuid().ToString("N"));

    public MkfsRefusalTests() => Directory.CreateDirectory(_root);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [SkippableFact]
    public void AMissingImportSourceMakesNoPool()
    {
        var pool = Path.Combine(_root, "pool");
        var missing = Path.Combine(_root, "no-such-source");
        var (code, _, err) = CowProgram.Run("mkfs", pool, "--base-size", "16M", "--log-size", "64M", "--import", missing);
        Assert.Equal(1, code);
        Assert.Contains($"import source {missing} does not exist", err);
        Assert.False(Directory.Exists(pool));
    }

    [SkippableFact]
    public void TwoImportSourcesWithTheSameNameMakeNoPool()
    {
        Directory.CreateDirectory(Path.Combine(_root, "a", "etc"));
        Directory.CreateDirectory(Path.Combine(_root, "b", "etc"));
        var pool = Path.Combine(_root, "pool");
        var (code, _, err) = CowProgram.Run("mkfs", pool, "--import", Path.Combine(_root, "a", "etc"), "--import", Path.Combine(_root, "b", "etc") + "/");
        Assert.Equal(1, code);
        Assert.Contains("would both become /etc", err);
        Assert.False(Directory.Exists(pool));
    }

    [SkippableFact]
    public void TheRootDirectoryCannotBeImportedByNameOnlyAsTheRoot()
    {
        var pool = Path.Combine(_root, "pool");
        var (code, _, err) = CowProgram.Run("mkfs", pool, "--import", "/");
        Assert.Equal(1, code);
        Assert.Contains("import source / has no name to take in the pool; use --import-root /", err);
        Assert.False(Directory.Exists(pool));
    }

    [SkippableFact]
    public void ARefusedDeviceLeavesNoPoolFolderAndTheDeviceUntouched()
    {
        var b = Path.Combine(_root, "b.img"); var l = Path.Combine(_root, "l.img");
        var (code, _, err) = CowProgram.Run("mkfs", Path.Combine(_root, "one"), "--base-device", b, "--log-device", l, "--base-size", "16M", "--log-size", "16M");
        Assert.True(code == 0, err);
        var before = File.ReadAllBytes(b);
        var two = Path.Combine(_root, "two");
        (code, _, err) = CowProgram.Run("mkfs", two, "--base-device", b, "--log-device", l);
        Assert.Equal(1, code);
        Assert.Contains("already holds a Cow device", err);
        Assert.Contains($"no pool was made: the pool folder {two} was removed", err);
        Assert.False(Directory.Exists(two));
        Assert.Equal(before, File.ReadAllBytes(b));
    }

    [SkippableFact]
    public void AFileGivenAsThePoolFolderIsNamedAsAFile()
    {
        var file = Path.Combine(_root, "not-a-pool");
        File.WriteAllText(file, "x");
        foreach (var verb in new[] { "fsck", "df", "ls" })
        {
            var (code, _, err) = CowProgram.Run(verb, file);
            Assert.Equal(1, code);
            Assert.Contains($"{file} is a file, not a pool folder", err);
        }
        Assert.Equal("x", File.ReadAllText(file));
    }
}
