using Cow.Core.Engine;
using Xunit;

namespace Cow.Tests.EngineParts;

/// <summary>Mapping invalidations (what is recorded, merged, delivered, and what a failing listener marks) and
/// the write barrier, each alone.</summary>
[Trait("Tier", "unit")]
public class MappingInvalidationsAndBarrierTests
{
    private sealed class Listener(bool fail = false) : IMappingInvalidationListener
    {
        public readonly List<MappingRange> Seen = new();
        public void MappingsInvalidated(ReadOnlySpan<MappingRange> ranges)
        {
            Seen.AddRange(ranges.ToArray());
            if (fail) throw new InvalidOperationException("listener down");
        }
    }

    [Fact]
    public void Nothing_is_recorded_without_a_listener_and_adjacent_ranges_of_a_file_merge()
    {
        var reports = new List<string>();
        var lockObj = new object();
        var m = new MappingInvalidations(lockObj, 12, reports.Add);
        m.Record(5, 0, 4);
        var l = new Listener();
        lock (lockObj) m.Add(l);
        m.Deliver();
        Assert.Empty(l.Seen);
        lock (lockObj)
        {
            m.Record(5, 0, 4);
            m.Record(5, 4, 2);      // adjacent: merges
            m.Record(5, 1, 1);      // inside: merges
            m.Record(6, 6, 1);      // another file
            m.Record(5, 100, 1);    // not adjacent
        }
        m.DeliverAndWait();
        Assert.Equal([new MappingRange(5, 0, 6 << 12), new MappingRange(6, 6 << 12, 1 << 12), new MappingRange(5, 100 << 12, 1 << 12)], l.Seen);
        Assert.Empty(reports);
    }

    [Fact]
    public void A_listener_that_throws_is_reported_and_marks_the_commits_that_must_hold_back()
    {
        var reports = new List<string>();
        var lockObj = new object();
        var m = new MappingInvalidations(lockObj, 12, reports.Add);
        lock (lockObj) m.Add(new Listener(fail: true));
        int mark;
        lock (lockObj) { m.TakeFailureMark(); mark = m.TakeFailureMark(); }
        Assert.False(m.FailedSince(mark));
        lock (lockObj) m.Record(1, 0, 1);
        m.DeliverAndWait();
        Assert.True(m.FailedSince(mark));
        Assert.Contains(reports, r => r.Contains("listener down") && r.Contains("held back"));
    }

    [Fact]
    public async Task The_barrier_waits_for_writes_begun_before_it_and_not_for_later_ones()
    {
        var b = new WriteBarrier();
        int early = b.Begin();
        var waited = Task.Run(b.WaitForEarlier);
        await Task.Delay(200);
        Assert.False(waited.IsCompleted);                      // the early write is still in progress
        int late = b.Begin();                                  // begins after the wait started
        b.End(early);
        await waited.WaitAsync(TimeSpan.FromSeconds(10));      // done although the late one is not
        Assert.Equal(1, b.InProgress);
        b.End(late);
        Assert.Equal(0, b.InProgress);
        b.WaitForEarlier();                                    // nothing in progress: returns at once
    }
}
