namespace Cow.Core.Metadata;

/// <summary>One run of a chunk's extent map: <c>count</c> file blocks starting at chunk block <c>first</c>
/// live at device block <c>addr</c> of device <c>dev</c>. 24 bytes packed in <c>map</c>.</summary>
internal readonly record struct Extent(uint First, uint Count, uint Device, long Address)
{
    public uint End => First + Count;
}
