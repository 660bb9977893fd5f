using Cow.Core.Format;

namespace Cow.Core.Metadata;

/// <summary>Collection <c>devices</c>: the device table, <c>_id</c> = device cookie.</summary>
/// <remarks>Plain mutable data, not thread-safe: whoever holds one guards it (the engine, live records: its lock). Each field is documented with its name in format.md ("Metadata file"); the BSON mapping is <see cref="DeviceBson"/>.</remarks>
internal sealed class DeviceRecord
{
    /// <summary><c>_id</c> / <c>device_cookie</c>: 1 base and 2 log from mkfs, 3..1024 added later.</summary>
    public uint Cookie;
    /// <summary><c>device_uuid</c>: equals the superblock's <c>device_uuid</c>.</summary>
    public Guid DeviceUuid;
    /// <summary><c>role</c>: as in the superblock.</summary>
    public DeviceRole Role;
    /// <summary><c>path</c>: where to find the device; relative paths are relative to the pool folder.</summary>
    public string Path = "";
    /// <summary><c>device_size</c>: bytes formatted.</summary>
    public long DeviceSize;
    /// <summary><c>state</c>: 0 in service, 1 being removed (absent: 0).</summary>
    public DeviceState State;

    public DeviceRecord Clone() => (DeviceRecord)MemberwiseClone();
}
