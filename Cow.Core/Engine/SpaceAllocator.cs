using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The pool's space: one <see cref="DeviceSpace"/> per device (reference counts, busy bits, the next-fit
/// allocator, frees deferred to the commit that makes them durable, blocks held back from reuse) and the
/// total of fallocate reservations kept out of the free space (format.md "spacemaps", FallocateReservations.cs).
/// <para>It decides where new writes go (<see cref="AllocateForWrite"/>: the log, then the base device), where the
/// cleaner moves data (<see cref="AllocateForRelocation"/>), what is free (<see cref="FreeForNewWrites"/>, less the
/// <see cref="ReserveBlocks"/>), moves mappings to copies (<see cref="Transfer"/>), and hands a commit its dirty
/// space-map segments and deferred frees.
/// The reuse gate (a freed block is not reallocated while a reader may still read it) is the engine's
/// <c>_reuseGate</c>: the commit releases frees (<see cref="ReleaseFrees"/>) only with it held in write mode.</para>
/// <para>Threading: not thread-safe; every member is called with the engine's <c>_lock</c> held.</para>
/// </summary>
internal sealed class SpaceAllocator
{
    private readonly Dictionary<uint, DeviceSpace> _devices = new();

    public SpaceAllocator(IReadOnlyDictionary<uint, long> deviceBlocks)
    {
        foreach (var (cookie, blocks) in deviceBlocks) _devices[cookie] = new DeviceSpace(cookie, blocks);
    }

    /// <summary>The space of device <paramref name="cookie"/>.</summary>
    public DeviceSpace this[uint cookie] => _devices[cookie];

    public bool TryGet(uint cookie, out DeviceSpace space) => _devices.TryGetValue(cookie, out space!);

    /// <summary>Every device's space, by cookie.</summary>
    public IReadOnlyDictionary<uint, DeviceSpace> Devices => _devices;

    /// <summary>The log device's space: where new writes allocate.</summary>
    public DeviceSpace Log => _devices[FormatConstants.LogCookie];

    /// <summary>The sum of prealloc_blocks over the live inodes: held out of the free space (FallocateReservations.cs).</summary>
    public long Preallocated { get; set; }

    /// <summary>
    /// The pool's reserve (format.md §1): 1 % of the data blocks of every device, kept from new writes so
    /// that the cleaner can always move the live blocks of a log segment onto the base device, even when
    /// writes have filled everything else. Not part of the pool's size.
    /// </summary>
    public long ReserveBlocks
    {
        get
        {
            long data = 0;
            foreach (var s in _devices.Values) data += s.DataBlocks;
            return data / 100;
        }
    }

    private long FreeBlocksAll()
    {
        long free = 0;
        foreach (var s in _devices.Values) free += s.FreeBlocks;
        return free;
    }

    /// <summary>Blocks new writes can still get: the free blocks of every device less the reserve and the
    /// fallocate reservations. Anything else that holds blocks back from new writes subtracts here.</summary>
    public long FreeForNewWrites() => Math.Max(0, FreeBlocksAll() - ReserveBlocks - Preallocated);

    /// <summary>statfs's f_blocks: the data blocks of every device less the reserve.</summary>
    public long SizeBlocks()
    {
        long blocks = 0;
        foreach (var s in _devices.Values) blocks += s.DataBlocks;
        return blocks - ReserveBlocks;
    }

    /// <summary>
    /// Space for a new write (iomap_begin): at most <paramref name="want"/> blocks in one segment, on the log
    /// device while it has a free block, else on the base device; never from the reserve (the caller already
    /// took fallocate reservations into account). Returns the number of blocks (0: the pool is full) and
    /// where they are; they are busy (reserved) until mapped or unreserved.
    /// </summary>
    public long AllocateForWrite(long want, out uint cookie, out long start)
    {
        cookie = 0; start = -1;
        long room = FreeBlocksAll() - ReserveBlocks;
        if (room <= 0) return 0;
        want = Math.Min(want, room);
        var log = Log;
        long n = log.Allocate(want, out start);
        if (n > 0) { cookie = log.Cookie; return n; }
        foreach (var s in _devices.Values)
        {
            if (s.Cookie == FormatConstants.LogCookie) continue;
            n = s.Allocate(want, out start);
            if (n > 0) { cookie = s.Cookie; return n; }
        }
        return 0;
    }

    /// <summary>Space for the cleaner to move log blocks to: at most <paramref name="want"/> blocks in one
    /// segment of a device other than the log; the reserve may be used. 0 when there is none.</summary>
    public long AllocateForRelocation(long want, out uint cookie, out long start)
    {
        cookie = 0; start = -1;
        foreach (var s in _devices.Values)
        {
            if (s.Cookie == FormatConstants.LogCookie) continue;
            long n = s.Allocate(want, out start);
            if (n > 0) { cookie = s.Cookie; return n; }
        }
        return 0;
    }

    /// <summary>Free blocks of the devices the cleaner moves data to (every device but the log).</summary>
    public long FreeForRelocation()
    {
        long free = 0;
        foreach (var s in _devices.Values) if (s.Cookie != FormatConstants.LogCookie) free += s.FreeBlocks;
        return free;
    }

