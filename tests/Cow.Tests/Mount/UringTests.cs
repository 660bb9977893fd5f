using System.Security.Cryptography;
using Cow.Fuse.Mounting;
using Cow.Fuse.Server;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Mount;

[CollectionDefinition("fuse-io-uring", DisableParallelization = true)]
public sealed class FuseIoUringCollection;

/// <summary>
/// FUSE over io_uring on a real mount: the kernel parameter <c>fuse.enable_uring</c> is switched on for these
/// tests only (they run alone, so no other test's mount picks it up) and restored afterwards. Requests then
/// reach Cow through ring entries instead of read(2) of /dev/fuse; everything must behave the same.
/// </summary>
[Collection("fuse-io-uring")]
[Trait("Tier", "mount")]
public sealed class UringTests(ITestOutputHelper output)
{
    /// <summary>Switches fuse.enable_uring on until disposed (then back to what it was).</summary>
    internal static IDisposable EnableUring()
    {
        MountedPool.RequireRootAndFuse();   // writing the kernel parameter needs root too
        var path = MountedFileSystem.EnableUringParameter;
        Assert.True(File.Exists(path), $"{path} is missing: this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING, Linux 6.14+)");
        var before = File.ReadAllText(path).Trim();
        File.WriteAllText(path, "1");
        return new Restore(() => File.WriteAllText(path, before is "Y" or "1" ? "1" : "0"));
    }

    private sealed class Restore(Action a) : IDisposable { public void Dispose() => a(); }

    private static void WaitForRing(MountedPool m)
    {
        var s = m.Mount!.Session;
        var until = DateTime.UtcNow.AddSeconds(10);
        // INIT is answered asynchronously to mount(2); the entries register right after it.
        while (s.UringEntries < Math.Max(1, s.UringEntriesWanted) && DateTime.UtcNow < until) Thread.Sleep(10);
        Assert.True(s.UringEntriesWanted > 0, "INIT did not grant FUSE_OVER_IO_URING: " + string.Join(" | ", m.Log));
        Assert.True(s.UringEntriesWanted == s.UringEntries, $"{s.UringEntries} of {s.UringEntriesWanted} ring entries registered: " + string.Join(" | ", m.Log));
        Assert.Equal(FuseUringTransport.PossibleCpus() * 2, s.UringEntriesWanted);
    }

    [SkippableFact]
    public void FileOperationsGoThroughTheRingAndMatch()
    {
        using var on = EnableUring();
        using var m = new MountedPool();
        WaitForRing(m);
        var s = m.Mount!.Session;
        long before = s.UringRequests;

        var data = RandomNumberGenerator.GetBytes(9 << 20);
        // Unaligned pieces, across page and 1 MiB boundaries, from an unaligned buffer offset.
        using (var f = new FileStream(m.P("a"), FileMode.Create, FileAccess.Write, FileShare.None, 1))
            for (int off = 0; off < data.Length;)
            {
                int n = Math.Min(data.Length - off, 1 + (int)((long)off * 7919 % (1 << 20)));
                f.Write(data, off, n);
                off += n;
            }
        Assert.Equal(data, File.ReadAllBytes(m.P("a")));
        Directory.CreateDirectory(m.P("d/e"));
        File.Move(m.P("a"), m.P("d/e/b"));
        Assert.Equal(["b"], Directory.GetFiles(m.P("d/e")).Select(Path.GetFileName));
        Directory.CreateDirectory(m.P(".snapshots/s1"));
        using (var f = new FileStream(m.P("d/e/b"), FileMode.Open, FileAccess.Write)) { f.SetLength(4096); }
        Assert.Equal(data, File.ReadAllBytes(m.P(".snapshots/s1/d/e/b")));
        Assert.Equal(data.AsSpan(0, 4096).ToArray(), File.ReadAllBytes(m.P("d/e/b")));
        File.Delete(m.P("d/e/b"));
        Assert.False(File.Exists(m.P("d/e/b")));
        Assert.True(s.UringRequests - before > 50, $"only {s.UringRequests - before} requests came through the ring");
        output.WriteLine($"{s.UringRequests - before} requests through {s.UringEntries} ring entries; {s.Requests} in all");

        // After a remount (new connection, new ring) the data is there.
        m.Remount();
        WaitForRing(m);
        Assert.Equal(data, File.ReadAllBytes(m.P(".snapshots/s1/d/e/b")));
        m.UnmountNow();
    }

    [SkippableFact]
    public void RandomOperationsMatchTheModelOverTheRing()
    {
        using var on = EnableUring();
        new RandomMountExerciserTests(output).RunSeed(RandomMountExerciserTests.SeedOr(271_828), false, null,
            m => Assert.True(m.Mount!.Session.UringRequests > 0, "no request went through io_uring"));
    }
}
