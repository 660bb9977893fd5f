using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The pool's space: one <see cref="DeviceSpace"/> per device (reference counts, busy bits, the next-fit
/// allocator, frees deferred to the commit that makes them durable, blocks held back from reuse) and the
/// total of fallocate reservations kept out of the free space (format.md "spacemaps", FallocateReservations.cs).
/// <para>It decides where new writes go (<see cref="AllocateForWrite"/>: the logs, then the base devices), where the
/// cleaner moves data (<see cref="AllocateForRelocation"/>) and where a removed device's data goes
/// (<see cref="AllocateForEvacuation"/>); devices join and leave (<see cref="AddDevice"/>, <see cref="RemoveDevice"/>); what is free (<see cref="FreeForNewWrites"/>, less the
/// <see cref="ReserveBlocks"/>), moves mappings to copies (<see cref="Transfer"/>), and hands a commit its dirty
/// space-map segments and deferred frees.
/// The reuse gate (a freed block is not reallocated while a reader may still read it) is the engine's
/// <c>_reuseGate</c>: the commit releases frees (<see cref="ReleaseFrees"/>) only with it held in write mode.</para>
/// <para>Threading: not thread-safe; every member is called with the engine's <c>_lock</c> held.</para>
/// </summary>
internal sealed class SpaceAllocator
{
    private readonly Dictionary<uint, DeviceSpace> _devices = new();
    private readonly Func<long> _liveGen;

    /// <param name="deviceBlocks">Blocks of each device, by cookie.</param>
    /// <param name="roles">Role of each device (default: cookie 2 is the log, every other a base device).</param>
    /// <param name="liveGen">The live generation (the pool record's), at which mappings are made and dropped.</param>
    /// <param name="views">Whether a snapshot's generation lies in a range (null: no snapshots).</param>
    public SpaceAllocator(IReadOnlyDictionary<uint, long> deviceBlocks, IReadOnlyDictionary<uint, DeviceRole>? roles = null, Func<long>? liveGen = null, ViewsIn? views = null)
    {
        _liveGen = liveGen ?? (() => 1);
        _views = views;
        foreach (var (cookie, blocks) in deviceBlocks)
            _devices[cookie] = new DeviceSpace(cookie, blocks, roles != null && roles.TryGetValue(cookie, out var r) ? r : null, Generations, views);
    }

    private readonly ViewsIn? _views;

    /// <summary>Mapped blocks of every device by the generations that see them: the snapshot sizes (<see cref="GenerationHistogram"/>).</summary>
    public GenerationHistogram Generations { get; } = new();

    /// <summary>The space of device <paramref name="cookie"/>.</summary>
    public DeviceSpace this[uint cookie] => _devices[cookie];

    public bool TryGet(uint cookie, out DeviceSpace space) => _devices.TryGetValue(cookie, out space!);

    /// <summary>Every device's space, by cookie.</summary>
    public IReadOnlyDictionary<uint, DeviceSpace> Devices => _devices;

    /// <summary>A device added to the pool (cow device add): its blocks are free at once, except block 0 of each segment.</summary>
    public DeviceSpace AddDevice(uint cookie, long blocks, DeviceRole role)
    {
        if (_devices.ContainsKey(cookie)) throw new InvalidOperationException($"device cookie {cookie} is already in the pool");
        var sp = new DeviceSpace(cookie, blocks, role, Generations, _views) { Cursor = 1 };
        _devices[cookie] = sp;
        return sp;
    }

    /// <summary>Drops a removed device, which must hold no mapping, no reservation and no pending free.</summary>
    public void RemoveDevice(uint cookie)
    {
        var sp = _devices[cookie];
        if (sp.ReferencedBlocks() != 0 || sp.HasPendingFrees) throw new InvalidOperationException($"device {cookie} is removed while it still holds data");
        _devices.Remove(cookie);
    }

    /// <summary>The log devices in service (new writes go there first; the cleaner empties them), by cookie.</summary>
    public IEnumerable<DeviceSpace> Logs => _devices.Values.Where(s => s.Role == DeviceRole.Log && !s.Draining).OrderBy(s => s.Cookie);

    /// <summary>The sum of prealloc_blocks over the live inodes: held out of the free space (FallocateReservations.cs).</summary>
    public long Preallocated { get; set; }

    /// <summary>
    /// The pool's reserve (format.md §1): 1 % of the data blocks of every device in service, kept from new writes
    /// so that the cleaner can always move the live blocks of a log segment onto a base device, even when writes
    /// have filled everything else. Not part of the pool's size.
    /// </summary>
    public long ReserveBlocks
    {
        get
        {
            long data = 0;
            foreach (var s in _devices.Values) if (!s.Draining) data += s.DataBlocks;
            return data / 100;
        }
    }

