#!/usr/bin/python3
# Data checks on a Cow mount whose kernel does the I/O (fuse-iomap), run INSIDE the vm-run.sh guest by
# iomap-vm.sh. Every byte read is compared with a model of what was written. Prints one line per check,
# "CHECK OK <name>" or "CHECK FAIL <name>: <why>", then "@@CHECKS pass=N fail=M@@".
# usage: iomap_checks.py MOUNTPOINT [check ...]   (no check names: all)
import ctypes, errno, mmap, os, random, sys, traceback

M = sys.argv[1]
ONLY = set(sys.argv[2:])
BS = 4096
libc = ctypes.CDLL(None, use_errno=True)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
rng = random.Random(int(os.environ.get("COW_SEED", "21")))
results = []


def rnd(n):
    return rng.randbytes(n)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_all(path, direct=False):
    if direct:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            size = os.fstat(fd).st_size
            n = (size + BS - 1) // BS * BS
            buf = mmap.mmap(-1, max(n, BS))
            got = os.preadv(fd, [buf], 0) if n else 0
            return bytes(buf[:min(got, size)])
        finally:
            os.close(fd)
    with open(path, "rb") as f:
        return f.read()


def expect(path, model, what, direct=False, cold=True):
    if cold:
        drop_caches()
    got = read_all(path, direct)
    if len(got) != len(model):
        raise AssertionError(f"{what}: {path} has {len(got)} bytes, expected {len(model)}")
    if got != bytes(model):
        i = next(i for i in range(len(got)) if got[i] != model[i])
        raise AssertionError(f"{what}: {path} differs first at byte {i} (got {got[i]:#x}, expected {model[i]:#x})")


def fallocate(fd, mode, off, ln):
    if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(ln)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"fallocate(mode={mode}, {off}, {ln}): {os.strerror(e)}")


def syncfs(fd):
    if libc.syncfs(fd) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"syncfs: {os.strerror(e)}")


def free_blocks():
    s = os.statvfs(M)
    return s.f_bfree


def check(fn):
    name = fn.__name__
    if ONLY and name not in ONLY:
        return fn
    try:
        fn()
        print(f"CHECK OK {name}", flush=True)
        results.append(True)
    except Exception as e:
        print(f"CHECK FAIL {name}: {e}", flush=True)
        traceback.print_exc(file=sys.stdout)
        results.append(False)
    return fn


def p(name):
    return os.path.join(M, name)


@check
def buffered_write_read():
    data = rnd(6 << 20)
    with open(p("buf"), "wb") as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
        f.flush()
        os.fsync(f.fileno())
    expect(p("buf"), data, "buffered, cold cache")
    expect(p("buf"), data, "buffered, read direct", direct=True)


