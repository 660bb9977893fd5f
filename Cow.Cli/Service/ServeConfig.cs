using System.Globalization;
using Cow.Fuse.Mounting;
using Cow.Fuse.Server;
using Mono.Unix.Native;

namespace Cow.Cli.Service;

/// <summary>One problem of a configuration file, at a 1-based line and column.</summary>
public sealed record ConfigError(string File, int Line, int Column, string Message)
{
    public override string ToString() => $"{File}:{Line}:{Column}: {Message}";
}

/// <summary>Retention schedule of one pool (<c>[retention NAME]</c>), applied by <see cref="RetentionScheduler"/>:
/// the counts of <see cref="Core.Retention.RetentionRules"/> (null: not set) and whether to take timeline snapshots.</summary>
public sealed record RetentionConfig : Core.Retention.RetentionRules
{
    /// <summary>Take a <c>kind=timeline</c> snapshot at every hour boundary (<c>timeline</c>, default no).</summary>
    public bool Timeline { get; init; }
}

/// <summary>Replication of one pool (<c>[replicate NAME]</c>), run by <see cref="ReplicationScheduler"/> as
/// <c>cow replicate MOUNTPOINT TARGET</c> at every whole multiple of <see cref="Every"/>.</summary>
/// <param name="Target"><c>target</c>: a pool folder or <c>ssh://[user@]host[:port]/path</c>.</param>
/// <param name="Every"><c>every</c>: the interval (default 1h).</param>
/// <param name="HoldTag"><c>hold-tag</c>: the hold kept on the newest snapshot the target holds (default replicate:TARGET).</param>
/// <param name="RemoteCow"><c>remote-cow</c>: the cow command on an ssh target (default cow).</param>
public sealed record ReplicateConfig(string Target, TimeSpan Every, string HoldTag, string RemoteCow);

/// <summary>One <c>[pool NAME]</c> section: a pool folder and how it is mounted.</summary>
public sealed record PoolConfig
{
    public required string Name { get; init; }
    public required string Path { get; init; }
    public required string MountPoint { get; init; }
    public bool WritebackCache { get; init; }
    /// <summary><c>cache-size</c>: the byte budget of the pool's metadata caches (null: sized for the machine,
    /// <see cref="Core.Engine.CacheBudget.Default"/>).</summary>
    public long? CacheBytes { get; init; }
    public bool PageCache { get; init; } = true;
    public int ReadAheadKib { get; init; } = MountSettings.DefaultReadAheadKib;
    public int MaxReadKib { get; init; } = MountSettings.DefaultMaxReadKib;
    public bool ShowSnapshots { get; init; }
    public int Threads { get; init; } = MountSettings.DefaultThreads;
    public bool? AllowOther { get; init; }
    public IomapMode Iomap { get; init; } = IomapMode.Auto;
    /// <summary><c>atime</c> (relatime, strictatime or noatime) and <c>nodiratime</c>.</summary>
    public Core.FileSystem.AtimeOptions Atime { get; init; }
    public RetentionConfig? Retention { get; init; }
    /// <summary>Its <c>[replicate NAME]</c> section; null: none.</summary>
    public ReplicateConfig? Replicate { get; init; }
    /// <summary>The background cleaner, started once the pool is mounted (<c>cleaner</c>, <c>cleaner-start</c>,
    /// <c>cleaner-stop</c>, <c>cleaner-share</c>); null: off.</summary>
    public Core.FileSystem.CleanerSettings? Cleaner { get; init; } = new();
    /// <summary>The scheduled scrub (<c>scrub-every</c>, <c>scrub-rate</c>); null: none.</summary>
    public ScrubSchedule? Scrub { get; init; }
    /// <summary>Line of the section header (log and error messages).</summary>
    public int Line { get; init; }

    public MountSettings ToMountSettings(Action<string> log) => new()
    {
        MountPoint = MountPoint, WritebackCache = WritebackCache, DirectIo = !PageCache, ReadAheadKib = ReadAheadKib, MaxReadKib = MaxReadKib, SnapshotDirVisible = ShowSnapshots,
        Threads = Threads, AllowOther = AllowOther, Iomap = Iomap, Atime = Atime, Log = log,
    };
}

