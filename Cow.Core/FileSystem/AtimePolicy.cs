namespace Cow.Core.FileSystem;

/// <summary>
/// When a read updates the access time of a live inode (the mount options of Linux filesystems; FUSE leaves
/// atime to the server, the kernel marks its inodes S_NOATIME). Snapshots never change.
/// </summary>
public enum AtimePolicy
{
    /// <summary>Linux's default (relatime_need_update in fs/inode.c): a read updates atime when atime is not
    /// after mtime or ctime, or is 24 hours old or older. So the first read after a change is seen, and a
    /// file read all day costs one atime update a day.</summary>
    Relatime = 0,
    /// <summary>Every read updates atime.</summary>
    Strictatime = 1,
    /// <summary>Reads never update atime (an explicit utimensat still sets it).</summary>
    Noatime = 2,
}

/// <summary>The atime options of a mount: the policy, and nodiratime (reading a directory never updates its atime).</summary>
public readonly record struct AtimeOptions(AtimePolicy Policy = AtimePolicy.Relatime, bool NoDirAtime = false)
{
    /// <summary>Parses one word of a mount's option list (<c>relatime</c>, <c>strictatime</c>, <c>noatime</c>,
    /// <c>nodiratime</c>, <c>diratime</c>); false when the word is not an atime option.</summary>
    public static bool TryApply(string word, ref AtimeOptions options)
    {
        switch (word)
        {
            case "relatime": options = options with { Policy = AtimePolicy.Relatime }; return true;
            case "strictatime": options = options with { Policy = AtimePolicy.Strictatime }; return true;
            case "noatime": options = options with { Policy = AtimePolicy.Noatime }; return true;
            case "nodiratime": options = options with { NoDirAtime = true }; return true;
            case "diratime": options = options with { NoDirAtime = false }; return true;
            default: return false;
        }
    }

    /// <summary>The option words, as /proc/mounts would list them (relatime is the default and not listed).</summary>
    public override string ToString() =>
        (Policy switch { AtimePolicy.Strictatime => "strictatime", AtimePolicy.Noatime => "noatime", _ => "relatime" }) + (NoDirAtime ? ",nodiratime" : "");
}
