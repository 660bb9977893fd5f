using Cow.Cli.Service;
using Cow.Fuse.Server;
using Cow.Tests.Mount;
using Xunit;

namespace Cow.Tests.Service;

/// <summary>The configuration file of <c>cow serve</c>: values, and every error with its line and column.</summary>
[Trait("Tier", "mount")]
public class ServeConfigTests
{
    /// <summary>A configuration using every key (also the seed of the configuration fuzzer).</summary>
    internal const string Valid = """
        # Cow service
        [control]
        socket = /run/cow/test.sock
        group = root
        mode = 0640

        [pool data]
        path = /srv/pools/data/
        mountpoint = /srv/data
        writeback-cache = yes
        page-cache = no
        read-ahead = 4096
        max-read = 128
        threads = 8
        allow-other = no
        iomap = off
        cleaner = yes
        cleaner-start = 30
        cleaner-stop = 50%
        cleaner-share = 0.5

        [pool home]
        path = /srv/pools/home
        mountpoint = /home

        [retention data]
        timeline = yes
        hourly = 24
        daily = 7
        weekly = 4
        monthly = 12
        yearly = 1
        max-snapshots = 100
        min-free-percent = 10
        """;

    [SkippableFact]
    public void ABadReadAheadIsNamedWithItsPlace()
    {
        foreach (var bad in new[] { "lots", "-1", "2000000" })
        {
            var c = ServeConfig.Parse($"[pool a]\npath = /p\nmountpoint = /m\nread-ahead = {bad}\n", "x.conf", out var errors);
            Assert.Null(c);
            Assert.Contains("x.conf:4:14: read-ahead must be a number of KiB from 0 to 1048576, not '" + bad + "'", string.Join("\n", errors));
        }
    }

    [SkippableFact]
    public void AtimeKeys()
    {
        var c = ServeConfig.Parse("[pool a]\npath = /p\nmountpoint = /m\natime = noatime\nnodiratime = yes\n[pool b]\npath = /q\nmountpoint = /n\n", "x.conf", out var errors);
        Assert.Empty(errors);
        Assert.Equal(new Core.FileSystem.AtimeOptions(Core.FileSystem.AtimePolicy.Noatime, true), c!.Pools[0].ToMountSettings(_ => { }).Atime);
        Assert.Equal(new Core.FileSystem.AtimeOptions(), c.Pools[1].ToMountSettings(_ => { }).Atime);   // relatime
        foreach (var bad in new[] { "sometimes", "nodiratime" })
        {
            Assert.Null(ServeConfig.Parse($"[pool a]\npath = /p\nmountpoint = /m\natime = {bad}\n", "x.conf", out var errs));
            Assert.Contains($"x.conf:4:9: atime must be relatime, strictatime or noatime, not '{bad}'", string.Join("\n", errs));
        }
    }

    [SkippableFact]
    public void ABadMaxReadIsNamedWithItsPlace()
    {
        foreach (var (bad, why) in new[] { ("lots", "must be a number of KiB, not 'lots'"), ("-4", "must be a number of KiB, not '-4'"),
                     ("2", "not 2"), ("6", "not 6"), ("2048", "not 2048") })
        {
            var c = ServeConfig.Parse($"[pool a]\npath = /p\nmountpoint = /m\nmax-read = {bad}\n", "x.conf", out var errors);
            Assert.Null(c);
            var all = string.Join("\n", errors);
            Assert.Contains("x.conf:4:12: max-read ", all);
            Assert.Contains(why, all);
        }
        var zero = ServeConfig.Parse("[pool a]\npath = /p\nmountpoint = /m\nmax-read = 0\n", "x.conf", out var none);
        Assert.Empty(none);
        Assert.Equal(0, zero!.Pools[0].ToMountSettings(_ => { }).MaxReadKib);
    }

