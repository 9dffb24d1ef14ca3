#!/usr/bin/env bash
# A fleet of hyperlet nodes on this one machine, to try the fleet by hand.
#
#   scripts/fleet.sh up [N]   # N nodes (default 3): fabric bridge + etcd + N sandboxed nodes
#   scripts/fleet.sh down     # stop everything it started (by PID) and remove it
#
# The fabric is the bridge hlfleet0 (10.251.0.1/24) with etcd on 10.251.0.1:2379. Node i is
# the network namespace hlfleet-i, joined to the fabric by a veth (10.251.0.(10+i)), with a
# private mount namespace (its own /run, /etc/libvirt, /var/lib/libvirt, /var/log/libvirt,
# /var/cache/libvirt) running its own virtlogd, libvirtd and `hyperlet serve` (TLS with a
# certificate for its address, one shared API token, the linux-bridge network backend with
# VXLAN from its address, the RAM filter). The same recipe as tests/src/fleet.rs.
#
# Needs root, `bash scripts/setup.sh`, `cargo build -p hyperlet` and scripts/build-plugins.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${HYPERLET_FLEET_DIR:-/var/tmp/hyperlet-fleet}
BRIDGE=hlfleet0
NET=10.251.0
BIN=${HYPERLET_BIN:-$ROOT/target/debug/hyperlet}
WASM=$ROOT/target/wasm32-wasip2/release

