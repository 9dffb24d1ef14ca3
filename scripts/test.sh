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
echo "== test"
cargo test --workspace --locked
