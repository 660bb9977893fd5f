// FUSE kernel protocol 7.42+: FUSE over io_uring (include/uapi/linux/fuse.h, fs/fuse/dev_uring.c).
// The connection still starts on /dev/fuse (INIT); the server then registers ring entries with
// IORING_OP_URING_CMD commands on its /dev/fuse descriptor, one or more per queue (a queue per possible CPU),
// and the kernel hands requests to those entries instead of read(2). FORGET, INTERRUPT and notifications
// stay on /dev/fuse.
using System.Runtime.InteropServices;

namespace Cow.Fuse.Protocol;

/// <summary>The fixed layout of the header buffer of a ring entry (kernel <c>struct fuse_uring_req_header</c>,
/// 288 bytes): <c>in_out</c> (fuse_in_header on the way in, fuse_out_header on the way out), <c>op_in</c>
/// (the request's first argument, its per-opcode struct) and <c>ring_ent_in_out</c>.</summary>
public static class FuseUringHeader
{
    /// <summary>FUSE_URING_IN_OUT_HEADER_SZ: room for fuse_in_header / fuse_out_header.</summary>
    public const int InOutSize = 128;
    /// <summary>FUSE_URING_OP_IN_OUT_SZ: room for the per-opcode struct of a request.</summary>
    public const int OpInSize = 128;
    /// <summary>Offset of <c>op_in</c>.</summary>
    public const int OpInOffset = InOutSize;
    /// <summary>Offset of <c>ring_ent_in_out</c> (<see cref="FuseUringEntInOut"/>).</summary>
    public const int EntInOutOffset = InOutSize + OpInSize;
    /// <summary>sizeof(struct fuse_uring_req_header).</summary>
    public const int Size = EntInOutOffset + FuseUringEntInOut.Size;
}

/// <summary>Kernel <c>struct fuse_uring_ent_in_out</c> (32 bytes): the last part of the header buffer.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseUringEntInOut
{
    public const int Size = 32;
    public ulong Flags;
    /// <summary>The request's unique: what COMMIT_AND_FETCH names the reply by.</summary>
    public ulong CommitId;
    /// <summary>Bytes of the request in the payload buffer (in); bytes of the reply there (out).</summary>
    public uint PayloadSz;
    public uint Padding;
    public ulong Reserved;
}

/// <summary>Kernel <c>struct fuse_uring_cmd_req</c> (24 bytes): the command area of a 128-byte SQE.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct FuseUringCmdReq
{
    public const int Size = 24;
    public ulong Flags;
    /// <summary>COMMIT_AND_FETCH: the unique of the request answered.</summary>
    public ulong CommitId;
    /// <summary>The queue (CPU) the entry serves.</summary>
    public ushort Qid;
    public ushort Padding0;
    public uint Padding1;
}

/// <summary>Kernel <c>enum fuse_uring_cmd</c>: the <c>cmd_op</c> of an IORING_OP_URING_CMD on /dev/fuse.</summary>
public enum FuseUringCmd : uint
{
    Invalid = 0,
    /// <summary>Register an entry's header and payload buffers (iovec[2] at sqe.addr, sqe.len = 2) and wait for a request.</summary>
    Register = 1,
    /// <summary>Hand back the reply in the entry's buffers and wait for the next request.</summary>
    CommitAndFetch = 2,
}
