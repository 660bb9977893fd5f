#!/usr/bin/env bash
# Scale through a mount (issue 23, point 6, in part): for each file count, a fresh pool is mounted and filled with
# small files (4 KiB each, 100 per directory) by python3, then: the mount server's RSS, snapshot create (front end), 1,000 files
# changed, a second snapshot, snapshot diff of the two, snapshot list with sizes, snapshot delete, RSS again; then
# unmount and cow fsck (wall time and peak RSS). One run per count; times in seconds. Root.
# usage: sudo bash bench/scale-mount.sh [COUNT...]   (default: 10000 100000)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
counts=${*:-10000 100000}
cow=(dotnet "$repo/Cow.Cli/bin/Release/net10.0/cow.dll")
fast=("$repo/Cow.Cli/bin/aot/cow"); [ -x "${fast[0]}" ] || fast=("${cow[@]}")
export COW_DOTNET=$(command -v dotnet) COW_DLL="$repo/Cow.Cli/bin/Release/net10.0/cow.dll"
work=$(mktemp -d /var/tmp/cow-scale-XXXXXX)
trap '"${cow[@]}" umount "$work/mnt" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); awk -v d=$((t1 - t0)) 'BEGIN { printf "%.2f", d / 1e9 }'; }
rss() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
echo "# scale through a mount, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores; seconds, MiB"
printf "%-8s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n" files fill rss snap diff1k list delete rss2 fsck fsckMiB
for n in $counts; do
  rm -rf "$work/pool"; mkdir -p "$work/mnt"
  "${cow[@]}" mkfs "$work/pool" --base-size 1G --log-size 4G >/dev/null
  "${cow[@]}" mount "$work/pool" "$work/mnt" >/dev/null
  pid=$(cat "$work/pool/cow.lock")
  fill=$(secs python3 -c "
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
block = os.urandom(4096)
for d in range((n + 99) // 100):
    os.mkdir(f'{root}/d{d}')
    for i in range(min(100, n - d * 100)):
        fd = os.open(f'{root}/d{d}/f{i}', os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, block)
        os.close(fd)
" "$work/mnt" "$n")
  r1=$(rss "$pid")
  snap=$(secs "${fast[@]}" snapshot create "$work/mnt" s1)
  python3 -c "
import sys
root, n = sys.argv[1], int(sys.argv[2])
for k in range(1000):
    i = (k * 7919) % n
    with open(f'{root}/d{i // 100}/f{i % 100}', 'w') as f: f.write('changed')
" "$work/mnt" "$n"
  "${fast[@]}" snapshot create "$work/mnt" s2 >/dev/null
  diff=$(secs "${cow[@]}" snapshot diff "$work/mnt" s1 s2)
  list=$(secs "${fast[@]}" snapshot list "$work/mnt")
  del=$(secs "${fast[@]}" snapshot delete "$work/mnt" s1)
  r2=$(rss "$pid")
  "${cow[@]}" umount "$work/mnt" >/dev/null
  /usr/bin/time -f "%e %M" -o "$work/fsck.time" "${cow[@]}" fsck "$work/pool" >/dev/null
  read -r fsck fsckk < "$work/fsck.time"
  printf "%-8s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n" "$n" "$fill" "$r1" "$snap" "$diff" "$list" "$del" "$r2" "$fsck" "$((fsckk / 1024))"
done
