using System.Text;

namespace Cow.Fuse.Mounting;

/// <summary>One line of /proc/self/mountinfo.</summary>
public sealed record MountEntry(int Id, string MountPoint, string FsType, string Source, string Options, string MajorMinor)
{
    /// <summary>True for a mount made by Cow (type fuse.cow).</summary>
    public bool IsCow => FsType == Mounter.FsType;
}

/// <summary>Reads the kernel's mount table (/proc/self/mountinfo). Stateless, thread-safe.</summary>
public static class MountTable
{
    public static List<MountEntry> Read(string path = "/proc/self/mountinfo")
    {
        var list = new List<MountEntry>();
        foreach (var line in File.ReadLines(path))
        {
            var e = Parse(line);
            if (e != null) list.Add(e);
        }
        return list;
    }

    /// <summary>Parses one mountinfo line; null if it is not one (fields per proc(5)).</summary>
    public static MountEntry? Parse(string line)
    {
        var f = line.Split(' ');
        int dash = Array.IndexOf(f, "-");
        if (dash < 6 || dash + 2 >= f.Length) return null;
        if (!int.TryParse(f[0], out int id)) return null;
        return new MountEntry(id, Unescape(f[4]), f[dash + 1], Unescape(f[dash + 2]), f[5], f[2]);
    }

    /// <summary>The topmost mount at <paramref name="mountPoint"/> (an absolute, normalised path), or null.</summary>
    public static MountEntry? Find(string mountPoint)
    {
        var full = Normalize(mountPoint);
        MountEntry? found = null;
        foreach (var e in Read()) if (e.MountPoint == full) found = e;   // later lines are mounted on top
        return found;
    }

    /// <summary>Absolute path without a trailing slash; symlinks in the parent resolved when possible.</summary>
    public static string Normalize(string path)
    {
        var full = Path.GetFullPath(path);
        if (full.Length > 1) full = full.TrimEnd('/');
        try
        {
            var parent = Path.GetDirectoryName(full);
            if (parent != null)
            {
                var info = new DirectoryInfo(parent);
                var target = info.ResolveLinkTarget(returnFinalTarget: true);
                if (target != null) full = Path.Combine(target.FullName, Path.GetFileName(full));
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return full;
    }

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo (octal).</summary>
    public static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var bytes = new List<byte>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length && IsOct(s[i + 1]) && IsOct(s[i + 2]) && IsOct(s[i + 3]))
            {
                bytes.Add((byte)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
                i += 3;
            }
            else foreach (var b in Encoding.UTF8.GetBytes(s[i].ToString())) bytes.Add(b);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static bool IsOct(char c) => c >= '0' && c <= '7';
}
