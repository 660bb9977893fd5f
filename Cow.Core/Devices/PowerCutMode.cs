namespace Cow.Core.Devices;

/// <summary>
/// What happens to the writes a <see cref="FaultInjectingBlockDevice"/> holds in its volatile cache
/// (written since the last <see cref="IBlockDevice.Flush"/>) when it loses power.
/// </summary>
/// <remarks>Threading: a plain value; no threading concerns.</remarks>
public enum PowerCutMode
{
    /// <summary>Every unflushed write is lost; the device shows exactly the state at the last flush.</summary>
    DropUnflushed,

    /// <summary>Each unflushed write is independently kept or dropped, chosen by a seeded random
    /// generator (deterministic for a given seed), as a disk with a volatile write cache may persist
    /// any subset in any order. Kept writes are whole (not torn).</summary>
    KeepRandomSubset,
}
