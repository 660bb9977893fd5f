using Cow.Fuse.Protocol;
using Cow.Fuse.Server;
using Xunit;

namespace Cow.Tests.Dispatch;

/// <summary>
/// FUSE_EXPORT_SUPPORT at the dispatcher: LOOKUP of "." in any node id (a file's included) answers that node
/// with the same node id and generation as the lookup that named it, from a fresh dispatcher too (a remount:
/// nothing was handed out in it); ".." answers the parent; generations are stable per inode, 0 for roots, and
/// differ between the live tree and a snapshot for the same inode; a deleted inode is ENOENT (ESTALE to the
/// file-handle caller).
/// </summary>
[Trait("Tier", "engine")]
public sealed class ExportTests : DispatchTestBase
{
    private FuseEntryOut MakeDir(ulong parent, string name)
    {
        var (h, body) = Call(FuseOpcode.Mkdir, parent, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name(name));
        Assert.True(h.Error == 0, $"mkdir {name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    private FuseEntryOut MakeFile(ulong parent, string name)
    {
        var (h, body) = Call(FuseOpcode.Mknod, parent, Bytes(new FuseMknodIn { Mode = 0x81A4 }), Name(name));
        Assert.True(h.Error == 0, $"mknod {name}: {h.Error}");
        return Read<FuseEntryOut>(body);
    }

    [Fact]
    public void Lookup_of_dot_and_dotdot_finds_nodes_by_id_with_stable_generations()
    {
        Init();
        var dir = MakeDir(1, "d");
        var f = MakeFile(dir.NodeId, "f");
        var other = MakeFile(dir.NodeId, "other");
        Assert.NotEqual(0ul, f.Generation);
        Assert.NotEqual(f.Generation, other.Generation);
        Assert.Equal(0ul, Lookup(1, ".").Generation);   // FUSE_ROOT_ID: the kernel requires 0

        var self = Lookup(f.NodeId, ".");
        Assert.Equal((f.NodeId, f.Generation, f.Attr.Ino), (self.NodeId, self.Generation, self.Attr.Ino));
        Assert.Equal((f.NodeId, f.Generation), (Lookup(dir.NodeId, "f").NodeId, Lookup(dir.NodeId, "f").Generation));
        var parent = Lookup(dir.NodeId, "..");
        Assert.Equal((1ul, 0ul), (parent.NodeId, parent.Generation));
        Assert.Equal((dir.NodeId, dir.Generation), (Lookup(dir.NodeId, ".").NodeId, Lookup(dir.NodeId, ".").Generation));
        // READDIRPLUS gives the same generation.
        var plus = ParseDirentplus(Call(FuseOpcode.Readdirplus, dir.NodeId, ReadIn(0, 4096)).Body);
        Assert.Equal(f.Generation, plus.Single(p => p.Name == "f").Entry.Generation);

        // A new dispatcher (a remount) has handed out nothing, and still finds the node by its id.
        _d = new RequestDispatcher(_pool.Pool);
        Init();
        var again = Lookup(f.NodeId, ".");
        Assert.Equal((f.NodeId, f.Generation), (again.NodeId, again.Generation));

        // A file that is gone: ENOENT (the kernel turns it into ESTALE).
        Assert.Equal(0, Call(FuseOpcode.Unlink, dir.NodeId, Name("other")).Header.Error);
        Assert.Equal(ENOENT, Error(FuseOpcode.Lookup, other.NodeId, Name(".")));
        // "." of a file is the file; any other name in it is ENOTDIR as before.
        Assert.Equal(ENOTDIR, Error(FuseOpcode.Lookup, f.NodeId, Name("x")));
    }

    [Fact]
    public void A_snapshot_file_has_its_own_generation_and_its_node_id_in_a_deleted_snapshot_is_stale()
    {
        Init();
        var f = MakeFile(1, "f");
        var (h, _) = Call(FuseOpcode.Mkdir, NodeTable.SnapshotDirNodeId, Bytes(new FuseMkdirIn { Mode = 0x1ED }), Name("s1"));
        Assert.Equal(0, h.Error);
        var snapRoot = Lookup(NodeTable.SnapshotDirNodeId, "s1");
        Assert.Equal(0ul, snapRoot.Generation);
        var sf = Lookup(snapRoot.NodeId, "f");
        Assert.Equal(f.Attr.Ino | NodeTable.SnapshotTreeInoBit, sf.Attr.Ino);
        Assert.NotEqual(f.NodeId, sf.NodeId);
        Assert.NotEqual(f.Generation, sf.Generation);
        var self = Lookup(sf.NodeId, ".");
        Assert.Equal((sf.NodeId, sf.Generation), (self.NodeId, self.Generation));
        Assert.Equal(NodeTable.SnapshotDirNodeId, Lookup(NodeTable.SnapshotDirNodeId, ".").NodeId);
        Assert.Equal(0, Call(FuseOpcode.Rmdir, NodeTable.SnapshotDirNodeId, Name("s1")).Header.Error);
        Assert.Equal(ESTALE, Error(FuseOpcode.Lookup, sf.NodeId, Name(".")));
    }
}
