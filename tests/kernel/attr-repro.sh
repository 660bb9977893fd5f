#!/bin/sh
# Reproduces, INSIDE the vm-run.sh guest, what the 7.2.13 fuse-iomap kernel does with the attributes it caches
# for iomap inodes (docs/iomap.md, "Known limits"): the times of a SETATTR (utimensat) are not taken into the
# kernel's cached mtime although Cow stores and answers them (a fresh mount shows them), and st_blocks stays
# stale after a hole punch until the attribute timeout, and a SETATTR (chmod) of a file with appended bytes not
# yet written back sets the kernel's size back to Cow's and drops those bytes. Not a test: it prints what it sees.
# WB=1 mounts with --writeback-cache (then the kernel keeps its own size and times in SETATTR). Cow now asks for
# the writeback cache whenever iomap is granted, so both settings show the WB=1 behaviour (docs/iomap.md).
#   ../shared/kernel/vm-run.sh --mkdisk /tmp/b.img:1G --mkdisk /tmp/l.img:2G -- \
#     env COW="dotnet $PWD/Cow.Cli/bin/Release/net10.0/cow.dll" sh $PWD/tests/kernel/attr-repro.sh
COW=${COW:?set COW to the cow command}
WBOPT=; [ "${WB:-0}" = 1 ] && WBOPT=--writeback-cache
$COW mkfs /tmp/pp --base-device /dev/vda --log-device /dev/vdb --force >/dev/null
mkdir -p /mnt/p
mnt() { $COW mount -f --iomap on $WBOPT /tmp/pp /mnt/p > /tmp/pm.log 2>&1 & for i in $(seq 100); do grep -q " /mnt/p " /proc/mounts && break; sleep 0.2; done; }
umnt() { cd /; $COW umount /mnt/p >/dev/null; wait; }
mnt; cd /mnt/p
echo "== utimensat on a file just written"
printf x > f
touch -m -d @1500000000.987654321 f; echo "stat after touch -m -d @1500000000.987654321: $(stat -c %.9Y f)"
sync -f f; echo "after sync -f: $(stat -c %.9Y f)"
umnt; mnt; cd /mnt/p
echo "after unmount and mount: $(stat -c %.9Y f)"
echo "== chmod: ctime"
printf x > h; sync -f h; a=$(stat -c %.9Z h); sleep 0.3; chmod 640 h; echo "ctime before chmod $a, after $(stat -c %.9Z h)"
echo "== st_blocks after a hole punch"
dd if=/dev/urandom of=g bs=1M count=1 conv=fsync 2>/dev/null; echo "st_blocks after 1 MiB + fsync: $(stat -c %b g)"
fallocate -p -o 262144 -l 524288 g; echo "right after punching 512 KiB: $(stat -c %b g)"; sleep 2; echo "2 s later: $(stat -c %b g)"
echo "== st_blocks of an open file after a buffered write, before writeback"
/usr/bin/python3 -c '
import os, time
fd = os.open("s", os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, b"x", 1 << 30)
print(f"st_blocks right after: {os.fstat(fd).st_blocks}", end="; ")
time.sleep(2); print(f"2 s later: {os.fstat(fd).st_blocks}", end="; ")
os.fsync(fd); print(f"after fsync: {os.fstat(fd).st_blocks}")
os.close(fd)'
echo "== fallocate inside the file (size unchanged): mtime"
a=$(stat -c %.9Y s); sleep 0.3; fallocate -o 0 -l 100 s; echo "mtime before $a, after $(stat -c %.9Y s)"
echo "== chmod of an open file with appended bytes not yet written back (closing would write them back)"
dd if=/dev/urandom of=a bs=1000 count=100 conv=fsync 2>/dev/null; cp a a2
for unlink in 0 1; do
  /usr/bin/python3 - $unlink <<'PY'
import os, sys
fd = os.open("a2", os.O_RDWR)
if sys.argv[1] == "1": os.unlink("a2")
os.pwrite(fd, b"y" * 5000, 100000)
print(f"unlinked={sys.argv[1]}: size after appending 5000 bytes to 100000: {os.fstat(fd).st_size}", end="; ")
os.fchmod(fd, 0o600); print(f"after fchmod: {os.fstat(fd).st_size}", end="; ")
os.fsync(fd); print(f"after fsync: {os.fstat(fd).st_size}; bytes at 100000: {len(os.pread(fd, 5000, 100000))}")
os.close(fd)
PY
  [ $unlink = 0 ] && cp a a3 && mv a3 a2
done
umnt
