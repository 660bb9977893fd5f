using Cow.Core;
using Cow.Tests.Mount;
using Xunit;

namespace Cow.Tests.Engine;

/// <summary>fsck's progress callback (the bar of <c>cow fsck</c> on a terminal) and its absence from redirected output.</summary>
[Trait("Tier", "mount")]
public class FsckProgressTests
{
    [SkippableFact]
    public void ProgressCountsEveryVerifiedBlockAndEndsAtTheTotal()
    {
        var dir = Path.Combine(Path.GetTempPath(), "cow-fsck-progress-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            using (var p = Pool.Create(dir, new PoolCreateOptions { BaseSize = 16L << 20, LogSize = 64L << 20 }))
            {
                var f = MemoryPool.CreateFile(p.Live, "/big");
                MemoryPool.WriteAt(p.Live, f, 0, new byte[5000 * 4096].Select((_, i) => (byte)(i / 4096 + 1)).ToArray());
                var calls = new List<(long Done, long Total)>();
                var report = p.Fsck(true, (d, t) => calls.Add((d, t)));
                Assert.True(report.Clean, report.ToString());
                Assert.Equal(report.VerifiedBlocks, calls[^1].Done);
                Assert.Equal(calls[^1].Done, calls[^1].Total);
                Assert.True(calls.Count >= 2);                    // one at 4096 blocks, one at the end
                Assert.Equal(calls.Select(c => c.Done).Order(), calls.Select(c => c.Done));
                calls.Clear();
                p.Fsck(false, (d, t) => calls.Add((d, t)));
                Assert.Empty(calls);                              // --no-data: no data pass
            }
            // Redirected stdout (as here): the report only, no progress drawing.
            var (code, output, err) = CowProgram.Run("fsck", dir);
            Assert.True(code == 0, err);
            Assert.DoesNotContain("\u001b", output);
            Assert.DoesNotContain("verifying", output);
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }
}
