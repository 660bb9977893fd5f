#!/usr/bin/env bash
# The metadata job of ../shared/bench/bench.sh (mdbench: create, stat warm, unlink of N empty files in one directory)
# on ext4 and btrfs (2 GiB loop-mounted image files) and on a Cow mount, in one run, in interleaved rounds; medians
# and Cow's ratios. Root. usage: sudo bash bench/metadata.sh [FILES (10000)] [ROUNDS (3)]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$repo/../shared/bench" && pwd)
files=${1:-10000}; rounds=${2:-3}
cow=(dotnet "$repo/Cow.Cli/bin/Release/net10.0/cow.dll")
work=$(mktemp -d /var/tmp/cow-md-XXXXXX)
cleanup() {
  "${cow[@]}" umount "$work/cow" >/dev/null 2>&1 || true
  for fs in ext4 btrfs; do umount "$work/$fs" 2>/dev/null || true; done
  for l in $(losetup -j "$work/ext4.img" -O NAME -n) $(losetup -j "$work/btrfs.img" -O NAME -n); do losetup -d "$l" || true; done
  rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -o "$work/mdbench" "$shared/mdbench.c"
for fs in ext4 btrfs; do
  truncate -s 2G "$work/$fs.img"; mkdir -p "$work/$fs"
  dev=$(losetup -f --show "$work/$fs.img")
  if [ "$fs" = ext4 ]; then mkfs.ext4 -q "$dev"; else mkfs.btrfs -q "$dev"; fi
  mount "$dev" "$work/$fs"
done
mkdir -p "$work/cow"
"${cow[@]}" mkfs "$work/pool" --base-size 256M --log-size 1G >/dev/null
"${cow[@]}" mount "$work/pool" "$work/cow" >/dev/null
echo "# mdbench $files files, $rounds rounds, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores; ops/s"
for r in $(seq 1 "$rounds"); do
  for t in cow ext4 btrfs; do
    "$work/mdbench" "$work/$t" "$files" | awk -v t="$t" -v r="$r" '$1 == "create" || $1 == "stat" || $1 == "unlink" { print t, r, $1, $3 }'
  done
done > "$work/all"
python3 - "$work/all" <<'EOF'
import sys, statistics, collections
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, r, phase, ops = line.split(); v[(t, phase)].append(float(ops))
print(f"{'phase':8} {'cow':>10} {'ext4':>10} {'btrfs':>10} {'cow/ext4':>9} {'cow/btrfs':>9}")
for phase in ("create", "stat", "unlink"):
    m = {t: statistics.median(v[(t, phase)]) for t in ("cow", "ext4", "btrfs")}
    print(f"{phase:8} {m['cow']:10.0f} {m['ext4']:10.0f} {m['btrfs']:10.0f} {m['cow']/m['ext4']:9.2f} {m['cow']/m['btrfs']:9.2f}")
for t in ("cow", "ext4", "btrfs"):
    print(f"# {t} per round: " + "; ".join(f"{p} " + " ".join(f"{x:.0f}" for x in v[(t, p)]) for p in ("create", "stat", "unlink")))
EOF
