using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="SnapshotRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class SnapshotBson
{
    internal static BsonDocument ToBson(this SnapshotRecord r)
    {
        var d = new BsonDocument { ["_id"] = r.Gen, ["name"] = r.Name, ["created_ns"] = r.CreatedNs, ["commit_seq"] = r.CommitSeq };
        if (r.Holds.Count > 0) d["holds"] = new BsonArray(r.Holds.Select(h => new BsonValue(h)));
        if (r.Properties.Count > 0)
        {
            // An array of {k, v} pairs, not a document: LiteDB compares document keys without regard to case.
            d["props"] = new BsonArray(r.Properties.Select(kv => (BsonValue)new BsonDocument { ["k"] = kv.Key, ["v"] = kv.Value }));
        }
        if (r.SourcePool != Guid.Empty) { d["source_pool"] = r.SourcePool; d["source_gen"] = r.SourceGen; }
        return d;
    }

    internal static SnapshotRecord FromBson(BsonDocument d)
    {
        var r = new SnapshotRecord { Gen = d["_id"].AsInt64, Name = d["name"].AsString, CreatedNs = d["created_ns"].AsInt64, CommitSeq = d["commit_seq"].AsInt64 };
        if (d.TryGetValue("holds", out var h) && h.IsArray)
            foreach (var t in h.AsArray) r.Holds.Add(t.AsString);
        r.Holds.Sort(StringComparer.Ordinal);
        if (d.TryGetValue("props", out var p) && p.IsArray)
            foreach (var kv in p.AsArray) r.Properties[kv["k"].AsString] = kv["v"].AsString;
        if (d.TryGetValue("source_pool", out var sp))
        {
            if (!sp.IsGuid || !d.TryGetValue("source_gen", out var sg) || !sg.IsNumber)
                throw new InvalidDataException($"metadata: snapshot {r.Gen} has a malformed source_pool/source_gen");
            r.SourcePool = sp.AsGuid; r.SourceGen = sg.AsInt64;
        }
        return r;
    }
}
