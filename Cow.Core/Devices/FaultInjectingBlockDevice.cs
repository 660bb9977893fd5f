namespace Cow.Core.Devices;

/// <summary>
/// Wraps an inner device (usually a <see cref="MemoryBlockDevice"/>) to test crash and I/O-error paths.
/// </summary>
/// <remarks>
/// <para>Model: the inner device is the durable media. Writes since the last <see cref="Flush"/> are
/// <em>volatile</em>: they are kept, in write order, in an overlay that <see cref="Read"/> sees.
/// <see cref="Flush"/> applies the overlay to the inner device in order, flushes the inner device and
/// empties the overlay. When the device loses power the overlay is resolved by a
/// <see cref="PowerCutMode"/> (dropped entirely, or a seeded random subset applied in write order) and
/// every later <see cref="Read"/>, <see cref="Write"/> and <see cref="Flush"/> throws
/// <see cref="IOException"/> "device &lt;name&gt; has lost power". To "reboot", wrap <see cref="Inner"/>
/// in a new <see cref="FaultInjectingBlockDevice"/> and reopen on it.</para>
/// <para>Counting: "the Nth write from now" counts <see cref="Write"/> calls that pass the range check
/// while powered, including ones that fail by injection; N = 1 is the next write. Each control fires
/// once. If an injected error and a tear target the same write, the error wins and the tear is
/// cancelled. <see cref="CutPowerAfterWrites"/> counts completed writes only.</para>
/// <para>Threading: every member is thread-safe. One lock, <c>_gate</c>, guards every mutable field:
/// the overlay <c>_pending</c>, the fault controls (<c>_failWriteIn</c>, <c>_tearWriteIn</c>,
/// <c>_cutAfterWrites</c> and their modes/seeds, <c>_failReads</c>, <c>_failFlush</c>), the state flags
/// <c>_powerLost</c> and <c>_disposed</c>, and the counters. Every call on the inner device is made
/// while holding <c>_gate</c>, so calls through this wrapper are serialized and each is atomic.
/// <see cref="Inner"/> is not synchronized: use it directly only when no call on this wrapper is in
/// flight (typically after a power cut).</para>
/// <para>Lifetime: <see cref="Dispose"/> drops the unflushed writes (it does not flush) and disposes
/// the inner device only when constructed with <c>ownsInner: true</c>.</para>
/// </remarks>
public sealed class FaultInjectingBlockDevice : IBlockDevice
{
    private readonly object _gate = new();
    private readonly IBlockDevice _inner;
    private readonly bool _ownsInner;

    // All fields below are guarded by _gate.
    private readonly List<PendingWrite> _pending = new();
    private int _failWriteIn;
    private int _tearWriteIn;
    private PowerCutMode _tearMode;
    private int _tearSeed;
    private int _cutAfterWrites;
    private PowerCutMode _cutMode;
    private int _cutSeed;
    private bool _failReads;
    private bool _failFlush;
    private bool _powerLost;
    private bool _disposed;
    private long _totalWrites;
    private long _totalFlushes;

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    /// <param name="inner">The durable media.</param>
    /// <param name="name">Name used in messages; defaults to the inner device's name.</param>
    /// <param name="ownsInner">Dispose <paramref name="inner"/> when this wrapper is disposed.</param>
    public FaultInjectingBlockDevice(IBlockDevice inner, string? name = null, bool ownsInner = false)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
        _ownsInner = ownsInner;
        Name = name ?? inner.Name;
        Length = inner.Length;
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public long Length { get; }

    /// <summary>The durable state: everything flushed (plus whatever a power cut kept). Not
    /// synchronized with this wrapper; see the class remarks.</summary>
    public IBlockDevice Inner => _inner;

    /// <summary>Writes held in the volatile overlay (completed since the last successful flush).</summary>
    public int WritesSinceFlush
    {
        get
        {
            lock (_gate)
                return _pending.Count;
        }
    }