    [SkippableFact]
    public void ACacheSizeIsASizeOfAtLeast32MAndABadOneIsNamedWithItsPlace()
    {
        var ok = ServeConfig.Parse("[pool a]\npath = /p\nmountpoint = /m\ncache-size = 96M\n", "x.conf", out var none);
        Assert.Empty(none);
        Assert.Equal(96L << 20, ok!.Pools[0].CacheBytes);
        Assert.Null(ServeConfig.Parse("[pool a]\npath = /p\nmountpoint = /m\n", "x.conf", out _)!.Pools[0].CacheBytes);
        foreach (var (bad, why) in new[] { ("lots", "cache-size: 'lots' is not a size"), ("1M", "cache-size must be at least 32M, not '1M'") })
        {
            Assert.Null(ServeConfig.Parse($"[pool a]\npath = /p\nmountpoint = /m\ncache-size = {bad}\n", "x.conf", out var errors));
            var all = string.Join("\n", errors);
            Assert.Contains("x.conf:4:14: ", all);
            Assert.Contains(why, all);
        }
    }

    [SkippableFact]
    public void AValidFileGivesEveryValueAndDefaults()
    {
        var c = ServeConfig.Parse(Valid, "cow.conf", out var errors);
        Assert.Empty(errors);
        Assert.NotNull(c);
        Assert.Equal("/run/cow/test.sock", c!.Control.Socket);
        Assert.Equal("root", c.Control.Group);
        Assert.Equal(Convert.ToInt32("640", 8), c.Control.Mode);
        Assert.Equal(2, c.Pools.Count);
        var d = c.Pools[0];
        Assert.Equal(("data", "/srv/pools/data", "/srv/data"), (d.Name, d.Path, d.MountPoint));
        Assert.True(d.WritebackCache);
        Assert.False(d.PageCache);
        Assert.Equal(8, d.Threads);
        Assert.False(d.AllowOther);
        Assert.Equal(IomapMode.Off, d.Iomap);
        Assert.Equal(new RetentionConfig { Timeline = true, Hourly = 24, Daily = 7, Weekly = 4, Monthly = 12, Yearly = 1, MaxSnapshots = 100, MinFreePercent = 10 }, d.Retention);
        Assert.Equal(new Cow.Core.FileSystem.CleanerSettings { StartBelowFreePercent = 30, StopAtFreePercent = 50, Share = 0.5 }, d.Cleaner);
        var h = c.Pools[1];
        Assert.Equal(new Cow.Core.FileSystem.CleanerSettings(), h.Cleaner);   // on by default, with the engine's defaults
        Assert.Null(h.Retention);
        Assert.Null(h.AllowOther);
        Assert.Equal(IomapMode.Auto, h.Iomap);
        Assert.Equal(Cow.Fuse.Mounting.MountSettings.DefaultThreads, h.Threads);
        Assert.True(h.PageCache);
        Assert.Equal(Cow.Fuse.Mounting.MountSettings.DefaultReadAheadKib, h.ReadAheadKib);
        var m = d.ToMountSettings(_ => { });
        Assert.True(m.DirectIo);
        Assert.True(m.WritebackCache);
        Assert.Equal(4096, m.ReadAheadKib);
        Assert.Equal(128, m.MaxReadKib);
        var hm = h.ToMountSettings(_ => { });
        Assert.False(hm.DirectIo);
        Assert.Equal(1024, hm.ReadAheadKib);
        Assert.Equal(0, hm.MaxReadKib);
    }

    [SkippableFact]
    public void CleanerKeysAndTheirErrors()
    {
        const string head = "[pool a]\npath = /p\nmountpoint = /m\n";
        Assert.Null(ServeConfig.Parse(head + "cleaner = no\ncleaner-share = 1\n", "x.conf", out var errors)!.Pools[0].Cleaner);
        Assert.Empty(errors);
        // Only a start threshold above the default stop: the stop follows it.
        var c = ServeConfig.Parse(head + "cleaner-start = 60\n", "x.conf", out errors)!;
        Assert.Equal((60.0, 60.0, 0.25), (c.Pools[0].Cleaner!.StartBelowFreePercent, c.Pools[0].Cleaner!.StopAtFreePercent, c.Pools[0].Cleaner!.Share));
        Assert.Equal(0.1, ServeConfig.Parse(head + "cleaner-share = 10%\n", "x.conf", out _)!.Pools[0].Cleaner!.Share, 6);
        foreach (var (line, message) in new[]
        {
            ("cleaner = sometimes", "x.conf:4:11: cleaner must be yes or no, not 'sometimes'"),
            ("cleaner-start = 101", "x.conf:4:17: cleaner-start must be a percentage from 0 to 100, not '101'"),
            ("cleaner-stop = lots", "x.conf:4:16: cleaner-stop must be a percentage from 0 to 100, not 'lots'"),
            ("cleaner-share = 0", "x.conf:4:17: cleaner-share must be a fraction of the time above 0 and at most 1 (e.g. 0.25, or 25%), not '0'"),
            ("cleaner-share = 1.5", "x.conf:4:17: cleaner-share must be a fraction of the time above 0 and at most 1 (e.g. 0.25, or 25%), not '1.5'"),
            ("cleaner-start = 50\ncleaner-stop = 30", "x.conf:5:16: cleaner-stop 30 % is below cleaner-start 50 %"),
        })
        {
            Assert.Null(ServeConfig.Parse(head + line + "\n", "x.conf", out errors));
            Assert.Contains(message, string.Join("\n", errors));
        }
    }

