using System.Diagnostics;
using System.Runtime.InteropServices;
using Cow.Fuse.Kernel;
using Cow.Fuse.Native;
using Cow.Fuse.Server;
using Mono.Unix.Native;

namespace Cow.Fuse.Mounting;

/// <summary>What to mount where.</summary>
public sealed record MountRequest
{
    /// <summary>Shown as the mount's source in the mount table (the pool folder).</summary>
    public required string Source { get; init; }
    public required string MountPoint { get; init; }
    /// <summary>Let users other than the mounting one use the mount (FUSE's allow_other). Root mounts default to it.</summary>
    public bool AllowOther { get; init; }
    public bool ReadOnly { get; init; }
    /// <summary>Mount through fusermount3 even as root (the path non-root users take).</summary>
    public bool UseFusermount { get; init; }
    /// <summary>Ask the kernel for fuse-iomap on the /dev/fuse descriptor (FUSE_DEV_IOC_ADD_IOMAP) — before
    /// mount(2) on the direct path, right after fusermount3 handed the descriptor over (before INIT is
    /// answered) on the other. <see cref="IomapMode.On"/>: a refusal fails the mount and leaves nothing
    /// mounted. Default: <see cref="IomapMode.Off"/> (do not ask).</summary>
    public IomapMode Iomap { get; init; } = IomapMode.Off;
    /// <summary>The capability check before ADD_IOMAP (default: CAP_SYS_RAWIO in the effective set); tests inject their own.</summary>
    public Func<bool>? HasSysRawio { get; init; }
    /// <summary>The kernel's <c>max_read</c> mount option: the largest READ request in bytes (read-ahead and
    /// direct reads are cut into READs of at most this size). 0: no limit beyond max_pages (1 MiB).</summary>
    public int MaxReadBytes { get; init; }
    /// <summary>The atime options, passed to the kernel as mount flags (MS_NOATIME, MS_STRICTATIME,
    /// MS_NODIRATIME; fusermount3: the option words) so that the mount table shows them. The kernel does not
    /// act on them for FUSE (its inodes are S_NOATIME): the server applies them.</summary>
    public Core.FileSystem.AtimeOptions Atime { get; init; }
}

/// <summary>A failure to mount or unmount, with a message an administrator can act on.</summary>
public sealed class MountException(string message) : Exception(message)
{
    /// <summary>True when the mount was refused because <c>--iomap on</c> asked for fuse-iomap and the kernel
    /// did not grant it (<c>cow mount</c> exits with its own code for it).</summary>
    public bool IomapUnavailable { get; init; }

    /// <summary>True when an unmount was refused because the mount is in use (EBUSY): the caller says what to do
    /// (close the users, or a lazy unmount where it offers one).</summary>
    public bool Busy { get; init; }
}

/// <summary>
/// Mounts and unmounts FUSE file systems: as root with mount(2)/umount2(2) directly, otherwise through the
/// setuid helper fusermount3 (which passes the /dev/fuse descriptor back over a socket with SCM_RIGHTS).
/// No libfuse. Stateless and thread-safe.
/// </summary>
public static class Mounter
{
    /// <summary>The file system type in the mount table: "fuse." + subtype.</summary>
    public const string FsType = "fuse.cow";
    public const string Fusermount = "fusermount3";

    public static bool IsRoot => Syscall.geteuid() == 0;

    /// <summary>
    /// Mounts and returns the /dev/fuse descriptor to serve. Checks first that the mount point is a directory
    /// that is not already a live or dead Cow mount.
    /// </summary>
    public static int Mount(MountRequest r) => Mount(r, out _);

    /// <summary>
    /// <see cref="Mount(MountRequest)"/>, and asks the kernel for fuse-iomap as <see cref="MountRequest.Iomap"/>
    /// says; <paramref name="iomap"/> tells whether the kernel accepted FUSE_DEV_IOC_ADD_IOMAP and if not,
    /// why (with <see cref="IomapMode.Off"/>: not granted, not asked). With <see cref="IomapMode.On"/> a
    /// refusal throws a <see cref="MountException"/> with <see cref="MountException.IomapUnavailable"/> set,
    /// and nothing stays mounted.
    /// </summary>
    public static int Mount(MountRequest r, out IomapRequestResult iomap)
    {
        var mp = MountTable.Normalize(r.MountPoint);
        CheckMountPoint(mp);
        if (IsRoot && !r.UseFusermount) return MountDirect(r, mp, out iomap);
        int fd = MountWithFusermount(r, mp);
        try { iomap = AskIomap(fd, r); }
        catch (MountException)
        {
            // The mount exists already but nothing has answered INIT: end the connection, then unmount.
            LibC.Close(fd);
            try { Unmount(mp, lazy: true, useFusermount: true); } catch (MountException) { }
            throw;
        }
        return fd;
    }

