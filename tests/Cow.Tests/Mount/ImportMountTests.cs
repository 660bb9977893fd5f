using System.Diagnostics;
using System.Net.Sockets;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>
/// <c>cow mkfs --import</c> / <c>--import-root</c> of a host tree with every kind of node and attribute, mounted
/// through /dev/fuse and compared with the source by the system's own tools: find's listing (path, mode, owner,
/// size, mtime and atime in ns, symlink target, link count, type), getfattr of every namespace (user.* and the
/// POSIX ACL xattrs), md5sums, hard links as one inode, device numbers, and holes (st_blocks). Root only (chown,
/// mknod, trusted.* xattrs).
/// </summary>
[Trait("Tier", "mount")]
public sealed class ImportMountTests : IDisposable
{
    private readonly MountScratch _s = new("cow-import-");
    private string Src => Path.Combine(_s.Root, "src");

    public ImportMountTests()
    {
        MountedPool.RequireRootAndFuse();
        Directory.CreateDirectory(_s.Root);
        BuildTree(Src);
    }

    public void Dispose() => _s.Dispose();

    private static string Sh(string script, string? cwd = null)
    {
        var psi = new ProcessStartInfo("bash", ["-euo", "pipefail", "-c", script]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (cwd != null) psi.WorkingDirectory = cwd;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{script}\nexit {p.ExitCode}: {err.Result}");
        return output;
    }

    /// <summary>Every kind of node: owners, odd modes (0700, 0711, 1777, 4755, 2755, 0755, a setgid directory holding a file of another group), symlinks (relative, dangling,
    /// to a directory), hard links (3 names, 2 directories), a fifo, char and block devices, a socket, a sparse
    /// file, an empty file, a file of holes only, an unaligned tail, xattrs (user, trusted, binary, empty) and ACLs
    /// (access and default), times with nanoseconds (atime and mtime apart), directory times set after filling.</summary>
    private static void BuildTree(string src)
    {
        Directory.CreateDirectory(src);
        Sh("""
            mkdir -p d/sub odd700 odd711 sticky empty-dir
            chmod 700 odd700; chmod 711 odd711; chmod 1777 sticky
            printf 'hello\n' > d/f.txt
            printf '#!/bin/sh\necho hi\n' > exe; chmod 755 exe
            echo s > suid; chmod 4755 suid
            echo g > sgid; chown 0:50 sgid; chmod 2755 sgid
            : > empty
            mkdir sgid-dir; chown 0:60 sgid-dir; chmod 2775 sgid-dir
            echo x > sgid-dir/inner; chown 0:0 sgid-dir/inner; mkdir sgid-dir/subdir
            chown 1234:5678 d/f.txt; chown 42:43 d; chown 7:8 odd711
            ln -s d/f.txt link; ln -s /nowhere/at/all dangling; ln -s d dirlink
            chown -h 99:98 link
            ln d/f.txt hard1; ln d/f.txt d/sub/hard2
            mkfifo fifo; chmod 620 fifo
            mknod cdev c 1 3; mknod bdev b 7 200; mknod bigdev c 259 70000
            truncate -s 10M sparse
            printf A | dd of=sparse bs=1 seek=4096 conv=notrunc status=none
            printf B | dd of=sparse bs=1 seek=5242881 conv=notrunc status=none
            truncate -s 3M holes-only
            head -c 300001 /dev/urandom > tail.bin
            setfattr -n user.color -v blue d/f.txt
            setfattr -n user.bin -v 0x00ff10 exe
            setfattr -n user.empty exe
            setfattr -n trusted.secret -v t0p sgid
            setfattr -h -n trusted.onlink -v x link
            setfacl -m u:1000:rwx,g:27:r d
            setfacl -d -m g:100:rx d
            setfacl -m u:5:r tail.bin
            touch -h -d '2001-02-03 04:05:06.123456789' link
            touch -m -d '2002-03-04 05:06:07.987654321' d/f.txt
            touch -a -d '2003-01-01 00:00:00.5' d/f.txt exe
            touch -d '1998-07-01 10:00:00.000000001' sparse holes-only fifo cdev
            touch -d '1999-12-31 23:59:59.111111111' d/sub d odd700 odd711 sticky empty-dir sgid-dir/subdir sgid-dir
            touch -a -d '2004-04-04 04:04:04.444444444' d
            """, src);
        // .NET removes a bound socket's file when the socket closes: a second name keeps the node.
        using (var sock = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            sock.Bind(new UnixDomainSocketEndPoint(Path.Combine(src, "sock.tmp")));
            Sh("ln sock.tmp sock", src);
        }
        Sh("test -S sock && chmod 755 sock && touch -h -d '2005-05-05 05:05:05.5' sock && touch -d '2010-01-01 00:00:00.25' . && chmod 750 . && chown 11:12 .", src);
    }

    /// <summary>find's listing of <paramref name="dir"/>: one sorted line per node. Directory sizes are each file
    /// system's own (ext4: 4096, Cow: 0), and directory and symlink atimes move as find reads them (relatime, on both
    /// sides): shown as "-" (<see cref="DirAtimes"/> checks the imported ones before anything reads them).</summary>
    private static string[] Listing(string dir) =>
        Sh("find . -printf '%y %p %m %U %G %s %T@ %A@ %l %n\\n' | sort", dir).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => { var f = l.Split(' '); if (f[0] == "d") f[5] = "-"; if (f[0] is "d" or "l") f[7] = "-"; return string.Join(' ', f); }).ToArray();

    /// <summary>A listing without atimes: for comparisons after the source was read again (which moves its atimes).</summary>
    private static string[] NoAtime(string[] l) => l.Select(x => { var f = x.Split(' '); f[7] = "*"; return string.Join(' ', f); }).ToArray();

