#!/usr/bin/env bash
# Builds every plugin and test fixture under plugins/ as a WebAssembly component
# (target/wasm32-wasip2/release/<crate>.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
for manifest in plugins/*/Cargo.toml plugins/fixtures/*/Cargo.toml; do
    [ -f "$manifest" ] || continue
    name=$(awk -F'"' '/^name *=/ {print $2; exit}' "$manifest")
    packages+=(-p "$name")
done
cargo build --locked --target wasm32-wasip2 --release "${packages[@]}"
