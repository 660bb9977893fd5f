using System.Diagnostics;
using Xunit;

namespace Cow.Tests.Mount;

/// <summary>
/// POSIX ACLs on a real mount, with the real tools (cp, setfacl, getfacl, setfattr, setpriv from .ci/setup):
/// modes survive <c>cp -a</c> / <c>cp -p</c>, ACLs round-trip and the kernel enforces them for another user
/// (nobody, through allow_other), default ACLs are inherited exactly as on the ext4 the tests' temporary
/// folder lives on (the same script runs on both and the outputs must match), malformed ACLs are EINVAL, and
/// <c>.snapshots</c> shows and enforces the ACLs of the snapshot.
/// </summary>
[Trait("Tier", "mount")]
public class AclMountTests
{
    private const string AsNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";

    /// <summary>Runs <paramref name="script"/> with /bin/sh in <paramref name="dir"/>: exit code, stdout, stderr.</summary>
    private static (int Code, string Out, string Err) Sh(string dir, string script)
    {
        var psi = new ProcessStartInfo("/bin/sh") { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        psi.Environment["LC_ALL"] = "C";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException($"sh -c '{script}' did not finish in 120 s"); }
        return (p.ExitCode, output, err.Result);
    }

    private static string ShOk(string dir, string script)
    {
        var (code, output, err) = Sh(dir, script);
        Assert.True(code == 0, $"sh -c '{script}' in {dir}: exit {code}\n{output}\n{err}");
        return output;
    }

    private static void RequireTools()
    {
        foreach (var t in new[] { "cp", "setfacl", "getfacl", "setfattr", "setpriv", "stat", "find" })
            if (Sh("/", "command -v " + t).Code != 0)
                throw new InvalidOperationException($"ACL mount tests need '{t}' (.ci/setup installs acl, attr, util-linux, coreutils)");
    }

