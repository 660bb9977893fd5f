using Cow.Core;
using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>What a FUSE node id names: an inode of one tree (<see cref="View"/> non-null), or the virtual
/// <c>.snapshots</c> directory (<see cref="IsSnapshotDir"/>).</summary>
public readonly record struct FuseNode(FileSystemView? View, long Ino, int Slot)
{
    public bool IsSnapshotDir => View is null;
}

/// <summary>
/// FUSE node ids ↔ (tree, inode). A node id is <c>slot &lt;&lt; 48 | inode</c>:
/// <list type="bullet">
/// <item>slot 0 is the mounted tree (the live tree, or the snapshot of <c>--snapshot</c>): node id = inode
/// number, so FUSE_ROOT_ID 1 is <see cref="Core.Engine.Engine.RootIno"/> 1;</item>
/// <item>slots 1..65534 are snapshots browsed under <c>.snapshots</c>, given out on their first lookup and
/// never reused within a mount (a node id of a deleted snapshot stays ESTALE, it never names another
/// snapshot's inode);</item>
/// <item>slot 0xFFFF holds virtual nodes: inode 1 there is the <c>.snapshots</c> directory (live mounts only).</item>
/// </list>
/// st_ino (fuse_attr.ino) is the engine's inode number in the mounted tree; under <c>.snapshots</c> it is that
/// number with <see cref="SnapshotTreeInoBit"/> set, the same in every snapshot (an unchanged file keeps its
/// st_ino and ctime from one snapshot to the next, so restic and borg see it unchanged) but never the live
/// file's: every file of one mount shares st_dev, and cp ("are the same file"), cmp and diff (equal without
/// reading), du, tar and rsync -H take equal (st_dev, st_ino) for one file. The root of each browsed snapshot
/// and <c>.snapshots</c> itself get synthetic numbers (bit 62 set) so that no directory shares the mount
/// root's st_ino under it (find and du would report a loop).
/// Threading: thread-safe. <see cref="Resolve"/> and the mapping functions take no lock (slots are
/// published with a volatile write and never change after); slot assignment takes a lock.
/// </summary>
public sealed class NodeTable
{
    public const int SlotShift = 48;
    public const ulong InoMask = (1UL << SlotShift) - 1;
    public const int RootSlot = 0, FirstSnapshotSlot = 1, LastSnapshotSlot = 0xFFFE, VirtualSlot = 0xFFFF;
    /// <summary>The node id of the virtual <c>.snapshots</c> directory.</summary>
    public const ulong SnapshotDirNodeId = ((ulong)VirtualSlot << SlotShift) | 1;
    /// <summary>Synthetic st_ino values have this bit; engine inode numbers never reach it.</summary>
    public const ulong SyntheticInoBit = 1UL << 62;
    /// <summary>Set in the st_ino of every inode under <c>.snapshots</c> but the snapshot roots; engine inode numbers
    /// never reach it.</summary>
    public const ulong SnapshotTreeInoBit = 1UL << 60;
    /// <summary>st_ino of <c>.snapshots</c> (a snapshot root's is <see cref="SyntheticInoBit"/> | its generation).</summary>
    public const ulong SnapshotDirStIno = SyntheticInoBit | (1UL << 61);
    /// <summary>The reserved name of the snapshot directory in the root of a live mount.</summary>
    public const string SnapshotDirName = ".snapshots";

    private readonly Pool _pool;
    private readonly FileSystemView?[] _views = new FileSystemView?[VirtualSlot];
    private readonly long[] _generations = new long[VirtualSlot];
    private readonly Dictionary<string, int> _slotByName = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private int _nextSlot = FirstSnapshotSlot;

    /// <param name="pool">The pool served.</param>
    /// <param name="root">The mounted tree (slot 0).</param>
    public NodeTable(Pool pool, FileSystemView root)
    {
        _pool = pool;
        Root = root;
        _views[RootSlot] = root;
        HasSnapshotDir = !root.ReadOnly;
    }

    /// <summary>The mounted tree.</summary>
    public FileSystemView Root { get; }

    /// <summary>True on a live mount: <c>.snapshots</c> exists in the root.</summary>
    public bool HasSnapshotDir { get; }

    /// <summary>Snapshot slots given out so far.</summary>
    public int SnapshotSlotsUsed { get { lock (_lock) return _nextSlot - FirstSnapshotSlot; } }