    [SkippableFact]
    public void RetentionTimelineIsABooleanThatDefaultsToNo()
    {
        var c = ServeConfig.Parse("[pool a]\npath = /p\nmountpoint = /m\n[retention a]\nhourly = 2\n", "cow.conf", out var errors);
        Assert.Empty(errors);
        Assert.False(c!.Pools[0].Retention!.Timeline);
        Assert.Null(ServeConfig.Parse("[pool a]\npath = /p\nmountpoint = /m\n[retention a]\ntimeline = hourly\n", "cow.conf", out errors));
        Assert.Equal("cow.conf:5:12: timeline must be yes or no, not 'hourly'", Assert.Single(errors).ToString());
    }

    [SkippableFact]
    public void ControlSectionDefaults()
    {
        var c = ServeConfig.Parse("[pool a]\npath = /p\nmountpoint = /m\n", "f", out var errors);
        Assert.Empty(errors);
        Assert.Equal("/run/cow/cow.sock", c!.Control.Socket);
        Assert.Null(c.Control.Group);
        Assert.Equal(Convert.ToInt32("660", 8), c.Control.Mode);
    }

    [SkippableFact]
    public void EveryErrorIsReportedWithItsLineAndColumnAtOnce()
    {
        var text = string.Join('\n',
            "[control]",                      // 1
            "socket = run/cow.sock",          // 2  relative path
            "mode = 0999",                    // 3  bad octal
            "colour = blue",                  // 4  unknown key
            "[pool data]",                    // 5  missing path
            "mountpoint = /srv/data",         // 6
            "threads = many",                 // 7  not a number
            "iomap = sometimes",              // 8  unknown mode
            "threads = 3",                    // 9  set twice
            "[pool other]",                   // 10
            "path = /srv/pools/o",            // 11
            "mountpoint = /srv/data/",        // 12 duplicate mount point
            "writeback-cache = perhaps",      // 13 bad boolean
            "[pool third]",                   // 14 missing mount point
            "  path = /srv/pools/o",          // 15 duplicate pool
            "[retention ghost]",              // 16 no such pool
            "daily = -1",                     // 17 bad count
            "[snapshots]",                    // 18 unknown section
            "garbage line",                   // 19 ignored: its section is unknown (reported once)
            "[retention other]",              // 20
            "min-free-percent = 150",         // 21 out of range
            "");
        var c = ServeConfig.Parse(text, "/etc/cow/cow.conf", out var errors);
        Assert.Null(c);
        var at = errors.Select(e => (e.Line, e.Column)).ToList();
        string all = string.Join("\n", errors);
        Assert.Contains((2, 10), at);
        Assert.Contains((3, 8), at);
        Assert.Contains((4, 1), at);
        Assert.Contains((5, 7), at);
        Assert.Contains((7, 11), at);
        Assert.Contains((8, 9), at);
        Assert.Contains((9, 1), at);
        Assert.Contains((12, 14), at);
        Assert.Contains((13, 19), at);
        Assert.Contains((14, 7), at);
        Assert.Contains((15, 10), at);
        Assert.Contains((16, 12), at);
        Assert.Contains((17, 9), at);
        Assert.Contains((18, 2), at);
        Assert.Contains((21, 20), at);
        Assert.DoesNotContain(errors, e => e.Line == 19);
        Assert.Equal(15, errors.Count);
        Assert.Contains("/etc/cow/cow.conf:4:1: unknown key 'colour' in [control]", all);
        Assert.Contains("[pool data] has no 'path'", all);
        Assert.Contains("[pool third] has no 'mountpoint'", all);
        Assert.Contains("threads must be a number from 1 to 64, not 'many'", all);
        Assert.Contains("iomap must be auto, on or off, not 'sometimes'", all);
        Assert.Contains("mount point /srv/data is already used by [pool data] (line 5)", all);
        Assert.Contains("pool /srv/pools/o is already configured as [pool other] (line 10)", all);
        Assert.Contains("[retention ghost] names no pool", all);
        Assert.Contains("unknown section '[snapshots]'", all);
        // Sorted by position.
        Assert.Equal(at.OrderBy(p => p.Line).ThenBy(p => p.Column), at);
    }

