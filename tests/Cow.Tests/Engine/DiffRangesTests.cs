using System.Text.Json.Nodes;
using Cow.Cli;
using Cow.Core.FileSystem;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Engine.MemoryPool;

namespace Cow.Tests.Engine;

/// <summary><c>snapshot diff --ranges</c> on memory pools: sizes and changed byte ranges of data-changed, added and
/// removed regular files, from the extent maps; the index-driven diff and the whole-tree walk agree; the CLI's rows
/// (JSON and text) carry them.</summary>
[Trait("Tier", "engine")]
public class DiffRangesTests
{
    private const int B = 4096;

    private static void Ok(Errno e, string what) => Assert.True(e == 0, $"{what}: {e}");

    private static SnapshotChange Row(string path, ChangeKind kind, long ino, long? before, long? after, params ByteRange[] ranges) =>
        new(path, kind, ino) { SizeBefore = before, SizeAfter = after, Ranges = ranges };

    private static ByteRange Data(long offset, long length) => new(offset, length, true);
    private static ByteRange Hole(long offset, long length) => new(offset, length, false);

    /// <summary>s1, then: /f two blocks overwritten and extended with a hole, /g added, /h removed, /m chmod only,
    /// /p a block punched, /t shrunk; then s2.</summary>
    private static (long F, long G, long H, long M, long P, long T) TwoSnapshots(MemoryPool p)
    {
        var fs = p.Live;
        long f = CreateFile(fs, "/f"), h = CreateFile(fs, "/h"), m = CreateFile(fs, "/m"), pf = CreateFile(fs, "/p"), t = CreateFile(fs, "/t");
        WriteAt(fs, f, 0, Pattern(8 * B, 1));
        WriteAt(fs, h, 0, Pattern(6000, 2));
        WriteAt(fs, m, 0, Pattern(100, 3));
        WriteAt(fs, pf, 0, Pattern(4 * B, 4));
        WriteAt(fs, t, 0, Pattern(5 * B, 5));
        Ok(p.Engine.CreateSnapshot("s1", out _), "snapshot s1");
        WriteAt(fs, f, 2 * B, Pattern(B, 6));
        WriteAt(fs, f, 5 * B, Pattern(B, 7));
        Ok(fs.SetAttr(f, new SetAttrRequest { Size = 16 * B }, out _), "extend /f");
        long g = CreateFile(fs, "/g");
        WriteAt(fs, g, 0, Pattern(3000, 8));
        Ok(fs.Unlink(1, "h"), "unlink /h");
        Ok(fs.SetAttr(m, new SetAttrRequest { Mode = 0x8000 | 0x1C0 }, out _), "chmod /m");
        Ok(fs.Fallocate(pf, FallocateMode.PunchHole | FallocateMode.KeepSize, B, B), "punch /p");
        Ok(fs.SetAttr(t, new SetAttrRequest { Size = 2 * B }, out _), "shrink /t");
        Ok(p.Engine.CreateSnapshot("s2", out _), "snapshot s2");
        return (f, g, h, m, pf, t);
    }

    [Fact]
    public void Rewritten_blocks_holes_and_size_changes_are_the_ranges_and_sizes()
    {
        using var p = new MemoryPool();
        var (f, g, h, m, pf, t) = TwoSnapshots(p);
        List<SnapshotChange> want =
        [
            Row("/f", ChangeKind.ModifiedData, f, 8 * B, 16 * B, Data(2 * B, B), Data(5 * B, B)),   // the extension is a hole both maps agree on
            Row("/g", ChangeKind.Added, g, null, 3000, Data(0, 3000)),                              // clamped to the size
            Row("/h", ChangeKind.Removed, h, 6000, null, Hole(0, 6000)),
            new("/m", ChangeKind.ModifiedMetadata, m),
            Row("/p", ChangeKind.ModifiedData, pf, 4 * B, 4 * B, Hole(B, B)),
            Row("/t", ChangeKind.ModifiedData, t, 5 * B, 2 * B, Hole(2 * B, 3 * B)),
        ];
        Ok(p.Engine.DiffSnapshots("s1", "s2", out var diff, withRanges: true), "diff --ranges");
        Assert.Equal(want, diff);
        Ok(p.Engine.DiffSnapshotsByWalk("s1", "s2", out var walked, withRanges: true), "diff --ranges by walk");
        Assert.Equal(want, walked);
        Ok(p.Engine.DiffSnapshots("s1", null, out var toLive, withRanges: true), "diff --ranges to the live tree");
        Assert.Equal(want, toLive);
        Ok(p.Pool.Snapshots.Diff("s1", "s2", out var viaFacade, withRanges: true), "PoolSnapshots.Diff");
        Assert.Equal(want, viaFacade);
        // Without ranges: the same rows, nothing extra.
        Ok(p.Engine.DiffSnapshots("s1", "s2", out var plain), "diff");
        Assert.Equal(want.Select(c => (c.Path, c.Kind, c.Ino)), plain.Select(c => (c.Path, c.Kind, c.Ino)));
        Assert.All(plain, c => Assert.True(c.Ranges == null && c.SizeBefore == null && c.SizeAfter == null, c.ToString()));
        // Backwards: the same blocks, the other kinds.
        Ok(p.Engine.DiffSnapshots("s2", "s1", out var back, withRanges: true), "diff s2 s1");
        Assert.Equal(Row("/f", ChangeKind.ModifiedData, f, 16 * B, 8 * B, Data(2 * B, B), Data(5 * B, B)), back[0]);
        Assert.Equal(Row("/p", ChangeKind.ModifiedData, pf, 4 * B, 4 * B, Data(B, B)), back.Single(c => c.Path == "/p"));
        Assert.Equal(Row("/t", ChangeKind.ModifiedData, t, 2 * B, 5 * B, Data(2 * B, 3 * B)), back.Single(c => c.Path == "/t"));
    }

