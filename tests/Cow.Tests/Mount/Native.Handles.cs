using System.Runtime.InteropServices;

namespace Cow.Tests.Mount;

// name_to_handle_at / open_by_handle_at (file handles, what NFS exports use); O_TMPFILE and linkat.
internal static unsafe partial class Native
{
    private const int MaxHandleSize = 128;
    public const int O_TMPFILE = 0x400000 | O_DIRECTORY, AT_SYMLINK_FOLLOW = 0x400;

    [LibraryImport("libc", EntryPoint = "linkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int linkat_(int olddirfd, string oldpath, int newdirfd, string newpath, int flags);

    /// <summary>Gives the open file <paramref name="fd"/> the name <paramref name="path"/> (linkat of
    /// /proc/self/fd/N with AT_SYMLINK_FOLLOW, which needs no CAP_DAC_READ_SEARCH); 0 or -1 with errno set.</summary>
    public static int LinkFd(int fd, string path) => linkat_(AT_FDCWD, $"/proc/self/fd/{fd}", AT_FDCWD, path, AT_SYMLINK_FOLLOW);

    [LibraryImport("libc", EntryPoint = "name_to_handle_at", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int name_to_handle_at_(int dirfd, string path, byte* handle, int* mountId, int flags);
    [LibraryImport("libc", EntryPoint = "open_by_handle_at", SetLastError = true)]
    private static partial int open_by_handle_at_(int mountFd, byte* handle, int flags);

    /// <summary>name_to_handle_at(AT_FDCWD, path): the whole struct file_handle (handle_bytes, handle_type,
    /// f_handle), or null with errno set.</summary>
    public static byte[]? NameToHandle(string path)
    {
        var buf = new byte[8 + MaxHandleSize];
        int mountId;
        fixed (byte* p = buf)
        {
            *(uint*)p = MaxHandleSize;
            if (name_to_handle_at_(AT_FDCWD, path, p, &mountId, 0) != 0) return null;
            return buf[..(8 + (int)*(uint*)p)];
        }
    }

    /// <summary>open_by_handle_at(mountFd, handle, flags | O_CLOEXEC): a descriptor, or -1 with errno set.</summary>
    public static int OpenByHandle(int mountFd, byte[] handle, int flags)
    {
        fixed (byte* p = handle) return open_by_handle_at_(mountFd, p, flags | O_CLOEXEC);
    }
}
