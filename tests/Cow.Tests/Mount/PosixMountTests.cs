using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Mono.Unix.Native;
using Xunit;
using Cow.Fuse.Server;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// POSIX behaviour of the real mount that only a mount can show, through real system calls on a kernel FUSE mount
/// served by this process: the page cache and the writeback cache, other users (setpriv), setuid clearing,
/// snapshots under .snapshots, copy_file_range, sockets and FIFOs. Errnos are exact where Linux defines them; where
/// the answer comes from the kernel's VFS (not the server) it is still asserted: the server must not break it.
/// The POSIX behaviour both a mount and the inode API show is written once in <see cref="Cow.Tests.Posix.PosixCases"/>
/// and runs on both.
/// </summary>
[Trait("Tier", "mount")]
public class PosixMountTests : PosixMountTestBase
{
    [SkippableFact]
    public void UtimensatRefusesAnOutOfRangeNanosecond()
    {
        // The kernel checks tv_nsec before a file system sees the times (the inode API takes ns, which cannot be
        // out of range); the rest of utimensat is the shared case PosixCases.UtimensExplicitNowAndOmit.
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        Fails(Errno.EINVAL, Utimensat(m.P("f"), new TimeSpec(1, 1_000_000_000), new TimeSpec(1, 1)), "utimensat tv_nsec out of range");
    }

    [SkippableFact]
    public void SocketsAndFifosOnTheMountWork()
    {
        // The pipe and the socket live in the kernel, the inodes on the mount (mknod itself is the shared case
        // PosixCases.MknodMakesFifosSocketsAndDevices).
        using var m = new MountedPool();
        Ok(Syscall.mknod(m.P("fifo"), FilePermissions.S_IFIFO | (FilePermissions)0x1A4, 0), "mknod fifo");
        Ok(Syscall.mknod(m.P("sock"), FilePermissions.S_IFSOCK | (FilePermissions)0x1A4, 0), "mknod socket");
        // A real socket bound inside the mount.
        using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            s.Bind(new UnixDomainSocketEndPoint(m.P("bound.sock")));
            Assert.Equal(S_IFSOCK, Type(StatOf(m.P("bound.sock"))));
        }
        // A FIFO on the mount carries data.
        string? got = null;
        var reader = new Thread(() => got = File.ReadAllText(m.P("fifo"))) { IsBackground = true };
        reader.Start();
        File.WriteAllText(m.P("fifo"), "through the fifo");
        Assert.True(reader.Join(10_000), "fifo reader did not finish");
        Assert.Equal("through the fifo", got);

