using Cow.Core.FileSystem;
using Xunit;
using static Cow.Tests.Posix.PosixFlags;

namespace Cow.Tests.Posix;

// One file under random writes, truncates, punches, zero ranges, fallocates and snapshots, against a model.
public abstract partial class PosixCases
{
    [SkippableFact]
    public void RandomOperationsMatchAModel()
    {
        var f = Open("f", O_RDWR | O_CREAT);
        try
        {
            var rnd = new Random(42);
            var model = Array.Empty<byte>();
            const int Max = (int)ChunkBytes + 200_000; // spans a chunk boundary
            var snaps = new List<(string Prefix, byte[] Data)>();
            for (int i = 0; i < 1200; i++)
            {
                int op = i % 120 == 119 ? 9 : rnd.Next(9);
                long off = rnd.Next(0, Max);
                int len = rnd.Next(1, rnd.Next(2) == 0 ? 300 : 40_000);
                string what;
                if (op < 5)
                {
                    var d = Pattern(len, i);
                    what = $"write {len} at {off}";
                    WriteAt(f, off, d);
                    if (off + len > model.Length) Array.Resize(ref model, (int)(off + len));
                    d.CopyTo(model, off);
                }
                else if (op == 5)
                {
                    what = $"truncate {off}";
                    Ok(f.Ftruncate(off), what);
                    Array.Resize(ref model, (int)off);
                }
                else if (op == 6)
                {
                    what = $"punch {off}+{len}";
                    Ok(f.Fallocate(FallocateMode.PunchHole | FallocateMode.KeepSize, off, len), what);
                    if (off < model.Length) Array.Clear(model, (int)off, (int)Math.Min(len, model.Length - off));
                }
                else if (op == 7)
                {
                    bool keep = rnd.Next(2) == 0;
                    what = $"zero range {off}+{len} keep {keep}";
                    Ok(f.Fallocate(FallocateMode.ZeroRange | (keep ? FallocateMode.KeepSize : 0), off, len), what);
                    if (!keep && off + len > model.Length) Array.Resize(ref model, (int)(off + len));
                    if (off < model.Length) Array.Clear(model, (int)off, (int)Math.Min(len, model.Length - off));
                }
                else if (op == 8)
                {
                    what = $"fallocate {off}+{len}";
                    Ok(f.Fallocate(FallocateMode.None, off, len), what);
                    if (off + len > model.Length) Array.Resize(ref model, (int)(off + len));
                }
                else
                {
                    what = $"snapshot {i}";
                    snaps.Add((T.Snapshot($"s{i}") + "/", model.ToArray()));
                }
                Ok(f.Fstat(out var a), "fstat");
                Assert.True(model.Length == a.Size, $"{T.Name}: after op {i} ({what}): size {a.Size}, expected {model.Length}");
                long lo = Math.Max(0, Math.Min(off, model.Length) - 5000);
                int n = (int)Math.Min(model.Length - lo, len + 10_000);
                var got = ReadRange(f, lo, n);
                Assert.True(model.AsSpan((int)lo, n).SequenceEqual(got), $"{T.Name}: after op {i} ({what}): data differs near {lo}");
                Assert.True(a.Blocks512 <= (model.Length + Bs - 1) / Bs * (Bs / 512), $"{T.Name}: after op {i} ({what}): {a.Blocks512} sectors for {model.Length} bytes");
                if (i % 300 == 299)
                {
                    Assert.Equal(model, ReadRange(f, 0, model.Length));
                    f.Dispose();
                    T.AssertClean();
                    T.Reopen();
                    f = Open("f", O_RDWR);
                }
            }
            foreach (var (prefix, data) in snaps) Assert.Equal(data, ReadAll(prefix + "f"));
            f.Dispose();
            T.Reopen();
            Assert.Equal(model, ReadAll("f"));
            T.AssertClean();
        }
        finally { f.Dispose(); }
    }
}
