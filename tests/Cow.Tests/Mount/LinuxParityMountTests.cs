using System.Diagnostics;
using Mono.Unix.Native;
using Xunit;
using static Cow.Tests.Mount.Native;

namespace Cow.Tests.Mount;

/// <summary>
/// Behaviours where Cow differed from Linux local filesystems, each on a real mount through /dev/fuse:
/// readdir while entries are renamed, fstat of a directory or file removed while open, RENAME_WHITEOUT and
/// overlayfs with its upper layer on Cow.
/// </summary>
[Trait("Tier", "mount")]
public class LinuxParityMountTests
{
    private const uint RENAME_WHITEOUT = 4, S_IFCHR = 0x2000;

    [SkippableFact]
    public async Task Readdir_passes_never_list_a_name_twice_or_more_entries_than_exist_while_entries_are_renamed()
    {
        using var m = new MountedPool();
        string dir = m.P("big");
        Directory.CreateDirectory(dir);
        const int N = 15_000;
        // Even entries never move; odd ones are renamed back and forth between a name that sorts first and
        // one that sorts last.
        for (int i = 0; i < N; i++) File.Create(Path.Combine(dir, i % 2 == 0 ? $"m-{i:D5}" : $"a-{i:D5}")).Dispose();

        using var stop = new CancellationTokenSource();
        long renames = 0;
        using var started = new ManualResetEventSlim(false);
        // A thread of its own, and the passes wait for its first rename: with the mount tier's classes running in
        // parallel, a pool task could start only after every pass had ended.
        var renamer = Task.Factory.StartNew(() =>
        {
            var at = new bool[N];   // true: the odd entry is at its z- name
            var rng = new Random(7);
            while (!stop.IsCancellationRequested)
            {
                int i = rng.Next(N / 2) * 2 + 1;
                string a = Path.Combine(dir, $"a-{i:D5}"), z = Path.Combine(dir, $"z-{i:D5}");
                Check(Syscall.rename(at[i] ? z : a, at[i] ? a : z), "rename");
                at[i] = !at[i];
                Interlocked.Increment(ref renames);
                started.Set();
            }
        }, TaskCreationOptions.LongRunning);
        try
        {
            Assert.True(started.Wait(TimeSpan.FromSeconds(60)) || renamer.IsCompleted, "the renamer did not start");
            int passes = 0;
            var sw = Stopwatch.StartNew();
            while (passes < 5 || (sw.Elapsed < TimeSpan.FromSeconds(20) && passes < 40))
            {
                var names = new List<string>(N + 16);
                foreach (var p in Directory.EnumerateFileSystemEntries(dir)) names.Add(Path.GetFileName(p));   // one opendir .. closedir
                var set = new HashSet<string>(names);
                Assert.True(set.Count == names.Count, $"pass {passes}: {names.Count - set.Count} names listed twice ({names.Count} names)");
                Assert.True(names.Count <= N, $"pass {passes}: {names.Count} entries listed, the directory holds {N}");
                for (int i = 0; i < N; i += 2) Assert.True(set.Contains($"m-{i:D5}"), $"pass {passes}: m-{i:D5}, never renamed, is missing");
                passes++;
            }
            Assert.True(Interlocked.Read(ref renames) > 100, $"only {renames} renames ran during the passes");
        }
        finally
        {
            stop.Cancel();
            await renamer;
        }
        // Quiet again: a new pass lists everything once.
        Assert.Equal(N, Directory.EnumerateFileSystemEntries(dir).Count());
    }

