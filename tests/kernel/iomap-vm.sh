#!/bin/sh
# Runs INSIDE the vm-run.sh guest (../shared/kernel/vm-run.sh): Cow on a real fuse-iomap kernel, on the two
# virtio disks /dev/vda (base) and /dev/vdb (log). Prints result markers the kernel tier
# (tests/Cow.Tests/Kernel/IomapVmTests.cs) and people read:
#   @@STEP <name> rc=<rc>@@       one per step;   CHECK OK|FAIL <name>   from iomap_checks.py
#   @@DMESG-BAD <n>@@             guest dmesg lines with "bad data from server", WARNING, BUG, Oops, ...
#   @@IOMAP-VM rc=<rc>@@          last line: 0 when every step passed and dmesg is clean
# usage (inside): iomap-vm.sh [step ...]   steps: checks remount kill posix exerciser devices (default: checks remount)
#   (devices needs a third disk, /dev/vdc, larger than /dev/vdb)
# Env: COW = the cow command (e.g. "dotnet /path/Cow.Cli/bin/Release/net10.0/cow.dll"), REPO = the checkout,
#      COW_SEED (checks, exerciser), KILL_ROUNDS (default 3).
set -u
COW=${COW:?set COW to the cow command}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}
STEPS=${*:-checks remount}
POOL=/tmp/pool M=/mnt/cow LOG=/tmp/mount.log
FAILED=0
PY=/usr/bin/python3
mkdir -p $M
echo "== uname $(uname -r); fuse.enable_iomap=$(cat /sys/module/fuse/parameters/enable_iomap) debug_iomap=$(cat /sys/module/fuse/parameters/debug_iomap)"

step() { echo "@@STEP $1 rc=$2@@"; [ "$2" = 0 ] || FAILED=1; }

mounted() { grep -q " $M " /proc/mounts; }

do_mount() {   # do_mount [extra cow mount args]
  $COW mount -f --iomap on "$@" $POOL $M >>$LOG 2>&1 &
  MPID=$!
  i=0
  while [ $i -lt 240 ]; do mounted && break; kill -0 $MPID 2>/dev/null || break; sleep 0.25; i=$((i+1)); done
  if ! mounted; then echo "cow mount did not mount; log:"; tail -20 $LOG; return 1; fi
  # The mount is visible before the kernel's INIT is answered, and the grant is logged then: wait for it.
  i=0
  while [ $i -lt 80 ] && ! grep -q "fuse-iomap granted" $LOG; do sleep 0.25; i=$((i+1)); done
  grep -q "fuse-iomap granted" $LOG || { echo "fuse-iomap was not granted; log:"; tail -20 $LOG; return 1; }
  return 0
}

do_umount() {
  $COW umount $M >>$LOG 2>&1; rc=$?
  wait $MPID 2>/dev/null
  return $rc
}

# The tests of the posix and exerciser steps format the disks for pools of their own: a new pool after them.
remkfs_mount() { rm -rf $POOL; $COW mkfs $POOL --base-device /dev/vda --log-device /dev/vdb --force >/dev/null && do_mount; }

$COW mkfs $POOL --base-device /dev/vda --log-device /dev/vdb --force >/dev/null; step mkfs $?
do_mount; step mount $?
mounted || { echo "@@IOMAP-VM rc=1@@"; exit 1; }

