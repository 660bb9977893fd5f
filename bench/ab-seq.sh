#!/usr/bin/env bash
# ab-seq.sh - quick A/B of sequential 1 MiB buffered writes and reads: the C FUSE passthrough of
# ../shared/bench (over ext4 on a loop device) and a Cow mount (two loop devices), alternating in one
# script, with the server CPU seconds each test took. For trying a change between full fuse-bench.sh runs;
# compare only figures of one invocation.
#
# usage: bench/ab-seq.sh   (environment: RUNS=3 SIZE=1G RWS="write read" COWOPTS="cow mount options"
#                           FRAG=1: scatter the file with 8 s of random 4 KiB writes before each test)
# Needs root, fio, jq, gcc and libfuse3-dev (bench/fuse-bench.sh installs them through peers.sh).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${COW_SHARED:-$REPO/../shared}
RUNS=${RUNS:-3}; SIZE=${SIZE:-1G}; COWOPTS=${COWOPTS:-}
[ "$(id -u)" = 0 ] || { echo "ab-seq.sh: run as root" >&2; exit 2; }
COW="dotnet $REPO/Cow.Cli/bin/Release/net10.0/cow.dll"
[ -f "$REPO/Cow.Cli/bin/Release/net10.0/cow.dll" ] || bash "$REPO/.ci/setup" >/dev/null
PT=${TMPDIR:-/tmp}/cow-bench-tools/peer-passthrough
mkdir -p "$(dirname "$PT")"
[ -x "$PT" ] || gcc -O2 "$SHARED/bench/peer-passthrough.c" -o "$PT" $(pkg-config --cflags --libs fuse3) || exit 1
W=$(mktemp -d /tmp/cow-ab.XXXXXX); mkdir -p "$W/mnt" "$W/fuse" "$W/a"
L0="" L1="" L2=""
cleanup() {
  set +e
  mountpoint -q "$W/mnt" && $COW umount "$W/mnt"
  mountpoint -q "$W/fuse" && umount "$W/fuse"; sleep 0.5
  mountpoint -q "$W/a" && umount "$W/a"
  for l in $L0 $L1 $L2; do losetup -d "$l"; done
  rm -rf "$W"
}
trap cleanup EXIT
truncate -s 4G "$W/base.img" "$W/log.img" "$W/ext.img"
L0=$(losetup --find --show --direct-io=on "$W/base.img")
L1=$(losetup --find --show --direct-io=on "$W/log.img")
L2=$(losetup --find --show --direct-io=on "$W/ext.img")
mkfs.ext4 -q "$L2"; mount "$L2" "$W/a"; mkdir "$W/a/backing"
"$PT" "$W/a/backing" "$W/fuse" -o allow_other,default_permissions; sleep 1
PTPID=$(pgrep -n -f "$PT")
$COW mkfs "$W/pool" --base-device "$L0" --log-device "$L1" >/dev/null
# shellcheck disable=SC2086
$COW mount "$W/pool" "$W/mnt" $COWOPTS >/dev/null
CPID=$(tr -dc 0-9 < "$W/pool/cow.lock")
cpu() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }
one() {  # $1 label, $2 dir, $3 server pid, $4 write|read
  rm -f "$2/f"; sync; echo 3 > /proc/sys/vm/drop_caches
  if [ "${FRAG:-0}" = 1 ]; then
    fio --name=p --filename="$2/f" --size="$SIZE" --rw=write --bs=1M --end_fsync=1 >/dev/null
    fio --name=r --filename="$2/f" --size="$SIZE" --rw=randwrite --bs=4k --time_based --runtime=8 --end_fsync=1 >/dev/null
    sync; echo 3 > /proc/sys/vm/drop_caches
  fi
  if [ "$4" = read ]; then
    fio --name=p --filename="$2/f" --size="$SIZE" --rw=write --bs=1M --end_fsync=1 >/dev/null
    sync; echo 3 > /proc/sys/vm/drop_caches
  fi
  local c0 c1 bw
  c0=$(cpu "$3")
  bw=$(fio --name=t --filename="$2/f" --size="$SIZE" --rw="$4" --bs=1M --end_fsync=1 --output-format=json | jq ".jobs[0].$4.bw_bytes/1e6")
  c1=$(cpu "$3")
  printf "%-11s %-5s %8.0f MB/s  server cpu %.2f s\n" "$1" "$4" "$bw" "$(echo "$c1 - $c0" | bc)"
}
for r in $(seq "$RUNS"); do
  for rw in ${RWS:-write read}; do one passthrough "$W/fuse" "$PTPID" "$rw"; one cow "$W/mnt" "$CPID" "$rw"; done
done
