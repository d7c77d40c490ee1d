#!/usr/bin/env bash
# Build kubedrill-probe, the agent kubedrill copies to nodes, as one static x86_64 binary
# (glibc, +crt-static: the musl target cannot be installed here) and check that it is static:
# no program interpreter, no shared-library dependencies. Prints the binary's path and size.
# The probe resolves no host names (addresses only), so static glibc needs no NSS at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked -p kubedrill-probe --target "$TARGET"

BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/kubedrill-probe"
[ -x "$BIN" ] || { echo "build-probe: $BIN missing" >&2; exit 1; }

desc=$(file -b "$BIN")
echo "build-probe: file: $desc"
case "$desc" in
  *"dynamically linked"*|*interpreter*) echo "build-probe: FAIL: $BIN is not static" >&2; exit 1 ;;
esac
case "$desc" in
  *"statically linked"*|*"static-pie linked"*) ;;
  *) echo "build-probe: FAIL: 'file' does not call $BIN static" >&2; exit 1 ;;
esac
# ldd prints "not a dynamic executable" / "statically linked" (and exits non-zero) for static files.
lddout=$(ldd "$BIN" 2>&1 || true)
echo "build-probe: ldd: $lddout"
if echo "$lddout" | grep -q '=>'; then
  echo "build-probe: FAIL: $BIN needs shared libraries" >&2; exit 1
fi
# The binary must run (no loader needed): its version line.
"$BIN" --version
size=$(stat -c %s "$BIN")
echo "build-probe: OK static $BIN ($size bytes, $((size / 1024)) KiB)"
