#!/usr/bin/env bash
# kubedrill's slow, real-system tests (ignored by `cargo test`), run by CI after scripts/test.sh:
#   1. the offline Debian 12 image build (mmdebstrap from Debian's mirror; cached);
#   2. the lab end to end with real TCG guests: a network namespace made here, libvirtd started
#      inside it (so guest addresses exist only there), `lab up` of a 2-VM lab, `kubedrill check`
#      on the generated inventory, snapshot, a change in a guest, reset, the change gone, `lab down`,
#      nothing of the lab left — and a pre-existing unmarked domain with a colliding name survives.
# Needs root, scripts/setup.sh and scripts/lab-host-setup.sh. KUBEDRILL_CACHE_DIR (default
# target/kubedrill-cache) keeps the image between runs. Everything started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

export KUBEDRILL_CACHE_DIR="${KUBEDRILL_CACHE_DIR:-$PWD/target/kubedrill-cache}"
mkdir -p "$KUBEDRILL_CACHE_DIR"
echo "== image build (cache: $KUBEDRILL_CACHE_DIR)"
cargo test --locked --test images -- --ignored --nocapture build_debian_12_image

echo "== lab end to end (real guests under ${KUBEDRILL_ACCEL:-auto} acceleration)"
cargo build --locked
KD="$PWD/${CARGO_TARGET_DIR:-target}/debug/kubedrill"
NS="kdlab$$"
WORK=$(mktemp -d /tmp/kubedrill-labtest-XXXXXX)
# QEMU runs as libvirt-qemu: it needs search permission on the way to the lab's overlays.
chmod 0711 "$WORK"
export KUBEDRILL_STATE_DIR="$WORK/state"
RUN="$WORK/run"; mkdir -p "$RUN"
pids=()
cleanup() {
  set +e
  ip netns exec "$NS" "$KD" lab down labtest >/dev/null 2>&1
  for f in "$RUN"/libvirtd.pid "$RUN"/virtlogd.pid; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  for f in "$RUN"/libvirtd.pid "$RUN"/virtlogd.pid; do
    [ -s "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
  done
  ip netns del "$NS" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
# libvirt's own sockets and state live in the file system, not the namespace: point them at
# this run's directory so nothing touches a system libvirt.
mkdir -p "$RUN"/{run,lib,log,cache,config}
cat > "$RUN/libvirtd.conf" <<CONF
unix_sock_dir = "$RUN/run"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
CONF
ip netns exec "$NS" virtlogd -d -p "$RUN/virtlogd.pid"
# A /dev/kvm without vmx/svm (kvm_pvm here) makes libvirt 9.0 re-probe QEMU on every domain
# define (~30-70 s each, measured); such a /dev/kvm cannot run guests anyway, so libvirtd gets a
# mount namespace where it is hidden.
if grep -qwE 'vmx|svm' /proc/cpuinfo; then
  ip netns exec "$NS" libvirtd -d -p "$RUN/libvirtd.pid" -f "$RUN/libvirtd.conf"
else
  ip netns exec "$NS" unshare -m sh -c "{ [ ! -e /dev/kvm ] || mount --bind /dev/null /dev/kvm; } && exec libvirtd -d -p '$RUN/libvirtd.pid' -f '$RUN/libvirtd.conf'"
fi
URI="qemu:///system?socket=$RUN/run/libvirt-sock"
for _ in $(seq 50); do [ -S "$RUN/run/libvirt-sock" ] && break; sleep 0.2; done

sed -e "s|^hypervisor:.*|hypervisor: \"$URI\"|" tests/data/labs/labtest.yaml > "$WORK/labtest.yaml"
export KUBEDRILL_LAB_FILE="$WORK/labtest.yaml" KUBEDRILL_LAB_URI="$URI" KUBEDRILL_LAB_NETNS="$NS"
ip netns exec "$NS" cargo test --locked --test lab_e2e -- --ignored --nocapture --test-threads 1
