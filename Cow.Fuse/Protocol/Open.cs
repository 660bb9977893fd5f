// FUSE kernel protocol 7.45: OPEN/OPENDIR/CREATE/RELEASE/RELEASEDIR/FLUSH.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>Kernel <c>struct fuse_open_in</c> (8 bytes), for OPEN and OPENDIR.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseOpenIn
{
    public const int Size = 8;
    /// <summary>flags: open(2) flags.</summary>
    public uint Flags;
    /// <summary>open_flags: FUSE_OPEN_KILL_SUIDGID (1 &lt;&lt; 0). (Was "unused" before 7.33.)</summary>
    public uint OpenFlags;

    /// <summary>FUSE_OPEN_KILL_SUIDGID.</summary>
    public const uint OpenKillSuidgid = 1u << 0;
}

/// <summary>Kernel <c>struct fuse_create_in</c> (16 bytes); the name follows.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseCreateIn
{
    public const int Size = 16;
    public uint Flags;
    public uint Mode;
    public uint Umask;
    /// <summary>open_flags (was "padding" before 7.33).</summary>
    public uint OpenFlags;
}

/// <summary>Kernel <c>struct fuse_open_out</c> (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseOpenOut
{
    public const int Size = 16;
    public ulong Fh;
    /// <summary>open_flags: <see cref="FuseOpenOutFlags"/> (FOPEN_*).</summary>
    public uint OpenFlags;
    /// <summary>backing_id (7.40, with FOPEN_PASSTHROUGH).</summary>
    public int BackingId;
}

/// <summary>FOPEN_* flags of fuse_open_out.open_flags.</summary>
[Flags]
public enum FuseOpenOutFlags : uint
{
    None = 0,
    DirectIo = 1u << 0,
    KeepCache = 1u << 1,
    Nonseekable = 1u << 2,
    CacheDir = 1u << 3,
    Stream = 1u << 4,
    Noflush = 1u << 5,
    ParallelDirectWrites = 1u << 6,
    Passthrough = 1u << 7,
}

/// <summary>Kernel <c>struct fuse_release_in</c> (24 bytes), for RELEASE and RELEASEDIR.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseReleaseIn
{
    public const int Size = 24;
    public ulong Fh;
    public uint Flags;
    /// <summary>release_flags: FUSE_RELEASE_FLUSH (1), FUSE_RELEASE_FLOCK_UNLOCK (2).</summary>
    public uint ReleaseFlags;
    public ulong LockOwner;

    public const uint ReleaseFlush = 1u << 0;
    public const uint ReleaseFlockUnlock = 1u << 1;
}

/// <summary>Kernel <c>struct fuse_flush_in</c> (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseFlushIn
{
    public const int Size = 24;
    public ulong Fh;
    public uint Unused;
    public uint Padding;
    public ulong LockOwner;
}
