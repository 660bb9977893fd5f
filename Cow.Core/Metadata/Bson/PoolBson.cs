using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="PoolRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class PoolBson
{
    internal static BsonDocument ToBson(this PoolRecord r)
    {
        var d = new BsonDocument
        {
            ["_id"] = 1, ["pool_uuid"] = r.PoolUuid, ["format_version"] = r.FormatVersion, ["block_size"] = r.BlockSize,
            ["live_gen"] = r.LiveGen, ["next_ino"] = r.NextIno, ["next_rid"] = r.NextRid, ["commit_seq"] = r.CommitSeq,
            ["segment_seq"] = r.SegmentSeq, ["log_cursor"] = r.LogCursor, ["created_ns"] = r.CreatedNs, ["label"] = r.Label,
        };
        if (r.ChunkSegs) d["chunk_segs"] = 1;
        if (r.Purges.Count > 0)
            d["purges"] = new BsonArray(r.Purges.Select(p => new BsonDocument { ["gen"] = p.Gen, ["prev"] = p.Prev, ["next"] = p.Next }));
        if (r.Receive is { } v)
            d["receive"] = new BsonDocument
            {
                ["gen"] = v.Gen, ["snap_pool"] = v.SnapPool, ["snap_gen"] = v.SnapGen, ["base_pool"] = v.BasePool, ["base_gen"] = v.BaseGen,
                ["name"] = v.Name, ["created_ns"] = v.CreatedNs, ["offset"] = v.Offset, ["records"] = v.Records, ["chain"] = v.Chain,
            };
        if (r.Receive is { Verified: true }) d["receive"]["verified"] = true;
        return d;
    }

    internal static PoolRecord FromBson(BsonDocument d)
    {
        var r = Fields(d);
        if (d.TryGetValue("purges", out var ps))
        {
            if (!ps.IsArray) throw new InvalidDataException("metadata: pool field purges is not an array");
            foreach (var p in ps.AsArray)
            {
                if (!p.IsDocument || !p["gen"].IsNumber || !p["prev"].IsNumber || !p["next"].IsNumber)
                    throw new InvalidDataException($"metadata: malformed entry of pool field purges: {p}");
                var e = new PendingPurge(p["gen"].AsInt64, p["prev"].AsInt64, p["next"].AsInt64);
                if (!(e.Prev < e.Gen && e.Gen < e.Next)) throw new InvalidDataException($"metadata: purges entry {p} is not prev < gen < next");
                r.Purges.Add(e);
            }
        }
        if (d.TryGetValue("receive", out var rv)) r.Receive = ReceiveOf(rv, r.LiveGen);
        return r;
    }

    private static PendingReceive ReceiveOf(BsonValue v, long liveGen)
    {
        try
        {
            var d = v.AsDocument;
            var r = new PendingReceive
            {
                Gen = d["gen"].AsInt64, SnapPool = d["snap_pool"].AsGuid, SnapGen = d["snap_gen"].AsInt64, BasePool = d["base_pool"].AsGuid,
                BaseGen = d["base_gen"].AsInt64, Name = d["name"].AsString, CreatedNs = d["created_ns"].AsInt64, Offset = d["offset"].AsInt64,
                Records = d["records"].AsInt64, Chain = d["chain"].AsBinary,
                Verified = d.TryGetValue("verified", out var vf) && vf.IsBoolean && vf.AsBoolean,
            };
            if (r.Gen != liveGen + 1 || r.Chain is not { Length: 16 } || r.Offset < 0 || r.Records < 0 || r.Name.Length == 0)
                throw new InvalidDataException("inconsistent fields");
            return r;
        }
        catch (Exception e) when (e is InvalidCastException or NullReferenceException or InvalidDataException or KeyNotFoundException)
        {
            throw new InvalidDataException($"metadata: malformed pool field receive: {v} ({e.Message})");
        }
    }

    private static PoolRecord Fields(BsonDocument d) => new()
    {
        PoolUuid = d["pool_uuid"].AsGuid, FormatVersion = d["format_version"].AsInt32, BlockSize = d["block_size"].AsInt32,
        LiveGen = d["live_gen"].AsInt64, NextIno = d["next_ino"].AsInt64, NextRid = d["next_rid"].AsInt64,
        CommitSeq = d["commit_seq"].AsInt64, SegmentSeq = d["segment_seq"].AsInt64, LogCursor = d["log_cursor"].AsInt64,
        CreatedNs = d["created_ns"].AsInt64, Label = d["label"].AsString,
        ChunkSegs = d.TryGetValue("chunk_segs", out var cs) && cs.IsNumber && cs.AsInt32 == 1,
    };
}
