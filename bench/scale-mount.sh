#!/usr/bin/env bash
# Scale through a mount (issue 23, point 6): for each file count, a fresh pool is mounted and filled with small files
# (4 KiB each, 100 per directory) by python3; then a timeline of snapshots (default 1,000), each after 10 files
# changed, taken with the front end as a timer would; then 1,000 files changed and one more snapshot, `snapshot diff`
# of the last two (1,000 changes), `snapshot list` with sizes, `snapshot delete` of a snapshot in the middle; the
# mount server's RSS after that; unmount, `cow fsck` of the whole pool (wall time and peak RSS), mount again; then
# every file deleted (`rm -rf`) and every snapshot deleted, oldest first (the time of all, and of the last, which alone
# held every file: `--wait`, until the mount's background purge of its records ends); the server's peak RSS (VmHWM) over
# that mount's life. One run per count; times in seconds
# (snapshot create: milliseconds). Root.
# usage: sudo bash bench/scale-mount.sh [COUNT...]   (default: 10000 100000 1000000)
#        COW_SCALE_SNAPSHOTS=N  snapshots in the timeline (default 1000)
#        COW_SCALE_DELETE_MAX=N the largest count whose files and snapshots are all deleted (default 100000: after the
#                               remount every unlink reads its inode and extent map from the store, so a million takes
#                               about ten minutes); above it those columns show "-"
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
counts=${*:-10000 100000 1000000}
snaps=${COW_SCALE_SNAPSHOTS:-1000}
delete_max=${COW_SCALE_DELETE_MAX:-100000}
cow=(dotnet "$repo/Cow.Cli/bin/Release/net10.0/cow.dll")
fast=("$repo/Cow.Cli/bin/aot/cow"); [ -x "${fast[0]}" ] || fast=("${cow[@]}")
export COW_DOTNET=$(command -v dotnet) COW_DLL="$repo/Cow.Cli/bin/Release/net10.0/cow.dll"
work=$(mktemp -d /var/tmp/cow-scale-XXXXXX)
# On a failure the mount server's log (mount.log in the pool folder) is kept and its end shown: the pool goes with $work.
finish() {
  local rc=$?
  "${cow[@]}" umount "$work/mnt" >/dev/null 2>&1 || true
  if [ "$rc" -ne 0 ] && [ -f "$work/pool/mount.log" ]; then
    local kept; kept=/var/tmp/cow-scale-failed-$(date +%Y%m%d-%H%M%S).log
    cp "$work/pool/mount.log" "$kept"
    echo "scale-mount: failed (exit $rc); the mount server's log is kept in $kept; its end:" >&2
    tail -n 40 "$kept" >&2
  fi
  rm -rf "$work"
}
trap finish EXIT
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); awk -v d=$((t1 - t0)) 'BEGIN { printf "%.2f", d / 1e9 }'; }
mib() { awk -v k="$2" '$1 == k ":" { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
echo "# scale through a mount, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, $snaps snapshots; seconds, MiB, snapshot create in ms"
printf "%-8s %7s %6s %9s %9s %7s %6s %7s %6s %7s %8s %7s %6s %7s %7s\n" files fill rss snapMed snapMax diff1k list delete rss2 rmAll delAll delLast peak fsck fsckMiB
for n in $counts; do
  rm -rf "$work/pool"; mkdir -p "$work/mnt"
  "${cow[@]}" mkfs "$work/pool" --base-size 1G --log-size 8G >/dev/null
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
  r1=$(mib "$pid" VmRSS)
  # The timeline: 10 files changed, then a snapshot, $snaps times; create latencies (ms), median and maximum.
  read -r smed smax < <(python3 -c "
import subprocess, sys, time, statistics
root, n, count, fast = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
ms = []
for s in range(count):
    for k in range(10):
        i = (s * 10 + k) * 7907 % n
        with open(f'{root}/d{i // 100}/f{i % 100}', 'w') as f: f.write(f'timeline {s}')
    t = time.perf_counter()
    subprocess.run(fast + ['snapshot', 'create', root, f's{s + 1}'], check=True, stdout=subprocess.DEVNULL)
    ms.append((time.perf_counter() - t) * 1000)
print(f'{statistics.median(ms):.1f} {max(ms):.1f}')
" "$work/mnt" "$n" "$snaps" "${fast[@]}")
  python3 -c "
import sys
root, n = sys.argv[1], int(sys.argv[2])
for k in range(1000):
    i = (k * 7919) % n
    with open(f'{root}/d{i // 100}/f{i % 100}', 'w') as f: f.write('changed')
" "$work/mnt" "$n"
  "${fast[@]}" snapshot create "$work/mnt" last >/dev/null
  diff=$(secs "${cow[@]}" snapshot diff "$work/mnt" "s$snaps" last)
  list=$(secs "${fast[@]}" snapshot list "$work/mnt")
  del=$(secs "${fast[@]}" snapshot delete "$work/mnt" "s$(( (snaps + 1) / 2 ))")
  r2=$(mib "$pid" VmRSS); peak1=$(mib "$pid" VmHWM)
  "${cow[@]}" umount "$work/mnt" >/dev/null
  /usr/bin/time -f "%e %M" -o "$work/fsck.time" "${cow[@]}" fsck "$work/pool" >/dev/null
  read -r fsck fsckk < "$work/fsck.time"
  "${cow[@]}" mount "$work/pool" "$work/mnt" >/dev/null
  pid=$(cat "$work/pool/cow.lock")
  rmall=-; delall=-; dellast=-
  if [ "$n" -le "$delete_max" ]; then
    rmall=$(secs rm -rf "$work"/mnt/d*)
    t0=$(date +%s%N)
    "${fast[@]}" snapshot list "$work/mnt" --json | python3 -c "import json, sys; print('\n'.join(s['name'] for s in json.load(sys.stdin)))" > "$work/snaps"
    last=$(tail -1 "$work/snaps"); head -n -1 "$work/snaps" | while read -r s; do "${fast[@]}" snapshot delete "$work/mnt" "$s" >/dev/null; done
    dellast=$(secs "${fast[@]}" snapshot delete --wait "$work/mnt" "$last")
    delall=$(awk -v d=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.2f", d / 1e9 }')
  fi
  peak=$(( $(mib "$pid" VmHWM) > peak1 ? $(mib "$pid" VmHWM) : peak1 ))
  "${cow[@]}" umount "$work/mnt" >/dev/null
  printf "%-8s %7s %6s %9s %9s %7s %6s %7s %6s %7s %8s %7s %6s %7s %7s\n" "$n" "$fill" "$r1" "$smed" "$smax" "$diff" "$list" "$del" "$r2" "$rmall" "$delall" "$dellast" "$peak" "$fsck" "$((fsckk / 1024))"
done