    /// <summary>Writes completed since construction (injected failures and torn writes excluded).</summary>
    public long TotalWrites
    {
        get
        {
            lock (_gate)
                return _totalWrites;
        }
    }

    /// <summary>Successful flushes since construction.</summary>
    public long TotalFlushes
    {
        get
        {
            lock (_gate)
                return _totalFlushes;
        }
    }

    /// <summary>True once the device has lost power.</summary>
    public bool HasLostPower
    {
        get
        {
            lock (_gate)
                return _powerLost;
        }
    }

    /// <summary>The <paramref name="n"/>th write from now (1 = the next) throws
    /// <see cref="IOException"/> "injected write error on &lt;name&gt; at offset X" and changes nothing.</summary>
    public void FailWriteNumber(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        lock (_gate)
            _failWriteIn = n;
    }

    /// <summary>While <paramref name="fail"/> is true every read throws <see cref="IOException"/>
    /// "injected read error on &lt;name&gt; at offset X".</summary>
    public void FailReads(bool fail)
    {
        lock (_gate)
            _failReads = fail;
    }

    /// <summary>While <paramref name="fail"/> is true every flush throws <see cref="IOException"/>
    /// "injected flush error on &lt;name&gt;" and the unflushed writes stay volatile.</summary>
    public void FailFlush(bool fail)
    {
        lock (_gate)
            _failFlush = fail;
    }

    /// <summary>
    /// The <paramref name="n"/>th write from now (1 = the next) is torn: the device loses power while
    /// writing it. The earlier unflushed writes are resolved by <paramref name="mode"/>, then only the
    /// first half of the torn write, rounded down to whole 512-byte sectors counted from its start,
    /// reaches the durable media (nothing, for writes under 1024 bytes). The torn write throws
    /// <see cref="IOException"/> "device &lt;name&gt; has lost power ...".
    /// </summary>
    public void TearWriteNumber(int n, PowerCutMode mode = PowerCutMode.DropUnflushed, int seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        CheckMode(mode);
        lock (_gate)
        {
            _tearWriteIn = n;
            _tearMode = mode;
            _tearSeed = seed;
        }
    }

    /// <summary>
    /// After <paramref name="n"/> more writes complete (the nth returns normally), the device loses
    /// power as by <see cref="PowerCut"/> with <paramref name="mode"/> and <paramref name="seed"/>.
    /// n = 0 cuts the power now.
    /// </summary>
    public void CutPowerAfterWrites(int n, PowerCutMode mode = PowerCutMode.DropUnflushed, int seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        CheckMode(mode);
        lock (_gate)
        {
            if (n == 0)
            {
                LosePower(mode, seed);
                return;
            }

            _cutAfterWrites = n;
            _cutMode = mode;
            _cutSeed = seed;
        }
    }

    /// <summary>Loses power now: the unflushed writes are resolved by <paramref name="mode"/> (using
    /// <paramref name="seed"/> for <see cref="PowerCutMode.KeepRandomSubset"/>) and every later
    /// Read/Write/Flush throws. Does nothing if power is already lost.</summary>
    public void PowerCut(PowerCutMode mode = PowerCutMode.DropUnflushed, int seed = 0)
    {
        CheckMode(mode);
        lock (_gate)
        {
            ThrowIfDisposed();
            LosePower(mode, seed);
        }
    }

    /// <summary>Cancels every pending injected fault (write error, tear, scheduled power cut, read and
    /// flush failures). Does not restore lost power.</summary>
    public void ClearFaults()
    {
        lock (_gate)
        {
            _failWriteIn = 0;
            _tearWriteIn = 0;
            _cutAfterWrites = 0;
            _failReads = false;
            _failFlush = false;
        }
    }

