#!/usr/bin/env bash
# cow snapshot create on a mounted pool, end to end from the command line (issue 23, point 5): the fast front end
# (Cow.Cli/bin/aot/cow, Native AOT: what `cow` runs for socket verbs), the full program (dotnet cow.dll), and
# `btrfs subvolume snapshot` on a loop-mounted btrfs, in the same run. N rounds, medians in ms. Root; needs a built
# checkout (bash .ci/setup) and btrfs-progs.
# usage: sudo bash bench/cli-latency.sh [N=20]
set -euo pipefail
N=${1:-20}
repo=$(cd "$(dirname "$0")/.." && pwd)
aot=$repo/Cow.Cli/bin/aot/cow
full=(dotnet "$repo/Cow.Cli/bin/Release/net10.0/cow.dll")
[ -x "$aot" ] || { echo "no $aot: run bash .ci/setup (it builds the front end)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/cow-cli-XXXXXX)
cleanup() { "${full[@]}" umount "$work/mnt" >/dev/null 2>&1 || true; umount "$work/bt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/bt"
"${full[@]}" mkfs "$work/pool" --base-size 256M --log-size 1G >/dev/null
"${full[@]}" mount "$work/pool" "$work/mnt" >/dev/null
echo data > "$work/mnt/f"
truncate -s 1G "$work/btrfs.img"; mkfs.btrfs -q -f "$work/btrfs.img" >/dev/null; mount -o loop "$work/btrfs.img" "$work/bt"
btrfs -q subvolume create "$work/bt/vol" >/dev/null; echo data > "$work/bt/vol/f"

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }   # µs
median() { sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.1f", m / 1000}'; }
: > "$work/aot"; : > "$work/full"; : > "$work/btrfs"
for i in $(seq 1 "$N"); do   # interleaved, so that the machine's noise hits all three alike
  COW_DOTNET=$(command -v dotnet) COW_DLL="${full[1]}" ms "$aot" snapshot create "$work/mnt" "a$i" >> "$work/aot"
  ms "${full[@]}" snapshot create "$work/mnt" "f$i" >> "$work/full"
  ms btrfs -q subvolume snapshot "$work/bt/vol" "$work/bt/s$i" >> "$work/btrfs"
done
a=$(median < "$work/aot"); f=$(median < "$work/full"); b=$(median < "$work/btrfs")
echo "# cow snapshot create MNT NAME, end to end, median of $N ($(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores)"
echo "front end (Native AOT)    $a ms"
echo "full program (dotnet)     $f ms"
echo "btrfs subvolume snapshot  $b ms"
awk -v a="$a" -v f="$f" -v b="$b" 'BEGIN { printf "front end / btrfs %.2f; full / btrfs %.2f; front end / full %.2f\n", a / b, f / b, a / f }'
