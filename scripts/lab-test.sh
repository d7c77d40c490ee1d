#!/usr/bin/env bash
# kubedrill's slow, real-system tests (ignored by `cargo test`), run by CI after scripts/test.sh:
#   1. the offline Debian 12 image build (mmdebstrap from Debian's mirror; cached);
#   2. the lab end to end with real TCG guests: a network namespace made here, libvirtd started
#      inside it (so guest addresses exist only there), `lab up` of a 2-VM lab, `kubedrill check`
#      on the generated inventory, snapshot, `kubedrill apply` of every node phase from an offline
#      bundle built here (then unchanged on a re-run; kubeadm/init stops with "no package source";
#      an apply killed mid-way resumes), a change in a guest, reset, the change gone, `lab down`,
#      nothing of the lab left — and a pre-existing unmarked domain with a colliding name survives.
# Needs root, scripts/setup.sh and scripts/lab-host-setup.sh. KUBEDRILL_CACHE_DIR (default
# target/kubedrill-cache) keeps the image between runs. Everything started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

export KUBEDRILL_CACHE_DIR="${KUBEDRILL_CACHE_DIR:-$PWD/target/kubedrill-cache}"
mkdir -p "$KUBEDRILL_CACHE_DIR"
echo "== image build (cache: $KUBEDRILL_CACHE_DIR)"
cargo test --locked --test integration -- --ignored --nocapture images::build_debian_12_image

echo "== lab end to end (real guests under ${KUBEDRILL_ACCEL:-auto} acceleration)"
# The test build also builds target/debug/kubedrill, with the test build's features: a separate
# `cargo build` would compile tokio, kube and kubedrill a second time (features unify differently
# without dev-dependencies), which costs minutes and GiBs.
cargo test --locked --test integration --no-run
WORK=$(mktemp -d /tmp/kubedrill-labtest-XXXXXX)
# QEMU runs as libvirt-qemu: it needs search permission on the way to the lab's overlays.
chmod 0711 "$WORK"
# A private copy of the binary: a build running meanwhile cannot swap it under the test.
cp "${CARGO_TARGET_DIR:-target}/debug/kubedrill" "$WORK/kubedrill"
KD="$WORK/kubedrill"
export KUBEDRILL_BIN="$KD"
export KUBEDRILL_STATE_DIR="$WORK/state"
. scripts/lib/lab-netns.sh
cleanup() {
  set +e
  ip netns exec "$NS" "$KD" lab down labtest >/dev/null 2>&1
  [ -n "${HOMEDIR:-}" ] && HOME="$HOMEDIR" ip netns exec "$NS" "$KD" lab down labremote >/dev/null 2>&1
  [ -s "${SSHD:-/nonexistent}/sshd.pid" ] && kill "$(cat "$SSHD/sshd.pid")" 2>/dev/null
  [ "${created_run_libvirt:-0}" = 1 ] && rmdir /run/libvirt 2>/dev/null
  lab_netns_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
lab_netns_start "$WORK"

# The offline bundle apply installs from (Debian's containerd, runc, conntrack, socat, … with
# every dependency), built here, outside the namespace, from this machine's apt sources.
# apt must know the packages (a machine image may ship without package lists).
if ! apt-cache policy containerd 2>/dev/null | grep -q 'Candidate: [0-9]'; then apt-get update; fi
# Plus a tiny OCI image archive, imported into containerd by node/containerd.
scripts/lib/make-oci-image.sh "$WORK/test-image.tar" registry.k8s.io/kubedrill/test:1
"$KD" bundle build -o "$WORK/bundle" --image "$WORK/test-image.tar"
export KUBEDRILL_BUNDLE="$WORK/bundle"
# The static probe agent the drill uploads to nodes (glibc +crt-static).
./scripts/build-probe.sh
tdir="${CARGO_TARGET_DIR:-target}"; case "$tdir" in /*) ;; *) tdir="$PWD/$tdir" ;; esac
export KUBEDRILL_PROBE_BIN="$tdir/x86_64-unknown-linux-gnu/release/kubedrill-probe"

# A "remote" hypervisor: an sshd inside the namespace on 127.0.0.1:2222 whose sessions see this
# run's libvirtd socket at /run/libvirt (their own mount namespace), so that
# qemu+ssh://root@127.0.0.1:2222/system reaches it the way it would reach another machine
# (libvirt runs `ssh … virt-ssh-helper`). The ssh client's config, key and known_hosts (strict
# host-key checking) live in a HOME of this run's own.
SSHD="$WORK/sshd"; HOMEDIR="$WORK/home"; mkdir -p "$SSHD" "$HOMEDIR/.ssh"
ssh-keygen -q -t ed25519 -N '' -f "$SSHD/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$HOMEDIR/.ssh/id_ed25519"
cp "$HOMEDIR/.ssh/id_ed25519.pub" "$SSHD/authorized_keys"
cat > "$SSHD/sshd_config" <<CONF
Port 2222
ListenAddress 127.0.0.1
HostKey $SSHD/host_key
AuthorizedKeysFile $SSHD/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $SSHD/sshd.pid
CONF
echo "[127.0.0.1]:2222 $(cat "$SSHD/host_key.pub")" > "$HOMEDIR/.ssh/known_hosts"
cat > "$HOMEDIR/.ssh/config" <<CONF
Host 127.0.0.1
  IdentityFile $HOMEDIR/.ssh/id_ed25519
  UserKnownHostsFile $HOMEDIR/.ssh/known_hosts
  StrictHostKeyChecking yes
  IdentitiesOnly yes
CONF
created_run_libvirt=0
[ -d /run/libvirt ] || { mkdir -p /run/libvirt; created_run_libvirt=1; }
mkdir -p /run/sshd
ip netns exec "$NS" unshare -m sh -c "mount --bind '$RUN/run' /run/libvirt && exec /usr/sbin/sshd -f '$SSHD/sshd_config'"
for _ in $(seq 50); do [ -s "$SSHD/sshd.pid" ] && break; sleep 0.1; done
# OpenSSH reads ~/.ssh/config from the passwd entry, not $HOME: libvirt's `command=` URI
# parameter runs ssh through a wrapper that names this run's config.
printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$HOMEDIR/.ssh/config" > "$HOMEDIR/ssh"
chmod +x "$HOMEDIR/ssh"
export KUBEDRILL_REMOTE_URI="qemu+ssh://root@127.0.0.1:2222/system?command=$HOMEDIR/ssh" KUBEDRILL_REMOTE_HOME="$HOMEDIR"
sed -e "s|^hypervisor:.*|hypervisor: \"$KUBEDRILL_REMOTE_URI\"|" tests/data/labs/labremote.yaml > "$WORK/labremote.yaml"
export KUBEDRILL_REMOTE_LAB_FILE="$WORK/labremote.yaml"

sed -e "s|^hypervisor:.*|hypervisor: \"$URI\"|" tests/data/labs/labtest.yaml > "$WORK/labtest.yaml"
export KUBEDRILL_LAB_FILE="$WORK/labtest.yaml" KUBEDRILL_LAB_URI="$URI" KUBEDRILL_LAB_NETNS="$NS"
ip netns exec "$NS" cargo test --locked --test integration -- --ignored --nocapture --test-threads 1 lab_e2e::