    /// <summary>FUSE_DEV_IOC_ADD_IOMAP as <see cref="MountRequest.Iomap"/> says; throws for a refusal under On.</summary>
    private static IomapRequestResult AskIomap(int fd, MountRequest r)
    {
        if (r.Iomap == IomapMode.Off) return new IomapRequestResult(false, "not asked for (--iomap off)", 0);
        var result = IomapNegotiation.RequestIomap(fd, r.HasSysRawio);
        if (!result.Granted && r.Iomap == IomapMode.On)
            throw new MountException($"fuse-iomap is not available: {result.Reason}. The mount of {r.Source} on {MountTable.Normalize(r.MountPoint)} was refused because of --iomap on; mount with --iomap auto (or off) to serve I/O in userspace")
            { IomapUnavailable = true };
        return result;
    }

    /// <summary>Throws a <see cref="MountException"/> when <paramref name="mp"/> cannot take a new mount.</summary>
    public static void CheckMountPoint(string mp)
    {
        if (Syscall.stat(mp, out var st) != 0)
        {
            var e = Stdlib.GetLastError();
            if (e == Errno.ENOTCONN)
                throw new MountException($"{mp} is a Cow mount whose server has died; run 'cow umount {mp}' to clear it");
            throw new MountException($"mount point {mp}: {LibC.Describe(e)}");
        }
        if ((st.st_mode & FilePermissions.S_IFMT) != FilePermissions.S_IFDIR) throw new MountException($"mount point {mp} is not a directory");
        var existing = MountTable.Find(mp);
        if (existing != null && existing.IsCow)
            throw new MountException($"{mp} is already a Cow mount (of {existing.Source}); unmount it first with 'cow umount {mp}'");
    }

    private static string Options(MountRequest r, bool direct, int fd = -1)
    {
        var o = new List<string>();
        if (direct)
        {
            o.Add($"fd={fd}");
            o.Add("rootmode=40000");
            o.Add($"user_id={Syscall.geteuid()}");
            o.Add($"group_id={Syscall.getegid()}");
        }
        else
        {
            o.Add("fsname=" + EscapeOption(r.Source));
            o.Add("subtype=cow");
        }
        o.Add("default_permissions");
        if (r.AllowOther) o.Add("allow_other");
        if (r.MaxReadBytes > 0) o.Add($"max_read={r.MaxReadBytes}");
        if (r.ReadOnly && !direct) o.Add("ro");
        if (!direct)
        {
            if (r.Atime.Policy != Core.FileSystem.AtimePolicy.Relatime) o.Add(r.Atime.Policy == Core.FileSystem.AtimePolicy.Noatime ? "noatime" : "strictatime");
            if (r.Atime.NoDirAtime) o.Add("nodiratime");
        }
        return string.Join(',', o);
    }

    /// <summary>mount(2) flags for the atime options (relatime is the kernel's default: no flag).</summary>
    private static ulong AtimeFlags(Core.FileSystem.AtimeOptions a) =>
        (a.Policy switch { Core.FileSystem.AtimePolicy.Noatime => LibC.MS_NOATIME, Core.FileSystem.AtimePolicy.Strictatime => LibC.MS_STRICTATIME, _ => 0UL })
        | (a.NoDirAtime ? LibC.MS_NODIRATIME : 0);

    /// <summary>An option value for fusermount3's -o list: ',' and '\\' escaped with '\\' (as libfuse does), so
    /// that the mount table shows the pool path exactly.</summary>
    public static string EscapeOption(string value) => value.Replace("\\", "\\\\").Replace(",", "\\,");

    private static int MountDirect(MountRequest r, string mp, out IomapRequestResult iomap)
    {
        int fd = LibC.Open("/dev/fuse", LibC.O_RDWR | LibC.O_CLOEXEC);
        if (fd < 0) throw new MountException($"cannot open /dev/fuse: {LibC.Describe(LibC.LastErrno)} (is the fuse module loaded? try 'modprobe fuse')");
        // Before mount(2): the kernel remembers the grant on the descriptor and offers FUSE_IOMAP at INIT.
        try { iomap = AskIomap(fd, r); }
        catch { LibC.Close(fd); throw; }
        ulong flags = LibC.MS_NOSUID | LibC.MS_NODEV | (r.ReadOnly ? LibC.MS_RDONLY : 0) | AtimeFlags(r.Atime);
        if (LibC.Mount(r.Source, mp, FsType, flags, Options(r, direct: true, fd)) != 0)
        {
            var e = LibC.LastErrno;
            LibC.Close(fd);
            throw new MountException($"mount of {r.Source} on {mp} failed: {LibC.Describe(e)}");
        }
        return fd;
    }

