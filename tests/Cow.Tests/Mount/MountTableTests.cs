using Cow.Fuse.Mounting;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>Parsing /proc/self/mountinfo and escaping mount options (no mount needed).</summary>
[Trait("Tier", "unit")]
public sealed class MountTableTests
{
    [Fact]
    public void Parses_a_cow_line_with_escaped_paths()
    {
        var e = MountTable.Parse(@"812 29 0:94 / /srv/my\040data rw,nosuid,nodev,relatime shared:432 - fuse.cow /srv/pool\040one,2 rw,user_id=0,group_id=0,default_permissions,allow_other");
        Assert.NotNull(e);
        Assert.Equal(812, e!.Id);
        Assert.Equal("/srv/my data", e.MountPoint);
        Assert.Equal("fuse.cow", e.FsType);
        Assert.True(e.IsCow);
        Assert.Equal("/srv/pool one,2", e.Source);
        Assert.Equal("0:94", e.MajorMinor);
        Assert.Contains("rw", e.Options.Split(','));
    }

    [Theory]
    [InlineData("")]
    [InlineData("garbage")]
    [InlineData("1 2 3 4 5 6 - ")]
    public void Malformed_lines_are_null(string line) => Assert.Null(MountTable.Parse(line));

    [Fact]
    public void Unescape_decodes_octal_and_keeps_the_rest()
    {
        Assert.Equal("a b\tc\\d", MountTable.Unescape(@"a\040b\011c\134d"));
        Assert.Equal(@"x\9y", MountTable.Unescape(@"x\9y"));
        Assert.Equal("plain", MountTable.Unescape("plain"));
    }

    [Fact]
    public void Options_escape_commas_and_backslashes() => Assert.Equal(@"/p\,q\\r", Mounter.EscapeOption(@"/p,q\r"));

    [Fact]
    public void The_real_mount_table_reads() => Assert.Contains(MountTable.Read(), e => e.MountPoint == "/");
}