    /// <summary>A mount whose path nobody can traverse (the parents the test made are 0755).</summary>
    private static MountedPool Mount(bool writebackCache = false)
    {
        RequireTools();
        var m = new MountedPool(writebackCache: writebackCache);
        Assert.Equal(0, Mono.Unix.Native.Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (Mono.Unix.Native.FilePermissions)0x1ED));
        return m;
    }

    /// <summary>A scratch folder on the tests' temporary file system (ext4 here, where ACLs are native).</summary>
    private sealed class LocalDir : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "cow-acl-ref-" + Guid.NewGuid().ToString("N")[..12]);
        public LocalDir()
        {
            Directory.CreateDirectory(Path);
            Assert.Equal(0, Mono.Unix.Native.Syscall.chmod(Path, (Mono.Unix.Native.FilePermissions)0x1ED));
        }
        public void Dispose() { try { Directory.Delete(Path, recursive: true); } catch (IOException) { } }
    }

    /// <summary>Every path under <paramref name="dir"/> with its octal mode and its ACLs (getfacl, numeric, no header), sorted.</summary>
    private static string ModesAndAcls(string dir) =>
        ShOk(dir, "find . -exec stat -c '%a %U:%G %n' {} + | sort; find . ! -type l | sort | while read -r p; do echo \"== $p\"; getfacl -cnp \"$p\"; done");

    [SkippableTheory]
    [InlineData("cp -a src {0}/copy", false)]
    [InlineData("cp -rp src {0}/copy", false)]
    [InlineData("cp -a src {0}/copy", true)]
    public void Cp_keeps_every_mode_and_acl(string command, bool writebackCache)
    {
        using var m = Mount(writebackCache);
        using var local = new LocalDir();
        ShOk(local.Path, """
            umask 022
            mkdir -p src/pub src/priv src/grp src/trav src/sgid src/pub/deep
            chmod 755 src src/pub src/pub/deep; chmod 700 src/priv; chmod 750 src/grp; chmod 711 src/trav; chmod 2775 src/sgid
            for f in src/pub/a src/priv/b src/grp/c src/trav/d src/sgid/e src/pub/deep/f src/x src/ro src/acl; do echo "$f" > "$f"; done
            chmod 644 src/pub/a; chmod 600 src/priv/b; chmod 640 src/grp/c; chmod 711 src/trav/d; chmod 664 src/sgid/e
            chmod 755 src/pub/deep/f; chmod 750 src/x; chmod 444 src/ro; chmod 640 src/acl
            ln -s pub/a src/link
            setfacl -m u:nobody:r src/acl
            setfacl -d -m u:nobody:rx src/pub/deep
            chown -R 65534:65534 src/grp
            """);
        ShOk(local.Path, string.Format(command, m.MountPoint));
        Assert.Equal(ModesAndAcls(Path.Combine(local.Path, "src")), ModesAndAcls(m.P("copy")));
        // What the issue saw: other users could not read what cp copied.
        Assert.Equal("src/pub/a\n", ShOk(m.MountPoint, $"{AsNobody} cat copy/pub/a"));
        Assert.Equal("src/acl\n", ShOk(m.MountPoint, $"{AsNobody} cat copy/acl"));
        m.Remount();
        Assert.Equal(ModesAndAcls(Path.Combine(local.Path, "src")), ModesAndAcls(m.P("copy")));
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Setfacl_round_trips_and_the_kernel_enforces_it(bool writebackCache)
    {
        using var m = Mount(writebackCache);
        ShOk(m.MountPoint, "echo secret > f; chmod 600 f");
        var (code, _, err) = Sh(m.MountPoint, $"{AsNobody} cat f");
        Assert.True(code != 0 && err.Contains("Permission denied"), $"nobody read a 0600 file without an ACL: {code} {err}");

        ShOk(m.MountPoint, "setfacl -m u:nobody:r f");
        Assert.Equal("user::rw-\nuser:nobody:r--\ngroup::---\nmask::r--\nother::---\n\n", ShOk(m.MountPoint, "getfacl -c f"));
        Assert.Equal("640\n", ShOk(m.MountPoint, "stat -c %a f"));
        Assert.Equal("secret\n", ShOk(m.MountPoint, $"{AsNobody} cat f"));
        (code, _, err) = Sh(m.MountPoint, $"{AsNobody} sh -c 'echo x >> f'");
        Assert.True(code != 0 && err.Contains("Permission denied"), $"nobody wrote with a read-only ACL: {code} {err}");

        // chmod rewrites the mask: 0600 takes the named entry's read away, 0640 gives it back.
        ShOk(m.MountPoint, "chmod 600 f");
        Assert.Equal("user::rw-\nuser:nobody:r--\t#effective:---\ngroup::---\nmask::---\nother::---\n\n", ShOk(m.MountPoint, "getfacl -c f"));
        Assert.NotEqual(0, Sh(m.MountPoint, $"{AsNobody} cat f").Code);
        ShOk(m.MountPoint, "chmod 640 f");
        Assert.Equal("secret\n", ShOk(m.MountPoint, $"{AsNobody} cat f"));

        // Kept across a remount; removing the entry takes the access away.
        m.Remount();
        Assert.Equal("user::rw-\nuser:nobody:r--\ngroup::---\nmask::r--\nother::---\n\n", ShOk(m.MountPoint, "getfacl -c f"));
        ShOk(m.MountPoint, "setfacl -x u:nobody f");
        Assert.NotEqual(0, Sh(m.MountPoint, $"{AsNobody} cat f").Code);
        ShOk(m.MountPoint, "setfacl -b f");
        Assert.Equal("", ShOk(m.MountPoint, "getfattr -m system.posix_acl -d f"));
    }

    [SkippableFact]
    public void Default_acls_are_inherited_as_on_ext4()
    {
        using var m = Mount();
        using var local = new LocalDir();
        const string script = """
            umask 027
            mkdir d plain; chmod 755 d plain
            setfacl -d -m u:nobody:rwx,g::r-x,o::- d
            mkdir d/sub; mkdir -m 700 d/s700; touch d/f; mkfifo d/p; ln -s f d/l; echo x > d/sub/g
            touch plain/f; mkdir plain/sub
            chmod 2775 d/sub; mkdir d/sub/sg
            """;
        ShOk(local.Path, script);
        ShOk(m.MountPoint, script);
        string expected = ModesAndAcls(local.Path);
        Assert.Contains("user:65534:rwx\t#effective:rw-", expected); // the reference did inherit
        Assert.Equal(expected, ModesAndAcls(m.MountPoint));
        // Enforced: nobody may write d/f through the inherited entry, not plain/f (the umask made it 0640).
        ShOk(m.MountPoint, $"{AsNobody} sh -c 'echo y >> d/f'");
        Assert.NotEqual(0, Sh(m.MountPoint, $"{AsNobody} sh -c 'echo y >> plain/f'").Code);
    }

    [SkippableFact]
    public void Malformed_acls_are_EINVAL()
    {
        using var m = Mount();
        ShOk(m.MountPoint, "touch f; chmod 644 f; mkdir d");
        foreach (var value in new[]
        {
            "0x0200000001000600ffffffff",                                         // USER_OBJ only
            "0x0200000001000600ffffffff04000400ffffff",                           // not 4 + 8n bytes
            "0x0200000001000600ffffffff04000400ffffffff40000400ffffffff20000400ffffffff", // unknown tag
            "0x0200000001000600ffffffff02000400feff000004000400ffffffff20000400ffffffff", // named user, no mask
        })
        {
            var (code, _, err) = Sh(m.MountPoint, $"setfattr -n system.posix_acl_access -v {value} f");
            Assert.True(code != 0 && err.Contains("Invalid argument"), $"{value}: {code} {err}");
            (code, _, err) = Sh(m.MountPoint, $"setfattr -n system.posix_acl_default -v {value} d");
            Assert.True(code != 0 && err.Contains("Invalid argument"), $"default {value}: {code} {err}");
        }
        Assert.Equal("644\n", ShOk(m.MountPoint, "stat -c %a f"));
        Assert.Equal("", ShOk(m.MountPoint, "getfattr -m system.posix_acl -d f d"));
        // A well-formed raw value works and sets the mode (u::rw-, u:65534:r--, g::r--, m::r--, o::---).
        ShOk(m.MountPoint, "setfattr -n system.posix_acl_access -v 0x0200000001000600ffffffff02000400feff000004000400ffffffff10000400ffffffff20000000ffffffff f");
        Assert.Equal("640\n", ShOk(m.MountPoint, "stat -c %a f"));
        Assert.Contains("user:nobody:r--", ShOk(m.MountPoint, "getfacl -c f"));
    }

    [SkippableFact]
    public void Snapshots_show_and_enforce_their_acls()
    {
        using var m = Mount();
        ShOk(m.MountPoint, """
            echo shared > f; chmod 600 f; setfacl -m u:nobody:r f
            echo private > g; chmod 600 g
            mkdir d; setfacl -d -m u:nobody:rx d; setfacl -m u:nobody:rx d; echo inner > d/h
            """);
        string live = ShOk(m.MountPoint, "getfacl -cn f g d d/h");
        ShOk(m.MountPoint, "sync -f . && mkdir .snapshots/s1");
        // Change the live tree afterwards: the snapshot keeps what it had.
        ShOk(m.MountPoint, "setfacl -b f d d/h; setfacl -k d");
        Assert.Equal(live, ShOk(m.MountPoint, "cd .snapshots/s1 && getfacl -cn f g d d/h"));
        Assert.Equal("shared\n", ShOk(m.MountPoint, $"{AsNobody} cat .snapshots/s1/f"));
        Assert.Equal("inner\n", ShOk(m.MountPoint, $"{AsNobody} cat .snapshots/s1/d/h"));
        Assert.NotEqual(0, Sh(m.MountPoint, $"{AsNobody} cat .snapshots/s1/g").Code);
        Assert.NotEqual(0, Sh(m.MountPoint, $"{AsNobody} cat f").Code);
        var (code, _, err) = Sh(m.MountPoint, "setfacl -m u:nobody:rw .snapshots/s1/f");
        Assert.True(code != 0 && err.Contains("Read-only file system"), $"setfacl in a snapshot: {code} {err}");
    }
}
