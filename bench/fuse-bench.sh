#!/usr/bin/env bash
# fuse-bench.sh - the same fio and metadata jobs on a Cow mount and, in the same run, on the peers of
# ../shared/bench (a C FUSE passthrough over ext4 on a loop device, btrfs on a loop device, and the raw
# device and ext4 for reference), then one table of ratios against the C passthrough.
#
# usage: bench/fuse-bench.sh [-r RUNS] [-t SECONDS] [-s SIZE] [-P "PEERS"] [-o "COW MOUNT OPTIONS"] [-U] [OUTDIR]
#   RUNS     repetitions of every test, medians reported      (default 5)
#   SECONDS  runtime of each time-based fio test             (default 10)
#   SIZE     test file size                                  (default 1G)
#   PEERS    peers.sh peer list (default "raw ext4 peer-fuse peer-fuse-wb btrfs")
#   -U       also run Cow over FUSE io_uring (column cow-uring): fuse.enable_uring is switched on for that
#            mount only and restored (needs Linux 6.14+; the C passthrough's libfuse 3.14 cannot use it)
#   OUTDIR   where summary.tsv / summary.md / raw output go (default /tmp/cow-fuse-bench)
# Needs root. Installs fio, jq, hyperfine, btrfs-progs, libfuse3-dev with apt-get if missing (peers.sh)
# and builds Cow (.ci/setup). Cow's pool lives on two 4 GiB loop devices (direct-io on), like the peers'.
# Cleans up everything it set up, also on failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${COW_SHARED:-$REPO/../shared}
RUNS=5 T=10 SIZE=1G PEERS="raw ext4 peer-fuse peer-fuse-wb btrfs" COWOPTS="" URING=0
while getopts "r:t:s:P:o:Uh" o; do
  case $o in r) RUNS=$OPTARG ;; t) T=$OPTARG ;; s) SIZE=$OPTARG ;; P) PEERS=$OPTARG ;; o) COWOPTS=$OPTARG ;; U) URING=1 ;; *) sed -n '2,17p' "$0"; exit 2 ;; esac
done
UPARAM=/sys/module/fuse/parameters/enable_uring
[ "$URING" = 0 ] || [ -w "$UPARAM" ] || { echo "fuse-bench.sh: -U needs $UPARAM (Linux 6.14+ with CONFIG_FUSE_IO_URING)" >&2; exit 2; }
UBEFORE=$(cat "$UPARAM" 2>/dev/null || echo N)
shift $((OPTIND - 1))
OUT=${1:-/tmp/cow-fuse-bench}
[ "$(id -u)" = 0 ] || { echo "fuse-bench.sh: run as root (loop devices, mounts, drop_caches)" >&2; exit 2; }
[ -x "$SHARED/bench/bench.sh" ] || { echo "fuse-bench.sh: $SHARED/bench/bench.sh not found (set COW_SHARED)" >&2; exit 2; }
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); rm -f "$OUT/summary.tsv"
bash "$REPO/.ci/setup" >/dev/null
COW="dotnet $REPO/Cow.Cli/bin/Release/net10.0/cow.dll"

"$SHARED/bench/peers.sh" -r "$RUNS" -t "$T" -s "$SIZE" -P "$PEERS" "$OUT" > "$OUT/peers.md"

W=$(mktemp -d /tmp/cow-fuse-bench.XXXXXX)
L0="" L1=""
cleanup() {
  set +e
  [ -w "$UPARAM" ] && { [ "$UBEFORE" = Y ] && echo 1 > "$UPARAM" || echo 0 > "$UPARAM"; }
  mountpoint -q "$W/mnt" && { $COW umount "$W/mnt" || umount -l "$W/mnt"; }
  [ -n "$L0" ] && losetup -d "$L0"
  [ -n "$L1" ] && losetup -d "$L1"
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/mnt"
truncate -s 4G "$W/base.img" "$W/log.img"
L0=$(losetup --find --show --direct-io=on "$W/base.img")
L1=$(losetup --find --show --direct-io=on "$W/log.img")
bench_cow() {  # $1 label, $2 description; the pool is made afresh
  rm -rf "$W/pool"
  $COW mkfs "$W/pool" --base-device "$L0" --log-device "$L1" --force >/dev/null
  # shellcheck disable=SC2086
  $COW mount "$W/pool" "$W/mnt" $COWOPTS
  "$SHARED/bench/bench.sh" -l "$1" -d "$2" -r "$RUNS" -t "$T" -s "$SIZE" \
    -x "$OUT/summary.tsv" -o "$OUT/raw-$1" \
    -S "$COW snapshot create $W/mnt s\$RUN" -D "$COW snapshot delete $W/mnt s\$RUN" "$W/mnt" > "$OUT/$1.md"
  $COW umount "$W/mnt"
}
[ -w "$UPARAM" ] && echo 0 > "$UPARAM"
bench_cow cow "Cow ($COWOPTS) on two loop devices (direct-io on)"
if [ "$URING" = 1 ]; then
  echo 1 > "$UPARAM"
  bench_cow cow-uring "Cow ($COWOPTS) over FUSE io_uring on two loop devices (direct-io on)"
  grep -q "FUSE over io_uring" "$W/pool/mount.log" || { echo "fuse-bench.sh: the cow-uring mount did not use io_uring (see $W/pool/mount.log)" >&2; exit 1; }
fi
"$SHARED/bench/compare.sh" -b peer-fuse "$OUT/summary.tsv" | tee "$OUT/summary.md"
