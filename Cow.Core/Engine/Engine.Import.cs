using Cow.Core.FileSystem;
using Cow.Core.Format;
using Mono.Unix.Native;

namespace Cow.Core.Engine;

public sealed partial class Engine
{
    /// <summary>
    /// Creates <paramref name="name"/> in <paramref name="parent"/> with the bytes of <paramref name="source"/>
    /// placed on the **base device** (cookie 1): how data that "was there first" (a VM image, a data
    /// directory being taken over) enters a pool. All-zero blocks stay holes. Later writes to the file
    /// go out of place to the log device like any other, so the base copy stays shared with every
    /// snapshot. Durable when it returns.
    /// </summary>
    public Errno ImportFile(long parent, string name, Stream source, uint mode, uint uid, uint gid, out InodeAttr attr)
    {
        var e = MakeNode(parent, name, (mode & 0xFFF) | 0x8000, 0, uid, gid, null, out attr);
        if (e != 0) return e;
        LiveInode li;
        lock (_lock) { li = Live(attr.Ino)!; li.Pins++; }
        try { return ImportPinned(li, source, out attr); }
        finally { Unpin(li); }
    }

    private Errno ImportPinned(LiveInode li, Stream source, out InodeAttr attr)
    {
        attr = default;
        Errno e;
        li.WriteGate.Wait();
        try
        {
            var buf = new byte[1 << 20];
            long offset = 0;
            int filled;
            while ((filled = source.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false)) > 0)
            {
                int blocks = (filled + BlockSize - 1) >> BlockShift;
                buf.AsSpan(filled, (blocks << BlockShift) - filled).Clear();
                for (int b = 0; b < blocks;)
                {
                    // Skip all-zero blocks: they stay holes.
                    if (buf.AsSpan(b << BlockShift, BlockSize).IndexOfAnyExcept((byte)0) < 0) { b++; continue; }
                    int run = 1;
                    while (b + run < blocks && buf.AsSpan((b + run) << BlockShift, BlockSize).IndexOfAnyExcept((byte)0) >= 0) run++;
                    e = PlaceOnBase(li, (offset >> BlockShift) + b, buf.AsSpan(b << BlockShift, run << BlockShift));
                    if (e != 0) return e;
                    b += run;
                }
                offset += filled;
                lock (_lock) MutableInode(li).Size = offset;
            }
        }
        finally { li.WriteGate.Release(); }
        Commit();
        lock (_lock) attr = Attr(li.Rec);
        return 0;
    }

    private Errno PlaceOnBase(LiveInode li, long fileBlock, ReadOnlySpan<byte> data)
    {
        var dev = _devices[FormatConstants.BaseCookie];
        while (data.Length > 0)
        {
            long start, n;
            lock (_lock) n = _space[FormatConstants.BaseCookie].Allocate(data.Length >> BlockShift, out start);
            if (n == 0) return Errno.ENOSPC;
            var part = data[..(int)(n << BlockShift)];
            dev.Write(start << BlockShift, part);
            NoteDeviceWrite(FormatConstants.BaseCookie);
            var sums = new uint[n];
            for (int i = 0; i < n; i++) sums[i] = Crc32C.Compute(part.Slice(i << BlockShift, BlockSize));
            lock (_lock) RemapRange(li, fileBlock, n, FormatConstants.BaseCookie, start, sums);
            fileBlock += n;
            data = data[part.Length..];
        }
        return 0;
    }
}
