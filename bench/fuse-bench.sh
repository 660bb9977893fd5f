#!/usr/bin/env bash
# fuse-bench.sh - the same fio and metadata jobs on a Cow mount and, in the same run, on the peers of
# ../shared/bench (a C FUSE passthrough over ext4 on a loop device, btrfs on a loop device, and the raw
# device and ext4 for reference), then one table of ratios against the C passthrough.
#
# usage: bench/fuse-bench.sh [-r RUNS] [-t SECONDS] [-s SIZE] [-P "PEERS"] [-o "COW MOUNT OPTIONS"] [-U] [OUTDIR]
#   RUNS     rounds; medians over the rounds are reported     (default 5). A round runs every job once on
#            every peer (peers.sh -r 1) and then on Cow (bench.sh -r 1; in even rounds Cow goes first), so
#            peers and Cow are measured minutes apart, not a whole peer series apart: these machines swing
#            between fast and slow spells, and the ratios must not depend on which side got which spell.
#   SECONDS  runtime of each time-based fio test             (default 10)
#   SIZE     test file size                                  (default 1G)
#   PEERS    peers.sh peer list (default "raw ext4 peer-fuse peer-fuse-wb btrfs")
#   -U       also run Cow over FUSE io_uring (column cow-uring): fuse.enable_uring is switched on for that
#            mount only and restored (needs Linux 6.14+; the C passthrough's libfuse 3.14 cannot use it)
#   OUTDIR   where summary.tsv / summary.md / raw output go (default /tmp/cow-fuse-bench); round-N.tsv
#            keeps each round's figures, summary.tsv their medians
# Needs root. Installs fio, jq, hyperfine, btrfs-progs, libfuse3-dev with apt-get if missing (peers.sh)
# and builds Cow (.ci/setup; then published with ReadyToRun, as the README installs it). Cow's pool
# lives on two 4 GiB loop devices (direct-io on), like the peers'.
# Cleans up everything it set up, also on failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${COW_SHARED:-$REPO/../shared}
RUNS=5 T=10 SIZE=1G PEERS="raw ext4 peer-fuse peer-fuse-wb btrfs" COWOPTS="" URING=0
while getopts "r:t:s:P:o:Uh" o; do
  case $o in r) RUNS=$OPTARG ;; t) T=$OPTARG ;; s) SIZE=$OPTARG ;; P) PEERS=$OPTARG ;; o) COWOPTS=$OPTARG ;; U) URING=1 ;; *) sed -n '2,21p' "$0"; exit 2 ;; esac
done
UPARAM=/sys/module/fuse/parameters/enable_uring
[ "$URING" = 0 ] || [ -w "$UPARAM" ] || { echo "fuse-bench.sh: -U needs $UPARAM (Linux 6.14+ with CONFIG_FUSE_IO_URING)" >&2; exit 2; }
UBEFORE=$(cat "$UPARAM" 2>/dev/null || echo N)
shift $((OPTIND - 1))
OUT=${1:-/tmp/cow-fuse-bench}
[ "$(id -u)" = 0 ] || { echo "fuse-bench.sh: run as root (loop devices, mounts, drop_caches)" >&2; exit 2; }
[ -x "$SHARED/bench/bench.sh" ] || { echo "fuse-bench.sh: $SHARED/bench/bench.sh not found (set COW_SHARED)" >&2; exit 2; }
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); rm -rf "$OUT/summary.tsv" "$OUT"/round-*.tsv "$OUT"/peers-*
bash "$REPO/.ci/setup" >/dev/null

W=$(mktemp -d /tmp/cow-fuse-bench.XXXXXX)
COW="dotnet $W/cow/cow.dll"
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
# Cow as the README installs it: published precompiled (ReadyToRun), so that the first minutes of a mount are
# not spent compiling the engine's and LiteDB's code beside the measured jobs.
case $(uname -m) in aarch64) RID=linux-arm64 ;; *) RID=linux-x64 ;; esac
dotnet publish "$REPO/Cow.Cli" -c Release -r "$RID" --self-contained false -p:PublishReadyToRun=true \
  -o "$W/cow" --verbosity quiet -nologo >/dev/null
