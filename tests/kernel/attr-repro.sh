#!/bin/sh
# Reproduces, INSIDE the vm-run.sh guest, what the 7.2.13 fuse-iomap kernel does with the attributes it caches
# for iomap inodes (docs/iomap.md, "Known limits"): the times of a SETATTR (utimensat) are not taken into the
# kernel's cached mtime although Cow stores and answers them (a fresh mount shows them), and st_blocks stays
# stale after a hole punch until the attribute timeout. Not a test: it prints what it sees.
#   ../shared/kernel/vm-run.sh --mkdisk /tmp/b.img:1G --mkdisk /tmp/l.img:2G -- \
#     env COW="dotnet $PWD/Cow.Cli/bin/Release/net10.0/cow.dll" sh $PWD/tests/kernel/attr-repro.sh
COW=${COW:?set COW to the cow command}
$COW mkfs /tmp/pp --base-device /dev/vda --log-device /dev/vdb --force >/dev/null
mkdir -p /mnt/p
mnt() { $COW mount -f --iomap on /tmp/pp /mnt/p > /tmp/pm.log 2>&1 & for i in $(seq 100); do grep -q " /mnt/p " /proc/mounts && break; sleep 0.2; done; }
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
umnt
