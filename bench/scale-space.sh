#!/usr/bin/env bash
# Space maps at scale (issue 23, points 1 and 6): a pool of two 64 TiB sparse image files on an XFS scratch
# filesystem on a loop device (ext4 caps a file at 16 TiB). Reports mkfs and mount time, the mount server's RSS as
# GiB are written through the mount in 1 MiB writes (dd), snapshot create, the offline open (cow df) and cow fsck
# (wall time and peak RSS). The peer is the same dd straight into a file of the same XFS, run in this script: the
# ratio is Cow's write rate over it. One run; seconds, MiB. Root.
# usage: sudo bash bench/scale-space.sh [GIB] [STEP]   (default 32 GiB written, RSS every 8 GiB)
#   COW_BENCH_DIR=/some/dir: where the XFS image lives (default /var/tmp; it needs GIB + 4 GiB free)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
gib=${1:-32}; step=${2:-8}
cow=(dotnet "$repo/Cow.Cli/bin/Release/net10.0/cow.dll")
fast=("$repo/Cow.Cli/bin/aot/cow"); [ -x "${fast[0]}" ] || fast=("${cow[@]}")
export COW_DOTNET=$(command -v dotnet) COW_DLL="$repo/Cow.Cli/bin/Release/net10.0/cow.dll"
command -v mkfs.xfs >/dev/null || { echo "scale-space: needs mkfs.xfs (apt install xfsprogs, or bash .ci/setup)" >&2; exit 1; }
work=$(mktemp -d "${COW_BENCH_DIR:-/var/tmp}/cow-space-XXXXXX")
cleanup() {
  "${cow[@]}" umount "$work/mnt" >/dev/null 2>&1 || true
  umount "$work/xfs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); awk -v d=$((t1 - t0)) 'BEGIN { printf "%.2f", d / 1e9 }'; }
rss() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }

truncate -s $(( (gib + 4) ))G "$work/xfs.img"
mkfs.xfs -q "$work/xfs.img"
mkdir -p "$work/xfs" "$work/mnt"
mount -o loop "$work/xfs.img" "$work/xfs"
echo "# space maps at scale, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg); two 64 TiB sparse images on XFS; seconds, MiB"

mkfs=$(secs "${cow[@]}" mkfs "$work/xfs/pool" --base-size 64T --log-size 64T)
mnt=$(secs "${cow[@]}" mount "$work/xfs/pool" "$work/mnt")
pid=$(cat "$work/xfs/pool/cow.lock")
echo "mkfs ${mkfs} s; mount ${mnt} s; mount server RSS $(rss "$pid") MiB (empty)"

# The peer: the same writes straight into the XFS.
t=$(secs dd if=/dev/zero of="$work/xfs/peer" bs=1M count=$((step * 1024)) conv=fsync status=none)
peer=$(rate $((step << 30)) "$t")
rm -f "$work/xfs/peer"
printf "%-8s %10s %10s %8s\n" written MiB/s ratio rss
done=0
while [ "$done" -lt "$gib" ]; do
  t=$(secs dd if=/dev/zero of="$work/mnt/f$done" bs=1M count=$((step * 1024)) conv=fsync status=none)
  done=$((done + step))
  r=$(rate $((step << 30)) "$t")
  printf "%-8s %10s %10s %8s\n" "${done}G" "$r" "$(awk -v a="$r" -v b="$peer" 'BEGIN { printf "%.2f", a / b }')" "$(rss "$pid")"
done
snap=$(secs "${fast[@]}" snapshot create "$work/mnt" s1)
echo "peer (dd into XFS) ${peer} MiB/s; snapshot create ${snap} s; RSS after $(rss "$pid") MiB"
"${cow[@]}" umount "$work/mnt" >/dev/null
open=$(secs "${cow[@]}" df "$work/xfs/pool")
/usr/bin/time -f "%e %M" -o "$work/fsck.time" "${cow[@]}" fsck "$work/xfs/pool" >/dev/null
read -r fsck fsckk < "$work/fsck.time"
echo "offline open (cow df) ${open} s; fsck ${fsck} s, peak RSS $((fsckk / 1024)) MiB; metadata $(du -sm "$work/xfs/pool/cow.db" | cut -f1) MiB"
