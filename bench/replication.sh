#!/usr/bin/env bash
# Replication (issue 24, points 4 and 7): cow send and cow receive beside the pool's own sequential read and write, in
# the same run, and stream sizes beside what changed.
#  - rates: a file of SIZE MiB in a snapshot; per round (interleaved, medians): `cow cat` of it (the pool's sequential
#    read, one process, as `cow send` is one), `cow send` of the snapshot to /dev/null, `cow put` of the same bytes into
#    a fresh pool (its sequential write, fsync included) and `cow receive` of the stream into a fresh pool (the stream
#    and the put's source in /dev/shm, so neither is read from disk);
#  - incremental: 1 % of the file's blocks rewritten at random (through a mount), the stream from the first snapshot;
#  - small files: FILES files of 4 KiB (100 per directory), then 1,000 of them rewritten: full and incremental streams;
#  - sparse: a 10 GiB file holding 10 MiB of data in 10 places.
# Every received snapshot is compared with the sent one (a digest of the file, or of every path's listing below the
# snapshot root, whose own inode number under .snapshots is the receiving pool's generation).
# usage: sudo bash bench/replication.sh [SIZE_MIB] [FILES] [ROUNDS]   (default 4096 100000 3)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
size=${1:-4096}; files=${2:-100000}; rounds=${3:-3}
cow=(dotnet "$repo/Cow.Cli/bin/Release/net10.0/cow.dll")
work=$(mktemp -d /var/tmp/cow-repl-XXXXXX)
shm=$(mktemp -d /dev/shm/cow-repl-XXXXXX)
trap 'for m in "$work"/m*; do "${cow[@]}" umount "$m" >/dev/null 2>&1 || true; done; rm -rf "$work" "$shm"' EXIT
logsize=$(( size * 3 / 1024 + 4 ))G
secs() { local t0 t1; t0=$(date +%s%N); "$@"; t1=$(date +%s%N); awk -v d=$((t1 - t0)) 'BEGIN { printf "%.3f", d / 1e9 }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mkpool() { rm -rf "$1"; "${cow[@]}" mkfs "$1" --base-size 1G --log-size "$logsize" >/dev/null; }
mountat() { mkdir -p "$2"; "${cow[@]}" mount "$1" "$2" >/dev/null; }
umountat() { "${cow[@]}" umount "$1" >/dev/null; }
bytes() { stat -c %s "$1"; }

echo "# cow send / receive, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, a file of $size MiB, $files small files, $rounds rounds (medians)"

# The source: one file of $size MiB (64 MiB of random bytes repeated), snapshot s0.
head -c $((64 << 20)) /dev/urandom > "$shm/rand"
for ((i = 0; i < size / 64; i++)); do cat "$shm/rand"; done > "$shm/big"
mkpool "$work/a"; mountat "$work/a" "$work/ma"
cp "$shm/big" "$work/ma/big"; sync -f "$work/ma/big"
"${cow[@]}" snapshot create "$work/ma" s0 >/dev/null
umountat "$work/ma"
want=$(sha256sum < "$shm/big" | cut -d' ' -f1)
"${cow[@]}" send "$work/a" s0 -o "$shm/s0.stream" 2>/dev/null

rd=""; sd=""; wr=""; rc=""
for ((r = 0; r < rounds; r++)); do
  rd+=" $(secs sh -c "${cow[*]} cat $work/a /big > /dev/null")"
  sd+=" $(secs sh -c "${cow[*]} send $work/a s0 2>/dev/null > /dev/null")"
  mkpool "$work/w"; wr+=" $(secs sh -c "${cow[*]} put $work/w /big < $shm/big")"
  mkpool "$work/b"; rc+=" $(secs sh -c "${cow[*]} receive $work/b -f $shm/s0.stream 2>/dev/null")"
done
got=$("${cow[@]}" cat "$work/b" /big | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "received file differs from the sent one" >&2; exit 1; }
rate() { awk -v s="$size" -v t="$1" 'BEGIN { printf "%.0f", s / t }'; }
r_rd=$(rate "$(echo "$rd" | median)"); r_sd=$(rate "$(echo "$sd" | median)")
r_wr=$(rate "$(echo "$wr" | median)"); r_rc=$(rate "$(echo "$rc" | median)")
echo
echo "## rates (MiB/s of file data; process start included in each)"
printf "%-34s %8s\n" "pool sequential read (cow cat)" "$r_rd"
printf "%-34s %8s   %.2fx the read\n" "full send (cow send > /dev/null)" "$r_sd" "$(awk -v a="$r_sd" -v b="$r_rd" 'BEGIN { print a / b }')"
printf "%-34s %8s\n" "pool sequential write (cow put)" "$r_wr"
printf "%-34s %8s   %.2fx the write\n" "receive (cow receive -f stream)" "$r_rc" "$(awk -v a="$r_rc" -v b="$r_wr" 'BEGIN { print a / b }')"
printf "%-34s %8s   stream/file %.4f\n" "full stream bytes" "$(bytes "$shm/s0.stream")" "$(awk -v a="$(bytes "$shm/s0.stream")" -v b=$((size << 20)) 'BEGIN { print a / b }')"

# Incremental: 1 % of the blocks rewritten at random.
mountat "$work/a" "$work/ma"
python3 - "$work/ma/big" "$size" <<'EOF'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
blocks = mib * 256
rng = random.Random(24)
fd = os.open(path, os.O_WRONLY)
for b in rng.sample(range(blocks), blocks // 100):
    os.pwrite(fd, os.urandom(4096), b * 4096)
os.fsync(fd); os.close(fd)
EOF
"${cow[@]}" snapshot create "$work/ma" s1 >/dev/null
umountat "$work/ma"
t_inc=$(secs sh -c "${cow[*]} send $work/a s1 --from s0 -o $shm/s1.stream 2>/dev/null")
"${cow[@]}" receive "$work/b" -f "$shm/s1.stream" 2>/dev/null
[ "$("${cow[@]}" cat "$work/a" /big | sha256sum)" = "$("${cow[@]}" cat "$work/b" /big | sha256sum)" ] || { echo "incremental: files differ" >&2; exit 1; }
changed=$(( size * 256 / 100 * 4096 ))
echo
echo "## incremental: 1 % of the blocks of the $size MiB file rewritten"
printf "changed bytes %d, stream %d bytes (%.3f of the changed, %.4f of the file), sent in %s s\n" "$changed" "$(bytes "$shm/s1.stream")" \
  "$(awk -v a="$(bytes "$shm/s1.stream")" -v b="$changed" 'BEGIN { print a / b }')" "$(awk -v a="$(bytes "$shm/s1.stream")" -v b=$((size << 20)) 'BEGIN { print a / b }')" "$t_inc"

# Small files: full and incremental after 1,000 rewritten.
mkpool "$work/f"; mountat "$work/f" "$work/mf"
python3 - "$work/mf" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range((n + 99) // 100):
    os.mkdir(f'{root}/d{d}')
    for i in range(min(100, n - d * 100)):
        with open(f'{root}/d{d}/f{i}', 'wb') as f: f.write(os.urandom(4096))
EOF
"${cow[@]}" snapshot create "$work/mf" f0 >/dev/null
python3 - "$work/mf" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for k in range(1000):
    i = k * 7919 % n
    with open(f'{root}/d{i // 100}/f{i % 100}', 'r+b') as f: f.write(os.urandom(4096))
EOF
"${cow[@]}" snapshot create "$work/mf" f1 >/dev/null
umountat "$work/mf"
t_ff=$(secs sh -c "${cow[*]} send $work/f f0 -o $shm/f0.stream 2>/dev/null")
t_fi=$(secs sh -c "${cow[*]} send $work/f f1 --from f0 -o $shm/f1.stream 2>/dev/null")
mkpool "$work/g"
t_rf=$(secs sh -c "${cow[*]} receive $work/g -f $shm/f0.stream 2>/dev/null")
t_ri=$(secs sh -c "${cow[*]} receive $work/g -f $shm/f1.stream 2>/dev/null")
mountat "$work/f" "$work/mf"; mountat "$work/g" "$work/mg"
la=$(cd "$work/mf/.snapshots/f1" && find . -mindepth 1 -printf '%p %i %m %n %s %T@ %C@\n' | sort | sha256sum)
lb=$(cd "$work/mg/.snapshots/f1" && find . -mindepth 1 -printf '%p %i %m %n %s %T@ %C@\n' | sort | sha256sum)
ca=$(cd "$work/mf/.snapshots/f1" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum)
cb=$(cd "$work/mg/.snapshots/f1" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum)
umountat "$work/mf"; umountat "$work/mg"
[ "$la" = "$lb" ] && [ "$ca" = "$cb" ] || { echo "small files: listings or contents differ" >&2; exit 1; }
echo
echo "## $files files of 4 KiB, then 1,000 rewritten (find -printf listings with inode numbers and ctimes, and contents, equal)"
printf "%-12s %12s %9s %9s\n" stream bytes send_s receive_s
printf "%-12s %12d %9s %9s\n" full "$(bytes "$shm/f0.stream")" "$t_ff" "$t_rf"
printf "%-12s %12d %9s %9s   (%.4f of the full stream)\n" incremental "$(bytes "$shm/f1.stream")" "$t_fi" "$t_ri" "$(awk -v a="$(bytes "$shm/f1.stream")" -v b="$(bytes "$shm/f0.stream")" 'BEGIN { print a / b }')"

# Sparse: 10 GiB with 10 MiB of data.
mkpool "$work/s"; mountat "$work/s" "$work/ms"
python3 - "$work/ms/sparse" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
os.ftruncate(fd, 10 << 30)
for k in range(10):
    os.pwrite(fd, os.urandom(1 << 20), k * (1 << 30))
os.fsync(fd); os.close(fd)
EOF
"${cow[@]}" snapshot create "$work/ms" z >/dev/null
umountat "$work/ms"
"${cow[@]}" send "$work/s" z -o "$shm/z.stream" 2>/dev/null
mkpool "$work/t"; "${cow[@]}" receive "$work/t" -f "$shm/z.stream" 2>/dev/null
[ "$("${cow[@]}" cat "$work/s" /sparse | sha256sum)" = "$("${cow[@]}" cat "$work/t" /sparse | sha256sum)" ] || { echo "sparse: files differ" >&2; exit 1; }
echo
echo "## sparse: a 10 GiB file with 10 MiB of data"
printf "stream %d bytes (%.4f of the 10 MiB of data)\n" "$(bytes "$shm/z.stream")" "$(awk -v a="$(bytes "$shm/z.stream")" 'BEGIN { print a / (10 * 1048576) }')"
