namespace Cow.Core.Devices;

/// <summary>
/// The bytes of one read as memory segments in file order, so that a reply can be gathered from where the
/// bytes already are instead of copied together first: pieces a device lends in place (read-ahead buffers,
/// <see cref="IBlockDevice.ReadOrLend"/>), held for the reader until <see cref="Release"/>, and pieces in the
/// caller's scratch buffer (holes, reads the device made, partial blocks), at their own position in it. The
/// scratch buffer is laid out as the whole read would be: byte i of the read is scratch[i] unless a lent
/// segment covers it. One per FUSE worker, reused for every READ.
/// Threading: not thread-safe; one reader at a time. Release before the next <see cref="Reset"/>.
/// </summary>
public sealed unsafe class ReadSegments
{
    /// <summary>Segments one read may use; a read that would need more copies the rest into the scratch buffer.</summary>
    public const int MaxSegments = 64;

    private readonly nint[] _addresses = new nint[MaxSegments];
    private readonly int[] _lengths = new int[MaxSegments];
    private readonly DirectReadAhead?[] _lenders = new DirectReadAhead?[MaxSegments];   // null: in the scratch buffer
    private readonly int[] _slots = new int[MaxSegments];
    private int _loans;

    /// <param name="scratch">native or pinned memory of at least <paramref name="capacity"/> bytes that stays
    /// valid and in place for the life of this object (a FUSE worker's reply buffer).</param>
    public ReadSegments(byte* scratch, int capacity)
    {
        if (capacity < 0) throw new ArgumentOutOfRangeException(nameof(capacity));
        Scratch = scratch;
        Capacity = capacity;
    }

    /// <summary>Where the read's bytes go when they are not lent.</summary>
    public byte* Scratch { get; }
    /// <summary>The largest read (bytes) the scratch buffer holds.</summary>
    public int Capacity { get; }
    /// <summary>Segments of the current read.</summary>
    public int Count { get; private set; }
    /// <summary>Bytes of the current read covered so far.</summary>
    public int Length { get; private set; }
    /// <summary>Bytes of the current read in lent segments: while 0, the read is simply scratch[0, Length).</summary>
    public int LentBytes { get; private set; }

    /// <summary>Address of segment <paramref name="i"/>.</summary>
    public nint Address(int i) => _addresses[i];
    /// <summary>Length of segment <paramref name="i"/>.</summary>
    public int SegmentLength(int i) => _lengths[i];

    /// <summary>Starts a new read (the previous one must have been released).</summary>
    public void Reset()
    {
        if (_loans != 0) throw new InvalidOperationException("ReadSegments reset while segments are still lent");
        Count = 0; Length = 0; LentBytes = 0;
    }

    /// <summary>Room for <paramref name="segments"/> more lent segments.</summary>
    internal bool HasRoom(int segments) => Count + segments <= MaxSegments;

    /// <summary>The next <paramref name="length"/> bytes of the read are in the scratch buffer at their own position.</summary>
    public void AddScratch(int length)
    {
        if (length <= 0) return;
        if (Length + length > Capacity) throw new ArgumentOutOfRangeException(nameof(length), "read beyond the scratch buffer");
        if (Count > 0 && _lenders[Count - 1] == null) _lengths[Count - 1] += length;   // continues the scratch segment before it
        else if (Count < MaxSegments) Append(Scratch + Length, length, null, -1);
        else throw new InvalidOperationException("ReadSegments full");   // HasRoom is checked before lending, and a lent segment is always followed by room for one more
        Length += length;
    }

    /// <summary>The next <paramref name="length"/> bytes are at <paramref name="address"/>, in <paramref name="lender"/>'s
    /// buffer <paramref name="slot"/>, pinned for this read and returned on <see cref="Release"/>.</summary>
    internal void AddLent(byte* address, int length, DirectReadAhead lender, int slot)
    {
        if (Count >= MaxSegments - 1) throw new InvalidOperationException("ReadSegments full");
        if (Length + length > Capacity) throw new ArgumentOutOfRangeException(nameof(length), "read beyond the scratch buffer");
        _loans++;
        Append(address, length, lender, slot);
        Length += length;
        LentBytes += length;
    }

    private void Append(byte* address, int length, DirectReadAhead? lender, int slot)
    {
        _addresses[Count] = (nint)address;
        _lengths[Count] = length;
        _lenders[Count] = lender;
        _slots[Count] = slot;
        Count++;
    }

    /// <summary>Returns every lent segment to its lender. Idempotent; the segments must not be used afterwards.</summary>
    public void Release()
    {
        if (_loans == 0) return;
        for (int i = 0; i < Count; i++)
        {
            var lender = _lenders[i];
            if (lender == null) continue;
            _lenders[i] = null;
            lender.Return(_slots[i]);
        }
        _loans = 0;
    }
}
