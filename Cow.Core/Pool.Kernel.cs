using Cow.Core.Engine;
using Mono.Unix.Native;

namespace Cow.Core;

// What a kernel-side server (Cow.Fuse) needs of an open pool besides its views: the iomap calls of the live
// tree, freeze/thaw, a commit, and the change listeners. Each forwards to the engine method of the same
// contract (documented there); thread-safe as the engine is.
public sealed partial class Pool
{
    /// <summary>iomap_end on the live tree (<see cref="Engine.Engine.IomapEnd"/>).</summary>
    public Errno IomapEnd(long ino, long pos, long count, long written, IomapOp op, in IomapMapping map) =>
        Engine.IomapEnd(ino, pos, count, written, op, in map);

    /// <summary>ioend on the live tree (<see cref="Engine.Engine.IoEnd"/>).</summary>
    public Errno IoEnd(long ino, long pos, long written, int error, uint device, ulong address, out long newSize) =>
        Engine.IoEnd(ino, pos, written, error, device, address, out newSize);

    /// <summary>Makes every change durable and holds commits until <see cref="Thaw"/> (<see cref="Engine.Engine.Freeze"/>).</summary>
    public Errno Freeze() => Engine.Freeze();
    public void Thaw() => Engine.Thaw();
    /// <summary>Commits what is dirty now (<see cref="Engine.Engine.Commit"/>).</summary>
    public void Commit() => Engine.Commit();

    public void AddMappingListener(IMappingInvalidationListener listener) => Engine.AddMappingListener(listener);
    public void RemoveMappingListener(IMappingInvalidationListener listener) => Engine.RemoveMappingListener(listener);
    public void AddTreeChangeListener(ITreeChangeListener listener) => Engine.AddTreeChangeListener(listener);
    public void RemoveTreeChangeListener(ITreeChangeListener listener) => Engine.RemoveTreeChangeListener(listener);
}