for s in $STEPS; do
  case $s in
  checks)
    $PY "$HERE/iomap_checks.py" $M; step checks $?
    ;;
  remount)
    # What fsync'd survives an unmount and a fresh mount, byte for byte; then fsck.
    dd if=/dev/urandom of=/tmp/persist bs=64k count=20 2>/dev/null
    cp /tmp/persist $M/persist && sync -f $M/persist
    sum1=$(sha256sum < /tmp/persist)
    do_umount; r1=$?
    $COW fsck $POOL > /tmp/fsck.out 2>&1; r2=$?
    [ $r2 = 0 ] || head -20 /tmp/fsck.out
    do_mount; r3=$?
    echo 3 > /proc/sys/vm/drop_caches
    sum2=$(sha256sum < $M/persist)
    [ "$sum1" = "$sum2" ] && [ $r1 = 0 ] && [ $r2 = 0 ] && [ $r3 = 0 ]; step remount $?
    ;;
  kill)
    # SIGKILL the server with fsync'd and unsynced data in flight, clear the mount, mount again: every
    # fsync'd file reads back exactly; the pool passes fsck.
    # The kernel logs failed iomap requests and discarded pages while the server is dead: expected here,
    # so this step is bracketed in dmesg and such lines inside it are not counted below.
    echo "iomap-vm: kill step begins" > /dev/kmsg
    rounds=${KILL_ROUNDS:-3}; ok=0; r=1
    while [ $r -le $rounds ]; do
      mkdir -p $M/k
      dd if=/dev/urandom of=/tmp/k$r bs=64k count=$((8 + r)) 2>/dev/null
      cp /tmp/k$r $M/k/f$r && sync -f $M/k/f$r || echo "round $r: write/fsync failed"
      dd if=/dev/urandom of=$M/k/unsynced$r bs=64k count=16 2>/dev/null &   # in flight
      sleep 0.$r
      kill -9 $MPID; wait $MPID 2>/dev/null
      wait 2>/dev/null
      $COW umount $M >/dev/null 2>&1 || umount -l $M 2>/dev/null
      $COW fsck $POOL > /tmp/fsck.out 2>&1 || { echo "round $r: fsck failed"; head -20 /tmp/fsck.out; ok=1; }
      do_mount || { echo "round $r: remount failed"; ok=1; break; }
      i=1
      while [ $i -le $r ]; do
        cmp /tmp/k$i $M/k/f$i || { echo "round $r: fsync'd file f$i differs"; ok=1; }
        i=$((i+1))
      done
      echo "kill round $r done"
      r=$((r+1))
    done
    echo "iomap-vm: kill step ends" > /dev/kmsg
    step kill $ok
    ;;
  posix)
    # The project's POSIX suite against a Cow mount on these disks with --iomap on (MountedPool reads
    # COW_TEST_IOMAP / COW_TEST_IOMAP_DEVICES: every test formats the two disks and mounts them, so the test
    # classes run one after the other: two at once would format the same disks under each other).
    do_umount
    # --blame-hang names a case that hangs and kills the test host; no dump (--blame-hang-dump-type none): the
    # test host is also the FUSE server, and createdump stops its threads while a test thread waits in the kernel
    # for their answer, so the dump never finishes (a run sat in "[createdump] Gathering state" until vm-run's timeout).
    # Written straight to /scratch when it is shared: the host can follow the run while it goes.
    out=/tmp/posix.out; [ -d /scratch ] && out=/scratch/posix.out
    COW_TEST_IOMAP=on COW_TEST_IOMAP_DEVICES=/dev/vda,/dev/vdb dotnet test "$REPO/tests/Cow.Tests/bin/Release/net10.0/Cow.Tests.dll" \
      --filter "${POSIX_FILTER:-FullyQualifiedName~Cow.Tests.Mount.Posix|FullyQualifiedName~Cow.Tests.Posix.MountPosixCasesTests}" --logger "console;verbosity=normal" \
      --blame-hang --blame-hang-timeout "${POSIX_HANG:-300s}" --blame-hang-dump-type none -- xUnit.ParallelizeTestCollections=false > "$out" 2>&1
    rc=$?
    grep -E "^\s+(Passed|Failed|Skipped) |Total tests|Passed:|Failed:|Skipped:|Error Message|Assert" "$out" | head -80
    step posix $rc
    remkfs_mount
    ;;
  exerciser)
    # The random mount exerciser against a mount on these disks with --iomap on; its seed is printed (rerun:
    # COW_SEED=<seed>; with COW_SEED set it runs that seed with and without the writeback cache).
    do_umount
    seed=${COW_SEED:-$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')}
    echo "exerciser seed $seed ops ${COW_OPS:-600}"
    COW_SEED=$seed COW_OPS=${COW_OPS:-600} COW_TEST_IOMAP=on COW_TEST_IOMAP_DEVICES=/dev/vda,/dev/vdb dotnet test "$REPO/tests/Cow.Tests/bin/Release/net10.0/Cow.Tests.dll" \
      --filter "FullyQualifiedName~Cow.Tests.Mount.RandomMountExerciserTests.RandomOperationsMatchTheModel" --logger "console;verbosity=detailed" > /tmp/exerciser.out 2>&1
    rc=$?
    grep -E "COW_SEED|Passed|Failed|Skipped|Total|failed:" /tmp/exerciser.out | head -30
    [ -d /scratch ] && cp /tmp/exerciser.out /scratch/ 2>/dev/null
    step exerciser $rc
    remkfs_mount
    ;;
  devices)
    # cow device add on the mounted pool: the new disk (/dev/vdc, larger than the log) is registered with the kernel
    # (BACKING_OPEN) before any mapping names it, and files written after it land on it (the emptier log) through the
    # kernel's I/O. Then cow device remove of the original log (/dev/vdb), online: its blocks move to the others and
    # the kernel's cached mappings are invalidated before the old blocks go. Every file reads back the same (page
    # cache dropped), writes go on, fsck is clean after the unmount, and a fresh mount reads everything again.
    [ -b /dev/vdc ] || { echo "devices: no /dev/vdc (a third disk is needed)"; step devices 2; continue; }
    ok=0
    chk() { [ "$1" = 0 ] || { echo "devices: $2 failed"; ok=1; }; }
    cmpall() { echo 3 > /proc/sys/vm/drop_caches; for f in $1; do cmp /tmp/$f $M/$f || { echo "devices: $f differs ($2)"; ok=1; }; done; }
    dd if=/dev/urandom of=/tmp/d0 bs=1M count=8 2>/dev/null
    cp /tmp/d0 $M/d0 && sync -f $M/d0; chk $? "write d0"
    $COW device add $M /dev/vdc --role log > /tmp/dev.out 2>&1; chk $? "cow device add"; cat /tmp/dev.out
    grep -q "joined the pool" $LOG; chk $? "registration of the added device with the kernel"
    dd if=/dev/urandom of=/tmp/d1 bs=1M count=24 2>/dev/null
    cp /tmp/d1 $M/d1 && sync -f $M/d1; chk $? "write d1"
    $COW device list $M --json > /tmp/devlist.json 2>&1; chk $? "cow device list"
    $PY -c 'import json,sys; d=[x for x in json.load(open("/tmp/devlist.json")) if x["cookie"]==3]; sys.exit(0 if d and d[0]["used_bytes"]>0 else 1)'; chk $? "writes landing on the added device"
    cmpall "d0 d1" "after the add"
    $COW device remove $M 2 > /tmp/dev.out 2>&1; chk $? "cow device remove of the log"; cat /tmp/dev.out
    cmpall "d0 d1" "after the removal"
    dd if=/dev/urandom of=/tmp/d2 bs=1M count=8 2>/dev/null
    cp /tmp/d2 $M/d2 && sync -f $M/d2; chk $? "write d2 after the removal"
    cmpall "d0 d1 d2" "after writing on"
    do_umount; chk $? "unmount"
    $COW fsck $POOL > /tmp/fsck.out 2>&1; r=$?; [ $r = 0 ] || head -20 /tmp/fsck.out; chk $r "fsck"
    do_mount; chk $? "mount again"
    cmpall "d0 d1 d2" "after a fresh mount"
    $COW device list $M; grep -E "device|joined|registered|keeps" $LOG | tail -8
    step devices $ok
    ;;
  *) echo "unknown step $s"; step "$s" 2;;
  esac
done

mounted && { do_umount; step umount $?; }
echo "== mount log (iomap lines, errors)"
grep -E "iomap|IOMAP|error|Error|refused|rules" $LOG | tail -30
echo "== dmesg"
dmesg | grep -i -E "fuse|iomap" | grep -v "Command line" | tail -20
# Always bad: a rejected reply, a warning, a bug, an oops. Bad outside the kill step: iomap request errors
# other than ENOSYS (-38: Cow asks the kernel to redo an unaligned direct write buffered) and page discards.
dmesg | awk '
  /iomap-vm: kill step begins/ { k = 1 } /iomap-vm: kill step ends/ { k = 0 }
  /bad data from server|Bad mapping|WARNING|BUG|Oops|Call Trace|RIP:/ { print; next }
  !k && (/page discard/ || (/fuse iomap: .* error -/ && !/error -38$/)) { print }' > /tmp/dmesg-bad
BAD=$(wc -l < /tmp/dmesg-bad)
head -20 /tmp/dmesg-bad
echo "@@DMESG-BAD $BAD@@"
[ "$BAD" = 0 ] || FAILED=1
echo "@@IOMAP-VM rc=$FAILED@@"
exit $FAILED