        m.Remount();
        Assert.Equal(S_IFIFO, Type(StatOf(m.P("fifo"))));
        Assert.Equal(S_IFSOCK, Type(StatOf(m.P("sock"))));
    }

    [SkippableFact]
    public void XattrBufferSizesFollowTheSyscallContract()
    {
        // A size query (no buffer) and ERANGE for a short buffer are getxattr(2)'s and listxattr(2)'s contract,
        // met by the kernel and the server together; xattr semantics are the shared case PosixCases.ExtendedAttributes.
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "x");
        var f = m.P("f");
        Ok(SetXattr(f, "user.a", "v1"u8, 0), "setxattr user.a");
        Ok(SetXattr(f, "user.b", Bytes(3000, 10), 0), "setxattr user.b");
        Assert.Equal(2, GetXattr(f, "user.a", null));
        Assert.Equal(3000, GetXattr(f, "user.b", null));
        Assert.Equal(Bytes(3000, 10), GetXattrValue(f, "user.b"));
        Fails(Errno.ERANGE, GetXattr(f, "user.a", new byte[1]), "getxattr into a small buffer");
        Fails(Errno.ERANGE, ListXattr(f, new byte[4]), "listxattr into a small buffer");
        Fails(Errno.ENODATA, GetXattr(f, "user.missing", null), "size of a missing name");
        Assert.Equal(new HashSet<string> { "user.a", "user.b" }, ListXattrNames(f).Where(n => n.StartsWith("user.")).ToHashSet());
    }

    // ---------------------------------------------------------------- permissions (default_permissions)

    internal static (int Code, string Out, string Err) AsNobody(params string[] args)
    {
        var psi = new ProcessStartInfo("setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--reuid=65534", "--regid=65534", "--clear-groups" }.Concat(args)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(30_000)) { p.Kill(true); throw new TimeoutException("setpriv child hung"); }
        return (p.ExitCode, output, err.Result);
    }

    [SkippableFact]
    public void PermissionsAreEnforcedForOtherUsers()
    {
        using var m = new MountedPool();
        // The path down to the mount must be traversable by nobody.
        Ok(Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (FilePermissions)0x1ED), "chmod the temp folder");
        var mode = Perm(StatOf(m.MountPoint));
        Assert.True((mode & 0x1) != 0, $"mount root mode {Convert.ToString(mode, 8)} is not searchable by others");

        File.WriteAllText(m.P("secret"), "top secret");
        Ok(Syscall.chmod(m.P("secret"), (FilePermissions)0x180), "chmod 0600");
        var denied = AsNobody("cat", m.P("secret"));
        Assert.NotEqual(0, denied.Code);
        Assert.Contains("Permission denied", denied.Err);
        Assert.DoesNotContain("top secret", denied.Out);

        Ok(Syscall.chmod(m.P("secret"), (FilePermissions)0x1A4), "chmod 0644");
        var allowed = AsNobody("cat", m.P("secret"));
        Assert.True(allowed.Code == 0, $"cat as nobody on a 0644 file: exit {allowed.Code}, {allowed.Err}");
        Assert.Equal("top secret", allowed.Out);

        // Readable is not writable, and the root directory (0755, root's) does not take new names from nobody.
        var write = AsNobody("sh", "-c", $"echo more >> '{m.P("secret")}'");
        Assert.NotEqual(0, write.Code);
        Assert.Contains("Permission denied", write.Err);
        var create = AsNobody("touch", m.P("nobodys"));
        Assert.NotEqual(0, create.Code);
        Assert.Contains("Permission denied", create.Err);
        Assert.Equal(Errno.ENOENT, StatErrno(m.P("nobodys")));
        Assert.Equal("top secret", File.ReadAllText(m.P("secret")));

        // A directory nobody owns: nobody may create there, and the new file is nobody's.
        Directory.CreateDirectory(m.P("pub"));
        Ok(Syscall.chown(m.P("pub"), 65534, 65534), "chown pub");
        var mine = AsNobody("sh", "-c", $"echo hi > '{m.P("pub/mine")}'");
        Assert.True(mine.Code == 0, $"nobody creating in its own directory: exit {mine.Code}, {mine.Err}");
        var st = StatOf(m.P("pub/mine"));
        Assert.Equal(65534u, st.st_uid);
        Assert.Equal(65534u, st.st_gid);
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void SetuidSetgidAndCapabilitiesAreClearedAsLinuxClearsThem(bool writebackCache)
    {
        // Cow asks for FUSE_HANDLE_KILLPRIV_V2, so clearing the bits on a write, a truncate and a chown is the
        // server's job (the kernel only says when: the caller lacks CAP_FSETID).
        using var m = new MountedPool(writebackCache: writebackCache);
        Ok(Syscall.chmod(Path.GetDirectoryName(m.MountPoint)!, (FilePermissions)0x1ED), "chmod the temp folder");
        uint ModeOf(string name) => Perm(StatOf(m.P(name))) & 0xFFF;
        void Make(string name, uint mode)
        {
            File.WriteAllText(m.P(name), "#!/bin/sh\n");
            Ok(Syscall.chmod(m.P(name), (FilePermissions)mode), $"chmod {name} {Convert.ToString(mode, 8)}");
            Assert.Equal(mode, ModeOf(name));
        }
        void AsNobodyOk(string what, string script)
        {
            var r = AsNobody("sh", "-c", script);
            Assert.True(r.Code == 0, $"{what} as nobody: exit {r.Code}, {r.Err}");
        }

        Make("written", 0xDFF);                             // 06777
        AsNobodyOk("append", $"echo more >> '{m.P("written")}'");
        Assert.Equal(0x1FFu, ModeOf("written"));            // 0777: setuid gone, setgid (group-executable) gone
        Make("locking", 0x5B6);                             // 02666: setgid without group execute marks locking
        AsNobodyOk("append", $"echo more >> '{m.P("locking")}'");
        Assert.Equal(0x5B6u, ModeOf("locking"));
        Make("truncated", 0xDFF);
        AsNobodyOk("truncate with O_TRUNC", $": > '{m.P("truncated")}'");
        Assert.Equal(0x1FFu, ModeOf("truncated"));
        Assert.Equal(0, StatOf(m.P("truncated")).st_size);
        Make("shrunk", 0xDFF);
        AsNobodyOk("truncate(1)", $"truncate -s 1 '{m.P("shrunk")}'");
        Assert.Equal(0x1FFu, ModeOf("shrunk"));

        // Root has CAP_FSETID: its writes keep the bits; a chown clears them whoever makes it.
        Make("roots", 0xDED);                               // 06755
        File.AppendAllText(m.P("roots"), "more");
        Assert.Equal(0xDEDu, ModeOf("roots"));
        Ok(Syscall.chown(m.P("roots"), 65534, 65534), "chown");
        Assert.Equal(0x1EDu, ModeOf("roots"));
        Directory.CreateDirectory(m.P("dir"));
        Ok(Syscall.chmod(m.P("dir"), (FilePermissions)0xDED), "chmod dir 06755");
        Ok(Syscall.chown(m.P("dir"), 65534, 65534), "chown dir");
        Assert.Equal(0xDEDu, ModeOf("dir"));                // a directory keeps them

        // security.capability goes with the next write, even root's (the kernel removes it).
        Make("capable", 0x1ED);
        byte[] caps = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];   // VFS_CAP_REVISION_2, CAP_NET_BIND_SERVICE
        Ok(Syscall.setxattr(m.P("capable"), "security.capability", caps), "setxattr security.capability");
        Assert.True(Syscall.getxattr(m.P("capable"), "security.capability", out byte[] back) >= 0 && back.Length == 20, "the capability was not stored");
        File.AppendAllText(m.P("capable"), "more");
        Assert.True(Syscall.getxattr(m.P("capable"), "security.capability", out _) < 0, "security.capability survived a write");
        Assert.Equal(Errno.ENODATA, Stdlib.GetLastError());
    }

    // ---------------------------------------------------------------- snapshots: EXDEV, EROFS

    [SkippableFact]
    public void CrossingIntoASnapshotOrAnotherFileSystem()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "live");
        Directory.CreateDirectory(m.P("d"));
        MakeSnapshot(m, "s1");
        // Rename across two trees of the same mount: the server answers; the snapshot is read-only.
        FailsWithAny(new[] { Errno.EROFS, Errno.EXDEV }, Syscall.rename(m.P("f"), m.P(".snapshots/s1/f2")), "rename into a snapshot");
        FailsWithAny(new[] { Errno.EROFS, Errno.EXDEV }, Syscall.rename(m.P(".snapshots/s1/f"), m.P("f3")), "rename out of a snapshot");
        FailsWithAny(new[] { Errno.EROFS, Errno.EXDEV }, Syscall.link(m.P("f"), m.P(".snapshots/s1/hl")), "link into a snapshot");
        Assert.Equal("live", File.ReadAllText(m.P("f")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1/f2")));

        // copy_file_range to another file system: copies, or EXDEV (Linux ≥ 5.19 refuses cross-type copies).
        var data = Bytes(300_000, 14);
        File.WriteAllBytes(m.P("big"), data);
        var outside = Path.Combine(Path.GetDirectoryName(m.PoolDir)!, "outside.bin");
        using (var src = Fd.Open(m.P("big"), O_RDONLY))
        using (var dst = Fd.Open(outside, O_WRONLY | O_CREAT | O_TRUNC))
        {
            long r = CopyFileRange(src.Handle, 0, dst.Handle, 0, data.Length);
            if (r < 0) Assert.Equal(Errno.EXDEV, LastErrno());
            else
            {
                long done = r;
                while (done < data.Length && r > 0)
                {
                    r = Native.Check(CopyFileRange(src.Handle, done, dst.Handle, done, data.Length - done), "copy_file_range");
                    done += r;
                }
                Assert.Equal(data.Length, done);
                Assert.Equal(data, File.ReadAllBytes(outside));
            }
        }
        // And the other way round.
        using (var src = Fd.Open(outside, O_RDWR))
        using (var dst = Fd.Open(m.P("in"), O_WRONLY | O_CREAT | O_TRUNC))
        {
            src.WriteAt(0, data);
            long r = CopyFileRange(src.Handle, 0, dst.Handle, 0, 4096);
            if (r < 0) Assert.Equal(Errno.EXDEV, LastErrno());
            else Assert.Equal(data[..(int)r], File.ReadAllBytes(m.P("in"))[..(int)r]);
        }
    }

    [SkippableFact]
    public void TheSnapshotRootIsReadOnly()
    {
        // Every change inside a snapshot is the shared case PosixCases.EveryChangeInASnapshotIsErofsWhileReadsWork;
        // the snapshot's own directory under .snapshots is read-only too.
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "frozen");
        MakeSnapshot(m, "s1");
        var s = m.P(".snapshots/s1");
        FailsWithAny(new[] { Errno.EROFS }, Syscall.chmod(s, (FilePermissions)0x1FF), "chmod the snapshot root");
        FailsWithAny(new[] { Errno.EROFS }, Utimensat(s, new TimeSpec(1, 1), new TimeSpec(1, 1)), "utimensat the snapshot root");
        Assert.Equal("frozen", File.ReadAllText(s + "/f"));
        Assert.Equal(new HashSet<string> { "f" }, Ls(s));
    }

    // ---------------------------------------------------------------- copy_file_range

    [SkippableFact]
    public void CopyFileRangeSharesExtents()
    {
        using var m = new MountedPool();
        const int Size = 256 << 20;
        var chunk = new byte[MiB];
        {
            using (var fd = Fd.Open(m.P("src"), O_RDWR | O_CREAT))
            {
                for (int i = 0; i < Size / MiB; i++)
                {
                    new Random(1000 + i).NextBytes(chunk);
                    fd.WriteAt(i * MiB, chunk);
                }
                Ok(Fsync(fd.Handle), "fsync src");
            }
            Ok(Syscall.statvfs(m.MountPoint, out var before), "statvfs");
            var sw = Stopwatch.StartNew();
            using (var src = Fd.Open(m.P("src"), O_RDONLY))
            using (var dst = Fd.Open(m.P("dst"), O_WRONLY | O_CREAT | O_TRUNC))
            {
                long done = 0;
                while (done < Size)
                {
                    long r = CopyFileRange(src.Handle, done, dst.Handle, done, Size - done);
                    Ok(r, $"copy_file_range at {done}");
                    Assert.True(r > 0, $"copy_file_range copied nothing at {done}");
                    done += r;
                }
                Ok(Fsync(dst.Handle), "fsync dst");
            }
            sw.Stop();
            Ok(Syscall.statvfs(m.MountPoint, out var after), "statvfs");
            long grew = ((long)before.f_bfree - (long)after.f_bfree) * (long)after.f_frsize;
            Assert.True(grew < 16 * MiB, $"copying 256 MiB used {grew >> 20} MiB of free space: extents were not shared");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"copy_file_range of 256 MiB took {sw.Elapsed}");
            Assert.Equal(Size, StatOf(m.P("dst")).st_size);

            // Contents match, chunk by chunk.
            using (var dst = Fd.Open(m.P("dst"), O_RDONLY))
                for (int i = 0; i < Size / MiB; i++)
                {
                    new Random(1000 + i).NextBytes(chunk);
                    var got = dst.ReadAt(i * MiB, (int)MiB);
                    Assert.True(got.AsSpan().SequenceEqual(chunk), $"copy differs in MiB {i}");
                }
            // Writing the copy does not change the source (the shared extents are copied on write).
            using (var dst = Fd.Open(m.P("dst"), O_WRONLY)) dst.WriteAt(5 * MiB + 100, "changed"u8);
            new Random(1000 + 5).NextBytes(chunk);
            using (var src = Fd.Open(m.P("src"), O_RDONLY)) Assert.True(src.ReadAt(5 * MiB, (int)MiB).AsSpan().SequenceEqual(chunk), "source changed by a write to the copy");
        }

        // Unaligned, partial copy into the middle of an existing file, and past the source's end.
        var a = Bytes(100_000, 15);
        var b = Bytes(50_000, 16);
        File.WriteAllBytes(m.P("a"), a);
        File.WriteAllBytes(m.P("b"), b);
        using (var src = Fd.Open(m.P("a"), O_RDONLY))
        using (var dst = Fd.Open(m.P("b"), O_WRONLY))
        {
            Assert.Equal(30_000, CopyFileRange(src.Handle, 1234, dst.Handle, 777, 30_000));
            Assert.Equal(0, CopyFileRange(src.Handle, 200_000, dst.Handle, 0, 100));
            Assert.Equal(1000, CopyFileRange(src.Handle, 99_000, dst.Handle, 49_500, 5000)); // short at the source's EOF
        }
        var expect = b.ToList();
        expect.AddRange(new byte[500]);
        a.AsSpan(1234, 30_000).CopyTo(CollectionsMarshalSpan(expect, 777, 30_000));
        a.AsSpan(99_000, 1000).CopyTo(CollectionsMarshalSpan(expect, 49_500, 1000));
        Assert.Equal(expect.ToArray(), File.ReadAllBytes(m.P("b")));

        // Errors: overlapping ranges of one file, a write-only source, a directory.
        using (var f = Fd.Open(m.P("a"), O_RDWR))
        {
            Fails(Errno.EINVAL, CopyFileRange(f.Handle, 0, f.Handle, 1000, 5000), "overlapping copy within a file");
            using var wo = Fd.Open(m.P("b"), O_WRONLY);
            Fails(Errno.EBADF, CopyFileRange(wo.Handle, 0, f.Handle, 0, 10), "copy from a write-only descriptor");
            using var dir = Fd.Open(m.MountPoint, O_RDONLY | O_DIRECTORY);
            Fails(Errno.EISDIR, CopyFileRange(dir.Handle, 0, f.Handle, 0, 10), "copy from a directory");
        }

        // Plain cp (coreutils ≥ 9 uses copy_file_range).
        var cp = Process.Start(new ProcessStartInfo("cp", new[] { m.P("a"), m.P("a-copy") }) { RedirectStandardError = true })!;
        var cpErr = cp.StandardError.ReadToEnd();
        Assert.True(cp.WaitForExit(60_000) && cp.ExitCode == 0, $"cp failed: {cpErr}");
        Assert.Equal(a, File.ReadAllBytes(m.P("a-copy")));
    }

    private static Span<byte> CollectionsMarshalSpan(List<byte> list, int offset, int count) =>
        System.Runtime.InteropServices.CollectionsMarshal.AsSpan(list).Slice(offset, count);

    // ---------------------------------------------------------------- snapshots

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void SnapshotsKeepOldContent(bool writebackCache)
    {
        using var m = new MountedPool(writebackCache: writebackCache);
        File.WriteAllText(m.P("f"), "old content");
        File.WriteAllText(m.P("unchanged"), "same");
        Directory.CreateDirectory(m.P("d"));
        File.WriteAllText(m.P("d/deep"), "deep old");
        MakeSnapshot(m, "s1");
        Assert.Equal(S_IFDIR, Type(StatOf(m.P(".snapshots/s1"))));
        Assert.Contains("s1", Ls(m.P(".snapshots")));
        Fails(Errno.EEXIST, Syscall.mkdir(m.P(".snapshots/s1"), (FilePermissions)0x1ED), "mkdir an existing snapshot");

        File.WriteAllText(m.P("f"), "new content, longer than before");
        File.WriteAllText(m.P("d/deep"), "deep new");
        File.WriteAllText(m.P("added"), "added");
        Ok(Syscall.unlink(m.P("unchanged")), "unlink");
        File.WriteAllText(m.P("unchanged"), "same"); // recreated: a different inode now
        Assert.Equal("old content", File.ReadAllText(m.P(".snapshots/s1/f")));
        Assert.Equal("deep old", File.ReadAllText(m.P(".snapshots/s1/d/deep")));
        Assert.Equal("new content, longer than before", File.ReadAllText(m.P("f")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1/added")));
        Assert.Equal(new HashSet<string> { "f", "unchanged", "d" }, Ls(m.P(".snapshots/s1")));

        // An unchanged file has the same ctime in the live tree and the snapshot, and the same inode number in
        // every snapshot; not the live one's, which would make cp, cmp and diff take them for one file.
        File.WriteAllText(m.P("keep"), "keep");
        MakeSnapshot(m, "s2");
        var live = StatOf(m.P("keep"));
        var snap = StatOf(m.P(".snapshots/s2/keep"));
        Assert.Equal(live.st_ino | NodeTable.SnapshotTreeInoBit, snap.st_ino);
        Assert.Equal((live.st_ctime, live.st_ctime_nsec), (snap.st_ctime, snap.st_ctime_nsec));
        Assert.Equal((live.st_mtime, live.st_mtime_nsec), (snap.st_mtime, snap.st_mtime_nsec));
        Assert.Equal(live.st_size, snap.st_size);
        Assert.Equal(new HashSet<string> { "s1", "s2" }, Ls(m.P(".snapshots")));

        // A file open for writing when the snapshot is taken: the snapshot has what was written before.
        using (var fd = Fd.Open(m.P("open"), O_RDWR | O_CREAT))
        {
            fd.WriteAt(0, "before "u8);
            MakeSnapshot(m, "s3");
            fd.WriteAt(7, "after"u8);
            Assert.Equal("before "u8.ToArray(), File.ReadAllBytes(m.P(".snapshots/s3/open")));
            Assert.Equal("before after"u8.ToArray(), fd.ReadAt(0, 100));
        }
        Assert.Equal("before "u8.ToArray(), File.ReadAllBytes(m.P(".snapshots/s3/open")));
        Assert.Equal(snap.st_ino, StatOf(m.P(".snapshots/s3/keep")).st_ino);   // the same in every snapshot
        Ok(Syscall.rmdir(m.P(".snapshots/s3")), "rmdir .snapshots/s3");

        // Snapshots survive a remount.
        m.Remount();
        Assert.Equal("old content", File.ReadAllText(m.P(".snapshots/s1/f")));
        Assert.Equal("keep", File.ReadAllText(m.P(".snapshots/s2/keep")));

        Ok(Syscall.rmdir(m.P(".snapshots/s1")), "rmdir .snapshots/s1");
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1")));
        Assert.Equal(Errno.ENOENT, StatErrno(m.P(".snapshots/s1/f")));
        Assert.Equal(new HashSet<string> { "s2" }, Ls(m.P(".snapshots")));
        Fails(Errno.ENOENT, Syscall.rmdir(m.P(".snapshots/s1")), "rmdir a deleted snapshot");
        Assert.Equal("new content, longer than before", File.ReadAllText(m.P("f")));

        // Mounting the snapshot itself: the old content, read-only.
        File.WriteAllText(m.P("keep"), "changed after s2");
        m.UnmountNow();
        m.MountNow(snapshot: "s2");
        Assert.Equal("keep", File.ReadAllText(m.P("keep")));
        Assert.Equal("new content, longer than before", File.ReadAllText(m.P("f")));
        OpenFails(Errno.EROFS, m.P("keep"), O_WRONLY, "write in a mounted snapshot");
        OpenFails(Errno.EROFS, m.P("new"), O_WRONLY | O_CREAT, "create in a mounted snapshot");
        FailsWithAny(new[] { Errno.EROFS }, Syscall.mkdir(m.P("nd"), (FilePermissions)0x1ED), "mkdir in a mounted snapshot");
        m.UnmountNow();
        m.MountNow();
        Assert.Equal("changed after s2", File.ReadAllText(m.P("keep")));

        m.UnmountNow();
        using var p = Cow.Core.Pool.Open(m.PoolDir);
        var report = p.Fsck();
        Assert.True(report.Clean, report.ToString());
    }
}