/// <summary>The <c>[control]</c> section: the service's control socket.</summary>
public sealed record ControlConfig
{
    public const string DefaultSocket = "/run/cow/cow.sock";
    public const string DefaultGroup = "cow-admin";
    public string Socket { get; init; } = DefaultSocket;
    /// <summary>Group allowed to use the socket besides root; null = <see cref="DefaultGroup"/> when it exists, else root only.</summary>
    public string? Group { get; init; }
    /// <summary>Permission bits of the socket file.</summary>
    public int Mode { get; init; } = Convert.ToInt32("660", 8);
}

/// <summary>
/// The configuration of <c>cow serve</c>: an INI-like file (see <c>packaging/cow.conf.example</c>). Sections
/// <c>[control]</c>, <c>[pool NAME]</c> (any number) and <c>[retention NAME]</c> (for a pool of that name);
/// lines <c>key = value</c>; <c>#</c> and <c>;</c> start comment lines; booleans are yes/no/true/false/on/off.
/// <see cref="Parse"/> reports every problem with its line and column, all at once. Immutable once parsed:
/// safe to share between threads.
/// </summary>
public sealed partial class ServeConfig
{
    public required ControlConfig Control { get; init; }
    public required IReadOnlyList<PoolConfig> Pools { get; init; }

    private static readonly string[] PoolKeys = ["path", "mountpoint", "writeback-cache", "page-cache", "show-snapshots", "threads", "allow-other", "iomap", "read-ahead", "max-read", "atime", "nodiratime", "cache-size",
        "cleaner", "cleaner-start", "cleaner-stop", "cleaner-share", "scrub-every", "scrub-rate"];
    private static readonly string[] RetentionKeys = ["timeline", "hourly", "daily", "weekly", "monthly", "yearly", "max-snapshots", "min-free-percent"];
    private static readonly string[] ControlKeys = ["socket", "group", "mode"];
    private static readonly string[] ReplicateKeys = ["target", "every", "hold-tag", "remote-cow"];

    /// <summary>Characters a value may hold without question: everything but the C0/C1 controls and DEL (tab allowed).</summary>
    private static readonly System.Buffers.SearchValues<char> PrintableOrTab = System.Buffers.SearchValues.Create(
        Enumerable.Range(0, 0x10000).Select(c => (char)c).Where(c => c == '\t' || !char.IsControl(c)).ToArray());

    private sealed record Entry(string Key, string Value, int Line, int KeyCol, int ValueCol);
    private sealed class Section(string kind, string? name, int line, int nameCol)
    {
        public string Kind = kind; public string? Name = name; public int Line = line; public int NameCol = nameCol;
        public Dictionary<string, Entry> Entries = new(StringComparer.Ordinal);
        /// <summary>Keys given with a value already reported as damaged: not reported again as missing.</summary>
        public HashSet<string> Damaged = new(StringComparer.Ordinal);
    }

    /// <summary>Reads and checks <paramref name="file"/>. Returns null with <paramref name="errors"/> filled
    /// when anything is wrong (an unreadable file is one error at line 0).</summary>
    public static ServeConfig? Load(string file, out List<ConfigError> errors)
    {
        string text;
        try { text = File.ReadAllText(file); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            errors = [new ConfigError(file, 0, 0, $"cannot read the configuration file: {e.Message}")];
            return null;
        }
        return Parse(text, file, out errors);
    }

