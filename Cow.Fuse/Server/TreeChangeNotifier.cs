using System.Runtime.InteropServices;
using System.Text;
using Cow.Core.Engine;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;

namespace Cow.Fuse.Server;

/// <summary>
/// Tells the kernel of a live mount about live-tree changes the engine made behind its back (a snapshot
/// restore or clone, a snapshot created or deleted, through the control socket; changes made by a request this
/// server is serving are not told: the kernel made them): FUSE_NOTIFY_INVAL_ENTRY for an entry removed, made or replaced (the
/// kernel drops its dentry, or negative dentry, and the parent's attributes), FUSE_NOTIFY_INVAL_INODE
/// (whole range) for an inode whose attributes or contents changed (the kernel drops its attributes and
/// cached pages, so the next read sees the restored bytes). Live inodes are node id = inode number (slot 0).
/// A kernel that does not hold the node answers ENOENT: nothing was cached, nothing to do.
/// Owns nothing but its registration with the engine (<see cref="Attach"/>, <see cref="Detach"/>).
/// Threading: <see cref="TreeChanged"/> runs on the thread that made the change, with no engine lock held;
/// it only writes notifications to /dev/fuse (which never waits for one of this server's replies).
/// </summary>
internal sealed class TreeChangeNotifier(RequestDispatcher d) : ITreeChangeListener
{
    private int _attached;
    private int _failuresLogged;

    public void Attach()
    {
        if (Interlocked.Exchange(ref _attached, 1) == 0) d.Pool.AddTreeChangeListener(this);
    }

    public void Detach()
    {
        if (Interlocked.Exchange(ref _attached, 0) == 1) d.Pool.RemoveTreeChangeListener(this);
    }

    public void TreeChanged(IReadOnlyList<TreeChange> changes)
    {
        if (Volatile.Read(ref _attached) == 0) return;
        // Made by a request the kernel sent (mkdir/rmdir in .snapshots): it knows, and an INVAL_ENTRY now would wait
        // for the directory lock that request's caller holds.
        if (RequestDispatcher.ServingRequest) return;
        Span<byte> inodeMsg = stackalloc byte[FuseOutHeader.Size + FuseNotifyInvalInodeOut.Size];
        foreach (var c in changes)
        {
            Errno e;
            string what;
            if (c.Name != null)
            {
                int nameLen = Encoding.UTF8.GetByteCount(c.Name);
                var msg = new byte[FuseOutHeader.Size + FuseNotifyInvalEntryOut.Size + nameLen + 1];
                var h = new FuseOutHeader { Len = (uint)msg.Length, Error = (int)FuseNotifyCode.InvalEntry, Unique = 0 };
                ulong parent = c.Parent == TreeChange.SnapshotList ? NodeTable.SnapshotDirNodeId : (ulong)c.Parent;
                var body = new FuseNotifyInvalEntryOut { Parent = parent, NameLen = (uint)nameLen, Flags = 0 };
                MemoryMarshal.Write(msg, in h);
                MemoryMarshal.Write(msg.AsSpan(FuseOutHeader.Size), in body);
                Encoding.UTF8.GetBytes(c.Name, msg.AsSpan(FuseOutHeader.Size + FuseNotifyInvalEntryOut.Size));
                e = d.SendNotification(msg);
                what = $"FUSE_NOTIFY_INVAL_ENTRY {c.Parent}/{c.Name}";
            }
            else
            {
                var msg = inodeMsg;
                var h = new FuseOutHeader { Len = (uint)msg.Length, Error = (int)FuseNotifyCode.InvalInode, Unique = 0 };
                ulong node = c.Ino == TreeChange.SnapshotList ? NodeTable.SnapshotDirNodeId : (ulong)c.Ino;
                var body = new FuseNotifyInvalInodeOut { Ino = node, Off = 0, Len = 0 };
                MemoryMarshal.Write(msg, in h);
                MemoryMarshal.Write(msg[FuseOutHeader.Size..], in body);
                e = d.SendNotification(msg);
                what = $"FUSE_NOTIFY_INVAL_INODE {c.Ino}";
            }
            if (e is 0 or Errno.ENOENT or Errno.ESTALE or Errno.ENOTCONN or Errno.ENODEV) continue;
            if (Interlocked.Increment(ref _failuresLogged) <= 5) d.LogLine($"{what} refused: {e}");
        }
    }
}
