using Cow.Core.Devices;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.Devices;

/// <summary>The O_DIRECT buffers of the device read-ahead and write-behind (<see cref="DirectIo.AllocateBuffer"/>):
/// aligned to a huge page, whole, and usable for O_DIRECT transfers on a real image file.</summary>
[Trait("Tier", "unit")]
public sealed unsafe class DirectIoTests() : VarTmpImages("cow-directio-tests-")
{
    [SkippableTheory]
    [InlineData(4 << 20)]
    [InlineData(8 << 20)]
    [InlineData(1 << 20)]
    [InlineData((1 << 20) + 4096)]   // the FUSE server's request and reply buffers
    public void BuffersAreHugePageAlignedAndCarryAnODirectRoundTrip(int bytes)
    {
        byte* a = DirectIo.AllocateBuffer(bytes), b = DirectIo.AllocateBuffer(bytes);
        try
        {
            Assert.Equal(0, (long)a % DirectIo.HugePageBytes);
            Assert.Equal(0, (long)b % DirectIo.HugePageBytes);
            var src = new Span<byte>(a, bytes);
            for (int i = 0; i < bytes; i += 4) BitConverter.TryWriteBytes(src[i..], i * 2654435761u);
            string path = Path.Combine(Dir, "d.img");
            File.WriteAllBytes(path, new byte[bytes + (1 << 20)]);
            int fd = Syscall.open(path, OpenFlags.O_RDWR | OpenFlags.O_DIRECT | OpenFlags.O_CLOEXEC);
            Assert.True(fd >= 0, $"O_DIRECT refused on {Dir}: {Stdlib.GetLastError()}");
            try
            {
                Assert.True(DirectIo.Transfer(fd, write: true, 1 << 20, a, bytes), "O_DIRECT write from the buffer failed");
                Assert.True(DirectIo.Transfer(fd, write: false, 1 << 20, b, bytes), "O_DIRECT read into the buffer failed");
            }
            finally { Syscall.close(fd); }
            Assert.True(src.SequenceEqual(new ReadOnlySpan<byte>(b, bytes)), "the bytes read back differ");
        }
        finally
        {
            DirectIo.FreeBuffer(a);
            DirectIo.FreeBuffer(b);
        }
    }

    /// <summary>The whole allocation is advised, rounded up to huge pages: an advice over part of a huge page
    /// splits the mapping into a piece that cannot hold one (smaps says THPeligible 0 there). Checked where
    /// transparent huge pages are on (madvise or always).</summary>
    [SkippableFact]
    public void AnOddSizedBufferCanStillLieInHugePages()
    {
        string mode = File.Exists("/sys/kernel/mm/transparent_hugepage/enabled") ? File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled") : "";
        bool on = mode.Contains("[madvise]") || mode.Contains("[always]");
        byte* a = DirectIo.AllocateBuffer((1 << 20) + 4096);
        try
        {
            Skip.IfNot(on, "transparent huge pages are off (neither madvise nor always)");
            new Span<byte>(a, (1 << 20) + 4096).Fill(1);
            Assert.Equal("1", SmapsField((ulong)a, "THPeligible"));
        }
        finally { DirectIo.FreeBuffer(a); }
    }

    /// <summary>A field of the mapping that holds <paramref name="address"/> in /proc/self/smaps.</summary>
    private static string? SmapsField(ulong address, string field)
    {
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, null, out ulong from)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), System.Globalization.NumberStyles.HexNumber, null, out ulong to))
            {
                inside = address >= from && address < to;
                continue;
            }
            if (inside && line.StartsWith(field + ":")) return line[(field.Length + 1)..].Trim();
        }
        return null;
    }
}
