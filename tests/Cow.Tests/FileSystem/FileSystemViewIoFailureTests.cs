using System.Reflection;
using System.Runtime.InteropServices;
using Cow.Core.Devices;
using Cow.Core.FileSystem;
using Cow.Tests.Engine;
using Mono.Unix.Native;
using Xunit;

namespace Cow.Tests.FileSystem;

/// <summary>
/// The errno API never throws for I/O: every public <see cref="FileSystemView"/> operation, called on a pool
/// whose four devices have all lost power (every read, write and flush throws IOException), returns an errno.
/// The operations are found by reflection, so a new one is covered (and must go through the view's guard)
/// without touching this test; the two taking spans, which reflection cannot call, are called directly.
/// </summary>
[Trait("Tier", "engine")]
public sealed class FileSystemViewIoFailureTests
{
    private static readonly HashSet<string> SpanOperations = new() { "Read", "Write" };

    private static IEnumerable<MethodInfo> Operations() =>
        typeof(FileSystemView).GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
            .Where(m => !m.IsSpecialName);

    public static TheoryData<string> ReflectableOperations()
    {
        var data = new TheoryData<string>();
        foreach (var m in Operations())
            if (!SpanOperations.Contains(m.Name)) data.Add(m.ToString()!);
        return data;
    }

    /// <summary>A pool with a directory, a written file (ino), a symlink and an xattr, committed, then every
    /// device loses power.</summary>
    private static MemoryPool DeadPool(out long file)
    {
        var p = new MemoryPool(faulty: true);
        var fs = p.Live;
        Assert.Equal(0, (int)fs.Mkdir(fs.RootIno, "d", 0x1ED, 0, 0, out _));
        Assert.Equal(0, (int)fs.Create(fs.RootIno, "f", 0x1A4, 0, 0, out var a));
        file = a.Ino;
        Assert.Equal(0, (int)fs.Write(file, 0, new byte[3 * 4096], out _));
        Assert.Equal(0, (int)fs.Symlink(fs.RootIno, "l", "f", 0, 0, out _));
        Assert.Equal(0, (int)fs.SetXattr(file, "user.x", new byte[] { 1 }));
        Assert.Equal(0, (int)fs.Fsync(file));
        p.Reopen();   // nothing cached: the operations must go to the devices
        foreach (var f in new[] { p.BaseFault!, p.LogFault!, p.MetaFault!, p.MetaLogFault! }) f.PowerCut();
        return p;
    }

    [Theory]
    [MemberData(nameof(ReflectableOperations))]
    public unsafe void No_IOException_escapes_an_operation_on_dead_devices(string signature)
    {
        var method = Operations().Single(m => m.ToString() == signature);
        using var p = DeadPool(out long file);
        var fs = p.Live;
        void* scratch = NativeMemory.Alloc(1 << 16);
        try
        {
            var segments = new ReadSegments((byte*)scratch, 1 << 16);
            var args = method.GetParameters().Select(q => Argument(q, fs, file, segments)).ToArray();
            try { method.Invoke(fs, args); }
            catch (TargetInvocationException e) when (e.InnerException is IOException)
            {
                Assert.Fail($"{signature} let an IOException escape: {e.InnerException}");
            }
            finally { segments.Release(); }
        }
        finally { NativeMemory.Free(scratch); }
    }

    [Fact]
    public void Span_operations_on_dead_devices_return_EIO_not_IOException()
    {
        Assert.Equal(SpanOperations, Operations()
            .Where(m => m.GetParameters().Any(q => q.ParameterType.IsByRefLike)).Select(m => m.Name).ToHashSet());
        using var p = DeadPool(out long file);
        var buffer = new byte[8192];
        // The file's blocks are on the dead devices: the read must fail, as EIO.
        Assert.Equal(Errno.EIO, p.Live.Read(file, 0, buffer, out _));
        var e = p.Live.Write(file, 0, buffer, out _);
        Assert.True(e == Errno.EIO || e == 0, $"write on dead devices: {e}");
        Assert.Equal(Errno.EIO, p.Live.Fsync(file));
    }

    private static object? Argument(ParameterInfo q, FileSystemView fs, long file, ReadSegments segments)
    {
        if (q.IsOut) return null;
        var t = q.ParameterType;
        string n = q.Name!.ToLowerInvariant();
        if (t == typeof(long))
            return n.Contains("parent") ? fs.RootIno : n.Contains("ino") ? file : n == "before" ? long.MaxValue : 4096L;
        if (t == typeof(int)) return 16;
        if (t == typeof(uint)) return n == "mode" ? 0x81A4u : 0u;
        if (t == typeof(ulong)) return 0UL;
        if (t == typeof(bool)) return false;
        if (t == typeof(string)) return n switch { "path" => "/d/x", "newname" => "g", "target" => "f", "name" when q.Member.Name.Contains("Xattr") => "user.x", _ => "f" };
        if (t == typeof(byte[])) return new byte[] { 2 };
        if (t == typeof(List<DirEntryInfo>)) return new List<DirEntryInfo>();
        if (t == typeof(SetAttrRequest)) return new SetAttrRequest { Size = 1 };
        if (t == typeof(FileSystemView)) return fs;
        if (t == typeof(ReadSegments)) return segments;
        if (t.IsEnum) return Activator.CreateInstance(t);
        throw new InvalidOperationException($"no test argument for {q.Member.Name}({t.Name} {q.Name}): add one");
    }
}
