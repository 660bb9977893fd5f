using Cow.Cli.Service;
using Cow.Core;
using Cow.Core.Retention;
using Cow.Tests.Engine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Retention;

/// <summary><see cref="RetentionScheduler"/> on a <see cref="FakeTimeProvider"/> against a real pool (memory
/// devices): a timeline snapshot at each hour boundary, the cleanup after it, hand-made and held snapshots
/// kept, and a deletion that fails (a hold placed while the cleanup runs) logged without stopping the rest.</summary>
[Trait("Tier", "engine")]
public class RetentionSchedulerTests
{
    private sealed class OnePool(Pool pool) : IServedPools
    {
        public bool Mounted = true;
        public bool Use(string poolName, Action<Pool, string?> action)
        {
            if (!Mounted || poolName != "data") return false;
            lock (this) action(pool, null);
            return true;
        }
    }

    private sealed class ListLogger : ILogger<RetentionScheduler>
    {
        public readonly List<(LogLevel Level, string Text)> Lines = new();
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        { lock (Lines) Lines.Add((logLevel, formatter(state, exception))); }
        public string All { get { lock (Lines) return string.Join("\n", Lines.Select(l => $"{l.Level}: {l.Text}")); } }
    }

    private static ServeConfig Config(RetentionConfig r) => new()
    {
        Control = new ControlConfig(),
        Pools = [new PoolConfig { Name = "data", Path = "/nonexistent/data", MountPoint = "/nonexistent/mnt", Retention = r }],
    };

    private static string[] Names(MemoryPool mp) => mp.Engine.ListSnapshots().Select(s => s.Name).ToArray();

    /// <summary>Runs the scheduler as the host does, advancing the fake clock one boundary at a time.</summary>
    private sealed class Run : IAsyncDisposable
    {
        public readonly RetentionScheduler Scheduler;
        private readonly FakeTimeProvider _clock;
        private readonly SemaphoreSlim _waiting = new(0), _ticked = new(0);
        private DateTime _next;

        public Run(ServeConfig config, IServedPools pools, FakeTimeProvider clock, ListLogger log)
        {
            _clock = clock;
            Scheduler = new RetentionScheduler(config, pools, clock, log);
            Scheduler.Waiting += t => { _next = t; _waiting.Release(); };
            Scheduler.Ticked += _ => _ticked.Release();
            Scheduler.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
            Assert.True(_ticked.Wait(TimeSpan.FromSeconds(30)), "no cleanup at start");
        }

        /// <summary>Waits until the scheduler waits, moves the clock to the boundary, waits for that tick.</summary>
        public DateTime NextBoundary()
        {
            Assert.True(_waiting.Wait(TimeSpan.FromSeconds(30)), "the scheduler does not wait for the next hour");
            var next = _next;
            Assert.Equal(TimeSpan.Zero, next - new DateTime(next.Year, next.Month, next.Day, next.Hour, 0, 0, DateTimeKind.Utc));
            // Just short of the boundary nothing happens.
            _clock.SetUtcNow(new DateTimeOffset(next.AddSeconds(-1)));
            Assert.False(_ticked.Wait(TimeSpan.FromMilliseconds(50)), $"a tick before the boundary {next:u}");
            _clock.SetUtcNow(new DateTimeOffset(next));
            Assert.True(_ticked.Wait(TimeSpan.FromSeconds(30)), $"no tick at {next:u}");
            return next;
        }

        public async ValueTask DisposeAsync() => await Scheduler.StopAsync(CancellationToken.None);
    }

    [SkippableFact]
    public async Task TakesATimelineSnapshotAtEveryHourBoundaryAndThinsThemAcrossAMonthEnd()
    {
        using var mp = new MemoryPool();
        var clock = new FakeTimeProvider(new DateTimeOffset(2028, 2, 28, 20, 17, 0, TimeSpan.Zero));   // 2028 is a leap year
        mp.Engine.SnapshotClock = () => clock.GetUtcNow().UtcDateTime;
        Assert.Equal((Errno)0, mp.Engine.CreateSnapshot("by-hand", out _));
        var log = new ListLogger();
        var cfg = Config(new RetentionConfig { Timeline = true, Hourly = 3, Daily = 2 });
        await using (var run = new Run(cfg, new OnePool(mp.Pool), clock, log))
        {
            Assert.Equal(["by-hand"], Names(mp));   // the start runs the cleanup only
            var first = run.NextBoundary();
            Assert.Equal(new DateTime(2028, 2, 28, 21, 0, 0, DateTimeKind.Utc), first);
            Assert.Equal(["by-hand", "timeline-20280228-2100"], Names(mp));
            var snap = mp.Engine.ListSnapshots()[1];
            Assert.Equal("timeline", snap.Properties["kind"]);
            // On to 2028-03-01 02:00 (through the leap day): 30 boundaries in all.
            for (int i = 0; i < 29; i++) run.NextBoundary();
        }
        // Hourly 3: 00, 01, 02 of Mar 1; daily 2: Mar 1 (02:00, kept already) and Feb 29 (23:00).
        Assert.Equal(["by-hand", "timeline-20280229-2300", "timeline-20280301-0000", "timeline-20280301-0100", "timeline-20280301-0200"], Names(mp));
        Assert.Contains("deleted snapshot timeline-20280228-2100 (timeline snapshot not kept by hourly=3 daily=2", log.All);
        Assert.Empty(mp.Pool.Fsck().Problems);
    }

