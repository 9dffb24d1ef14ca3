#!/usr/bin/env bash
# Sets up the machine and runs the agent with its embedded defaults:
# state in /var/lib/hyperlet (or $HYPERLET_STATE_DIR), API on 127.0.0.1:8787.
# Extra arguments go to `hyperlet serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked -p hyperlet
exec ./target/release/hyperlet serve "$@"