    private long FreeBlocksInService()
    {
        long free = 0;
        foreach (var s in _devices.Values) if (!s.Draining) free += s.FreeBlocks;
        return free;
    }

    /// <summary>Blocks new writes can still get: the free blocks of every device in service less the reserve and the
    /// fallocate reservations. Anything else that holds blocks back from new writes subtracts here.</summary>
    public long FreeForNewWrites() => Math.Max(0, FreeBlocksInService() - ReserveBlocks - Preallocated);

    /// <summary>statfs's f_blocks: the data blocks of every device in service less the reserve.</summary>
    public long SizeBlocks()
    {
        long blocks = 0;
        foreach (var s in _devices.Values) if (!s.Draining) blocks += s.DataBlocks;
        return blocks - ReserveBlocks;
    }

    /// <summary>
    /// Space for a new write (iomap_begin): at most <paramref name="want"/> blocks in one segment, on the log device
    /// in service with the most free blocks while any has one (several logs share the writes), else on the base
    /// device with the most; never from the reserve (the caller already took fallocate reservations into account).
    /// Returns the number of blocks (0: the pool is full) and where they are; they are busy (reserved) until mapped
    /// or unreserved.
    /// </summary>
    public long AllocateForWrite(long want, out uint cookie, out long start)
    {
        cookie = 0; start = -1;
        long room = FreeBlocksInService() - ReserveBlocks;
        if (room <= 0) return 0;
        want = Math.Min(want, room);
        long n = AllocateFromRole(DeviceRole.Log, want, 0, out cookie, out start);
        return n > 0 ? n : AllocateFromRole(DeviceRole.Base, want, 0, out cookie, out start);
    }

    /// <summary>At most <paramref name="want"/> blocks in one segment of the device of role <paramref name="role"/> in
    /// service (other than <paramref name="except"/>) with the most free blocks; 0 when none has any.</summary>
    private long AllocateFromRole(DeviceRole role, long want, uint except, out uint cookie, out long start)
    {
        cookie = 0; start = -1;
        DeviceSpace? best = null;
        foreach (var s in _devices.Values)
            if (s.Role == role && !s.Draining && s.Cookie != except && s.FreeBlocks > 0 && (best == null || s.FreeBlocks > best.FreeBlocks))
                best = s;
        if (best == null) return 0;
        long n = best.Allocate(want, out start);
        if (n > 0) { cookie = best.Cookie; return n; }
        // The most free one had no run (cannot happen with a free block, but stay correct): try the others.
        foreach (var s in _devices.Values.OrderBy(x => x.Cookie))
        {
            if (s.Role != role || s.Draining || s.Cookie == except || s == best) continue;
            n = s.Allocate(want, out start);
            if (n > 0) { cookie = s.Cookie; return n; }
        }
        return 0;
    }

    /// <summary>Space for the cleaner to move log blocks to: at most <paramref name="want"/> blocks in one segment
    /// of the base device in service with the most free blocks; the reserve may be used. 0 when there is none.</summary>
    public long AllocateForRelocation(long want, out uint cookie, out long start) =>
        AllocateFromRole(DeviceRole.Base, want, 0, out cookie, out start);

    /// <summary>Space for the blocks of a device being removed (<paramref name="from"/>): a base device in service
    /// first, else a log device in service; the reserve may be used. 0 when no device has a free block.</summary>
    public long AllocateForEvacuation(long want, uint from, out uint cookie, out long start)
    {
        long n = AllocateFromRole(DeviceRole.Base, want, from, out cookie, out start);
        return n > 0 ? n : AllocateFromRole(DeviceRole.Log, want, from, out cookie, out start);
    }