    /// <inheritdoc />
    public void Read(long offset, Span<byte> buffer)
    {
        lock (_gate)
        {
            ThrowIfUnusable();
            DeviceRange.Check(Name, Length, offset, buffer.Length);
            if (_failReads)
                throw new IOException($"injected read error on {Name} at offset {offset}");

            _inner.Read(offset, buffer);
            long end = offset + buffer.Length;
            foreach (PendingWrite p in _pending)
            {
                long start = Math.Max(offset, p.Offset);
                long stop = Math.Min(end, p.Offset + p.Data.Length);
                if (start < stop)
                {
                    p.Data.AsSpan((int)(start - p.Offset), (int)(stop - start))
                        .CopyTo(buffer[(int)(start - offset)..]);
                }
            }
        }
    }

    /// <inheritdoc />
    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        lock (_gate)
        {
            ThrowIfUnusable();
            DeviceRange.Check(Name, Length, offset, data.Length);

            bool fail = _failWriteIn > 0 && --_failWriteIn == 0;
            bool tear = _tearWriteIn > 0 && --_tearWriteIn == 0;
            if (fail)
                throw new IOException($"injected write error on {Name} at offset {offset}");

            if (tear)
            {
                LosePower(_tearMode, _tearSeed);
                int kept = data.Length / 2 / 512 * 512;
                if (kept > 0)
                {
                    _inner.Write(offset, data[..kept]);
                    _inner.Flush();
                }

                throw new IOException(
                    $"device {Name} has lost power (write of {data.Length} bytes at offset {offset} torn after {kept} bytes)");
            }

            _pending.Add(new PendingWrite(offset, data.ToArray()));
            _totalWrites++;

            if (_cutAfterWrites > 0 && --_cutAfterWrites == 0)
                LosePower(_cutMode, _cutSeed);
        }
    }

    /// <inheritdoc />
    public void DropCached(long offset, long length) => _inner.DropCached(offset, length);

    /// <inheritdoc />
    public void Settle(long offset, long length) => _inner.Settle(offset, length);

    public void Flush()
    {
        lock (_gate)
        {
            ThrowIfUnusable();
            if (_failFlush)
                throw new IOException($"injected flush error on {Name}");

            int applied = 0;
            try
            {
                for (; applied < _pending.Count; applied++)
                {
                    PendingWrite p = _pending[applied];
                    _inner.Write(p.Offset, p.Data);
                }

                _inner.Flush();
            }
            finally
            {
                _pending.RemoveRange(0, applied);
            }

            _totalFlushes++;
        }
    }

    /// <summary>Drops the unflushed writes; disposes the inner device if this wrapper owns it.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            _pending.Clear();
            _cutAfterWrites = 0;
        }

        if (_ownsInner)
            _inner.Dispose();
    }

    /// <inheritdoc />
    public override string ToString() => $"fault-injecting device {Name}";

    // Caller holds _gate.
    private void LosePower(PowerCutMode mode, int seed)
    {
        if (_powerLost)
            return;
        _powerLost = true;
        _cutAfterWrites = 0;
        _tearWriteIn = 0;
        _failWriteIn = 0;

        try
        {
            if (mode == PowerCutMode.KeepRandomSubset)
            {
                // Each unflushed write is independently kept (applied, in write order) or dropped.
                var random = new Random(seed);
                bool any = false;
                foreach (PendingWrite p in _pending)
                {
                    if (random.Next(2) == 1)
                    {
                        _inner.Write(p.Offset, p.Data);
                        any = true;
                    }
                }

                if (any)
                    _inner.Flush();
            }
        }
        finally
        {
            _pending.Clear();
        }
    }

    private static void CheckMode(PowerCutMode mode)
    {
        if (mode is not (PowerCutMode.DropUnflushed or PowerCutMode.KeepRandomSubset))
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown power-cut mode");
    }

    // Caller holds _gate.
    private void ThrowIfUnusable()
    {
        ThrowIfDisposed();
        if (_powerLost)
            throw new IOException($"device {Name} has lost power");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private readonly record struct PendingWrite(long Offset, byte[] Data);
}
