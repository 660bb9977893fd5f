#!/usr/bin/env bash
# Sets up a machine for the benchmarks: what .ci/setup does (packages, restore, Release build, the Native AOT front end),
# then the peers' tools the bench scripts run beside Cow: btrfs-progs (metadata.sh, cli-latency.sh, fuse-bench.sh),
# e2fsprogs (ext4), fio (fuse-bench.sh, ab-seq.sh, iomap-vm.sh), hyperfine (fuse-bench.sh), gcc (mdbench and the
# passthrough peer of ../shared/bench, with libfuse3-dev and pkg-config), jq (../shared/bench/peers.sh). Idempotent.
# usage: sudo bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
missing=()
for pkg in btrfs-progs e2fsprogs fio jq hyperfine gcc libfuse3-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null ||
  echo "bench/setup: this kernel has no btrfs (not built in, and 'modprobe btrfs' failed): the btrfs peers will not mount" >&2
echo "bench/setup: ready"