    [SkippableFact]
    public void Fstat_of_a_directory_replaced_by_rename_or_removed_while_open_answers_nlink_0()
    {
        using var m = new MountedPool();
        Directory.CreateDirectory(m.P("a"));
        Directory.CreateDirectory(m.P("b"));
        Directory.CreateDirectory(m.P("c"));
        long inoA = (long)StatOf(m.P("a")).st_ino;
        int fa = (int)Check(Open(m.P("a"), O_RDONLY | O_DIRECTORY), "open a");
        int fc = (int)Check(Open(m.P("c"), O_RDONLY | O_DIRECTORY), "open c");
        try
        {
            Check(Syscall.rename(m.P("b"), m.P("a")), "rename b over a");
            var st = FstatOf(fa);
            Assert.Equal(0ul, st.st_nlink);
            Assert.Equal(S_IFDIR, Type(st));
            Assert.Equal(inoA, (long)st.st_ino);
            // Nothing can be made in it; listing it gives nothing (the VFS knows it is dead).
            Assert.Equal(0, Syscall.fchmod(fa, FilePermissions.S_IRWXU));
            Assert.Equal(0x1C0u, Perm(FstatOf(fa)));

            Check(Syscall.rmdir(m.P("c")), "rmdir c");
            Assert.Equal(0ul, FstatOf(fc).st_nlink);
            Assert.Equal(Errno.ENOENT, StatErrno(m.P("c")));
        }
        finally
        {
            Close(fa);
            Close(fc);
        }
        m.Remount();
        Assert.Equal(["a"], Directory.EnumerateFileSystemEntries(m.MountPoint).Select(p => Path.GetFileName(p)!).ToArray());
        Assert.True(m.Pool!.Fsck().Clean);
    }