mkdir -p "$W/mnt"
truncate -s 4G "$W/base.img" "$W/log.img"
L0=$(losetup --find --show --direct-io=on "$W/base.img")
L1=$(losetup --find --show --direct-io=on "$W/log.img")
mount_cow() {  # $1: 1 for FUSE over io_uring; the pool is made afresh (it then lives through every round)
  [ -w "$UPARAM" ] && { [ "$1" = 1 ] && echo 1 > "$UPARAM" || echo 0 > "$UPARAM"; }
  rm -rf "$W/pool"
  $COW mkfs "$W/pool" --base-device "$L0" --log-device "$L1" --force >/dev/null
  # shellcheck disable=SC2086
  $COW mount "$W/pool" "$W/mnt" $COWOPTS
  if [ "$1" = 1 ] && ! grep -q "FUSE over io_uring" "$W/pool/mount.log"; then
    echo "fuse-bench.sh: the cow-uring mount did not use io_uring (see $W/pool/mount.log)" >&2; exit 1
  fi
}
bench_cow() {  # $1 label, $2 description, $3 round: one run of every job on the mounted pool
  "$SHARED/bench/bench.sh" -l "$1" -d "$2" -r 1 -t "$T" -s "$SIZE" \
    -x "$OUT/round-$3.tsv" -o "$OUT/raw-$1-$3" \
    -S "$COW snapshot create $W/mnt s$3" -D "$COW snapshot delete $W/mnt s$3" "$W/mnt" > "$OUT/$1-$3.md"
}
peers() {  # $1 round
  "$SHARED/bench/peers.sh" -r 1 -t "$T" -s "$SIZE" -P "$PEERS" "$OUT/peers-$1" > "$OUT/peers-$1.md"
  cat "$OUT/peers-$1/summary.tsv" >> "$OUT/round-$1.tsv"
}
# Cow over FUSE io_uring (-U) needs its own mount: it runs its own series of rounds after the first.
variants="0"; [ "$URING" = 1 ] && variants="0 1"
for u in $variants; do
  label=cow; descr="Cow ($COWOPTS) on two loop devices (direct-io on)"
  [ "$u" = 1 ] && { label=cow-uring; descr="Cow ($COWOPTS) over FUSE io_uring on two loop devices (direct-io on)"; }
  mount_cow "$u"
  for r in $(seq "$RUNS"); do
    [ "$u" = 1 ] && { bench_cow "$label" "$descr" "u$r"; continue; }
    if [ $((r % 2)) = 0 ]; then bench_cow "$label" "$descr" "$r"; peers "$r"; else peers "$r"; bench_cow "$label" "$descr" "$r"; fi
  done
  $COW umount "$W/mnt"
done
# Medians over the rounds, per column and row ('-' where a round has no figure).
python3 - "$OUT"/round-*.tsv > "$OUT/summary.tsv" <<'PY'
import sys, statistics, collections
cells, order = collections.defaultdict(list), []
for fn in sys.argv[1:]:
    for line in open(fn):
        f = line.rstrip("\n").split("\t")
        if len(f) < 5: continue
        key = (f[0], f[1])
        if key not in cells: order.append(key)
        cells[key].append(f[2:5])
for key in order:
    out = []
    for i in range(3):
        xs = [float(v[i]) for v in cells[key] if v[i] not in ("-", "")]
        out.append(f"{statistics.median(xs):.1f}" if xs else "-")
    print("\t".join([*key, *out]))
PY
"$SHARED/bench/compare.sh" -b peer-fuse "$OUT/summary.tsv" | tee "$OUT/summary.md"
echo
echo "Per round (MB/s or IOPS or ops/s):"
for row in "seqwrite 1M buffered" "seqread 1M buffered" "seqwrite 1M direct" "randwrite after snapshot 4k direct"; do
  col=3; [[ $row == *" 4k "* ]] && col=4
  for label in peer-fuse btrfs cow cow-uring; do
    v=$(for f in "$OUT"/round-*.tsv; do awk -F'\t' -v l="$label" -v r="$row" -v c=$col '$1==l && $2==r {printf "%s ", $c}' "$f"; done)
    if [ -n "$v" ]; then echo "  $row, $label: $v"; fi
  done
done
