using System.Runtime.InteropServices;
using System.Text;
using Cow.Core.FileSystem;
using Cow.Fuse.Protocol;
using Mono.Unix.Native;
using static Cow.Fuse.Server.OpcodeTable;
using static Cow.Fuse.Server.FileHandlers;
using static Cow.Fuse.Server.SnapshotDirHandlers;

namespace Cow.Fuse.Server;

// Every handler has the OpHandler signature, whether it uses each argument or not.
#pragma warning disable IDE0060

// READDIR, READDIRPLUS.
internal static class DirectoryHandlers
{
    [ThreadStatic] private static List<DirEntryInfo>? t_entries;

    /// <summary>Where <c>.snapshots</c> sits in a listing of the live root when it is shown: last, after
    /// every engine entry (whose offsets are smaller), so that engine offsets stay as they are.</summary>
    private const long SnapshotDirOffset = long.MaxValue;

    public static Errno Readdir(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n) => ReadDirectory(d, in h, p, reply, plus: false, out n);

    public static Errno Readdirplus(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, out int n) => ReadDirectory(d, in h, p, reply, plus: true, out n);

    /// <summary>
    /// READDIR / READDIRPLUS. d_ino is st_ino (see <see cref="NodeTable"/>); READDIRPLUS entries carry node
    /// ids of the directory's tree, except "." and ".." (node id 0: the kernel takes no lookup count for them).
    /// A pass over a live directory stops at the directory's end as it was when the pass began (see
    /// <see cref="DirHandles"/>): no entry is listed twice, whatever renames run meanwhile.
    /// In the root of a live mount an engine entry named <c>.snapshots</c> is hidden behind the virtual one,
    /// which is listed (last) only with <see cref="FuseMountOptions.SnapshotDirVisible"/>.
    /// </summary>
    private static Errno ReadDirectory(RequestDispatcher d, in FuseInHeader h, ReadOnlySpan<byte> p, Span<byte> reply, bool plus, out int n)
    {
        n = 0;
        var e = d.Nodes.Resolve(h.NodeId, out var node);
        if (e != 0) return e;
        var i = MemoryMarshal.Read<FuseReadIn>(p);
        if (i.Offset > long.MaxValue) return Errno.EINVAL;
        int limit = (int)Math.Min(i.Size_, (uint)reply.Length);
        var dst = reply[..limit];
        if (node.IsSnapshotDir) return ReadSnapshotDir(d, (long)i.Offset, dst, plus, out n);

        var view = node.View!;
        bool liveRoot = node.Slot == NodeTable.RootSlot && node.Ino == view.RootIno && d.Nodes.HasSnapshotDir;
        bool snapshotRoot = node.Slot != NodeTable.RootSlot && node.Ino == view.RootIno;
        int smallest = plus ? FuseDirentLayout.DirentplusRecordSize(1) : FuseDirentLayout.DirentSize(1);
        int max = Math.Max(1, limit / smallest);
        var list = t_entries ??= new List<DirEntryInfo>(256);
        list.Clear();
        try
        {
            e = view.ReadDir(node.Ino, (long)i.Offset, max, list, d.Dirs.PassEnd(i.Fh, (long)i.Offset));
            if (e != 0) return e;
            NoteRead(d, view, node.Ino, directory: true);
            Span<byte> name = stackalloc byte[1024];
            bool full = false;
            foreach (var ent in list)
            {
                if (!Encoding.UTF8.TryGetBytes(ent.Name, name, out int len) || len == 0) continue;
                var nm = name[..len];
                bool dot = nm.Length <= 2 && nm[0] == (byte)'.' && (nm.Length == 1 || nm[1] == (byte)'.');
                if (liveRoot && !dot && ent.Name == NodeTable.SnapshotDirName) continue;
                ulong stIno = snapshotRoot && dot && nm.Length == 2 ? NodeTable.SnapshotDirStIno : d.Nodes.StIno(node.Slot, ent.Ino);
                bool ok;
                int written;
                if (plus)
                {
                    FuseEntryOut entry = default;
                    entry.Attr.Ino = stIno;
                    if (!dot && view.GetAttr(ent.Ino, out var a) == 0 && NodeTable.TryNodeId(node.Slot, a.Ino, out ulong id))
                    {
                        var visible = d.Visible(node.Slot, id, in a);
                        entry = Entry(in visible, id, stIno, d.AttrFlags(node.Slot), d.Nodes.Generation(node.Slot, a.Ino, a.BtimeNs));
                    }
                    ok = FuseDirentLayout.TryWriteDirentplus(dst[n..], in entry, (ulong)ent.NextOffset, ent.Type, nm, out written);
                }
                else ok = FuseDirentLayout.TryWriteDirent(dst[n..], stIno, (ulong)ent.NextOffset, ent.Type, nm, out written);
                if (!ok) { full = true; break; }
                n += written;
            }
            // The engine's listing ended within this call: .snapshots comes last.
            if (liveRoot && d.Options.SnapshotDirVisible && !full && list.Count < max && (long)i.Offset < SnapshotDirOffset)
            {
                var nm = name[..Encoding.UTF8.GetBytes(NodeTable.SnapshotDirName, name)];
                bool ok;
                int written;
                if (plus)
                {
                    FuseEntryOut entry = default;   // node id 0: looked up on use
                    entry.Attr.Ino = NodeTable.SnapshotDirStIno;
                    ok = FuseDirentLayout.TryWriteDirentplus(dst[n..], in entry, SnapshotDirOffset, DirType, nm, out written);
                }
                else ok = FuseDirentLayout.TryWriteDirent(dst[n..], NodeTable.SnapshotDirStIno, SnapshotDirOffset, DirType, nm, out written);
                if (ok) n += written;
            }
            return 0;
        }
        finally { list.Clear(); }
    }
}