    /// <summary>Equal listings, or a failure naming every differing line in full.</summary>
    private static void SameLines(string[] expected, string[] actual)
    {
        var missing = expected.Except(actual).ToArray();
        var extra = actual.Except(expected).ToArray();
        Assert.True(missing.Length == 0 && extra.Length == 0 && expected.Length == actual.Length,
            $"source only:\n{string.Join('\n', missing)}\nimport only:\n{string.Join('\n', extra)}");
    }

    private const string Dirs = ". d d/sub odd700 odd711 sticky empty-dir sgid-dir sgid-dir/subdir link dangling dirlink";

    /// <summary>The directories' and symlinks' atimes (ns), by lstat only (nothing lists a directory or reads a link).</summary>
    private static string DirAtimes(string dir) => Sh($"stat -c '%n %x' {Dirs}", dir);

    /// <summary>Every xattr of every namespace of every node (not following symlinks), by relative path.</summary>
    private static string Xattrs(string dir) =>
        Sh("find . | sort | while IFS= read -r p; do echo \"== $p\"; getfattr -h -d -m - -e hex \"$p\" 2>/dev/null | grep -v '^# file' || true; done", dir);

    private static string Sums(string dir) => Sh("find . -type f -print0 | sort -z | xargs -0 md5sum", dir);

    private static string Devices(string dir) => Sh("stat -c '%n %F %t %T' cdev bdev bigdev", dir);

    private (string Code, string Out) Mkfs(params string[] import)
    {
        var (code, output, err) = CowProgram.Run(["mkfs", _s.PoolDir, "--base-size", "64M", "--log-size", "64M", .. import]);
        Assert.True(code == 0, err);
        Assert.DoesNotContain("exception", err, StringComparison.OrdinalIgnoreCase);
        return (code.ToString(), output);
    }

    private string Mount()
    {
        var mp = _s.NewMountPoint();
        var (code, _, err) = CowProgram.Run("mount", _s.PoolDir, mp);
        Assert.True(code == 0, err);
        return mp;
    }

    private void AssertSameTree(string source, string imported)
    {
        SameLines(NoAtime(Listing(source)), NoAtime(Listing(imported)));
        Assert.Equal(Xattrs(source), Xattrs(imported));
        Assert.Equal(Sums(source), Sums(imported));
        Assert.Equal(Devices(source), Devices(imported));
        // Hard links: one inode with three names.
        var inos = Sh("stat -c %i hard1 d/f.txt d/sub/hard2", imported).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(inos.Distinct());
        // Holes stay holes: the same allocated blocks as the source (one 4 KiB block per written byte here), none for
        // a file of holes only.
        Assert.Equal(Sh("stat -c '%n %b' sparse holes-only tail.bin empty", source), Sh("stat -c '%n %b' sparse holes-only tail.bin empty", imported));
        Assert.Equal("16\n", Sh("stat -c %b sparse", imported));
        Assert.Equal("0\n", Sh("stat -c %b holes-only", imported));
    }

    [SkippableFact]
    public void ADirectoryImportedAsTheRootIsTheSameTreeOnTheMount()
    {
        // Taken before the import: reading the source may move its atimes (relatime); the pool keeps what the scan saw.
        var listing = Listing(Src);
        var xattrs = Xattrs(Src);
        var dirAtimes = DirAtimes(Src);   // last: listing a directory moves its atime
        Mkfs("--import-root", Src);
        var mp = Mount();
        Assert.Equal(dirAtimes, DirAtimes(mp));
        SameLines(listing, Listing(mp));
        Assert.Equal(xattrs, Xattrs(mp));
        foreach (var name in new[] { "system.posix_acl_access", "system.posix_acl_default", "trusted.secret", "trusted.onlink", "user.empty", "user.bin=0x00ff10" })
            Assert.Contains(name, xattrs);   // the comparison covers every namespace
        SameLines(Listing(mp), Listing(mp));   // nothing moved by reading the mount's metadata
        AssertSameTreeAfterAtimes(mp);
        // The root took the source root's mode, owner and times.
        Assert.Equal(Sh("stat -c '%a %u %g %Y %y' .", Src), Sh("stat -c '%a %u %g %Y %y' .", mp));
    }

    /// <summary>Compares the mount with the source except atimes (which reading the source for the comparison moves).</summary>
    private void AssertSameTreeAfterAtimes(string mp)
    {
        SameLines(NoAtime(Listing(Src)), NoAtime(Listing(mp)));
        AssertSameTree(Src, mp);
    }

    [SkippableFact]
    public void ADirectoryImportedByNameKeepsEverythingAndSurvivesARemount()
    {
        var listing = Listing(Src);
        var dirAtimes = DirAtimes(Src);   // last: listing a directory moves its atime
        var (_, output) = Mkfs("--import", Src);
        Assert.Contains($"imported {Src} as /src", output);
        var mp = Mount();
        var imported = Path.Combine(mp, "src");
        Assert.Equal(dirAtimes, DirAtimes(imported));
        SameLines(listing, Listing(imported));
        Assert.Equal(Sh("stat -c '%a %u %g %y' .", Src), Sh("stat -c '%a %u %g %y' .", imported));
        Assert.Equal(0, CowProgram.Run("umount", mp).Code);
        var (fsck, fsckOut, _) = CowProgram.Run("fsck", _s.PoolDir);
        Assert.True(fsck == 0, fsckOut);
        mp = Mount();
        imported = Path.Combine(mp, "src");
        SameLines(listing, Listing(imported));
        SameLines(NoAtime(Listing(Src)), NoAtime(Listing(imported)));
        AssertSameTree(Src, imported);
    }
}