    [SkippableFact]
    public void ADeletionThatFailsIsLoggedAndTheOthersStillGo()
    {
        using var mp = new MemoryPool();
        var clock = new FakeTimeProvider(new DateTimeOffset(2027, 12, 31, 22, 0, 0, TimeSpan.Zero));
        mp.Engine.SnapshotClock = () => clock.GetUtcNow().UtcDateTime;
        var pre = new Dictionary<string, string> { ["kind"] = "pre" };
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal((Errno)0, mp.Engine.CreateSnapshot($"pre-{i}", pre, out _));
            clock.Advance(TimeSpan.FromMinutes(1));
        }
        Assert.Equal((Errno)0, mp.Engine.HoldSnapshot("pre-1", "keep"));
        var log = new ListLogger();
        // max-snapshots 1 with no timeline: the start's cleanup wants pre-0, pre-2, pre-3 gone... and more.
        var scheduler = new RetentionScheduler(Config(new RetentionConfig { MaxSnapshots = 1 }), new OnePool(mp.Pool), clock, log);
        var attempted = new List<string>();
        // An administrator holds pre-2 while the cleanup runs (after the plan): its deletion fails with EBUSY.
        scheduler.Deleting += (pool, d) => { attempted.Add(d.Name); if (d.Name == "pre-2") Assert.Equal((Errno)0, pool.Engine.HoldSnapshot("pre-2", "admin")); };
        scheduler.Tick(clock.GetUtcNow().UtcDateTime, takeTimeline: true);
        // Five managed, max one: the four oldest unheld ones are tried (pre-1 was held before: never tried).
        Assert.Equal(["pre-0", "pre-2", "pre-3", "pre-4"], attempted);
        Assert.Equal(["pre-1", "pre-2"], Names(mp));
        Assert.Contains(log.Lines, l => l.Level == LogLevel.Error && l.Text.Contains("cannot delete snapshot pre-2") && l.Text.Contains("'admin'") && l.Text.Contains("going on with the others"));
        Assert.Contains("deleted snapshot pre-4", log.All);
        Assert.Empty(mp.Pool.Fsck().Problems);
    }

    [SkippableFact]
    public async Task AnUnmountedPoolIsSkippedWithAWarningAndTimelineNoTakesNoSnapshot()
    {
        using var mp = new MemoryPool();
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 6, 30, 23, 59, 0, TimeSpan.Zero));
        var log = new ListLogger();
        var pools = new OnePool(mp.Pool);
        await using (var run = new Run(Config(new RetentionConfig { Timeline = false, Hourly = 1 }), pools, clock, log))
        {
            run.NextBoundary();
            Assert.Empty(Names(mp));   // timeline = no
            pools.Mounted = false;
            run.NextBoundary();
        }
        Assert.Contains(log.Lines, l => l.Level == LogLevel.Warning && l.Text.Contains("retention of pool data: the pool is not mounted"));
    }

    [SkippableFact]
    public void TheSpaceRuleDeletesOldestFirstAndMeasuresAgainAfterEach()
    {
        // A small pool (a 64 MiB log, a 1 MiB base device): fill it, snapshot between writes, then ask for more
        // free space than there is.
        using var mp = new MemoryPool(baseSize: 1L << 20, logSize: 64L << 20);
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        mp.Engine.SnapshotClock = () => clock.GetUtcNow().UtcDateTime;
        var tl = new Dictionary<string, string> { ["kind"] = "timeline" };
        var data = new byte[8 << 20];
        for (int i = 0; i < 4; i++)
        {
            new Random(i).NextBytes(data);
            Assert.Equal((Errno)0, mp.Live.Create(mp.Live.RootIno, $"f{i}", 0x1A4, 0, 0, out var attr));
            Assert.Equal((Errno)0, mp.Live.Write(attr.Ino, 0, data, out _));
            Assert.Equal((Errno)0, mp.Engine.CreateSnapshot($"timeline-{i}", tl, out _));
            Assert.Equal((Errno)0, mp.Live.Unlink(mp.Live.RootIno, $"f{i}"));   // only the snapshot holds it now
            clock.Advance(TimeSpan.FromHours(1));
        }
        var st = mp.Live.StatFs();
        int freePct = (int)(st.FreeBlocks * 100 / st.Blocks);
        // Each snapshot holds 8 MiB of the ~64 MiB the pool can hold (every device less the reserve, StatFsTests)
        // alone, about 12.5 points: wanting 20 points more than free needs two deletions; the rules
        // measure after each, so exactly the oldest ones go until it is reached.
        int want = freePct + 20;
        var log = new ListLogger();
        new RetentionScheduler(Config(new RetentionConfig { MinFreePercent = want }), new OnePool(mp.Pool), clock, log).Tick(clock.GetUtcNow().UtcDateTime, false);
        var left = Names(mp);
        Assert.True(left.Length is 1 or 2, $"left {string.Join(", ", left)}; log:\n{log.All}");
        Assert.Equal(new[] { "timeline-0", "timeline-1", "timeline-2", "timeline-3" }[(4 - left.Length)..], left);
        st = mp.Live.StatFs();
        Assert.True(st.FreeBlocks * 100 >= (long)want * st.Blocks, log.All);
        Assert.Contains("below min-free-percent=", log.All);
        Assert.Empty(mp.Pool.Fsck().Problems);
    }
    [SkippableFact]
    public void TheSpaceRuleCountsTheSpaceOfEveryDevice()
    {
        // A 64 MiB base device and a 64 MiB log, 16 MiB of it held by two snapshots: about 87 % of what the pool
        // can hold is free (every device less the 1 % reserve). Were only the log counted, about 75 %.
        using var mp = new MemoryPool(baseSize: 64L << 20, logSize: 64L << 20);
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        mp.Engine.SnapshotClock = () => clock.GetUtcNow().UtcDateTime;
        var data = new byte[8 << 20];
        for (int i = 0; i < 2; i++)
        {
            new Random(i).NextBytes(data);
            Assert.Equal((Errno)0, mp.Live.Create(mp.Live.RootIno, $"f{i}", 0x1A4, 0, 0, out var attr));
            Assert.Equal((Errno)0, mp.Live.Write(attr.Ino, 0, data, out _));
            Assert.Equal((Errno)0, mp.Engine.CreateSnapshot($"timeline-{i}", new Dictionary<string, string> { ["kind"] = "timeline" }, out _));
            Assert.Equal((Errno)0, mp.Live.Unlink(mp.Live.RootIno, $"f{i}"));
            clock.Advance(TimeSpan.FromHours(1));
        }
        var st = mp.Live.StatFs();
        Assert.InRange(st.FreeBlocks * 100 / st.Blocks, 86, 88);
        var log = new ListLogger();
        new RetentionScheduler(Config(new RetentionConfig { MinFreePercent = 80 }), new OnePool(mp.Pool), clock, log).Tick(clock.GetUtcNow().UtcDateTime, false);
        Assert.Equal(new[] { "timeline-0", "timeline-1" }, Names(mp));
        Assert.DoesNotContain("min-free-percent", log.All);
        // 90 % is more than is free: the oldest goes (and one deletion, about 6.3 points, reaches it).
        new RetentionScheduler(Config(new RetentionConfig { MinFreePercent = 90 }), new OnePool(mp.Pool), clock, log).Tick(clock.GetUtcNow().UtcDateTime, false);
        Assert.Equal(new[] { "timeline-1" }, Names(mp));
        Assert.Empty(mp.Pool.Fsck().Problems);
    }

    [SkippableFact]
    public void TheSpaceRuleDeletesAPreWithItsPostBeforeMeasuringAgain()
    {
        using var mp = new MemoryPool(logSize: 64L << 20);
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        mp.Engine.SnapshotClock = () => clock.GetUtcNow().UtcDateTime;
        var data = new byte[8 << 20];
        int i = 0;
        void Snap(string name, Dictionary<string, string> props)
        {
            new Random(i).NextBytes(data);
            Assert.Equal((Errno)0, mp.Live.Create(mp.Live.RootIno, $"f{i}", 0x1A4, 0, 0, out var attr));
            Assert.Equal((Errno)0, mp.Live.Write(attr.Ino, 0, data, out _));
            Assert.Equal((Errno)0, mp.Engine.CreateSnapshot(name, props, out _));
            Assert.Equal((Errno)0, mp.Live.Unlink(mp.Live.RootIno, $"f{i++}"));   // only the snapshot holds it now
            clock.Advance(TimeSpan.FromMinutes(10));
        }
        foreach (var w in new[] { "a", "b" })
        {
            Snap($"{w}-pre", new() { ["kind"] = "pre", ["command"] = w });
            Snap($"{w}-post", new() { ["kind"] = "post", ["pre"] = $"{w}-pre", ["command"] = w });
        }
        var st = mp.Live.StatFs();
        // Deleting a-pre alone (8 MiB of ~64) would already reach 6 points more free space; its post goes with it.
        int want = (int)(st.FreeBlocks * 100 / st.Blocks) + 6;
        var log = new ListLogger();
        new RetentionScheduler(Config(new RetentionConfig { MinFreePercent = want }), new OnePool(mp.Pool), clock, log).Tick(clock.GetUtcNow().UtcDateTime, false);
        Assert.Equal(new[] { "b-pre", "b-post" }, Names(mp));
        Assert.Contains("post snapshot of 'a-pre', deleted with it", log.All);
        Assert.Empty(mp.Pool.Fsck().Problems);
    }
}
