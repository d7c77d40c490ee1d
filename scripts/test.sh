#!/usr/bin/env bash
# kubedrill's test suite: formatting, lints, unit/integration/golden tests, bounded fuzzing of
# the inventory parsers, and the benchmark binary's build. Used by CI (.ci/run) and developers.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
# Proptest cases for the parser no-panic tests: more in CI than in a developer's quick run.
export KUBEDRILL_FUZZ_CASES="${KUBEDRILL_FUZZ_CASES:-512}"
# As root (CI), the real-sshd tests and the headless-Chromium report test must run rather than skip.
if [ "$(id -u)" -eq 0 ]; then
  export KUBEDRILL_REQUIRE_SSHD="${KUBEDRILL_REQUIRE_SSHD:-1}"
  export KUBEDRILL_REQUIRE_CHROMIUM="${KUBEDRILL_REQUIRE_CHROMIUM:-1}"
fi
cargo test --locked

echo "== benchmark builds (run it with: cargo bench --bench plan)"
cargo bench --locked --bench plan --no-run