    /// <summary>
    /// Points the mappings of moved blocks at their copies: each block of <paramref name="m"/>'s target (just
    /// allocated, unmapped) takes over every mapping of the block it copies, which is freed (deferred to the
    /// commit, as every free). A source block nothing maps any more (freed while it was being copied) is not
    /// moved: its target is unreserved. Returns the runs actually moved (sub-runs of <paramref name="m"/>).
    /// </summary>
    public List<Relocation> Transfer(Relocation m)
    {
        var from = _devices[m.FromDevice];
        var to = _devices[m.ToDevice];
        var moved = new List<Relocation>();
        long runStart = -1;
        for (long i = 0; i <= m.Blocks; i++)
        {
            uint refs = i < m.Blocks ? from.RefCount(m.FromAddress + i) : 0;
            if (refs != 0)
            {
                to.AdoptRefs(m.ToAddress + i, refs);
                from.ReleaseAll(m.FromAddress + i);
                if (runStart < 0) runStart = i;
                continue;
            }
            if (i < m.Blocks) to.Unreserve(m.ToAddress + i, 1);
            if (runStart >= 0)
            {
                moved.Add(new Relocation(m.FromDevice, m.FromAddress + runStart, i - runStart, m.ToDevice, m.ToAddress + runStart));
                runStart = -1;
            }
        }
        return moved;
    }

    /// <summary>Space of every device, by cookie (cow df). Every data device takes new writes (format.md §1).</summary>
    public IReadOnlyList<DeviceUsage> Usage() => _devices.Values.OrderBy(s => s.Cookie)
        .Select(s => new DeviceUsage(s.Cookie, s.DataBlocks, s.DataBlocks - s.FreeBlocks, s.FreeBlocks, TakesNewWrites: true)).ToArray();

    public bool HasPendingFrees => _devices.Values.Any(sp => sp.HasPendingFrees);

    /// <summary>A commit's gather: the space-map segments changed since the last commit go into <paramref name="batch"/>.</summary>
    public void GatherDirtySegments(MetadataBatch batch)
    {
        foreach (var (cookie, sp) in _devices)
            foreach (var (seg, refs, allZero) in sp.TakeDirtySegments())
            {
                if (allZero) batch.DeletedSpaceMaps.Add(SpaceMapRecord.Id(cookie, seg));
                else batch.Add(new SpaceMapRecord { Device = cookie, Segment = seg, Refs = refs });
            }
    }

    /// <summary>The frees made since the last take, per device: they become allocatable when the commit that
    /// carries them is durable (<see cref="ReleaseFrees"/>) or never in this mount (<see cref="HoldBack"/>).</summary>
    public List<(uint Cookie, List<(long, long)> Ranges)> TakePendingFrees()
    {
        var frees = new List<(uint, List<(long, long)>)>();
        foreach (var (cookie, sp) in _devices) frees.Add((cookie, sp.TakePendingFrees()));
        return frees;
    }

    /// <summary>Lets the blocks a durable commit freed be allocated again (with the reuse gate held in write mode).</summary>
    public void ReleaseFrees(List<(uint Cookie, List<(long, long)> Ranges)> frees)
    {
        foreach (var (cookie, ranges) in frees)
        {
            if (ranges.Count > 0) Interlocked.Increment(ref _releaseEpoch);
            _devices[cookie].ReleasePendingFrees(ranges);
            if (_releasedWhileWatched != null) foreach (var r in ranges) _releasedWhileWatched.Add((cookie, r.Item1, r.Item2));
        }
    }

    private List<(uint Cookie, long Start, long Count)>? _releasedWhileWatched;
    private long _releaseEpoch;

    /// <summary>Counts the <see cref="ReleaseFrees"/> calls that let blocks be allocated again (they run with the reuse
    /// gate held in write mode): a reader that looked a mapping up at one value and holds the gate at the same value
    /// knows the mapping's blocks were not handed out again in between. Read without the lock.</summary>
    public long ReleaseEpoch => Interlocked.Read(ref _releaseEpoch);

    /// <summary>From now until <see cref="StopWatchingReleases"/>, remembers every range <see cref="ReleaseFrees"/> lets be
    /// allocated again: the cleaner copies blocks outside the lock, and a block freed and handed out again
    /// meanwhile may hold other data by the time the copy is committed.</summary>
    public void WatchReleases() => _releasedWhileWatched = new();

    /// <summary>The ranges released since <see cref="WatchReleases"/>; stops watching.</summary>
    public List<(uint Cookie, long Start, long Count)> StopWatchingReleases()
    {
        var l = _releasedWhileWatched ?? new();
        _releasedWhileWatched = null;
        return l;
    }

    /// <summary>Keeps a commit's freed blocks busy for the rest of this mount; the number of blocks.</summary>
    public long HoldBack(List<(uint Cookie, List<(long, long)> Ranges)> frees)
    {
        long blocks = 0;
        foreach (var (cookie, ranges) in frees) blocks += _devices[cookie].HoldBack(ranges);
        return blocks;
    }

    /// <summary>One more mapping of each block of device range [<paramref name="address"/>, +<paramref name="blocks"/>).</summary>
    public void AddRef(uint device, long address, long blocks) => _devices[device].AddRef(address, blocks);

    /// <summary>One mapping fewer of each block of the range (freed, deferred to the commit, when none is left).</summary>
    public void Release(uint device, long address, long blocks) => _devices[device].Release(address, blocks);

    /// <summary>A sink for <see cref="ExtentMap"/> operations: drops one reference on each device range they unmapped.</summary>
    public ReleaseSink Releaser => new(this);

    public readonly struct ReleaseSink(SpaceAllocator space) : IDeviceRangeSink
    {
        public void Add(uint device, long address, long blocks) => space.Release(device, address, blocks);
    }
}