    [Fact]
    public void A_metadata_change_has_no_ranges_and_a_size_change_over_a_hole_has_sizes_only()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = CreateFile(fs, "/f");
        WriteAt(fs, f, 0, Pattern(B, 1));
        Ok(p.Engine.CreateSnapshot("s1", out _), "snapshot");
        Ok(fs.SetAttr(f, new SetAttrRequest { Uid = 7 }, out _), "chown");
        Ok(p.Engine.DiffSnapshots("s1", null, out var diff, withRanges: true), "diff");
        Assert.Equal([new SnapshotChange("/f", ChangeKind.ModifiedMetadata, f)], diff);
        Assert.Null(diff[0].Ranges);
        Ok(fs.SetAttr(f, new SetAttrRequest { Size = 10 * B }, out _), "extend");
        Ok(p.Engine.DiffSnapshots("s1", null, out diff, withRanges: true), "diff");
        Assert.Equal([Row("/f", ChangeKind.ModifiedData, f, B, 10 * B), new("/f", ChangeKind.ModifiedMetadata, f)], diff);
    }

    [Fact]
    public void A_renamed_file_has_its_ranges_on_its_data_row_and_a_new_link_is_a_whole_new_path()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        long f = CreateFile(fs, "/a"), x = CreateFile(fs, "/x");
        WriteAt(fs, f, 0, Pattern(3 * B, 1));
        WriteAt(fs, x, 0, Pattern(2 * B, 2));
        Ok(p.Engine.CreateSnapshot("s1", out _), "snapshot");
        Ok(fs.Rename(1, "a", 1, "b"), "rename");
        WriteAt(fs, f, B, Pattern(10, 3));
        Ok(fs.Link(x, 1, "y", out _), "link");
        Ok(p.Engine.DiffSnapshots("s1", null, out var diff, withRanges: true), "diff");
        Assert.Equal(
        [
            new("/b", ChangeKind.Renamed, f, "/a"),
            Row("/b", ChangeKind.ModifiedData, f, 3 * B, 3 * B, Data(B, B)),
            Row("/y", ChangeKind.Added, x, null, 2 * B, Data(0, 2 * B)),   // the path is new: all of its data is
        ], diff);
    }

    /// <summary>Random writes, truncates, punched holes, removals and re-creations between snapshots: the index-driven
    /// diff with ranges equals the whole-tree walk's, and the data says the ranges are enough: below the smaller size,
    /// every byte outside the ranges is the same in both versions, and a hole range reads as zeros.</summary>
    [Fact]
    public void Ranges_cover_every_byte_that_differs_under_random_changes()
    {
        using var p = new MemoryPool();
        var fs = p.Live;
        var rnd = new Random(4242);
        var names = Enumerable.Range(0, 5).Select(i => $"f{i}").ToList();
        foreach (var n in names) WriteAt(fs, CreateFile(fs, "/" + n), 0, Pattern(rnd.Next(1, 12 * B), rnd.Next()));
        var snaps = new List<string>();
        for (int round = 0; round < 8; round++)
        {
            snaps.Add($"s{round}");
            Ok(p.Engine.CreateSnapshot(snaps[^1], out _), "snapshot");
            foreach (var n in names)
            {
                var present = fs.Resolve("/" + n, out var a) == 0;
                int op = rnd.Next(7);
                if (!present) { if (op < 3) WriteAt(fs, CreateFile(fs, "/" + n), 0, Pattern(rnd.Next(1, 12 * B), rnd.Next())); continue; }
                if (op <= 1) WriteAt(fs, a.Ino, rnd.Next(16 * B), Pattern(rnd.Next(1, 3 * B), rnd.Next()));
                else if (op == 2) Ok(fs.SetAttr(a.Ino, new SetAttrRequest { Size = rnd.Next(16 * B) }, out _), "truncate");
                else if (op == 3) Ok(fs.Fallocate(a.Ino, FallocateMode.PunchHole | FallocateMode.KeepSize, rnd.Next(12 * B), rnd.Next(1, 4 * B)), "punch");
                else if (op == 4) Ok(fs.Unlink(1, n), "unlink");
            }
        }
        snaps.Add("live");
        for (int i = 0; i < snaps.Count - 1; i++)
            for (int j = i + 1; j < snaps.Count; j++)
            {
                string? to = snaps[j] == "live" ? null : snaps[j];
                Ok(p.Engine.DiffSnapshots(snaps[i], to, out var diff, withRanges: true), $"diff {snaps[i]} {snaps[j]}");
                Ok(p.Engine.DiffSnapshotsByWalk(snaps[i], to, out var walked, withRanges: true), "by walk");
                Assert.Equal(walked, diff);
                var older = p.Pool.Snapshot(snaps[i])!;
                var newer = to == null ? fs : p.Pool.Snapshot(to)!;
                foreach (var c in diff.Where(c => c.Ranges != null))
                {
                    var before = c.SizeBefore == null ? [] : ReadAll(older, Ino(older, c.Path));
                    var after = c.SizeAfter == null ? [] : ReadAll(newer, Ino(newer, c.Path));
                    Assert.Equal(c.SizeBefore ?? 0, before.Length);
                    Assert.Equal(c.SizeAfter ?? 0, after.Length);
                    var inRange = new bool[Math.Max(before.Length, after.Length)];
                    foreach (var r in c.Ranges!)
                        for (long k = r.Offset; k < r.End; k++)
                        {
                            inRange[k] = true;
                            if (!r.Data && k < after.Length) Assert.True(after[k] == 0, $"{c}: byte {k} of a hole range is {after[k]}");
                        }
                    for (int k = 0; k < Math.Min(before.Length, after.Length); k++)
                        if (!inRange[k] && before[k] != after[k])
                            Assert.Fail($"{snaps[i]} -> {snaps[j]}: {c}: byte {k} differs outside the ranges");
                }
            }
    }

    [Fact]
    public void The_cli_rows_carry_sizes_and_ranges_in_json_and_text()
    {
        using var p = new MemoryPool();
        TwoSnapshots(p);
        var res = SnapshotOpsCore.Diff(p.Pool, "mem", "s1", "s2", ranges: true);
        Assert.Equal(0, res.Code);
        var rows = ((JsonArray)JsonNode.Parse(res.Data!.ToJsonString())!).OfType<JsonObject>().ToDictionary(r => ((string)r["path"]!, (string)r["kind"]!));
        var fr = rows[("/f", "modified_data")];
        Assert.Equal(8 * B, (long)fr["size_before"]!);
        Assert.Equal(16 * B, (long)fr["size_after"]!);
        Assert.Equal("[{\"offset\":8192,\"length\":4096,\"kind\":\"data\"},{\"offset\":20480,\"length\":4096,\"kind\":\"data\"}]", fr["ranges"]!.ToJsonString());
        var gr = rows[("/g", "added")];
        Assert.Null(gr["size_before"]);
        Assert.True(gr.ContainsKey("size_before"));
        Assert.Equal(3000, (long)gr["size_after"]!);
        Assert.Equal("hole", (string)rows[("/h", "removed")]["ranges"]![0]!["kind"]!);
        var mr = rows[("/m", "modified_metadata")];
        Assert.True(mr.ContainsKey("ranges") && mr["ranges"] == null && mr["size_after"] == null);
        Assert.Equal(
        [
            "M\t/f\t(data)\tsize 32768 -> 65536\tdata 8192+4096, data 20480+4096",
            "+\t/g\tsize - -> 3000\tdata 0+3000",
            "-\t/h\tsize 6000 -> -\thole 0+6000",
            "M\t/m\t(metadata)",
            "M\t/p\t(data)\tsize 16384 -> 16384\thole 4096+4096",
            "M\t/t\t(data)\tsize 20480 -> 8192\thole 8192+12288",
        ], ((JsonArray)res.Data!).OfType<JsonObject>().Select(SnapshotCommands.DiffLine));
        // Without --ranges the rows are as before: no extra keys.
        var plain = SnapshotOpsCore.Diff(p.Pool, "mem", "s1", "s2");
        Assert.All(((JsonArray)plain.Data!).OfType<JsonObject>(), r => Assert.Equal(["ino", "kind", "old_path", "path"], r.Select(kv => kv.Key).Order()));
        Assert.Equal("M\t/f\t(data)", SnapshotCommands.DiffLine((JsonObject)((JsonArray)plain.Data!)[0]!));
    }
}