@check
def direct_write_read():
    n = 4 << 20
    buf = mmap.mmap(-1, n)
    data = rnd(n)
    buf[:] = data
    fd = os.open(p("dio"), os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    try:
        assert os.pwritev(fd, [buf], 0) == n
    finally:
        os.close(fd)
    expect(p("dio"), data, "direct write, direct read", direct=True, cold=False)
    expect(p("dio"), data, "direct write, buffered read")


@check
def unaligned_and_partial_block_writes():
    model = bytearray(rnd(3 * BS + 100))
    with open(p("unal"), "wb") as f:
        f.write(model)
        os.fsync(f.fileno())
    fd = os.open(p("unal"), os.O_RDWR)
    try:
        for off, ln in [(1, 11), (BS - 3, 7), (5000, BS + 17), (2 * BS, 1), (3 * BS + 99, 1), (3 * BS + 90, 50)]:
            b = rnd(ln)
            os.pwrite(fd, b, off)
            end = off + ln
            if end > len(model):
                model.extend(b"\0" * (end - len(model)))
            model[off:end] = b
        os.fsync(fd)
    finally:
        os.close(fd)
    expect(p("unal"), model, "unaligned buffered writes")
    # direct I/O that is 512-aligned but not block-aligned: Cow answers ENOSYS, the kernel redoes it buffered
    buf = mmap.mmap(-1, BS)
    b = rnd(1024)
    buf[:1024] = b
    fd = os.open(p("unal"), os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [memoryview(buf)[:1024]], 512) == 1024
    finally:
        os.close(fd)
    model[512:1536] = b
    expect(p("unal"), model, "512-aligned direct write")


@check
def appends():
    model = bytearray()
    fd = os.open(p("app"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    try:
        for ln in [1, 4095, 4096, 10000, 3, 70000]:
            b = rnd(ln)
            os.write(fd, b)
            model += b
        os.fsync(fd)
    finally:
        os.close(fd)
    expect(p("app"), model, "appends")
    assert os.stat(p("app")).st_size == len(model)


@check
def truncate_extend_and_shrink():
    model = bytearray(rnd(5 * BS + 123))
    with open(p("trunc"), "wb") as f:
        f.write(model)
    os.truncate(p("trunc"), 9 * BS + 5)          # extend: zeros
    model.extend(b"\0" * (9 * BS + 5 - len(model)))
    expect(p("trunc"), model, "extending truncate")
    os.truncate(p("trunc"), 2 * BS + 77)         # shrink to mid-block
    del model[2 * BS + 77:]
    expect(p("trunc"), model, "shrinking truncate")
    os.truncate(p("trunc"), 4 * BS)              # extend again: the cut-off tail must read as zeros
    model.extend(b"\0" * (4 * BS - len(model)))
    expect(p("trunc"), model, "re-extended after shrink")
    with open(p("trunc"), "r+b") as f:           # O_TRUNC path
        pass
    fd = os.open(p("trunc"), os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    expect(p("trunc"), b"", "O_TRUNC")


@check
def holes_and_seek_data_hole():
    size = 4 << 20
    a, b = rnd(BS), rnd(2 * BS)
    fd = os.open(p("sparse"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, a, 0)
        os.pwrite(fd, b, 1 << 20)
        os.fsync(fd)
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        assert os.lseek(fd, 0, os.SEEK_HOLE) == BS, os.lseek(fd, 0, os.SEEK_HOLE)
        assert os.lseek(fd, BS, os.SEEK_DATA) == 1 << 20
        assert os.lseek(fd, 1 << 20, os.SEEK_HOLE) == (1 << 20) + 2 * BS
        assert os.lseek(fd, (1 << 20) + 2 * BS, os.SEEK_HOLE) == (1 << 20) + 2 * BS
        try:
            os.lseek(fd, (1 << 20) + 2 * BS, os.SEEK_DATA)
            raise AssertionError("SEEK_DATA past the last data did not fail with ENXIO")
        except OSError as e:
            assert e.errno == errno.ENXIO, e
    finally:
        os.close(fd)
    model = bytearray(size)
    model[0:BS] = a
    model[1 << 20:(1 << 20) + 2 * BS] = b
    expect(p("sparse"), model, "sparse file")
    expect(p("sparse"), model, "sparse file, direct", direct=True)


@check
def seek_data_before_writeback():
    # Data still in the page cache (no fsync): SEEK_DATA must find it, as on ext4/xfs.
    fd = os.open(p("sparse2"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 1 << 20)
        os.pwrite(fd, rnd(BS), 512 << 10)
        got = os.lseek(fd, 0, os.SEEK_DATA)
        assert got == 512 << 10, f"SEEK_DATA found {got}, expected {512 << 10} (dirty page-cache data)"
    finally:
        os.close(fd)


@check
def fallocate_and_punch_hole():
    model = bytearray(rnd(8 * BS))
    with open(p("falloc"), "wb") as f:
        f.write(model)
        os.fsync(f.fileno())
    fd = os.open(p("falloc"), os.O_RDWR)
    try:
        fallocate(fd, 0, 8 * BS, 4 * BS)                       # extend with preallocated zeros
        model.extend(b"\0" * 4 * BS)
        assert os.fstat(fd).st_size == 12 * BS
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 12 * BS, 4 * BS)    # beyond EOF, size kept
        assert os.fstat(fd).st_size == 12 * BS
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * BS, 3 * BS)   # block-aligned punch
        model[2 * BS:5 * BS] = b"\0" * 3 * BS
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 6 * BS + 100, 1000)  # inside a block
        model[6 * BS + 100:6 * BS + 1100] = b"\0" * 1000
        os.fsync(fd)
        assert os.lseek(fd, 2 * BS, os.SEEK_HOLE) == 2 * BS
        assert os.lseek(fd, 2 * BS, os.SEEK_DATA) == 5 * BS
    finally:
        os.close(fd)
    expect(p("falloc"), model, "fallocate + punch hole")
    # punch over dirty page cache (no fsync before)
    fd = os.open(p("falloc"), os.O_RDWR)
    try:
        b = rnd(2 * BS)
        os.pwrite(fd, b, 8 * BS)
        model[8 * BS:10 * BS] = b
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 9 * BS, BS)
        model[9 * BS:10 * BS] = b"\0" * BS
    finally:
        os.close(fd)
    expect(p("falloc"), model, "punch over dirty pages")


@check
def mmap_read_write_msync():
    n = 16 * BS + 300
    model = bytearray(rnd(n))
    with open(p("mm"), "wb") as f:
        f.write(model)
        os.fsync(f.fileno())
    drop_caches()
    fd = os.open(p("mm"), os.O_RDWR)
    try:
        m = mmap.mmap(fd, n)
        assert m[:] == model, "mmap read differs"
        for off in [0, BS - 1, 5 * BS + 17, 16 * BS + 299]:
            b = rnd(1)
            m[off:off + 1] = b
            model[off:off + 1] = b
        m[7 * BS:9 * BS] = bytes(model[7 * BS:9 * BS][::-1])
        model[7 * BS:9 * BS] = model[7 * BS:9 * BS][::-1]
        m.flush()    # msync(MS_SYNC)
        m.close()
    finally:
        os.close(fd)
    expect(p("mm"), model, "mmap writes after msync")
    # mmap write into a hole of a sparse file
    fd = os.open(p("mm2"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 8 * BS)
        m = mmap.mmap(fd, 8 * BS)
        m[3 * BS:3 * BS + 5] = b"hello"
        m.flush()
        m.close()
    finally:
        os.close(fd)
    model = bytearray(8 * BS)
    model[3 * BS:3 * BS + 5] = b"hello"
    expect(p("mm2"), model, "mmap write into a hole")


@check
def fsync_and_syncfs():
    data = rnd(300000)
    fd = os.open(p("sync"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        syncfs(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    expect(p("sync"), data, "after syncfs")


@check
def copy_file_range_shares_blocks():
    n = 4 << 20
    data = rnd(n)
    with open(p("cfr_src"), "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    syncfs_fd = os.open(M, os.O_RDONLY)
    syncfs(syncfs_fd)
    before = free_blocks()
    fi = os.open(p("cfr_src"), os.O_RDONLY)
    fo = os.open(p("cfr_dst"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        done = 0
        while done < n:
            c = os.copy_file_range(fi, fo, n - done, done, done)
            assert c > 0, "copy_file_range copied nothing"
            done += c
        os.fsync(fo)
    finally:
        os.close(fi)
        os.close(fo)
    syncfs(syncfs_fd)
    used = before - free_blocks()
    assert used < (n // BS) // 4, f"copy_file_range of {n // BS} blocks used {used} new blocks: not shared"
    expect(p("cfr_dst"), data, "copy")
    # overwrite the copy: the source keeps its bytes
    dst = bytearray(data)
    with open(p("cfr_dst"), "r+b") as f:
        f.seek(BS + 5)
        b = rnd(3 * BS)
        f.write(b)
        dst[BS + 5:4 * BS + 5] = b
        os.fsync(f.fileno())
    os.close(syncfs_fd)
    expect(p("cfr_dst"), dst, "copy after overwrite")
    expect(p("cfr_src"), data, "source after the copy was overwritten")


@check
def copy_file_range_of_unsynced_data():
    # The source's new bytes are still in the page cache (no fsync) when the copy is asked for.
    data = rnd(64 * BS)
    with open(p("cfr2_src"), "wb") as f:
        f.write(data)
    fi = os.open(p("cfr2_src"), os.O_RDONLY)
    fo = os.open(p("cfr2_dst"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        done = 0
        while done < len(data):
            c = os.copy_file_range(fi, fo, len(data) - done, done, done)
            assert c > 0
            done += c
    finally:
        os.close(fi)
        os.close(fo)
    expect(p("cfr2_dst"), data, "copy of unsynced source")


@check
def snapshots_of_open_files_being_written():
    v1 = bytearray(rnd(10 * BS + 7))
    fd = os.open(p("snapf"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, v1)
        os.fsync(fd)
        os.mkdir(p(".snapshots/s1"))                 # taken while the file is open
        v2 = bytearray(v1)
        b = rnd(3 * BS)
        os.pwrite(fd, b, 2 * BS + 1)                 # written after the snapshot, file still open
        v2[2 * BS + 1:5 * BS + 1] = b
        os.pwrite(fd, b"tail", len(v2))
        v2 += b"tail"
        m = mmap.mmap(fd, len(v2))
        m[0:3] = b"MMP"
        v2[0:3] = b"MMP"
        m.flush()
        m.close()
        os.fsync(fd)
        os.mkdir(p(".snapshots/s2"))
        os.pwrite(fd, rnd(BS), 0)                    # dirty data not synced when the next snapshot is taken
        os.fsync(fd)
    finally:
        os.close(fd)
    expect(p(".snapshots/s1/snapf"), v1, "snapshot s1 (before the writes)")
    expect(p(".snapshots/s2/snapf"), v2, "snapshot s2 (after the writes)")
    # the snapshot's file read while the live file is written again
    fd = os.open(p("snapf"), os.O_WRONLY)
    try:
        os.pwrite(fd, rnd(5 * BS), 0)
        expect(p(".snapshots/s1/snapf"), v1, "s1 while the live file is dirty", cold=False)
    finally:
        os.close(fd)
    try:
        os.open(p(".snapshots/s1/snapf"), os.O_WRONLY)
        raise AssertionError("a snapshot file opened for writing")
    except OSError as e:
        assert e.errno in (errno.EROFS, errno.EACCES, errno.EPERM), e


@check
def frees_invalidate_cached_mappings_before_reuse():
    # File A's blocks are freed (truncate, punch, unlink) and committed; new files take the freed blocks;
    # A (kept open) and the survivors must read what they should, never the new files' bytes.
    syncfs_fd = os.open(M, os.O_RDONLY)
    a = rnd(512 * BS)
    keep = rnd(64 * BS)
    with open(p("fa"), "wb") as f:
        f.write(a)
        os.fsync(f.fileno())
    with open(p("fkeep"), "wb") as f:
        f.write(keep)
        os.fsync(f.fileno())
    fd = os.open(p("fa"), os.O_RDWR)
    try:
        assert os.pread(fd, 8 * BS, 0) == a[:8 * BS]    # the kernel has used the mappings
        os.ftruncate(fd, 100 * BS)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10 * BS, 20 * BS)
        os.unlink(p("fa"))
        syncfs(syncfs_fd)
        os.fsync(fd)
        news = []
        for i in range(4):
            b = rnd(128 * BS)
            with open(p(f"fnew{i}"), "wb") as f:
                f.write(b)
                os.fsync(f.fileno())
            news.append(b)
        syncfs(syncfs_fd)
        model = bytearray(a[:100 * BS])
        model[10 * BS:30 * BS] = b"\0" * 20 * BS
        got = os.pread(fd, 100 * BS + 10, 0)
        assert got == bytes(model), "the open, unlinked, truncated file reads wrong bytes (stale mapping?)"
        drop_caches()
        got = os.pread(fd, 100 * BS + 10, 0)
        assert got == bytes(model), "the open, unlinked, truncated file reads wrong bytes after drop_caches"
    finally:
        os.close(fd)
    for i, b in enumerate(news):
        expect(p(f"fnew{i}"), b, f"new file {i}")
    expect(p("fkeep"), keep, "untouched file")
    os.close(syncfs_fd)


print(f"@@CHECKS pass={sum(results)} fail={len(results) - sum(results)}@@", flush=True)
sys.exit(0 if all(results) else 1)
