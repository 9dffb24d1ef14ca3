#!/usr/bin/env bash
# Foundation benchmark: idle RSS of `hyperlet serve` and REST latency under wrk load.
# The baseline, measured in the same run, is /healthz (the same HTTP stack, auth and
# middleware skipped, no work) next to /v1/host (token check, /proc, statvfs, store read).
# Then the metadata service against nginx serving the same documents in the same network
# namespace (agent/benches/metadata.rs; needs root, nginx and wrk). Last, volume create per
# backend against `lvcreate` and `qemu-img create` on the share (tests/benches/volumes.rs; needs
# root, lvm2, qemu-utils, nfs-ganesha and the plugins).
# Prints Markdown tables for the README's bench section.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
command -v wrk >/dev/null || { echo "wrk is missing: run scripts/setup.sh" >&2; exit 1; }
cargo build --release --locked -p hyperlet >&2

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${CARGO_TARGET_DIR:-target}/release/hyperlet" serve --state-dir "$work/state" --listen "127.0.0.1:$port" 2>"$work/log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
token=$(cat "$work/state/admin.token")
sleep 5   # let startup work (libvirt check) settle
rss_idle=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)

run_wrk() {
    local path=$1
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency \
        -H "Authorization: Bearer $token" "http://127.0.0.1:$port$path" > "$work/wrk.txt"
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
    p50=$(awk '$1=="50%" {print $2}' "$work/wrk.txt")
    p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
    if grep -q "Non-2xx" "$work/wrk.txt"; then
        echo "wrk saw error answers on $path:" >&2; cat "$work/wrk.txt" >&2; exit 1
    fi
    echo "| \`GET $path\` | $rps | $p50 | $p99 |"
}

echo "| endpoint (${CONNECTIONS} connections, wrk -t2, $DURATION) | requests/s | p50 | p99 |"
echo "|---|---|---|---|"
run_wrk /healthz
run_wrk /v1/host
rss_load=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo
echo "| memory | KiB | MiB |"
echo "|---|---|---|"
echo "| idle RSS (VmRSS, 5 s after start) | $rss_idle | $((rss_idle / 1024)) |"
echo "| peak RSS under load (VmHWM) | $rss_load | $((rss_load / 1024)) |"

# The metadata service: hyperlet vs nginx in a namespace (the REST agent is stopped first so
# that it does not share the cores).
cleanup
trap - EXIT
echo
cargo bench --locked -p hyperlet --bench metadata

# Volume create: the drivers and the agent against the bare commands (a loop-device VG and an
# nfs-ganesha of its own on 127.0.0.1:2049; it uses the release `hyperlet` built above).
echo
scripts/build-plugins.sh >&2
cargo bench --locked -p hyperlet-tests --bench volumes
