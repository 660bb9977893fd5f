// FUSE kernel protocol 7.45: INIT request/reply flags.
namespace Cow.Fuse.Protocol;

/// <summary>
/// Every FUSE_* INIT flag of mainline 7.45, as one 64-bit set. On the wire bits 0..31 travel in
/// <c>fuse_init_in/out.flags</c>; bits 32..63 are shifted down 32 and travel in <c>flags2</c>
/// (which the kernel only reads when FUSE_INIT_EXT is set).
/// </summary>
[Flags]
public enum FuseInitFlags : ulong
{
    None = 0,
    /// <summary>FUSE_ASYNC_READ: asynchronous read requests.</summary>
    AsyncRead = 1UL << 0,
    /// <summary>FUSE_POSIX_LOCKS: remote locking for POSIX file locks.</summary>
    PosixLocks = 1UL << 1,
    /// <summary>FUSE_FILE_OPS: kernel sends file handle for fstat, etc. (not yet supported).</summary>
    FileOps = 1UL << 2,
    /// <summary>FUSE_ATOMIC_O_TRUNC: handles the O_TRUNC open flag in the filesystem.</summary>
    AtomicOTrunc = 1UL << 3,
    /// <summary>FUSE_EXPORT_SUPPORT: filesystem handles lookups of "." and "..".</summary>
    ExportSupport = 1UL << 4,
    /// <summary>FUSE_BIG_WRITES: writes larger than 4 KiB.</summary>
    BigWrites = 1UL << 5,
    /// <summary>FUSE_DONT_MASK: don't apply umask to file mode on create.</summary>
    DontMask = 1UL << 6,
    /// <summary>FUSE_SPLICE_WRITE.</summary>
    SpliceWrite = 1UL << 7,
    /// <summary>FUSE_SPLICE_MOVE.</summary>
    SpliceMove = 1UL << 8,
    /// <summary>FUSE_SPLICE_READ.</summary>
    SpliceRead = 1UL << 9,
    /// <summary>FUSE_FLOCK_LOCKS: remote locking for BSD style file locks.</summary>
    FlockLocks = 1UL << 10,
    /// <summary>FUSE_HAS_IOCTL_DIR.</summary>
    HasIoctlDir = 1UL << 11,
    /// <summary>FUSE_AUTO_INVAL_DATA.</summary>
    AutoInvalData = 1UL << 12,
    /// <summary>FUSE_DO_READDIRPLUS.</summary>
    DoReaddirplus = 1UL << 13,
    /// <summary>FUSE_READDIRPLUS_AUTO.</summary>
    ReaddirplusAuto = 1UL << 14,
    /// <summary>FUSE_ASYNC_DIO.</summary>
    AsyncDio = 1UL << 15,
    /// <summary>FUSE_WRITEBACK_CACHE.</summary>
    WritebackCache = 1UL << 16,
    /// <summary>FUSE_NO_OPEN_SUPPORT.</summary>
    NoOpenSupport = 1UL << 17,
    /// <summary>FUSE_PARALLEL_DIROPS.</summary>
    ParallelDirops = 1UL << 18,
    /// <summary>FUSE_HANDLE_KILLPRIV.</summary>
    HandleKillpriv = 1UL << 19,
    /// <summary>FUSE_POSIX_ACL.</summary>
    PosixAcl = 1UL << 20,
    /// <summary>FUSE_ABORT_ERROR.</summary>
    AbortError = 1UL << 21,
    /// <summary>FUSE_MAX_PAGES: init_out.max_pages is valid.</summary>
    MaxPages = 1UL << 22,
    /// <summary>FUSE_CACHE_SYMLINKS.</summary>
    CacheSymlinks = 1UL << 23,
    /// <summary>FUSE_NO_OPENDIR_SUPPORT.</summary>
    NoOpendirSupport = 1UL << 24,
    /// <summary>FUSE_EXPLICIT_INVAL_DATA.</summary>
    ExplicitInvalData = 1UL << 25,
    /// <summary>FUSE_MAP_ALIGNMENT.</summary>
    MapAlignment = 1UL << 26,
    /// <summary>FUSE_SUBMOUNTS.</summary>
    Submounts = 1UL << 27,
    /// <summary>FUSE_HANDLE_KILLPRIV_V2.</summary>
    HandleKillprivV2 = 1UL << 28,
    /// <summary>FUSE_SETXATTR_EXT: server supports the extended fuse_setxattr_in.</summary>
    SetxattrExt = 1UL << 29,
    /// <summary>FUSE_INIT_EXT: extended fuse_init_in; flags2 is valid.</summary>
    InitExt = 1UL << 30,
    /// <summary>FUSE_INIT_RESERVED: reserved, do not use.</summary>
    InitReserved = 1UL << 31,

    // ---- bits 32..63: sent in flags2, shifted down 32 ----

    /// <summary>FUSE_SECURITY_CTX (flags2 bit 0).</summary>
    SecurityCtx = 1UL << 32,
    /// <summary>FUSE_HAS_INODE_DAX (flags2 bit 1).</summary>
    HasInodeDax = 1UL << 33,
    /// <summary>FUSE_CREATE_SUPP_GROUP (flags2 bit 2).</summary>
    CreateSuppGroup = 1UL << 34,
    /// <summary>FUSE_HAS_EXPIRE_ONLY (flags2 bit 3).</summary>
    HasExpireOnly = 1UL << 35,
    /// <summary>FUSE_DIRECT_IO_ALLOW_MMAP (flags2 bit 4); FUSE_DIRECT_IO_RELAX is an obsolete alias.</summary>
    DirectIoAllowMmap = 1UL << 36,
    /// <summary>FUSE_PASSTHROUGH (flags2 bit 5).</summary>
    Passthrough = 1UL << 37,
    /// <summary>FUSE_NO_EXPORT_SUPPORT (flags2 bit 6).</summary>
    NoExportSupport = 1UL << 38,
    /// <summary>FUSE_HAS_RESEND (flags2 bit 7).</summary>
    HasResend = 1UL << 39,
    /// <summary>FUSE_ALLOW_IDMAP (flags2 bit 8).</summary>
    AllowIdmap = 1UL << 40,
    /// <summary>FUSE_OVER_IO_URING (flags2 bit 9).</summary>
    OverIoUring = 1UL << 41,
    /// <summary>FUSE_REQUEST_TIMEOUT (flags2 bit 10).</summary>
    RequestTimeout = 1UL << 42,
    /// <summary>FUSE_IOMAP (flags2 bit 11). EXPERIMENTAL, not mainline: see <see cref="ExperimentalConstants.InitIomap"/>.</summary>
    Iomap = ExperimentalConstants.InitIomap,
}
