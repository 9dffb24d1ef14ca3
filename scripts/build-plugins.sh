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
# Debug info is stripped: it would make each component ~25x larger.
CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --locked --target wasm32-wasip2 --release "${packages[@]}"
