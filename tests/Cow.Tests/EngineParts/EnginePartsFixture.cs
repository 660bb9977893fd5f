using Cow.Core.Engine;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Tests.EngineParts;

/// <summary>The state-owning parts of the engine wired together as <see cref="Engine"/> wires them, on an
/// in-memory metadata store and no devices: enough to test each part's rules alone. Not thread-safe.</summary>
internal sealed class EngineParts : IDisposable
{
    public readonly PoolRecord Pool = new() { PoolUuid = Guid.NewGuid(), BlockSize = 4096 };
    public readonly MetadataStore Store;
    public readonly LiveTreeCache Cache;
    public readonly SpaceAllocator Space;
    public readonly MappingInvalidations Mappings;
    public readonly RecordVersioner Versions;
    public readonly WriteReservations Reservations;
    public readonly List<string> Reports = new();
    public readonly object Lock = new();

    public EngineParts(long logBlocks = 4 * FormatConstants.SegmentBlocks, long baseBlocks = FormatConstants.SegmentBlocks)
    {
        Store = MetadataStore.Create(new MemoryStream(), new MemoryStream(), Pool, []);
        Cache = new LiveTreeCache(Store, Pool);
        Space = new SpaceAllocator(new Dictionary<uint, long> { [FormatConstants.BaseCookie] = baseBlocks, [FormatConstants.LogCookie] = logBlocks });
        Mappings = new MappingInvalidations(Lock, 12, Reports.Add);
        Versions = new RecordVersioner(Pool, Cache, Space, Mappings);
        Reservations = new WriteReservations(Space, Cache);
    }

    /// <summary>A new live file inode (born now), registered as a create would.</summary>
    public LiveInode NewFile()
    {
        var li = new LiveInode(new InodeRecord { Rid = Versions.NewRid(), Birth = Pool.LiveGen, Ino = Pool.NextIno++, Mode = 0x81A4, Nlink = 1 })
        {
            AllChunksLoaded = true,
        };
        Versions.AddInode(li);
        return li;
    }

    /// <summary>What a snapshot does to the versioning: the live generation becomes a snapshot's, the live tree moves on.</summary>
    public void TakeSnapshot()
    {
        Versions.NewestSnapshotGen = Pool.LiveGen;
        Pool.LiveGen++;
    }

    public void Dispose() => Store.Dispose();
}