    /// <summary>Parses configuration text; <paramref name="file"/> names it in the errors.</summary>
    public static ServeConfig? Parse(string text, string file, out List<ConfigError> errors)
    {
        var errs = new List<ConfigError>();
        void Err(int line, int col, string msg) => errs.Add(new ConfigError(file, line, col, msg));
        var sections = new List<Section>();
        Section? current = null;
        var lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            int ln = i + 1;
            var raw = lines[i].TrimEnd('\r');
            int indent = raw.Length - raw.TrimStart().Length;
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#' || line[0] == ';') continue;
            if (line[0] == '[')
            {
                current = null;
                if (line[^1] != ']') { Err(ln, indent + 1, "a section header must end with ']' (e.g. [pool data])"); continue; }
                var inner = line[1..^1].Trim();
                var parts = inner.Split((char[]?)null, 2, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                string kind = parts.Length > 0 ? parts[0] : "";
                string? name = parts.Length > 1 ? parts[1].Trim('"') : null;
                int nameCol = parts.Length > 1 ? raw.IndexOf(parts[1], indent + 1 + kind.Length, StringComparison.Ordinal) + 1 : indent + 2;
                switch (kind)
                {
                    case "control":
                        if (name != null) { Err(ln, nameCol, "[control] takes no name"); break; }
                        if (sections.FirstOrDefault(s => s.Kind == "control") is { } prev) { Err(ln, indent + 1, $"a second [control] section (the first is at line {prev.Line})"); break; }
                        current = new Section(kind, null, ln, indent + 2);
                        break;
                    case "pool":
                    case "retention":
                    case "replicate":
                        if (string.IsNullOrEmpty(name)) { Err(ln, indent + 2, $"[{kind}] needs a pool name, e.g. [{kind} data]"); break; }
                        if (name.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c == '"')) { Err(ln, nameCol, $"pool name '{name}' must be one word (no spaces or quotes)"); break; }
                        if (sections.FirstOrDefault(s => s.Kind == kind && s.Name == name) is { } dup) { Err(ln, nameCol, $"a second [{kind} {name}] section (the first is at line {dup.Line})"); break; }
                        current = new Section(kind, name, ln, nameCol);
                        break;
                    default:
                        Err(ln, indent + 2, $"unknown section '[{inner}]' (sections are [control], [pool NAME], [retention NAME] and [replicate NAME])");
                        break;
                }
                if (current != null) sections.Add(current);
                else current = new Section("ignored", null, ln, 0);   // keys of a bad section are not reported again
                continue;
            }
            if (current?.Kind == "ignored") continue;   // lines of a bad section are not reported again
            int eq = line.IndexOf('=');
            if (eq < 0) { Err(ln, indent + 1, $"expected 'key = value' or a [section], found '{line}'"); continue; }
            var key = line[..eq].Trim();
            var value = line[(eq + 1)..].Trim();
            int valueCol = indent + eq + 2 + (line[(eq + 1)..].Length - line[(eq + 1)..].TrimStart().Length);
            if (current == null) { Err(ln, indent + 1, $"'{key}' is outside any section (put it under [control], [pool NAME], [retention NAME] or [replicate NAME])"); continue; }
            var allowed = current.Kind switch { "pool" => PoolKeys, "retention" => RetentionKeys, "replicate" => ReplicateKeys, _ => ControlKeys };
            string where = current.Name == null ? $"[{current.Kind}]" : $"[{current.Kind} {current.Name}]";
            if (!allowed.Contains(key)) { Err(ln, indent + 1, $"unknown key '{key}' in {where} (known keys: {string.Join(", ", allowed)})"); continue; }
            if (current.Entries.TryGetValue(key, out var earlier)) { Err(ln, indent + 1, $"'{key}' is set twice in {where} (first at line {earlier.Line})"); continue; }
            if (value.Length == 0) { Err(ln, valueCol, $"'{key}' has no value"); continue; }
            int bad = value.AsSpan().IndexOfAnyExcept(PrintableOrTab);
            if (bad >= 0 && char.IsControl(value[bad]))
            {
                Err(ln, valueCol + bad, $"'{key}' contains the control character U+{(int)value[bad]:X4} (a damaged or binary file?)");
                current.Damaged.Add(key);
                continue;
            }
            current.Entries[key] = new Entry(key, value, ln, indent + 1, valueCol);
        }