    /// <summary>The node of <paramref name="nodeId"/>: ENOENT when it names nothing (0, an inode 0, an unused
    /// slot, an unknown virtual node), ESTALE when its snapshot was deleted.</summary>
    public Errno Resolve(ulong nodeId, out FuseNode node)
    {
        node = default;
        int slot = (int)(nodeId >> SlotShift);
        long ino = (long)(nodeId & InoMask);
        if (ino == 0) return Errno.ENOENT;
        if (slot == VirtualSlot)
        {
            if (ino != 1 || !HasSnapshotDir) return Errno.ENOENT;
            node = new FuseNode(null, ino, slot);
            return 0;
        }
        var view = slot == RootSlot ? Root : Volatile.Read(ref _views[slot]);
        if (view == null) return Errno.ENOENT;
        if (view.Stale) return Errno.ESTALE;
        node = new FuseNode(view, ino, slot);
        return 0;
    }

    /// <summary>The node id of inode <paramref name="ino"/> in the tree of <paramref name="slot"/>;
    /// false when the inode number does not fit the 48 bits of a node id.</summary>
    public static bool TryNodeId(int slot, long ino, out ulong nodeId)
    {
        nodeId = 0;
        if (ino <= 0 || (ulong)ino > InoMask) return false;
        nodeId = ((ulong)slot << SlotShift) | (ulong)ino;
        return true;
    }

    /// <summary>
    /// fuse_entry_out.generation (the kernel's i_generation, 32 bits, part of every file handle) of inode
    /// <paramref name="ino"/>, born at <paramref name="btimeNs"/>, in the tree of <paramref name="slot"/>:
    /// the birth time folded to 32 bits, so that an inode number given again to another inode (Cow never
    /// reuses one, but a crash before the commit that recorded the counter could) does not match an old
    /// handle; in a browsed snapshot it is mixed with the snapshot's generation, so that a handle whose slot
    /// names another snapshot after a remount is ESTALE rather than another version of the file. Root
    /// directories answer 0 (the kernel requires it of FUSE_ROOT_ID). The same inode always gets the same
    /// value, as the kernel requires for a node id it has cached.
    /// </summary>
    public uint Generation(int slot, long ino, long btimeNs)
    {
        if (ino == Core.Engine.Engine.RootIno || slot == VirtualSlot) return 0;
        ulong x = (ulong)btimeNs;
        if (slot is >= FirstSnapshotSlot and <= LastSnapshotSlot) x ^= (ulong)Volatile.Read(ref _generations[slot]) * 0x9E3779B97F4A7C15UL;
        return (uint)(x ^ (x >> 32));
    }

    /// <summary>st_ino of inode <paramref name="ino"/> of the tree in <paramref name="slot"/>.</summary>
    public ulong StIno(int slot, long ino)
    {
        if (slot is >= FirstSnapshotSlot and <= LastSnapshotSlot && ino == Core.Engine.Engine.RootIno)
            return SyntheticInoBit | (ulong)Volatile.Read(ref _generations[slot]);
        if (slot == VirtualSlot) return SnapshotDirStIno;
        if (slot is >= FirstSnapshotSlot and <= LastSnapshotSlot) return (ulong)ino | SnapshotTreeInoBit;
        return (ulong)ino;
    }

    /// <summary>The slot of snapshot <paramref name="name"/>, giving it one on its first lookup (and a new one
    /// when the snapshot of that name was deleted and made again). ENOENT when there is no such snapshot,
    /// ENFILE when the mount has used all its 65534 snapshot slots.</summary>
    public Errno SnapshotSlot(string name, out int slot)
    {
        lock (_lock)
        {
            if (_slotByName.TryGetValue(name, out slot) && !_views[slot]!.Stale) return 0;
            slot = 0;
            long generation = -1;
            foreach (var s in _pool.Snapshots.List())
                if (string.Equals(s.Name, name, StringComparison.Ordinal)) { generation = s.Gen; break; }
            if (generation < 0) return Errno.ENOENT;
            var view = _pool.Snapshot(name);
            if (view == null) return Errno.ENOENT;
            if (_nextSlot > LastSnapshotSlot) return Errno.ENFILE;
            slot = _nextSlot++;
            Volatile.Write(ref _generations[slot], generation);
            Volatile.Write(ref _views[slot], view);
            _slotByName[name] = slot;
            return 0;
        }
    }
}
