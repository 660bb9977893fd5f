#!/usr/bin/env bash
# Space maps at scale (issue 23, points 1 and 6): a pool of two 64 TiB sparse image files on an XFS scratch
# filesystem on a loop device (ext4 caps a file at 16 TiB). Reports mkfs and mount time, the mount server's RSS as
# GiB are written through the mount in 1 MiB writes (dd), snapshot create, the offline open (cow df) and cow fsck
# (wall time and peak RSS). The peer is the same dd straight into a file of the same XFS, run in this script: the
# ratio is Cow's write rate over it. One run; seconds, MiB. Root.
# usage: sudo bash bench/scale-space.sh [GIB] [STEP]   (default 32 GiB written, RSS every 8 GiB)
#   COW_BENCH_DIR=/some/dir: where the XFS image lives (default /var/tmp; it needs GIB + 4 GiB free)
#   COW_BENCH_NO_FSCK=1: skip the fsck at the end.
#   COW_BENCH_PUNCH=1: after each step, the data blocks of both image files are punched out (every block but the first of
#     each segment: superblock and segment headers stay), and XFS is mounted with discard, so that a TiB can be written
#     on a small disk. The data written is zeros, which a hole reads back as: reads, checksums and fsck see the same bytes.
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
  mountpoint -q "$work/xfs" || rm -rf "$work"
}
trap cleanup EXIT
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); awk -v d=$((t1 - t0)) 'BEGIN { printf "%.2f", d / 1e9 }'; }
rss() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }

truncate -s $(( (gib + 4) ))G "$work/xfs.img"
mkfs.xfs -q "$work/xfs.img"
mkdir -p "$work/xfs" "$work/mnt"
mount -o loop${COW_BENCH_PUNCH:+,discard} "$work/xfs.img" "$work/xfs"
echo "# space maps at scale, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg); two 64 TiB sparse images on XFS; seconds, MiB"

mkfs=$(secs "${cow[@]}" mkfs "$work/xfs/pool" --base-size 64T --log-size 64T)
mnt=$(secs "${cow[@]}" mount "$work/xfs/pool" "$work/mnt")
pid=$(cat "$work/xfs/pool/cow.lock")
echo "mkfs ${mkfs} s; mount ${mnt} s; mount server RSS $(rss "$pid") MiB (empty)"

# The peer: the same writes straight into the XFS (at most 4 GiB of them: the disk may be small).
peergib=$(( step < 4 ? step : 4 ))
t=$(secs dd if=/dev/zero of="$work/xfs/peer" bs=1M count=$((peergib * 1024)) conv=fsync status=none)
rm -f "$work/xfs/peer"
peer=$(rate $((peergib << 30)) "$t")
# Punches every block but the first of each 4 MiB segment out of an image file (up to its last allocated byte).
punch() {
  python3 - "$1" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDWR)
seg, off, end = 4 << 20, 0, os.lseek(fd, 0, os.SEEK_END)
while True:
    try: off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError: break
    first = off - off % seg
    if libc.fallocate(fd, 3, first + 4096, seg - 4096) != 0: raise OSError(ctypes.get_errno(), "fallocate")
    off = first + seg
os.close(fd)
PY
}
printf "%-8s %10s %10s %8s\n" written MiB/s ratio rss
done=0
while [ "$done" -lt "$gib" ]; do
  t=$(secs dd if=/dev/zero of="$work/mnt/f$done" bs=1M count=$((step * 1024)) conv=fsync status=none)
  done=$((done + step))
  if [ -n "${COW_BENCH_PUNCH:-}" ]; then punch "$work/xfs/pool/log.img"; punch "$work/xfs/pool/base.img"; fi
  r=$(rate $((step << 30)) "$t")
  printf "%-8s %10s %10s %8s\n" "${done}G" "$r" "$(awk -v a="$r" -v b="$peer" 'BEGIN { printf "%.2f", a / b }')" "$(rss "$pid")"
done
# With punching, XFS (mounted with discard) still owes the discards of what was punched: they are paid by the next
# fsync of an image, which would be the snapshot's commit. A sync of the XFS first pays them, timed on its own.
xsync=""
if [ -n "${COW_BENCH_PUNCH:-}" ]; then xsync="; XFS sync after the punches $(secs sync -f "$work/xfs") s"; fi
snap=$(secs "${fast[@]}" snapshot create "$work/mnt" s1)
echo "peer (dd into XFS) ${peer} MiB/s${xsync}; snapshot create ${snap} s; RSS after $(rss "$pid") MiB"
"${cow[@]}" umount "$work/mnt" >/dev/null
open=$(secs "${cow[@]}" df "$work/xfs/pool")
if [ -n "${COW_BENCH_NO_FSCK:-}" ]; then
  echo "offline open (cow df) ${open} s; metadata $(du -sm "$work/xfs/pool/cow.db" | cut -f1) MiB; disk used by the XFS image $(du -sm "$work/xfs.img" | cut -f1) MiB"
  exit 0
fi
/usr/bin/time -f "%e %M" -o "$work/fsck.time" "${cow[@]}" fsck "$work/xfs/pool" > "$work/fsck.out" || true
read -r fsck fsckk < "$work/fsck.time"
echo "offline open (cow df) ${open} s; fsck ${fsck} s, peak RSS $((fsckk / 1024)) MiB: $(head -c 200 "$work/fsck.out" | head -1); metadata $(du -sm "$work/xfs/pool/cow.db" | cut -f1) MiB"
