#!/usr/bin/env bash
# Install every system package kubedrill's build and tests need on Debian 12 / Ubuntu 22.04+.
# Idempotent; run as root (or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Build: a C toolchain for crates with C parts, pkg-config for -sys crates.
# Tests: git for the golden-file workflow; openssh-server/-client and sudo for the real-sshd
# tests (each test starts its own sshd on 127.0.1.x); time for the check benchmark's peak RSS;
# libvirt-dev for the `virt` crate (its test:///default driver needs no daemon).
# Images (`kubedrill image build`, its test): mmdebstrap, e2fsprogs (mkfs.ext4 -d, debugfs) and
# qemu-utils (qemu-img). A qemu-utils already installed from backports counts as present, so
# bookworm's older one is never pulled in over it.
# Drill reports: chromium, which the report test runs headless to screenshot a rendered report.
# Probe agent (probe/): iproute2 (ip netns/link/route) and procps (sysctl) for its namespace
# tests, file for scripts/build-probe.sh's static-binary check.
PACKAGES=(build-essential pkg-config ca-certificates git openssh-server openssh-client sudo time
  libvirt-dev mmdebstrap e2fsprogs qemu-utils chromium iproute2 procps file)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update
  # RUNLEVEL=1: invoke-rc.d must not start the system's own sshd on port 22 (tests start theirs).
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages present (${PACKAGES[*]})"
fi

# Rust: edition 2024 needs Rust >= 1.85, newer than Debian's own rustc; install it with rustup.
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust >= 1.85 with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
rustc_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${rustc_minor:-0}" -lt 85 ]; then
  echo "setup: $(rustc --version) is too old; kubedrill needs Rust >= 1.85 (rustup update)." >&2
  exit 1
fi
echo "setup: $(cargo --version)"

# Real lab VMs (kubedrill lab up, the lab end-to-end test): QEMU, libvirt, dnsmasq, genisoimage.
# KUBEDRILL_NO_LAB_HOST=1 skips them on machines that only build and unit-test.
if [ "${KUBEDRILL_NO_LAB_HOST:-0}" != 1 ]; then
  $SUDO "$(dirname "$0")/lab-host-setup.sh"
fi