    [SkippableFact]
    public void A_file_replaced_by_rename_stays_readable_through_its_open_descriptor_with_nlink_0()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("old"), "old data");
        File.WriteAllText(m.P("new"), "new data");
        using var fd = Fd.Open(m.P("old"), O_RDONLY);
        Check(Syscall.rename(m.P("new"), m.P("old")), "rename new over old");
        Assert.Equal(0ul, fd.Stat().st_nlink);
        Assert.Equal("old data"u8.ToArray(), fd.ReadAt(0, 100));
        Assert.Equal("new data", File.ReadAllText(m.P("old")));
    }

    [SkippableFact]
    public void Renameat2_whiteout_leaves_a_0_0_character_device_at_the_source()
    {
        using var m = new MountedPool();
        File.WriteAllText(m.P("f"), "data");
        Directory.CreateDirectory(m.P("d"));
        Check(Rename2(m.P("f"), m.P("d/g"), RENAME_WHITEOUT), "renameat2 RENAME_WHITEOUT");
        Assert.Equal("data", File.ReadAllText(m.P("d/g")));
        var w = LstatOf(m.P("f"));
        Assert.Equal(S_IFCHR, Type(w));
        Assert.Equal(0u, Perm(w));
        Assert.Equal(0ul, w.st_rdev);
        // With NOREPLACE: EEXIST over a name; EXCHANGE with it: EINVAL (the VFS).
        File.WriteAllText(m.P("x"), "x");
        Assert.True(Rename2(m.P("x"), m.P("d/g"), RENAME_WHITEOUT | RENAME_NOREPLACE) < 0);
        Assert.Equal(Errno.EEXIST, LastErrno());
        Assert.True(Rename2(m.P("x"), m.P("d/g"), RENAME_WHITEOUT | RENAME_EXCHANGE) < 0);
        Assert.Equal(Errno.EINVAL, LastErrno());
        Check(Rename2(m.P("x"), m.P("y"), RENAME_WHITEOUT | RENAME_NOREPLACE), "renameat2 WHITEOUT|NOREPLACE");
        Assert.Equal(S_IFCHR, Type(LstatOf(m.P("x"))));
        m.Remount();
        Assert.Equal(S_IFCHR, Type(LstatOf(m.P("f"))));
        Assert.Equal("x", File.ReadAllText(m.P("y")));
    }

    [SkippableFact]
    public void Overlayfs_runs_with_its_upper_and_work_dirs_on_cow()
    {
        Assert.True(File.ReadAllText("/proc/filesystems").Split('\n').Any(l => l.EndsWith("\toverlay")), "this kernel has no overlayfs");
        using var m = new MountedPool();
        string root = Path.GetDirectoryName(m.PoolDir)!;
        string lower = Path.Combine(root, "lower"), merged = Path.Combine(root, "merged");
        string upper = m.P("upper"), work = m.P("work");
        Directory.CreateDirectory(Path.Combine(lower, "ldir"));
        File.WriteAllText(Path.Combine(lower, "keep"), "lower keep");
        File.WriteAllText(Path.Combine(lower, "modify"), "lower modify");
        File.WriteAllText(Path.Combine(lower, "remove"), "lower remove");
        File.WriteAllText(Path.Combine(lower, "ldir", "inner"), "inner");
        Directory.CreateDirectory(upper);
        Directory.CreateDirectory(work);
        Directory.CreateDirectory(merged);
        Run("mount", "-t", "overlay", "overlay", "-o", $"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=on", merged);
        try
        {
            File.WriteAllText(Path.Combine(merged, "created"), "created");
            File.AppendAllText(Path.Combine(merged, "modify"), " + upper");
            File.Delete(Path.Combine(merged, "remove"));
            Directory.Move(Path.Combine(merged, "ldir"), Path.Combine(merged, "moved"));

            var names = Directory.EnumerateFileSystemEntries(merged).Select(p => Path.GetFileName(p)!).Order(StringComparer.Ordinal).ToArray();
            Assert.Equal(["created", "keep", "modify", "moved"], names);
            Assert.Equal("lower keep", File.ReadAllText(Path.Combine(merged, "keep")));
            Assert.Equal("lower modify + upper", File.ReadAllText(Path.Combine(merged, "modify")));
            Assert.Equal("inner", File.ReadAllText(Path.Combine(merged, "moved", "inner")));
            // redirect_dir: the moved directory is an opaque-less upper directory that names its lower one (relative: same parent) in
            // the trusted.overlay.redirect xattr (trusted.* xattrs stored by Cow).
            Assert.Equal("ldir"u8.ToArray(), GetXattrValue(Path.Combine(upper, "moved"), "trusted.overlay.redirect"));
            // The upper layer on Cow: whiteouts (0/0 character devices) for the removed file and the moved
            // directory's old name, the copied-up and new files.
            foreach (var gone in new[] { "remove", "ldir" })
            {
                var w = LstatOf(Path.Combine(upper, gone));
                Assert.Equal(S_IFCHR, Type(w));
                Assert.Equal(0ul, w.st_rdev);
            }
            Assert.Equal("lower modify + upper", File.ReadAllText(Path.Combine(upper, "modify")));
            Assert.Equal("created", File.ReadAllText(Path.Combine(upper, "created")));
            Assert.False(File.Exists(Path.Combine(upper, "keep")));
        }
        finally { Run("umount", merged); }
        // The lower layer is untouched.
        Assert.Equal("lower modify", File.ReadAllText(Path.Combine(lower, "modify")));
        Assert.True(File.Exists(Path.Combine(lower, "remove")));
    }

    [SkippableFact]
    public void File_handles_survive_cache_eviction_and_remounts_and_are_stale_once_the_file_is_gone()
    {
        using var m = new MountedPool();
        Directory.CreateDirectory(m.P("d"));
        File.WriteAllText(m.P("d/f"), "handle data");
        File.WriteAllText(m.P("gone"), "x");
        long dirIno = (long)StatOf(m.P("d")).st_ino;
        byte[] Handle(string path) => NameToHandle(path) ?? throw new IOException($"name_to_handle_at {path}: {LastErrno()}");
        var hf = Handle(m.P("d/f"));
        var hd = Handle(m.P("d"));
        var hg = Handle(m.P("gone"));

        // open_by_handle_at with a descriptor of the mount: the file's data, or the errno.
        (string? Data, long Ino, Errno Error) OpenBy(byte[] handle, int flags)
        {
            int mfd = (int)Check(Open(m.MountPoint, O_RDONLY | O_DIRECTORY), "open the mount root");
            try
            {
                int fd = OpenByHandle(mfd, handle, flags);
                if (fd < 0) return (null, 0, LastErrno());
                try
                {
                    long ino = (long)FstatOf(fd).st_ino;
                    if ((flags & O_DIRECTORY) != 0) return ("", ino, 0);
                    var buf = new byte[100];
                    long n = Check(Pread(fd, buf, 0), "pread");
                    return (System.Text.Encoding.UTF8.GetString(buf, 0, (int)n), ino, 0);
                }
                finally { Close(fd); }
            }
            finally { Close(mfd); }
        }
        // Evicts unused dentries and inodes (the FUSE ones included): the kernel must ask Cow again.
        static void DropInodes() => File.WriteAllText("/proc/sys/vm/drop_caches", "2");

        Assert.Equal("handle data", OpenBy(hf, O_RDONLY).Data);
        DropInodes();
        Assert.Equal("handle data", OpenBy(hf, O_RDONLY).Data);
        Assert.Equal(dirIno, OpenBy(hd, O_RDONLY | O_DIRECTORY).Ino);
        File.Delete(m.P("gone"));
        DropInodes();
        Assert.Equal(Errno.ESTALE, OpenBy(hg, O_RDONLY).Error);

        m.Remount();
        Assert.Equal("handle data", OpenBy(hf, O_RDONLY).Data);
        Assert.Equal(dirIno, OpenBy(hd, O_RDONLY | O_DIRECTORY).Ino);
        Assert.Equal(Errno.ESTALE, OpenBy(hg, O_RDONLY).Error);
        // A handle made now is the handle made before the remount: (node id, generation) are the inode's.
        Assert.Equal(hf, Handle(m.P("d/f")));
        // The directory reached by handle alone (nothing cached after a remount) knows its parent: ".."
        // resolves through LOOKUP of "..".
        m.Remount();
        int dfd = -1, mfd2 = (int)Check(Open(m.MountPoint, O_RDONLY | O_DIRECTORY), "open the mount root");
        try
        {
            dfd = OpenByHandle(mfd2, hd, O_RDONLY | O_DIRECTORY);
            Assert.True(dfd >= 0, $"open_by_handle_at(d): {LastErrno()}");
            Assert.Equal(m.P("d"), new FileInfo($"/proc/self/fd/{dfd}").LinkTarget);
        }
        finally
        {
            if (dfd >= 0) Close(dfd);
            Close(mfd2);
        }
    }

    [SkippableFact]
    public void O_tmpfile_makes_a_nameless_file_that_linkat_can_name()
    {
        using var m = new MountedPool();
        Directory.CreateDirectory(m.P("d"));
        int fd = (int)Check(Open(m.P("d"), O_TMPFILE | O_RDWR, 0x1A4), "open O_TMPFILE");
        try
        {
            Check(Write(fd, "tmp data"u8), "write");
            var st = FstatOf(fd);
            Assert.Equal(0ul, st.st_nlink);
            Assert.Equal(S_IFREG, Type(st));
            Assert.Empty(Directory.EnumerateFileSystemEntries(m.P("d")));
            Check(LinkFd(fd, m.P("d/named")), "linkat");
            Assert.Equal(1ul, FstatOf(fd).st_nlink);
            Assert.Equal(st.st_ino, StatOf(m.P("d/named")).st_ino);
        }
        finally { Close(fd); }
        Assert.Equal("tmp data", File.ReadAllText(m.P("d/named")));

        // Never named: gone at close. O_EXCL: the VFS refuses the link.
        int lost = (int)Check(Open(m.P("d"), O_TMPFILE | O_RDWR, 0x1A4), "open O_TMPFILE");
        Check(Write(lost, "lost"u8), "write");
        Close(lost);
        int excl = (int)Check(Open(m.P("d"), O_TMPFILE | O_RDWR | O_EXCL, 0x1A4), "open O_TMPFILE|O_EXCL");
        try
        {
            Assert.True(LinkFd(excl, m.P("d/excl")) < 0);
            Assert.Equal(Errno.ENOENT, LastErrno());
        }
        finally { Close(excl); }
        m.Remount();
        Assert.Equal(["named"], Directory.EnumerateFileSystemEntries(m.P("d")).Select(p => Path.GetFileName(p)!).ToArray());
        Assert.True(m.Pool!.Fsck().Clean);
    }

    private static void Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{program} {string.Join(' ', args)}: exit {p.ExitCode}: {err}");
    }
}
