#!/usr/bin/env bash
# Sets up the machine and runs every check and test of hyperlet.
# This is the README's test command and the whole of CI (.ci/run calls it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

export CARGO_TERM_COLOR=never
echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build"
cargo build --workspace --locked
bash scripts/build-plugins.sh
echo "== test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/ {sum += $4} END {print sum + 0}' "$log")
failed=$(awk '/^test result:/ {sum += $6} END {print sum + 0}' "$log")
echo
echo "summary: ${passed} passed, ${failed} failed"
exit "$status"
