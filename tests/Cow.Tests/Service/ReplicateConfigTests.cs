using Cow.Cli.Service;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>The <c>[replicate NAME]</c> section of cow serve's configuration: its keys, defaults and refusals, and that a
/// change of it waits for a restart.</summary>
[Trait("Tier", "unit")]
public class ReplicateConfigTests
{
    private static ServeConfig? Parse(string section, out List<ConfigError> errors) =>
        ServeConfig.Parse($"[pool a]\npath = /p\nmountpoint = /m\n{section}", "x.conf", out errors);

    [Fact]
    public void A_replicate_section_gives_the_pool_a_schedule()
    {
        Assert.Null(Parse("", out var e)!.Pools[0].Replicate);
        var r = Parse("[replicate a]\ntarget = ssh://backup:2222/srv/replica\n", out e)!.Pools[0].Replicate!;
        Assert.Empty(e);
        Assert.Equal(new ReplicateConfig("ssh://backup:2222/srv/replica", TimeSpan.FromHours(1), "replicate:ssh:||backup:2222|srv|replica", "cow"), r);
        r = Parse("[replicate a]\ntarget = /srv/replica\nevery = 15m\nhold-tag = offsite\nremote-cow = /usr/local/bin/cow\n", out e)!.Pools[0].Replicate!;
        Assert.Equal(new ReplicateConfig("/srv/replica", TimeSpan.FromMinutes(15), "offsite", "/usr/local/bin/cow"), r);
    }

    [Theory]
    [InlineData("[replicate a]\nevery = 1h\n", "has no 'target'")]
    [InlineData("[replicate a]\ntarget = relative/path\n", "target must be an absolute pool folder")]
    [InlineData("[replicate a]\ntarget = ssh://hostonly\n", "is not ssh://")]
    [InlineData("[replicate a]\ntarget = /r\nevery = often\n", "every:")]
    [InlineData("[replicate a]\ntarget = /r\nhold-tag = a/b\n", "hold tag")]
    [InlineData("[replicate a]\ntarget = /r\nspeed = 9\n", "speed")]
    [InlineData("[replicate ghost]\ntarget = /r\n", "[replicate ghost] names no pool")]
    public void Bad_values_are_named_with_their_place(string section, string message)
    {
        Assert.Null(Parse(section, out var errors));
        var all = string.Join("\n", errors);
        Assert.Contains(message, all);
        Assert.All(errors, x => Assert.True(x.Line >= 4, x.ToString()));
    }

    [Fact]
    public void A_changed_replicate_section_waits_for_a_restart()
    {
        var a = Parse("[replicate a]\ntarget = /r\n", out _)!;
        var b = Parse("[replicate a]\ntarget = /r\nevery = 2h\n", out _)!;
        Assert.Equal(["pool a: its [replicate] section changed"], ConfigReloader.ChangesNeedingARestart(a, b).ToArray());
        Assert.Empty(ConfigReloader.ChangesNeedingARestart(a, Parse("[replicate a]\ntarget = /r\n", out _)!));
    }
}
