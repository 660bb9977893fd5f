using System.Collections.Concurrent;
using Cow.Cli.Service;
using Cow.Core;
using Cow.Core.Engine;
using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Tests.Engine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Service;

/// <summary><see cref="ScrubScheduler"/> on a <see cref="FakeTimeProvider"/> against a real pool (memory devices): a
/// scrub at each boundary of <c>scrub-every</c>, nothing before; a clean pass logged as such, damage logged as errors
/// with the file's paths and the no-repair notice; a pool not mounted is skipped with a warning.</summary>
[Trait("Tier", "engine")]
public class ScrubSchedulerTests
{
    private sealed class OnePool(Pool pool) : IServedPools
    {
        public volatile bool Mounted = true;
        public bool Use(string poolName, Action<Pool, string?> action)
        {
            if (!Mounted || poolName != "data") return false;
            lock (this) action(pool, null);
            return true;
        }
    }

    private sealed class ListLogger : ILogger<ScrubScheduler>
    {
        public readonly List<(LogLevel Level, string Text)> Lines = new();
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        { lock (Lines) Lines.Add((logLevel, formatter(state, exception))); }
        public (LogLevel Level, string Text)[] Snapshot() { lock (Lines) return Lines.ToArray(); }
    }

    [Fact]
    public async Task ScrubsAtEachBoundaryAndLogsDamageByPath()
    {
        using var mp = new MemoryPool();
        var fs = mp.Live;
        long f = CreateFile(fs, "/notes.txt");
        WriteAt(fs, f, 0, Pattern(3 * 4096, 1));
        Assert.Equal(0, (int)mp.Engine.CreateSnapshot("monday", out _));
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 3, 4, 10, 30, 0, TimeSpan.Zero));
        var log = new ListLogger();
        var pools = new OnePool(mp.Pool);
        var config = new ServeConfig
        {
            Control = new ControlConfig(),
            Pools = [new PoolConfig { Name = "data", Path = "/nonexistent/data", MountPoint = "/nonexistent/mnt", Scrub = new ScrubSchedule(TimeSpan.FromDays(1), 0) }],
        };
        var scheduler = new ScrubScheduler(config, pools, clock, log);
        var waiting = new BlockingCollection<DateTime>();
        var scrubbed = new BlockingCollection<ScrubReport?>();
        scheduler.Waiting += t => waiting.Add(t);
        scheduler.Scrubbed += (_, r) => scrubbed.Add(r);
        await scheduler.StartAsync(CancellationToken.None);
        try
        {
            ScrubReport? Boundary(DateTime expected)
            {
                Assert.True(waiting.TryTake(out var next, TimeSpan.FromSeconds(30)), "the scheduler does not wait for the next boundary");
                Assert.Equal(expected, next);
                clock.SetUtcNow(new DateTimeOffset(next.AddSeconds(-1)));
                Assert.False(scrubbed.TryTake(out _, TimeSpan.FromMilliseconds(50)), $"a scrub before the boundary {next:u}");
                clock.SetUtcNow(new DateTimeOffset(next));
                Assert.True(scrubbed.TryTake(out var r, TimeSpan.FromSeconds(30)), $"no scrub at {next:u}");
                return r;
            }
            var clean = Boundary(new DateTime(2026, 3, 5, 0, 0, 0, DateTimeKind.Utc));
            Assert.NotNull(clean);
            Assert.True(clean!.Complete && clean.Clean);
            Assert.Equal(3, clean.BlocksChecked);
            Assert.Contains(log.Snapshot(), l => l.Level == LogLevel.Information && l.Text.Contains("pool data: scheduled scrub complete: 3 blocks"));

            Assert.Equal(0, (int)fs.IomapBegin(f, 4096, 4096, IomapOp.None, out var m));
            var dev = m.Read.Device == FormatConstants.LogCookie ? mp.LogMem : mp.BaseMem;
            var block = new byte[4096];
            dev.Read((long)m.Read.Address, block);
            block[7] ^= 1;
            dev.Write((long)m.Read.Address, block);
            var damaged = Boundary(new DateTime(2026, 3, 6, 0, 0, 0, DateTimeKind.Utc));
            Assert.Equal(1, damaged!.DamagedBlocks);
            var lines = log.Snapshot();
            Assert.Contains(lines, l => l.Level == LogLevel.Error && l.Text.Contains("1 damaged block(s)") && l.Text.Contains(ScrubReport.NoRepair));
            Assert.Contains(lines, l => l.Level == LogLevel.Error && l.Text.Contains($"inode {f} offset 4096: checksum mismatch (/notes.txt; snapshot monday: /notes.txt)"));

            pools.Mounted = false;
            Assert.Null(Boundary(new DateTime(2026, 3, 7, 0, 0, 0, DateTimeKind.Utc)));
            Assert.Contains(log.Snapshot(), l => l.Level == LogLevel.Warning && l.Text.Contains("pool data: the scrub due at 2026-03-07 00:00:00Z is skipped: the pool is not mounted"));
        }
        finally { await scheduler.StopAsync(CancellationToken.None); }
    }

    [Fact]
    public async Task NoScheduleNoScrub()
    {
        using var mp = new MemoryPool();
        var config = new ServeConfig { Control = new ControlConfig(), Pools = [new PoolConfig { Name = "data", Path = "/p", MountPoint = "/m" }] };
        var scheduler = new ScrubScheduler(config, new OnePool(mp.Pool), new FakeTimeProvider(), new ListLogger());
        int waits = 0;
        scheduler.Waiting += _ => waits++;
        await scheduler.StartAsync(CancellationToken.None);
        await scheduler.StopAsync(CancellationToken.None);
        Assert.Equal(0, waits);
    }
}