    private static unsafe int MountWithFusermount(MountRequest r, string mp)
    {
        int* sv = stackalloc int[2];
        if (LibC.SocketPair(LibC.AF_UNIX, LibC.SOCK_STREAM, 0, sv) != 0)
            throw new MountException($"socketpair failed: {LibC.Describe(LibC.LastErrno)}");
        try
        {
            // Our end must not leak into the helper; the helper's end must be inherited by it.
            LibC.Fcntl(sv[0], LibC.F_SETFD, LibC.FD_CLOEXEC);
            var psi = new ProcessStartInfo(Fusermount) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            psi.ArgumentList.Add("-o"); psi.ArgumentList.Add(Options(r, direct: false));
            psi.ArgumentList.Add("--"); psi.ArgumentList.Add(mp);
            psi.Environment["_FUSE_COMMFD"] = sv[1].ToString();
            Process p;
            try { p = Process.Start(psi) ?? throw new MountException($"cannot start {Fusermount}"); }
            catch (System.ComponentModel.Win32Exception e) { throw new MountException($"cannot run {Fusermount} ({e.Message}); install the fuse3 package"); }
            using (p)
            {
                LibC.Close(sv[1]); sv[1] = -1;
                int fd = ReceiveFd(sv[0]);
                string err = p.StandardError.ReadToEnd();
                p.WaitForExit();
                if (fd < 0 || p.ExitCode != 0)
                {
                    if (fd >= 0) LibC.Close(fd);
                    throw new MountException($"{Fusermount} could not mount {r.Source} on {mp}: {err.Trim()} (exit {p.ExitCode})");
                }
                LibC.Fcntl(fd, LibC.F_SETFD, LibC.FD_CLOEXEC);
                return fd;
            }
        }
        finally
        {
            LibC.Close(sv[0]);
            if (sv[1] >= 0) LibC.Close(sv[1]);
        }
    }

    /// <summary>Receives one descriptor sent with SCM_RIGHTS; -1 when the peer closed without sending one.</summary>
    private static unsafe int ReceiveFd(int socket)
    {
        byte data = 0;
        var iov = new LibC.IoVec { Base = &data, Length = 1 };
        const int controlSize = 32;   // CMSG_SPACE(sizeof(int)) = 24 on 64-bit
        byte* control = stackalloc byte[controlSize];
        new Span<byte>(control, controlSize).Clear();
        var msg = new LibC.MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = controlSize };
        nint n;
        do n = LibC.RecvMsg(socket, &msg, 0); while (n < 0 && LibC.LastErrno == Errno.EINTR);
        if (n <= 0 || msg.ControlLen < (nuint)sizeof(LibC.CmsgHdr) + sizeof(int)) return -1;
        var h = (LibC.CmsgHdr*)control;
        if (h->Level != LibC.SOL_SOCKET || h->Type != LibC.SCM_RIGHTS) return -1;
        return *(int*)(control + sizeof(LibC.CmsgHdr));
    }

    /// <summary>
    /// Unmounts <paramref name="mountPoint"/>. <paramref name="lazy"/> detaches a busy mount (MNT_DETACH:
    /// it disappears from the namespace now and goes away when its last user closes). Root uses umount2;
    /// other users fusermount3 -u. Throws a <see cref="MountException"/> (EBUSY: "in use") on failure.
    /// </summary>
    public static void Unmount(string mountPoint, bool lazy = false, bool useFusermount = false)
    {
        var mp = MountTable.Normalize(mountPoint);
        if (IsRoot && !useFusermount)
        {
            if (LibC.Umount2(mp, LibC.UMOUNT_NOFOLLOW | (lazy ? LibC.MNT_DETACH : 0)) == 0) return;
            var e = LibC.LastErrno;
            if (e == Errno.EBUSY) throw new MountException($"{mp} is in use (a process has a file open or its working directory there)") { Busy = true };
            if (e == Errno.EINVAL) throw new MountException($"{mp} is not a mount point");
            throw new MountException($"unmount of {mp} failed: {LibC.Describe(e)}");
        }
        var psi = new ProcessStartInfo(Fusermount) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add(lazy ? "-uz" : "-u"); psi.ArgumentList.Add("--"); psi.ArgumentList.Add(mp);
        try
        {
            using var p = Process.Start(psi) ?? throw new MountException($"cannot start {Fusermount}");
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0) throw new MountException($"{Fusermount} -u {mp} failed: {err.Trim()}") { Busy = err.Contains("busy", StringComparison.OrdinalIgnoreCase) };
        }
        catch (System.ComponentModel.Win32Exception e) { throw new MountException($"cannot run {Fusermount} ({e.Message}); install the fuse3 package"); }
    }

    /// <summary>True when <paramref name="mountPoint"/> is a FUSE mount whose server is gone: stat or statfs fails with
    /// ENOTCONN. stat alone is not enough: the kernel answers it from attributes it caches for long (an hour with Cow)
    /// even after the connection was aborted; statfs always asks the server.</summary>
    public static bool IsDisconnected(string mountPoint)
    {
        var mp = MountTable.Normalize(mountPoint);
        if (Syscall.stat(mp, out _) != 0) return Stdlib.GetLastError() == Errno.ENOTCONN;
        return Syscall.statvfs(mp, out _) != 0 && Stdlib.GetLastError() == Errno.ENOTCONN;
    }
}
