#!/usr/bin/env bash
# Sets up the machine and runs the agent with its embedded defaults — state in
# /var/lib/hyperlet (or $HYPERLET_STATE_DIR), API on 127.0.0.1:8787 — plus the first-party
# plugins (contrib/single-node.toml: the linux-bridge network backend and the node-local
# scheduler filters), unless HYPERLET_CONFIG or --config names another file.
# Extra arguments go to `hyperlet serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Everything is built into ./target: contrib/single-node.toml names the plugins there.
unset CARGO_TARGET_DIR

bash scripts/setup.sh
cargo build --release --locked -p hyperlet
bash scripts/build-plugins.sh
export HYPERLET_CONFIG="${HYPERLET_CONFIG:-contrib/single-node.toml}"
exec ./target/release/hyperlet serve "$@"
