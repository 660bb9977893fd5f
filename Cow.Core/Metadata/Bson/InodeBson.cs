using LiteDB;

namespace Cow.Core.Metadata;

/// <summary>The BSON mapping of <see cref="InodeRecord"/>: field names as in format.md ("Metadata file"). Stateless.</summary>
internal static class InodeBson
{
    internal static BsonDocument ToBson(this InodeRecord r)
    {
        var d = new BsonDocument
        {
            ["_id"] = r.Rid, ["ino"] = r.Ino, ["birth"] = r.Birth, ["death"] = r.Death, ["mode"] = (long)r.Mode, ["uid"] = (long)r.Uid,
            ["gid"] = (long)r.Gid, ["nlink"] = (long)r.Nlink, ["size"] = r.Size, ["blocks"] = r.Blocks, ["parent"] = r.Parent, ["rdev"] = (long)r.Rdev, ["atime_ns"] = r.AtimeNs,
            ["mtime_ns"] = r.MtimeNs, ["ctime_ns"] = r.CtimeNs, ["btime_ns"] = r.BtimeNs, ["next_pos"] = r.NextPos,
        };
        if (r.Target != null) d["target"] = r.Target;
        if (r.Prealloc is { Length: > 0 })
        {
            d["prealloc"] = new BsonArray(r.Prealloc.Select(v => new BsonValue(v)));
            d["prealloc_blocks"] = r.PreallocBlocks;
        }
        if (r.Xattrs is { Count: > 0 })
        {
            var x = new BsonDocument();
            foreach (var (k, v) in r.Xattrs) x[k] = v;
            d["xattrs"] = x;
        }
        return d;
    }

    internal static InodeRecord FromBson(BsonDocument d)
    {
        var r = new InodeRecord
        {
            Rid = d["_id"].AsInt64, Ino = d["ino"].AsInt64, Birth = d["birth"].AsInt64, Death = d["death"].AsInt64,
            Mode = (uint)d["mode"].AsInt64, Uid = (uint)d["uid"].AsInt64, Gid = (uint)d["gid"].AsInt64,
            Nlink = (uint)d["nlink"].AsInt64, Size = d["size"].AsInt64, Blocks = d["blocks"].AsInt64, Parent = d["parent"].AsInt64, Rdev = (ulong)d["rdev"].AsInt64,
            AtimeNs = d["atime_ns"].AsInt64, MtimeNs = d["mtime_ns"].AsInt64, CtimeNs = d["ctime_ns"].AsInt64,
            BtimeNs = d["btime_ns"].AsInt64, NextPos = d["next_pos"].AsInt64,
        };
        if (d.TryGetValue("target", out var t)) r.Target = t.AsString;
        if (d.TryGetValue("prealloc", out var pa) && pa.AsArray.Count > 0)
        {
            r.Prealloc = pa.AsArray.Select(v => v.AsInt64).ToArray();
            r.PreallocBlocks = d["prealloc_blocks"].AsInt64;
        }
        if (d.TryGetValue("xattrs", out var x))
        {
            r.Xattrs = new Dictionary<string, byte[]>();
            foreach (var (k, v) in x.AsDocument) r.Xattrs[k] = v.AsBinary;
        }
        return r;
    }
}
