using Cow.Core.FileSystem;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Engine;

/// <summary>
/// The pool's space: one <see cref="DeviceSpace"/> per device (reference counts, busy bits, the next-fit
/// allocator, frees deferred to the commit that makes them durable, blocks held back from reuse) and the
/// total of fallocate reservations kept out of the free space (format.md "spacemaps", FallocateReservations.cs).
/// <para>It decides which devices take new writes (<see cref="TakesNewWrites"/>), what is free for them
/// (<see cref="FreeForNewWrites"/>), and hands a commit its dirty space-map segments and deferred frees.
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
    /// Whether new writes may allocate blocks on the device <paramref name="cookie"/>: today only the log
    /// device does. The base device holds what <c>mkfs --import</c> placed there and is otherwise frozen
    /// (format.md §1). The one place that decides it: statfs, <c>cow df</c> and min-free-percent follow.
    /// </summary>
    public static bool TakesNewWrites(uint cookie) => cookie == FormatConstants.LogCookie;

    /// <summary>Blocks new writes can still get: the free blocks of the devices that take new writes, less
    /// the fallocate reservations. Anything else that holds blocks back from new writes subtracts here.</summary>
    public long FreeForNewWrites()
    {
        long free = 0;
        foreach (var s in _devices.Values)
            if (TakesNewWrites(s.Cookie)) free += s.FreeBlocks;
        return Math.Max(0, free - Preallocated);
    }

    /// <summary>statfs's f_blocks: the data blocks of every device that takes new writes + the used blocks of
    /// every device that does not (the unused part of a frozen base device can hold nothing).</summary>
    public long SizeBlocks()
    {
        long blocks = 0;
        foreach (var s in _devices.Values)
            blocks += TakesNewWrites(s.Cookie) ? s.DataBlocks : s.DataBlocks - s.FreeBlocks;
        return blocks;
    }

    /// <summary>Space of every device, by cookie (cow df).</summary>
    public IReadOnlyList<DeviceUsage> Usage() => _devices.Values.OrderBy(s => s.Cookie)
        .Select(s => new DeviceUsage(s.Cookie, s.DataBlocks, s.DataBlocks - s.FreeBlocks, s.FreeBlocks, TakesNewWrites(s.Cookie))).ToArray();

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
        foreach (var (cookie, ranges) in frees) _devices[cookie].ReleasePendingFrees(ranges);
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
