#!/usr/bin/env bash
# Prepare this machine to run real lab VMs (Debian 12): QEMU from bookworm-backports (the machine's
# qemu-utils 10 comes from there and conflicts with bookworm's qemu-system 7.2), libvirt 9.0,
# dnsmasq, and the image and seed tools. Idempotent; run as root (scripts/setup.sh calls it).
# Daemons are not started unless asked: scripts/lab-test.sh starts its own libvirtd inside a network
# namespace. `--start` makes sure the system libvirtd runs for `kubedrill lab up` on qemu:///system
# (systemctl where systemd is PID 1, else virtlogd + libvirtd started here as daemons).
set -euo pipefail
start=0
[ "${1:-}" = "--start" ] && start=1
[ "$(id -u)" -eq 0 ] || { echo "lab-host-setup: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
src=/etc/apt/sources.list.d/kubedrill-bookworm-backports.sources
codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")
backports=()
[ "$codename" = bookworm ] && backports=(-t bookworm-backports)
if [ "$codename" = bookworm ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # The mirror apt already uses for bookworm (uncommented URIs:/deb lines), else deb.debian.org.
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -e 's/#.*//' | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | sed -n 1p || true)
  cat > "$src" <<SRC
Types: deb
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update
fi
need=()
for p in libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base genisoimage \
         mmdebstrap e2fsprogs iproute2 iptables; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
  apt-get install -y "${backports[@]}" --no-install-recommends qemu-system-x86
fi
if [ "${#need[@]}" -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}"
fi
echo "lab-host-setup: $(qemu-system-x86_64 --version | head -1); libvirt $(libvirtd --version | awk '{print $NF}')"

if [ "$start" = 1 ]; then
  if [ -S /run/libvirt/libvirt-sock ]; then
    echo "lab-host-setup: libvirtd is running"
  elif [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    systemctl start virtlogd libvirtd
  else
    pgrep -x virtlogd >/dev/null || virtlogd -d
    # A /dev/kvm without vmx/svm cannot run guests, and libvirt 9.0 re-probes QEMU on every
    # domain define while it sees one (30-70 s each): hide it from libvirtd there.
    if grep -qwE 'vmx|svm' /proc/cpuinfo || [ ! -e /dev/kvm ]; then
      libvirtd -d
    else
      unshare -m sh -c 'mount --bind /dev/null /dev/kvm && exec libvirtd -d'
    fi
    for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.2; done
    echo "lab-host-setup: started libvirtd (pid $(cat /run/libvirtd.pid 2>/dev/null || echo '?'))"
  fi
fi
