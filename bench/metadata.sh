#!/usr/bin/env bash
# The metadata job of ../shared/bench/bench.sh (mdbench: create, stat warm, unlink of N empty files in one directory)
# on ext4 and btrfs (2 GiB loop-mounted image files) and on a Cow mount, in one run, in interleaved rounds; medians
# and Cow's ratios. Root. usage: sudo bash bench/metadata.sh [FILES (10000)] [ROUNDS (3)]
#        COW_MOUNT_ARGS="..."  options for cow mount (e.g. "--cache-size 256M"); COW_BASELINE_MOUNT_ARGS: the base's
#        COW_BASELINE=DIR      also a Cow mount of another checkout's Release build (e.g. a git worktree of an older
#                              commit, built with `dotnet build cow.sln -c Release`): a "base" column and cow/base
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$repo/../shared/bench" && pwd)
files=${1:-10000}; rounds=${2:-3}
cow=(dotnet "$repo/Cow.Cli/bin/Release/net10.0/cow.dll")
base=()
if [ -n "${COW_BASELINE:-}" ]; then
  base=(dotnet "$(cd "$COW_BASELINE" && pwd)/Cow.Cli/bin/Release/net10.0/cow.dll")
  [ -f "${base[1]}" ] || { echo "metadata.sh: no build at ${base[1]} (dotnet build cow.sln -c Release there first)" >&2; exit 2; }
fi
work=$(mktemp -d /var/tmp/cow-md-XXXXXX)
cleanup() {
  "${cow[@]}" umount "$work/cow" >/dev/null 2>&1 || true
  [ ${#base[@]} -eq 0 ] || "${base[@]}" umount "$work/base" >/dev/null 2>&1 || true
  for fs in ext4 btrfs; do umount "$work/$fs" 2>/dev/null || true; done
  for l in $(losetup -j "$work/ext4.img" -O NAME -n) $(losetup -j "$work/btrfs.img" -O NAME -n); do losetup -d "$l" || true; done
  rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -o "$work/mdbench" "$shared/mdbench.c"
for fs in ext4 btrfs; do
  truncate -s 2G "$work/$fs.img"; mkdir -p "$work/$fs"
  dev=$(losetup -f --show "$work/$fs.img")
  if [ "$fs" = ext4 ]; then mkfs.ext4 -q "$dev"; else mkfs.btrfs -q "$dev" >/dev/null; fi
  mount "$dev" "$work/$fs"
done
targets="cow ext4 btrfs"
mkdir -p "$work/cow"
"${cow[@]}" mkfs "$work/pool" --base-size 256M --log-size 1G >/dev/null
# shellcheck disable=SC2086
"${cow[@]}" mount "$work/pool" "$work/cow" ${COW_MOUNT_ARGS:-} >/dev/null
if [ ${#base[@]} -gt 0 ]; then
  targets="cow base ext4 btrfs"
  mkdir -p "$work/base"
  "${base[@]}" mkfs "$work/basepool" --base-size 256M --log-size 1G >/dev/null
  # shellcheck disable=SC2086
  "${base[@]}" mount "$work/basepool" "$work/base" ${COW_BASELINE_MOUNT_ARGS:-} >/dev/null
fi
echo "# mdbench $files files, $rounds rounds, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores; ops/s; cow mount ${COW_MOUNT_ARGS:-(defaults)}${COW_BASELINE:+; base: $COW_BASELINE ($(git -C "$COW_BASELINE" rev-parse --short HEAD 2>/dev/null || echo '?'))}"
for r in $(seq 1 "$rounds"); do
  for t in $targets; do
    "$work/mdbench" "$work/$t" "$files" | awk -v t="$t" -v r="$r" '$1 == "create" || $1 == "stat" || $1 == "unlink" { print t, r, $1, $3 }'
  done
done > "$work/all"
python3 - "$work/all" $targets <<'PY'
import sys, statistics, collections
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, r, phase, ops = line.split(); v[(t, phase)].append(float(ops))
targets = sys.argv[2:]
ratios = [("cow", "ext4"), ("cow", "btrfs")] + ([("cow", "base")] if "base" in targets else [])
print(f"{'phase':8} " + " ".join(f"{t:>10}" for t in targets) + " " + " ".join(f"{a + '/' + b:>9}" for a, b in ratios))
for phase in ("create", "stat", "unlink"):
    m = {t: statistics.median(v[(t, phase)]) for t in targets}
    print(f"{phase:8} " + " ".join(f"{m[t]:10.0f}" for t in targets) + " " + " ".join(f"{m[a] / m[b]:9.2f}" for a, b in ratios))
for t in targets:
    print(f"# {t} per round: " + "; ".join(f"{p} " + " ".join(f"{x:.0f}" for x in v[(t, p)]) for p in ("create", "stat", "unlink")))
PY
