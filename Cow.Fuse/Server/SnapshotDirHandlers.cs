using System.Text;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.OpcodeTable;

namespace Cow.Fuse.Server;

// Every handler has the OpHandler signature, whether it uses each argument or not.
#pragma warning disable IDE0060

// The virtual .snapshots directory of a live mount (like ZFS's .zfs/snapshot): lists the snapshots, looks
// them up as read-only trees, makes one on mkdir and deletes one on rmdir. Nothing else changes it (EROFS).
internal static class SnapshotDirHandlers
{
    private const uint SnapshotDirMode = 0x4000 | 0x16D; // drwxr-xr-x without w: 0555
    internal const uint DirType = 0x4000 >> 12;

    /// <summary>Attributes of <c>.snapshots</c>: a 0555 directory owned by root, nlink 2, times = the newest
    /// snapshot's creation (the mount time while there is none).</summary>
    internal static InodeAttr SnapshotDirAttr(RequestDispatcher d)
    {
        long t = 0;
        foreach (var s in d.Pool.Snapshots.List()) t = Math.Max(t, s.CreatedNs);
        if (t == 0) t = d.MountTimeNs;
        return new InodeAttr(1, SnapshotDirMode, 2, 0, 0, 0, 0, 0, 4096, t, t, t, t);
    }

    internal static Errno SnapshotDirEntryReply(RequestDispatcher d, Span<byte> reply, out int n)
    {
        var a = SnapshotDirAttr(d);
        var entry = Entry(in a, NodeTable.SnapshotDirNodeId, NodeTable.SnapshotDirStIno);
        return Write(reply, in entry, out n);
    }

    /// <summary>The entry of snapshot <paramref name="name"/>'s root (giving the snapshot its node-id slot).</summary>
    private static Errno SnapshotRootEntryReply(RequestDispatcher d, string name, Span<byte> reply, out int n)
    {
        n = 0;
        var e = d.Nodes.SnapshotSlot(name, out int slot);
        if (e == Errno.ENFILE) d.LogLine($"all {NodeTable.LastSnapshotSlot} snapshot node-id slots of this mount are used; remount to browse more snapshots");
        if (e != 0) return e;
        var view = d.Nodes.Resolve(((ulong)slot << NodeTable.SlotShift) | 1, out var node) == 0 ? node.View! : null;
        if (view == null) return Errno.ENOENT;   // deleted in between
        e = view.GetAttr(view.RootIno, out var attr);
        if (e != 0) return e == Errno.ESTALE ? Errno.ENOENT : e;
        return EntryReply(d, slot, in attr, reply, out n);
    }

    /// <summary>LOOKUP in <c>.snapshots</c>: "." is itself, ".." the mount root, any other name a snapshot.</summary>
    internal static Errno LookupInSnapshotDir(RequestDispatcher d, string name, Span<byte> reply, out int n)
    {
        n = 0;
        if (name == ".") return SnapshotDirEntryReply(d, reply, out n);
        if (name == "..")
        {
            var e = d.Root.GetAttr(d.Root.RootIno, out var root);
            return e != 0 ? e : EntryReply(d, NodeTable.RootSlot, in root, reply, out n);
        }
        return SnapshotRootEntryReply(d, name, reply, out n);
    }

    /// <summary>mkdir .snapshots/NAME: takes snapshot NAME of the live tree (durable on return).</summary>
    internal static Errno MakeSnapshot(RequestDispatcher d, string name, Span<byte> reply, out int n)
    {
        n = 0;
        if (Core.PoolSnapshots.NameProblem(name) != null) return IsDotName(name) ? Errno.EEXIST : Errno.EINVAL;
        var e = d.Pool.Snapshots.Create(name, out _);
        if (e != 0) return e;
        d.LogLine($"snapshot '{name}' created through {NodeTable.SnapshotDirName}");
        return SnapshotRootEntryReply(d, name, reply, out n);
    }

    /// <summary>rmdir .snapshots/NAME: deletes snapshot NAME; its node ids become ESTALE.</summary>
    internal static Errno DeleteSnapshot(RequestDispatcher d, string name)
    {
        if (name == ".") return Errno.EINVAL;
        if (name == "..") return Errno.ENOTEMPTY;
        var e = d.Pool.Snapshots.Delete(name);
        if (e == 0) d.LogLine($"snapshot '{name}' deleted through {NodeTable.SnapshotDirName}");
        return e;
    }

    /// <summary>
    /// READDIR / READDIRPLUS of <c>.snapshots</c>: ".", "..", then every snapshot in creation order. The
    /// offset after a snapshot is 2 + its generation: generations only grow and are never reused, so a
    /// listing resumed after snapshots were made or deleted neither repeats nor skips one. READDIRPLUS
    /// entries carry node id 0 (the kernel then makes no dentry and looks names up on use), so listing
    /// gives out no node-id slots.
    /// </summary>
    internal static Errno ReadSnapshotDir(RequestDispatcher d, long offset, Span<byte> dst, bool plus, out int n)
    {
        n = 0;
        Span<byte> name = stackalloc byte[RequestDispatcher.MaxNameLength * 3 + 8];
        if (offset < 1 && !Emit(".", NodeTable.SnapshotDirStIno, 1, dst, ref n, name)) return 0;
        if (offset < 2 && !Emit("..", d.Nodes.StIno(NodeTable.RootSlot, d.Root.RootIno), 2, dst, ref n, name)) return 0;
        foreach (var s in d.Pool.Snapshots.List())
        {
            long next = 2 + s.Gen;
            if (next <= offset) continue;
            if (!Emit(s.Name, NodeTable.SyntheticInoBit | (ulong)s.Gen, next, dst, ref n, name)) break;
        }
        return 0;

        bool Emit(string entryName, ulong ino, long next, Span<byte> to, ref int at, Span<byte> scratch)
        {
            if (!Encoding.UTF8.TryGetBytes(entryName, scratch, out int len) || len == 0) return true;
            int written;
            bool ok;
            if (plus)
            {
                FuseEntryOut entry = default;
                entry.Attr.Ino = ino;
                ok = FuseDirentLayout.TryWriteDirentplus(to[at..], in entry, (ulong)next, DirType, scratch[..len], out written);
            }
            else ok = FuseDirentLayout.TryWriteDirent(to[at..], ino, (ulong)next, DirType, scratch[..len], out written);
            if (ok) at += written;
            return ok;
        }
    }
}