log() { printf '[fleet] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it creates namespaces, bridges and daemons)"

up() {
    local n=${1:-3}
    [ -e "$DIR" ] && die "$DIR exists: run '$0 down' first"
    [ -x "$BIN" ] || die "no $BIN: run 'cargo build -p hyperlet' (or set HYPERLET_BIN)"
    for p in network_linux_bridge hyperlet_filter_ram; do
        [ -f "$WASM/$p.wasm" ] || die "no $WASM/$p.wasm: run scripts/build-plugins.sh"
    done
    command -v etcd >/dev/null || die "no etcd: run scripts/setup.sh"
    mkdir -p "$DIR/pki" "$DIR/etcd"
    chmod 755 "$DIR"
    openssl rand -hex 24 > "$DIR/token"
    chmod 600 "$DIR/token"

    log "fabric $BRIDGE $NET.1/24"
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up

    log "etcd on http://$NET.1:2379"
    etcd --name fleet --data-dir "$DIR/etcd/data" \
        --listen-client-urls "http://$NET.1:2379" --advertise-client-urls "http://$NET.1:2379" \
        --listen-peer-urls "http://127.0.0.1:2390" --initial-advertise-peer-urls "http://127.0.0.1:2390" \
        --initial-cluster "fleet=http://127.0.0.1:2390" >"$DIR/etcd/log" 2>&1 &
    echo $! > "$DIR/etcd/pid"

    (cd "$DIR/pki" &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
            -out ca.crt -days 30 -subj "/CN=hyperlet fleet CA" 2>/dev/null)

    for i in $(seq 1 "$n"); do node_up "$i"; done

    for _ in $(seq 1 100); do
        up_count=$("$BIN" fleet nodes --json --endpoints "http://$NET.1:2379" 2>/dev/null |
            grep -c '"state": "up"' || true)
        [ "$up_count" -ge "$n" ] && break
        sleep 0.2
    done
    "$BIN" fleet nodes --endpoints "http://$NET.1:2379"
    cat <<EOF

export HYPERLET_FLEET_ENDPOINTS=http://$NET.1:2379
export HYPERLET_TOKEN=$(cat "$DIR/token")
export HYPERLET_CA_CERT=$DIR/pki/ca.crt
export HYPERLET_URL=https://$NET.11:8787      # node 1; hyperlet fleet … reads etcd directly
# placement with the nodes' own chain:
#   $BIN fleet place --via \$HYPERLET_URL --vcpus 1 --ram 128
# logs: $DIR/node-*/agent.log   stop: $0 down
EOF
}

node_up() {
    local i=$1 name="node-$1" ip="$NET.$((10 + $1))" ns="hlfleet-$1"
    local d="$DIR/$name"
    log "$name at $ip (namespace $ns)"
    mkdir -p "$d"/{run,etc,lib,log,cache,state}
    chmod 755 "$d" "$d/state"
    cp -a /etc/libvirt/. "$d/etc/"
    cp -a /var/lib/libvirt/. "$d/lib/"
    find "$d/etc/qemu" -maxdepth 1 \( -name '*.xml' -o -name autostart \) -exec rm -rf {} + 2>/dev/null || true
    ip netns add "$ns"
    ip link add "hlfv$i" type veth peer name "hlfp$i"
    ip link set "hlfv$i" master "$BRIDGE"
    ip link set "hlfv$i" up
    ip link set "hlfp$i" netns "$ns"
    ip -n "$ns" link set "hlfp$i" name eth0
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up

    (cd "$DIR/pki" &&
        printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$ip" > "$name.ext" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
            -out "$name.csr" -subj "/CN=$ip" 2>/dev/null &&
        openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
            -out "$name.crt" -days 30 -extfile "$name.ext" 2>/dev/null)

    cat > "$d/hyperlet.toml" <<EOF
[tls]
cert = "$DIR/pki/$name.crt"
key = "$DIR/pki/$name.key"

[auth]
token_file = "$DIR/token"

[fleet]
endpoints = ["http://$NET.1:2379"]
node_name = "$name"

[plugin_runtime]
cache_dir = "$DIR/plugin-cache"

[[plugins]]
name = "linuxbridge"
kind = "network-backend"
path = "$WASM/network_linux_bridge.wasm"
grants = ["log", "netlink"]
settings = { vxlan_local_ip = "$ip" }

[[plugins]]
name = "ram"
kind = "filter"
path = "$WASM/hyperlet_filter_ram.wasm"
grants = ["log"]
EOF

    ip netns exec "$ns" unshare --mount --propagation private sh -c "
        set -e
        mount --bind '$d/run' /run
        mount --bind '$d/etc' /etc/libvirt
        mount --bind '$d/lib' /var/lib/libvirt
        mount --bind '$d/log' /var/log/libvirt
        mount --bind '$d/cache' /var/cache/libvirt
        mkdir -p /run/libvirt /run/netns /run/lock
        ip link set lo up
        virtlogd -d
        libvirtd -d
        for _ in \$(seq 1 100); do virsh -c qemu:///system list >/dev/null 2>&1 && break; sleep 0.1; done
        HYPERLET_FIREWALL_TABLE_PREFIX=hlfleet '$BIN' serve --config '$d/hyperlet.toml' \
            --state-dir '$d/state' --listen '$ip:8787' >'$d/agent.log' 2>&1 &
        echo \$! > '$d/agent.pid'
    "
}

stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

down() {
    [ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; return 0; }
    for d in "$DIR"/node-*; do
        [ -d "$d" ] || continue
        local name ns
        name=$(basename "$d")
        ns="hlfleet-${name#node-}"
        [ -s "$d/agent.pid" ] && stop_pid "$(cat "$d/agent.pid")"
        if [ -S "$d/run/libvirt/libvirt-sock" ]; then
            uri="qemu+unix:///system?socket=$d/run/libvirt/libvirt-sock"
            for dom in $(virsh -c "$uri" list --all --name 2>/dev/null); do
                virsh -c "$uri" destroy "$dom" >/dev/null 2>&1 || true
                virsh -c "$uri" undefine --managed-save --nvram "$dom" >/dev/null 2>&1 || true
            done
        fi
        for daemon in libvirtd virtlogd; do
            [ -s "$d/run/$daemon.pid" ] && stop_pid "$(cat "$d/run/$daemon.pid")"
        done
        # Whatever else runs in the node's namespace was started for it (QEMU).
        if [ -e "/run/netns/$ns" ]; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "$pid"; done
            ip netns delete "$ns" || true
        fi
        log "$name stopped"
    done
    [ -s "$DIR/etcd/pid" ] && stop_pid "$(cat "$DIR/etcd/pid")"
    ip link delete "$BRIDGE" 2>/dev/null || true
    rm -rf "$DIR"
    log "fleet removed"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    down) down ;;
    *) echo "usage: $0 up [N] | down" >&2; exit 2 ;;
esac
