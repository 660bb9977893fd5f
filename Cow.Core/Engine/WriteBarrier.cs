namespace Cow.Core.Engine;

/// <summary>
/// Counts the operations in progress by epoch so that a caller can wait for every one that began before it,
/// without stopping new ones (<see cref="Engine.WaitForWritesInProgress"/>: a snapshot waits for the WRITEs the
/// kernel sent before it). Two epochs, by parity: <see cref="WaitForEarlier"/> advances the epoch and waits for
/// the old parity's count to drain; operations that begin meanwhile count under the new parity.
/// <para>Owns the two counts and the epoch, guarded by <c>_gate</c>; <c>_serial</c> serialises the waiters (two
/// overlapping waits would otherwise share a parity with new operations). Lock order: <c>_serial</c>, then
/// <c>_gate</c>; neither is held while taking an engine lock, nor taken under one. Thread-safe.</para>
/// </summary>
internal sealed class WriteBarrier
{
    private readonly object _gate = new(), _serial = new();
    private readonly int[] _inProgress = new int[2];
    private int _epoch;

    /// <summary>An operation begins; returns the token to hand to <see cref="End"/>.</summary>
    public int Begin()
    {
        lock (_gate)
        {
            int parity = _epoch & 1;
            _inProgress[parity]++;
            return parity;
        }
    }

    public void End(int token)
    {
        lock (_gate)
            if (--_inProgress[token] == 0) Monitor.PulseAll(_gate);
    }

    /// <summary>Returns once every operation that began before the call has ended.</summary>
    public void WaitForEarlier()
    {
        lock (_serial)
            lock (_gate)
            {
                int before = _epoch & 1;
                _epoch++;
                while (_inProgress[before] > 0) Monitor.Wait(_gate);
            }
    }

    /// <summary>Operations in progress now (tests).</summary>
    public int InProgress
    {
        get { lock (_gate) return _inProgress[0] + _inProgress[1]; }
    }
}
