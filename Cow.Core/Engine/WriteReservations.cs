using Cow.Core.Format;

namespace Cow.Core.Engine;

/// <summary>An allocation handed out by iomap_begin and not yet fully committed (ioend) or released
/// (iomap_end). Remembered so that ioends without an address (direct I/O) can be committed, and so that
/// an ioend can never commit an address the engine did not hand out.</summary>
internal sealed class Reservation
{
    public long FileBlock, Blocks, Address;
    public uint Device;
    /// <summary>Per block of [FileBlock, FileBlock+Blocks): still pending. May be longer than Blocks (reused).</summary>
    public bool[] Pending = Array.Empty<bool>();
    public int PendingCount;
}

/// <summary>
/// The write allocations in flight: what iomap_begin handed out per file and the ioend or iomap_end that
/// will commit or release it has not yet. A pending block is busy in its <see cref="DeviceSpace"/> (never
/// handed out twice) and holds its inode in the cache (<see cref="LiveInode.Reservations"/>).
/// <para>Owns the per-inode lists and the spare reservations and lists it recycles, so that the write path
/// allocates no bookkeeping per request.</para>
/// <para>Threading: not thread-safe; every member is called with the engine's <c>_lock</c> held.</para>
/// </summary>
internal sealed class WriteReservations(SpaceAllocator space, LiveTreeCache cache)
{
    private const int ChunkBlocks = FormatConstants.ChunkBlocks;
    private const int Spares = 256;
    private readonly Dictionary<long, List<Reservation>> _byInode = new();
    private readonly Stack<Reservation> _spareReservations = new();
    private readonly Stack<List<Reservation>> _spareLists = new();

    /// <summary>Records that file blocks [<paramref name="fileBlock"/>, +<paramref name="blocks"/>) of
    /// <paramref name="li"/> are to be written at device blocks [<paramref name="address"/>, +blocks), all pending.</summary>
    public void Add(LiveInode li, long fileBlock, long blocks, uint device, long address)
    {
        var res = _spareReservations.Count > 0 && _spareReservations.Peek().Pending.Length >= blocks
            ? _spareReservations.Pop()
            : new Reservation { Pending = new bool[Math.Max(blocks, Math.Min(256, ChunkBlocks))] };
        res.FileBlock = fileBlock; res.Blocks = blocks; res.Device = device; res.Address = address; res.PendingCount = (int)blocks;
        Array.Fill(res.Pending, true, 0, (int)blocks);
        if (!_byInode.TryGetValue(li.Ino, out var list))
            _byInode[li.Ino] = list = _spareLists.Count > 0 ? _spareLists.Pop() : new List<Reservation>();
        list.Add(res);
        li.Reservations++;
    }

    /// <summary>Blocks handed out and not yet committed or released (fsck).</summary>
    public HashSet<(uint, long)> PendingBlocks()
    {
        var set = new HashSet<(uint, long)>();
        foreach (var list in _byInode.Values)
            foreach (var r in list)
                for (long i = 0; i < r.Blocks; i++) if (r.Pending[i]) set.Add((r.Device, r.Address + i));
        return set;
    }

    /// <summary>The first reservation of <paramref name="ino"/> covering file blocks [fileBlock, +blocks) whole.</summary>
    public Reservation? Find(long ino, long fileBlock, long blocks)
    {
        if (!_byInode.TryGetValue(ino, out var list)) return null;
        foreach (var r in list)
            if (fileBlock >= r.FileBlock && fileBlock + blocks <= r.FileBlock + r.Blocks) return r;
        return null;
    }

    /// <summary>The newest allocation of <paramref name="ino"/> in which file block <paramref name="fileBlock"/>
    /// is pending; with <paramref name="expectBlock"/> ≥ 0, only one that puts it at that block of
    /// <paramref name="device"/>.</summary>
    public Reservation? FindPending(long ino, long fileBlock, uint device, long expectBlock)
    {
        if (!_byInode.TryGetValue(ino, out var list)) return null;
        for (int k = list.Count - 1; k >= 0; k--)
        {
            var r = list[k];
            long i = fileBlock - r.FileBlock;
            if (i < 0 || i >= r.Blocks || !r.Pending[i]) continue;
            if (expectBlock >= 0 && (r.Device != device || r.Address + i != expectBlock)) continue;
            return r;
        }
        return null;
    }

    /// <summary>Blocks [from, to) of <paramref name="r"/> were committed into the file: no longer pending.</summary>
    public void Committed(long ino, Reservation r, long from, long to)
    {
        for (long i = from; i < to; i++) { r.Pending[i] = false; r.PendingCount--; }
        DropIfDone(ino, r);
    }

    /// <summary>Releases the pending blocks [from, to) of <paramref name="r"/>: they go back to the device's free space.</summary>
    public void Release(long ino, Reservation r, long from, long to)
    {
        var sp = space[r.Device];
        for (long i = from; i < to; i++)
        {
            if (!r.Pending[i]) continue;
            r.Pending[i] = false; r.PendingCount--;
            sp.Unreserve(r.Address + i, 1);
        }
        DropIfDone(ino, r);
    }

    /// <summary>Releases the pending blocks of file blocks [<paramref name="fileBlock"/>, +<paramref name="blocks"/>)
    /// that sit where an ioend with an address says the range went: from <paramref name="addressBlock"/> of
    /// <paramref name="device"/> on, allocation after contiguous allocation, as far as they go (a failed write
    /// of the userspace path; other allocations of the range, e.g. the kernel's, stay).</summary>
    public void ReleaseChain(long ino, long fileBlock, long blocks, uint device, long addressBlock)
    {
        long b = fileBlock, end = fileBlock + blocks;
        while (b < end && FindPending(ino, b, device, addressBlock) is { } r)
        {
            long first = b - r.FileBlock, n = 1, max = Math.Min(end - b, r.Blocks - first);
            while (n < max && r.Pending[first + n]) n++;
            Release(ino, r, first, first + n);
            b += n; addressBlock += n;
        }
    }

    /// <summary>Releases every pending block of <paramref name="ino"/>'s allocations in file blocks
    /// [<paramref name="fileBlock"/>, +<paramref name="blocks"/>) (a failed or empty ioend).</summary>
    public void ReleaseRange(long ino, long fileBlock, long blocks)
    {
        if (!_byInode.TryGetValue(ino, out var list)) return;
        for (int k = list.Count - 1; k >= 0; k--)
        {
            if (k >= list.Count) continue;   // a release emptied the list
            var r = list[k];
            long from = Math.Max(fileBlock, r.FileBlock) - r.FileBlock, to = Math.Min(fileBlock + blocks, r.FileBlock + r.Blocks) - r.FileBlock;
            if (from < to) Release(ino, r, from, to);
        }
    }

    private void DropIfDone(long ino, Reservation r)
    {
        if (r.PendingCount > 0) return;
        if (_byInode.TryGetValue(ino, out var list) && list.Remove(r))
        {
            if (list.Count == 0)
            {
                _byInode.Remove(ino);
                if (_spareLists.Count < Spares) _spareLists.Push(list);
            }
            if (cache.TryGetCached(ino, out var li)) li.Reservations--;
            // Nothing refers to a dropped reservation any more (lookups go through _byInode): reuse it.
            if (_spareReservations.Count < Spares && r.Pending.Length <= ChunkBlocks) _spareReservations.Push(r);
        }
    }
}