    /// <summary>Free blocks of the devices the cleaner moves data to (the base devices in service).</summary>
    public long FreeForRelocation()
    {
        long free = 0;
        foreach (var s in _devices.Values) if (s.Role == DeviceRole.Base && !s.Draining) free += s.FreeBlocks;
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
            var had = i < m.Blocks ? from.RunAt(m.FromAddress + i) : null;
            if (had is { } run)
            {
                to.AdoptRefs(m.ToAddress + i, run);
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

    /// <summary>Space of every device, by cookie (cow df). Every device in service takes new writes (format.md §1).</summary>
    public IReadOnlyList<DeviceUsage> Usage() => _devices.Values.OrderBy(s => s.Cookie)
        .Select(s => new DeviceUsage(s.Cookie, s.DataBlocks, s.DataBlocks - s.FreeBlocks, s.FreeBlocks, TakesNewWrites: !s.Draining)).ToArray();

    public bool HasPendingFrees => _devices.Values.Any(sp => sp.HasPendingFrees);

    /// <summary>A commit's gather: the space-map segments changed since the last commit go into <paramref name="batch"/>,
    /// as <c>refs</c> when <paramref name="dense"/> (a pool of format version 1 or 2), else as <c>runs</c>.</summary>
    public void GatherDirtySegments(MetadataBatch batch, bool dense)
    {
        foreach (var (cookie, sp) in _devices)
            foreach (var (seg, runs) in sp.TakeDirtySegments())
            {
                if (runs.Length == 0) batch.DeletedSpaceMaps.Add(SpaceMapRecord.Id(cookie, seg));
                else batch.Add(new SpaceMapRecord { Device = cookie, Segment = seg, Runs = runs, Dense = dense });
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

    /// <summary>A live version maps each block of device range [<paramref name="address"/>, +<paramref name="blocks"/>).</summary>
    public void AddRef(uint device, long address, long blocks) => _devices[device].AddRef(address, blocks, _liveGen());

    /// <summary>A live version stops mapping each block of the range (freed, deferred to the commit, when none is left).</summary>
    public void Release(uint device, long address, long blocks) => _devices[device].Release(address, blocks, _liveGen());

    /// <summary>A live version that maps the range is retired (a snapshot keeps its mappings).</summary>
    public void Retire(uint device, long address, long blocks) => _devices[device].Retire(address, blocks, _liveGen());

    /// <summary>A purged retired version drops its mapping of the range (freed, deferred to the commit, when none is left).</summary>
    public void ReleaseRetired(uint device, long address, long blocks) => _devices[device].ReleaseRetired(address, blocks);

    /// <summary>A sink for <see cref="ExtentMap"/> operations: drops one reference on each device range they unmapped.</summary>
    public ReleaseSink Releaser => new(this);

    public readonly struct ReleaseSink(SpaceAllocator space) : IDeviceRangeSink
    {
        public void Add(uint device, long address, long blocks) => space.Release(device, address, blocks);
    }
}

/// <summary>
/// Mapped blocks of every device counted by their eras (<see cref="RefRun"/>: the generations [birth, until), or
/// [birth, gap from) and [gap to, until), that see them; until = forever while a live version maps them). A view — a
/// snapshot or the live tree — sees a block exactly when its generation is in an era, so the referenced and exclusive bytes of every view
/// (<see cref="Sizes"/>) follow from this histogram alone: a report costs the number of classes, not the pool's size.
/// Kept as the space maps change (<see cref="DeviceSpace"/> reports each change), rebuilt from them at open.
/// <para>Threading: not thread-safe; every member is called with the engine's state lock held.</para>
/// </summary>
internal sealed class GenerationHistogram : IGenerationSink
{
    private readonly Dictionary<EraKey, long> _blocks = new();

    public void Add(EraKey eras, long blocks)
    {
        if (blocks == 0) return;
        long n = _blocks.GetValueOrDefault(eras) + blocks;
        if (n == 0) _blocks.Remove(eras);
        else if (n < 0) throw new InvalidOperationException($"generation histogram: class {eras} would hold {n} blocks");
        else _blocks[eras] = n;
    }

    /// <summary>Distinct era classes held.</summary>
    public int Classes => _blocks.Count;

    /// <summary>The classes and their blocks (fsck compares them with the space maps).</summary>
    public IReadOnlyDictionary<EraKey, long> Blocks => _blocks;

    /// <summary>For views at generations <paramref name="views"/> (ascending; the live tree last): the blocks each sees
    /// (referenced) and the blocks only it sees (exclusive).</summary>
    public (long[] Referenced, long[] Exclusive) Sizes(IReadOnlyList<long> views)
    {
        var referenced = new long[views.Count + 1];   // a difference array: views [first, last) see the class
        var exclusive = new long[views.Count];
        foreach (var (eras, n) in _blocks)
        {
            int seen = 0, only = -1;
            foreach (var (from, to) in eras.Ranges())
            {
                int f = LowerBound(views, from), l = LowerBound(views, to);
                if (l <= f) continue;
                referenced[f] += n; referenced[l] -= n;
                seen += l - f; only = f;
            }
            if (seen == 1) exclusive[only] += n;
        }
        for (int v = 1; v < views.Count; v++) referenced[v] += referenced[v - 1];
        return (referenced[..views.Count], exclusive);
    }

    /// <summary>The first index of <paramref name="views"/> whose generation is at least <paramref name="gen"/>.</summary>
    internal static int LowerBound(IReadOnlyList<long> views, long gen)
    {
        int lo = 0, hi = views.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >> 1;
            if (views[mid] < gen) lo = mid + 1; else hi = mid;
        }
        return lo;
    }
}
