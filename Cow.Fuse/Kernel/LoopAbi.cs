// The loop-device and block-device kernel ABI Cow uses, in ONE place: ioctl numbers and structs from
// include/uapi/linux/loop.h and include/uapi/linux/fs.h (mainline, stable ABI; x86-64 encodings).
// The sizes and field offsets are pinned by tests/Cow.Tests/Kernel/LoopAbiTests.cs (values checked
// against gcc's sizeof/offsetof on Linux 6.18 headers: loop_info64 232, loop_config 304,
// lo_flags at 52, lo_file_name at 56).
using System.Runtime.InteropServices;

namespace Cow.Fuse.Kernel;

/// <summary>Loop and block-device ioctl numbers and flags. Stateless.</summary>
public static class LoopAbi
{
    // ---- ioctls on /dev/loopN (magic 0x4C = 'L') ----
    /// <summary>LOOP_CLR_FD: detach the backing file (on last close when others still hold the device).</summary>
    public const ulong LoopClrFd = 0x4C01;
    /// <summary>LOOP_SET_STATUS64 (struct loop_info64 in).</summary>
    public const ulong LoopSetStatus64 = 0x4C04;
    /// <summary>LOOP_GET_STATUS64 (struct loop_info64 out).</summary>
    public const ulong LoopGetStatus64 = 0x4C05;
    /// <summary>LOOP_CONFIGURE (struct loop_config in; Linux 5.8+): set fd, block size and status in one call.</summary>
    public const ulong LoopConfigure = 0x4C0A;

    // ---- ioctls on /dev/loop-control ----
    /// <summary>LOOP_CTL_GET_FREE: the number of a free loop device (created if none is free).</summary>
    public const ulong LoopCtlGetFree = 0x4C82;

    // ---- block-device ioctls (linux/fs.h) ----
    /// <summary>BLKGETSIZE64 = _IOR(0x12, 114, size_t): device size in bytes (u64 out).</summary>
    public const ulong BlkGetSize64 = 0x80081272;

    // ---- lo_flags ----
    /// <summary>LO_FLAGS_READ_ONLY.</summary>
    public const uint LoFlagsReadOnly = 1;
    /// <summary>LO_FLAGS_AUTOCLEAR: detach when the last opener closes the device.</summary>
    public const uint LoFlagsAutoclear = 4;
    /// <summary>LO_FLAGS_PARTSCAN.</summary>
    public const uint LoFlagsPartscan = 8;
    /// <summary>LO_FLAGS_DIRECT_IO: the loop device's I/O bypasses the backing file's page cache. Cow never
    /// sets it (see <see cref="LoopDevice"/>).</summary>
    public const uint LoFlagsDirectIo = 16;

    /// <summary>LO_NAME_SIZE: lo_file_name and lo_crypt_name bytes (NUL-terminated).</summary>
    public const int LoNameSize = 64;
    /// <summary>LO_KEY_SIZE.</summary>
    public const int LoKeySize = 32;

    /// <summary>Device paths.</summary>
    public const string LoopControl = "/dev/loop-control";
    public static string LoopPath(int number) => $"/dev/loop{number}";
}

/// <summary>Kernel <c>struct loop_info64</c> (232 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct LoopInfo64
{
    public const int Size = 232;
    public ulong LoDevice;
    public ulong LoInode;
    public ulong LoRdevice;
    /// <summary>lo_offset: byte offset into the backing file (Cow: 0).</summary>
    public ulong LoOffset;
    /// <summary>lo_sizelimit: bytes (0 = the whole file).</summary>
    public ulong LoSizelimit;
    public uint LoNumber;
    public uint LoEncryptType;
    public uint LoEncryptKeySize;
    /// <summary>lo_flags: <see cref="LoopAbi.LoFlagsAutoclear"/> etc.</summary>
    public uint LoFlags;
    /// <summary>lo_file_name[LO_NAME_SIZE]: informational (losetup shows it); sysfs backing_file is authoritative.</summary>
    public fixed byte LoFileName[LoopAbi.LoNameSize];
    public fixed byte LoCryptName[LoopAbi.LoNameSize];
    public fixed byte LoEncryptKey[LoopAbi.LoKeySize];
    public fixed ulong LoInit[2];
}

/// <summary>Kernel <c>struct loop_config</c> (304 bytes): argument of LOOP_CONFIGURE.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public unsafe struct LoopConfig
{
    public const int Size = 304;
    /// <summary>fd: the backing file (u32 in the kernel struct).</summary>
    public uint Fd;
    /// <summary>block_size: logical block size of the loop device (0 = 512).</summary>
    public uint BlockSize;
    public LoopInfo64 Info;
    /// <summary>__reserved[8]: must be zero.</summary>
    public fixed ulong Reserved[8];
}
