#!/usr/bin/env bash
# Lab benchmark (not a test): bring up a lab with real guests inside a network namespace made here
# (private libvirtd, as in scripts/lab-test.sh), and report the time to SSH-ready with its split,
# host RSS per VM, snapshot, reset and teardown times. Results go to target/bench-lab.txt.
#   scripts/bench-lab.sh [LAB_FILE]      (default labs/lab-3node.yaml; root; image built or cached)
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_SRC="${1:-labs/lab-3node.yaml}"
export KUBEDRILL_CACHE_DIR="${KUBEDRILL_CACHE_DIR:-$PWD/target/kubedrill-cache}"
cargo build --locked
WORK=$(mktemp -d /tmp/kubedrill-benchlab-XXXXXX)
chmod 0711 "$WORK"
# A copy: the lab's time is spent in the guests, and a later build must not swap the binary.
cp "${CARGO_TARGET_DIR:-target}/debug/kubedrill" "$WORK/kubedrill"
KD="$WORK/kubedrill"
"$KD" image build debian-12 >/dev/null
export KUBEDRILL_STATE_DIR="$WORK/state"
. scripts/lib/lab-netns.sh
NAME=$(sed -n 's/^name: *//p' "$LAB_SRC" | head -1)
cleanup() {
  set +e
  ip netns exec "$NS" "$KD" lab down "$NAME" >/dev/null 2>&1
  lab_netns_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
lab_netns_start "$WORK"
# The lab file keeps its relative `mirrors:` path: write the copy beside the original.
LAB="$(dirname "$LAB_SRC")/.bench-$NAME.yaml"
sed -e "s|^hypervisor:.*|hypervisor: \"$URI\"|" "$LAB_SRC" > "$LAB"
trap 'rm -f "$LAB"; cleanup' EXIT
OUT=target/bench-lab.txt
{
  echo "# kubedrill lab benchmark: $NAME, $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  ip netns exec "$NS" "$KD" lab up "$LAB" --isolated 2>&1
  for p in $(pgrep -f "guest=kd-$NAME-"); do
    g=$(tr '\0' ' ' < /proc/$p/cmdline | grep -o "guest=kd-$NAME-[^, ]*" | cut -d= -f2)
    echo "host RSS $g: $(( $(awk '/VmRSS/{print $2}' /proc/$p/status) / 1024 )) MiB"
  done
  ip netns exec "$NS" "$KD" lab snapshot "$NAME" bench 2>&1
  ip netns exec "$NS" "$KD" lab reset "$NAME" bench 2>&1
  ip netns exec "$NS" "$KD" lab reset "$NAME" bench 2>&1
  s=$(date +%s.%N); ip netns exec "$NS" "$KD" lab down "$NAME" 2>&1
  echo "lab down: $(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
} | tee "$OUT"