        // Values, then what ties sections together.
        var control = new ControlConfig();
        var pools = new List<PoolConfig>();
        var retentions = new Dictionary<string, RetentionConfig>();
        var replicates = new Dictionary<string, ReplicateConfig>();
        foreach (var s in sections)
        {
            switch (s.Kind)
            {
                case "replicate":
                    if (Replicate(s, Err) is { } rc) replicates[s.Name!] = rc;
                    break;
                case "control":
                    control = new ControlConfig
                    {
                        Socket = s.Entries.TryGetValue("socket", out var sock) ? AbsolutePath(sock, Err) ?? ControlConfig.DefaultSocket : ControlConfig.DefaultSocket,
                        Group = s.Entries.TryGetValue("group", out var g) ? Group(g, Err) : null,
                        Mode = s.Entries.TryGetValue("mode", out var m) ? Mode(m, Err) : control.Mode,
                    };
                    break;
                case "retention":
                    retentions[s.Name!] = new RetentionConfig
                    {
                        Timeline = Bool(s, "timeline", Err) ?? false, Hourly = Count(s, "hourly", Err), Daily = Count(s, "daily", Err), Weekly = Count(s, "weekly", Err),
                        Monthly = Count(s, "monthly", Err), Yearly = Count(s, "yearly", Err), MaxSnapshots = Count(s, "max-snapshots", Err),
                        MinFreePercent = Count(s, "min-free-percent", Err, max: 100),
                    };
                    break;
                case "pool":
                {
                    string? path = s.Entries.TryGetValue("path", out var p) ? AbsolutePath(p, Err) : null;
                    string? mp = s.Entries.TryGetValue("mountpoint", out var mpe) ? AbsolutePath(mpe, Err) : null;
                    if (p == null && !s.Damaged.Contains("path")) Err(s.Line, s.NameCol, $"[pool {s.Name}] has no 'path' (the pool folder, e.g. path = /srv/pools/{s.Name})");
                    if (mpe == null && !s.Damaged.Contains("mountpoint")) Err(s.Line, s.NameCol, $"[pool {s.Name}] has no 'mountpoint' (the directory to mount it on, e.g. mountpoint = /srv/{s.Name})");
                    int threads = MountSettings.DefaultThreads;
                    if (s.Entries.TryGetValue("threads", out var t))
                    {
                        if (!int.TryParse(t.Value, NumberStyles.None, CultureInfo.InvariantCulture, out threads) || threads < 1 || threads > 64)
                        { Err(t.Line, t.ValueCol, $"threads must be a number from 1 to 64, not '{t.Value}'"); threads = MountSettings.DefaultThreads; }
                    }
                    int readAhead = MountSettings.DefaultReadAheadKib;
                    if (s.Entries.TryGetValue("read-ahead", out var rat))
                    {
                        if (!int.TryParse(rat.Value, NumberStyles.None, CultureInfo.InvariantCulture, out readAhead) || readAhead > MountSettings.MaxReadAheadKib)
                        { Err(rat.Line, rat.ValueCol, $"read-ahead must be a number of KiB from 0 to {MountSettings.MaxReadAheadKib}, not '{rat.Value}'"); readAhead = MountSettings.DefaultReadAheadKib; }
                    }
                    int maxRead = MountSettings.DefaultMaxReadKib;
                    if (s.Entries.TryGetValue("max-read", out var mre))
                    {
                        string? bad = int.TryParse(mre.Value, NumberStyles.None, CultureInfo.InvariantCulture, out maxRead)
                            ? MountSettings.CheckMaxReadKib(maxRead) : $"must be a number of KiB, not '{mre.Value}'";
                        if (bad != null) { Err(mre.Line, mre.ValueCol, $"max-read {bad}"); maxRead = MountSettings.DefaultMaxReadKib; }
                    }
                    var iomap = IomapMode.Auto;
                    if (s.Entries.TryGetValue("iomap", out var io))
                    {
                        switch (io.Value)
                        {
                            case "auto": break;
                            case "on": iomap = IomapMode.On; break;
                            case "off": iomap = IomapMode.Off; break;
                            default: Err(io.Line, io.ValueCol, $"iomap must be auto, on or off, not '{io.Value}'"); break;
                        }
                    }
                    var atime = new Core.FileSystem.AtimeOptions();
                    if (s.Entries.TryGetValue("atime", out var at) && (at.Value is not ("relatime" or "strictatime" or "noatime") || !Core.FileSystem.AtimeOptions.TryApply(at.Value, ref atime)))
                        Err(at.Line, at.ValueCol, $"atime must be relatime, strictatime or noatime, not '{at.Value}'");
                    atime = atime with { NoDirAtime = Bool(s, "nodiratime", Err) ?? false };
                    var cleaner = Cleaner(s, Err);
                    long? cacheBytes = null;
                    if (s.Entries.TryGetValue("cache-size", out var cs))
                    {
                        try
                        {
                            cacheBytes = PoolCommands.ParseSize(cs.Value);
                            if (cacheBytes < Core.Engine.CacheBudget.MinBytes) Err(cs.Line, cs.ValueCol, $"cache-size must be at least {Core.Engine.CacheBudget.MinBytes >> 20}M, not '{cs.Value}'");
                        }
                        catch (FormatException e) { Err(cs.Line, cs.ValueCol, $"cache-size: {e.Message}"); }
                    }
                    pools.Add(new PoolConfig
                    {
                        Name = s.Name!, Path = path ?? "", MountPoint = mp ?? "", Line = s.Line, Threads = threads, Iomap = iomap, Atime = atime,
                        WritebackCache = Bool(s, "writeback-cache", Err) ?? false, PageCache = Bool(s, "page-cache", Err) ?? true, ReadAheadKib = readAhead,
                        MaxReadKib = maxRead, ShowSnapshots = Bool(s, "show-snapshots", Err) ?? false, AllowOther = Bool(s, "allow-other", Err),
                        Cleaner = cleaner,
                        Scrub = Scrub(s, Err),
                        CacheBytes = cacheBytes,
                    });
                    break;
                }
            }
        }
        for (int i = 0; i < pools.Count; i++)
        {
            var a = pools[i];
            var ra = sections.First(s => s.Kind == "pool" && s.Name == a.Name);
            for (int j = 0; j < i; j++)
            {
                var b = pools[j];
                if (a.Path != "" && a.Path == b.Path)
                    Err(ra.Entries["path"].Line, ra.Entries["path"].ValueCol, $"pool {a.Path} is already configured as [pool {b.Name}] (line {b.Line}): a pool can be mounted once");
                if (a.MountPoint != "" && a.MountPoint == b.MountPoint)
                    Err(ra.Entries["mountpoint"].Line, ra.Entries["mountpoint"].ValueCol, $"mount point {a.MountPoint} is already used by [pool {b.Name}] (line {b.Line})");
            }
        }
        foreach (var s in sections.Where(s => s.Kind is "retention" or "replicate"))
            if (!pools.Any(p => p.Name == s.Name))
                Err(s.Line, s.NameCol, $"[{s.Kind} {s.Name}] names no pool: there is no [pool {s.Name}] section");
        if (pools.Count == 0 && errs.Count == 0) Err(1, 1, "no [pool NAME] section: the service would serve nothing");
        errs.Sort((x, y) => x.Line != y.Line ? x.Line.CompareTo(y.Line) : x.Column.CompareTo(y.Column));
        errors = errs;
        if (errs.Count > 0) return null;
        return new ServeConfig
        {
            Control = control,
            Pools = pools.Select(p => retentions.TryGetValue(p.Name, out var r) ? p with { Retention = r } : p)
                .Select(p => replicates.TryGetValue(p.Name, out var rc) ? p with { Replicate = rc } : p).ToArray(),
        };
    }

    /// <summary>A [replicate NAME] section: <c>target</c> required; <c>every</c> an interval (default 1h).</summary>
    private static ReplicateConfig? Replicate(Section s, Action<int, int, string> err)
    {
        if (!s.Entries.TryGetValue("target", out var t))
        {
            if (!s.Damaged.Contains("target")) err(s.Line, s.NameCol, $"[replicate {s.Name}] has no 'target' (a pool folder, or ssh://host/path)");
            return null;
        }
        if (!t.Value.StartsWith('/') && !t.Value.StartsWith("ssh://", StringComparison.Ordinal)) { err(t.Line, t.ValueCol, $"target must be an absolute pool folder or ssh://[user@]host[:port]/path, not '{t.Value}'"); return null; }
        if (Replicator.TargetProblem(t.Value) is { } tp) { err(t.Line, t.ValueCol, tp); return null; }
        var every = TimeSpan.FromHours(1);
        if (s.Entries.TryGetValue("every", out var e))
        {
            if (ScrubSchedule.ParseInterval(e.Value, out var problem) is { } iv) every = iv;
            else { err(e.Line, e.ValueCol, $"every: {problem}"); return null; }
        }
        string tag = Replicator.DefaultHoldTag(t.Value);
        if (s.Entries.TryGetValue("hold-tag", out var h))
        {
            if (Core.PoolSnapshots.HoldTagProblem(h.Value) is { } hp) { err(h.Line, h.ValueCol, hp); return null; }
            tag = h.Value;
        }
        return new ReplicateConfig(t.Value, every, tag, s.Entries.TryGetValue("remote-cow", out var rc) ? rc.Value : "cow");
    }

    private static string? AbsolutePath(Entry e, Action<int, int, string> err)
    {
        if (!e.Value.StartsWith('/')) { err(e.Line, e.ValueCol, $"{e.Key} must be an absolute path (starting with /), not '{e.Value}'"); return null; }
        return MountTable.Normalize(e.Value);
    }

    private static bool? Bool(Section s, string key, Action<int, int, string> err)
    {
        if (!s.Entries.TryGetValue(key, out var e)) return null;
        switch (e.Value.ToLowerInvariant())
        {
            case "yes" or "true" or "on" or "1": return true;
            case "no" or "false" or "off" or "0": return false;
            default: err(e.Line, e.ValueCol, $"{key} must be yes or no, not '{e.Value}'"); return null;
        }
    }

    /// <summary>The cleaner keys of a [pool NAME] section: null when <c>cleaner = no</c>, else the settings (the
    /// defaults for keys not given). Each bad value is reported at its value; a stop threshold below the start
    /// threshold at the stop's value.</summary>
    private static Core.FileSystem.CleanerSettings? Cleaner(Section s, Action<int, int, string> err)
    {
        bool on = Bool(s, "cleaner", err) ?? true;
        double? Value(string key, Func<string, string, (double?, string?)> parse)
        {
            if (!s.Entries.TryGetValue(key, out var e)) return null;
            var (v, problem) = parse(e.Value, key);
            if (problem != null) err(e.Line, e.ValueCol, problem);
            return v;
        }
        static (double?, string?) Percent(string text, string key) => (CleanerOptions.Percent(text, key, out var p), p);
        static (double?, string?) Share(string text, string key) => (CleanerOptions.Share(text, key, out var p), p);
        double? start = Value("cleaner-start", Percent), stop = Value("cleaner-stop", Percent), share = Value("cleaner-share", Share);
        var settings = CleanerOptions.Settings(start, stop, share, "cleaner-start", "cleaner-stop", out var problem);
        if (problem != null)
        {
            var at = s.Entries.GetValueOrDefault("cleaner-stop") ?? s.Entries.GetValueOrDefault("cleaner-start");
            err(at?.Line ?? s.Line, at?.ValueCol ?? s.NameCol, problem);
        }
        return on ? settings : null;
    }

    private static int? Count(Section s, string key, Action<int, int, string> err, int max = 1_000_000)
    {
        if (!s.Entries.TryGetValue(key, out var e)) return null;
        if (int.TryParse(e.Value, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v <= max) return v;
        err(e.Line, e.ValueCol, $"{key} must be a whole number from 0 to {max}, not '{e.Value}'");
        return null;
    }

    private static string? Group(Entry e, Action<int, int, string> err)
    {
        if (Syscall.getgrnam(e.Value) == null) { err(e.Line, e.ValueCol, $"group '{e.Value}' does not exist on this machine (groupadd {e.Value}, or name another group)"); return null; }
        return e.Value;
    }

    private static int Mode(Entry e, Action<int, int, string> err)
    {
        try
        {
            if (e.Value.Length is >= 3 and <= 4 && e.Value.All(c => c is >= '0' and <= '7'))
            {
                int m = Convert.ToInt32(e.Value, 8);
                if (m <= Convert.ToInt32("777", 8)) return m;
            }
        }
        catch (FormatException) { }
        err(e.Line, e.ValueCol, $"mode must be octal permission bits such as 0660, not '{e.Value}'");
        return Convert.ToInt32("660", 8);
    }
}
