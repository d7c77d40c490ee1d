#!/usr/bin/env bash
# kubedrill's slow, real-system tests (ignored by `cargo test`): the offline Debian 12 image build
# (mmdebstrap from Debian's mirror, minutes). Needs root and scripts/setup.sh's packages.
# KUBEDRILL_CACHE_DIR (default: target/kubedrill-cache) keeps the built image between runs, so a
# re-run with an unchanged recipe is a cache hit.
set -euo pipefail
cd "$(dirname "$0")/.."

export KUBEDRILL_CACHE_DIR="${KUBEDRILL_CACHE_DIR:-$PWD/target/kubedrill-cache}"
mkdir -p "$KUBEDRILL_CACHE_DIR"
echo "== image build (cache: $KUBEDRILL_CACHE_DIR)"
cargo test --locked --test images -- --ignored --nocapture build_debian_12_image
