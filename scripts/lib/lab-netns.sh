# Sourced by scripts/lab-test.sh and scripts/bench-lab.sh: a network namespace made here, with a
# private virtlogd + libvirtd started inside it (this machine has no systemd), so guest addresses
# exist only in that namespace and nothing touches a system libvirt. Sets NS, RUN and URI;
# `lab_netns_stop` stops both daemons by PID and deletes the namespace.

# lab_netns_start WORKDIR
lab_netns_start() {
  NS="kdlab$$"
  RUN="$1/run"
  mkdir -p "$RUN"/{run,lib,log,cache,config}
  ip netns add "$NS"
  ip netns exec "$NS" ip link set lo up
  # libvirt's own sockets and state live in the file system, not the namespace: point them at
  # this run's directory.
  cat > "$RUN/libvirtd.conf" <<CONF
unix_sock_dir = "$RUN/run"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
CONF
  ip netns exec "$NS" virtlogd -d -p "$RUN/virtlogd.pid"
  # A /dev/kvm without vmx/svm (kvm_pvm here) makes libvirt 9.0 re-probe QEMU on every domain
  # define (~30-70 s each, measured); such a /dev/kvm cannot run guests anyway, so libvirtd gets
  # a mount namespace where it is hidden.
  if grep -qwE 'vmx|svm' /proc/cpuinfo || [ ! -e /dev/kvm ]; then
    ip netns exec "$NS" libvirtd -d -p "$RUN/libvirtd.pid" -f "$RUN/libvirtd.conf"
  else
    ip netns exec "$NS" unshare -m sh -c "mount --bind /dev/null /dev/kvm && exec libvirtd -d -p '$RUN/libvirtd.pid' -f '$RUN/libvirtd.conf'"
  fi
  URI="qemu:///system?socket=$RUN/run/libvirt-sock"
  for _ in $(seq 50); do [ -S "$RUN/run/libvirt-sock" ] && break; sleep 0.2; done
  [ -S "$RUN/run/libvirt-sock" ] || { echo "libvirtd did not start" >&2; return 1; }
}

lab_netns_stop() {
  for f in "$RUN"/libvirtd.pid "$RUN"/virtlogd.pid; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  for f in "$RUN"/libvirtd.pid "$RUN"/virtlogd.pid; do
    [ -s "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
  done
  ip netns del "$NS" 2>/dev/null
  return 0
}
