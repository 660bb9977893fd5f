#!/bin/bash
# fuse-iomap against userspace I/O against the raw disk, in the fuse-iomap test VM (../shared/kernel/vm-run.sh):
# the same fio jobs (sequential 1 MiB and random 4 KiB, write then read, buffered and direct) on
#   raw    - a third virtio disk (/dev/vdc), no file system;
#   iomap  - a Cow mount with --iomap on (the kernel does the data I/O on /dev/vda + /dev/vdb);
#   user   - the same pool mounted with --iomap off (every byte through /dev/fuse).
# The VM runs under software emulation where KVM does not run guests: only the ratios mean anything.
# usage: bench/iomap-vm.sh [--rounds N] [--runtime S] [--size MiB]     (on the host, as root; prints a table)
#        bench/iomap-vm.sh --inner ...                                  (inside the VM; prints RESULT lines)
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROUNDS=3 RUNTIME=8 SIZE=256 INNER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2;; --runtime) RUNTIME=$2; shift 2;; --size) SIZE=$2; shift 2;;
    --inner) INNER=1; shift;;
    *) echo "usage: $0 [--rounds N] [--runtime S] [--size MiB]" >&2; exit 2;;
  esac
done

JOBS="seqwrite:write:1m seqread:read:1m randwrite:randwrite:4k randread:randread:4k"

if [ "$INNER" = 1 ]; then
  COW=${COW:?}
  POOL=/tmp/pool M=/mnt/cow
  mkdir -p $M
  fio_one() {   # fio_one TARGET NAME RW BS DIRECT FILE
    local target=$1 name=$2 rw=$3 bs=$4 direct=$5 file=$6
    sync; echo 3 > /proc/sys/vm/drop_caches
    local extra=""
    [ "$direct" = 0 ] && [[ $rw == *write* ]] && extra="--end_fsync=1"
    fio --name=$name --filename="$file" --rw=$rw --bs=$bs --direct=$direct --ioengine=psync --size=${SIZE}m \
        --runtime=$RUNTIME --time_based=1 $extra --output-format=json > /tmp/fio.json 2>/tmp/fio.err || { cat /tmp/fio.err; return 1; }
    python3 -c '
import json, sys
j = json.load(open("/tmp/fio.json"))["jobs"][0]
op = "write" if "write" in sys.argv[2] else "read"
print("RESULT", sys.argv[1], sys.argv[3], j[op]["bw"], round(j[op]["iops"]))' "$target" "$rw" "$name-$([ $direct = 1 ] && echo direct || echo buffered)"
  }
  run_target() {   # run_target TARGET FILE
    for d in 1 0; do
      for j in $JOBS; do IFS=: read -r name rw bs <<< "$j"; fio_one "$1" "$name" "$rw" "$bs" "$d" "$2"; done
    done
  }
  mount_cow() {
    $COW mount -f --iomap "$1" $POOL $M > /tmp/mount-$1.log 2>&1 &
    for _ in $(seq 200); do grep -q " $M " /proc/mounts && break; sleep 0.25; done
    grep -q " $M " /proc/mounts || { cat /tmp/mount-$1.log; exit 1; }
  }
  $COW mkfs $POOL --base-device /dev/vda --log-device /dev/vdb --force > /dev/null
  for r in $(seq "$ROUNDS"); do
    echo "== round $r"
    run_target raw /dev/vdc
    mount_cow on;  grep -q "fuse-iomap granted" /tmp/mount-on.log || { echo "iomap not granted"; exit 1; }
    run_target iomap $M/fio.dat; $COW umount $M > /dev/null; wait
    mount_cow off; run_target user $M/fio.dat; rm -f $M/fio.dat; $COW umount $M > /dev/null; wait
  done
  exit 0
fi

KDIR=${COW_KERNEL_DIR:-$REPO/../shared/kernel}
OUT=$(mktemp -d /tmp/cow-iomap-bench.XXXXXX)
echo "bench: VM with 3 disks, $ROUNDS rounds, fio ${RUNTIME}s per job, ${SIZE} MiB file; raw output in $OUT/vm.log" >&2
"$KDIR/vm-run.sh" --timeout 3600 --mkdisk "$OUT/base.img:2G" --mkdisk "$OUT/log.img:4G" --mkdisk "$OUT/raw.img:2G" -- \
  env COW="dotnet $REPO/Cow.Cli/bin/Release/net10.0/cow.dll" bash "$REPO/bench/iomap-vm.sh" --inner --rounds "$ROUNDS" --runtime "$RUNTIME" --size "$SIZE" \
  > "$OUT/vm.log" 2>&1 || { tail -30 "$OUT/vm.log"; exit 1; }
rm -f "$OUT"/*.img
# Medians over the rounds; ratios against the raw disk and iomap against userspace I/O.
python3 - "$OUT/vm.log" <<'PY'
import sys, statistics, collections
r = collections.defaultdict(list)
for line in open(sys.argv[1], errors="replace"):
    p = line.split()
    if len(p) == 5 and p[0] == "RESULT":
        r[(p[1], p[2])].append((int(p[3]), int(p[4])))
jobs = sorted({j for _, j in r}, key=lambda j: (j.endswith("buffered"), j))
print(f"{'job':26} {'raw MB/s':>9} {'iomap MB/s':>11} {'user MB/s':>10} {'iomap/raw':>10} {'user/raw':>9} {'iomap/user':>11}")
for j in jobs:
    med = {t: statistics.median(b for b, _ in r[(t, j)]) / 1024 for t in ("raw", "iomap", "user") if r[(t, j)]}
    if len(med) < 3: continue
    print(f"{j:26} {med['raw']:9.1f} {med['iomap']:11.1f} {med['user']:10.1f} {med['iomap']/med['raw']:10.2f} {med['user']/med['raw']:9.2f} {med['iomap']/med['user']:11.2f}")
PY