    [SkippableFact]
    public void KeysOutsideSectionsMissingGroupAndEmptyFilesAreErrors()
    {
        ServeConfig.Parse("path = /x\n[control]\ngroup = no-such-group-cow\n[pool a]\npath=/a\nmountpoint=/b\nthreads =\n", "f", out var errors);
        Assert.Collection(errors,
            e => Assert.Equal((1, 1), (e.Line, e.Column)),
            e => { Assert.Equal((3, 9), (e.Line, e.Column)); Assert.Contains("group 'no-such-group-cow' does not exist", e.Message); },
            e => { Assert.Equal(7, e.Line); Assert.Contains("'threads' has no value", e.Message); });
        ServeConfig.Parse("# nothing\n", "f", out errors);
        Assert.Contains("no [pool NAME] section", Assert.Single(errors).Message);
    }

    [SkippableFact]
    public void CheckCommandPrintsTheErrorsAndExitsWithTwoOrZero()
    {
        var dir = Path.Combine(Path.GetTempPath(), "cow-conf-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            var bad = Path.Combine(dir, "bad.conf");
            File.WriteAllText(bad, "[pool a]\nthreads = x\n[pool b]\npath = /b\nmountpoint = /mb\nbogus = 1\n");
            var (code, _, err) = CowProgram.Run("serve", "--check", "--config", bad);
            Assert.Equal(2, code);
            Assert.Contains($"{bad}:1:7: [pool a] has no 'path'", err);
            Assert.Contains($"{bad}:2:11: threads must be a number", err);
            Assert.Contains($"{bad}:6:1: unknown key 'bogus' in [pool b]", err);
            var good = Path.Combine(dir, "good.conf");
            File.WriteAllText(good, Valid);
            (code, var output, err) = CowProgram.Run("serve", "--check", "--config", good);
            Assert.True(code == 0, err);
            Assert.Contains("valid (2 pool(s)", output);
            (code, _, err) = CowProgram.Run("serve", "--check", "--config", Path.Combine(dir, "missing.conf"));
            Assert.Equal(2, code);
            Assert.Contains("cannot read the configuration file", err);
        }
        finally { Directory.Delete(dir, true); }
    }
    [SkippableFact]
    public void AReloadNamesEveryChangeThatWaitsForARestartAndNoRetentionChange()
    {
        var running = ServeConfig.Parse(Valid, "cow.conf", out _)!;
        // Only retention changed, and lines moved: nothing waits.
        var retentionOnly = ServeConfig.Parse("# moved\n" + Valid.Replace("hourly = 24", "hourly = 48"), "cow.conf", out var e1)!;
        Assert.Empty(e1);
        Assert.Empty(ConfigReloader.ChangesNeedingARestart(running, retentionOnly));
        var next = ServeConfig.Parse(Valid.Replace("mode = 0640", "mode = 0600").Replace("threads = 8", "threads = 4")
            .Replace("[pool home]\npath = /srv/pools/home\nmountpoint = /home", "[pool vms]\npath = /srv/pools/vms\nmountpoint = /srv/vms"), "cow.conf", out var e2)!;
        Assert.Empty(e2);
        Assert.Equal(new[]
        {
            "the [control] section changed",
            "pool data: its path, mount point or mount options changed",
            "pool vms is new (it is mounted on /srv/vms at the next restart)",
            "pool home is no longer in the file (it stays mounted on /home until the next restart)",
        }, ConfigReloader.ChangesNeedingARestart(running, next));
    }
}
