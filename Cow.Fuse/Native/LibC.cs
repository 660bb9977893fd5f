using System.Runtime.InteropServices;
using Mono.Unix.Native;

namespace Cow.Fuse.Native;

/// <summary>
/// The few libc calls the FUSE channel and the mounter need that Mono.Posix does not offer in an
/// allocation-free form (read/write on the hot path) or at all (mount, umount2, ioctl, socketpair,
/// recvmsg with SCM_RIGHTS). Every call sets the thread's last P/Invoke error; <see cref="LastErrno"/>
/// converts it with Mono.Posix's NativeConvert. Thread-safety: stateless.
/// </summary>
internal static unsafe partial class LibC
{
    private const string Lib = "libc";

    public const int O_RDWR = 2, O_EXCL = 0x80, O_CLOEXEC = 0x80000;
    public const ulong MS_NOSUID = 2, MS_NODEV = 4, MS_RDONLY = 1, MS_NOATIME = 1024, MS_NODIRATIME = 2048, MS_STRICTATIME = 1 << 24;
    public const int MNT_FORCE = 1, MNT_DETACH = 2, UMOUNT_NOFOLLOW = 8;
    /// <summary>FUSE_DEV_IOC_CLONE = _IOR(229, 0, uint32_t) from include/uapi/linux/fuse.h.</summary>
    public const ulong FUSE_DEV_IOC_CLONE = 0x8004E500;
    public const int AF_UNIX = 1, SOCK_STREAM = 1, SOL_SOCKET = 1, SCM_RIGHTS = 1;

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "writev", SetLastError = true)]
    public static partial nint Writev(int fd, IoVec* iov, int iovcnt);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, ulong request, void* arg);

    [LibraryImport(Lib, EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Mount(string source, string target, string fsType, ulong flags, string data);

    [LibraryImport(Lib, EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Umount2(string target, int flags);

    [LibraryImport(Lib, EntryPoint = "socketpair", SetLastError = true)]
    public static partial int SocketPair(int domain, int type, int protocol, int* sv);

    [LibraryImport(Lib, EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int cmd, int arg);

    public const int F_GETFD = 1, F_SETFD = 2, FD_CLOEXEC = 1;

    [LibraryImport(Lib, EntryPoint = "capget", SetLastError = true)]
    public static partial int CapGet(CapUserHeader* header, CapUserData* data);

    /// <summary>_LINUX_CAPABILITY_VERSION_3 (linux/capability.h): two <see cref="CapUserData"/> words, 64 capabilities.</summary>
    public const uint LINUX_CAPABILITY_VERSION_3 = 0x20080522;

    /// <summary>struct __user_cap_header_struct: version, pid (0 = the calling thread).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CapUserHeader { public uint Version; public int Pid; }

    /// <summary>struct __user_cap_data_struct: one 32-capability word of each set.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CapUserData { public uint Effective; public uint Permitted; public uint Inheritable; }

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec { public void* Base; public nuint Length; }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name; public uint NameLen;
        public IoVec* Iov; public nuint IovLen;
        public void* Control; public nuint ControlLen;
        public int Flags;
    }

    /// <summary>struct cmsghdr on 64-bit Linux: len (size_t), level, type, then data (aligned to 8).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr { public nuint Len; public int Level; public int Type; }

    /// <summary>The errno of the last call, as Mono.Posix's <see cref="Errno"/>.</summary>
    public static Errno LastErrno => NativeConvert.ToErrno(Marshal.GetLastPInvokeError());

    public static string Describe(Errno e) => $"{Mono.Unix.UnixMarshal.GetErrorDescription(e)} ({e})";
}
