#!/usr/bin/env bash
# Idempotent machine setup for hyperlet: system packages, the wasm target, and the
# libvirt daemons. Safe to run again and again; it only does what is missing.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh must run as root (it installs Debian packages and starts libvirtd)" >&2
    exit 1
fi

# Debian packages. qemu-system-x86 and qemu-utils are installed together so both come from
# the same release (installing qemu-system-x86 alone removes a backported qemu-utils).
PACKAGES=(
    build-essential pkg-config
    libvirt-daemon-system libvirt-dev libvirt-clients
    qemu-system-x86 qemu-utils qemu-block-extra
    # Volume drivers: LVM tools; a userspace NFS server (the tests run their own ganesha with
    # rpcbind), libnfs-utils to look at shares, qemu-block-extra for qemu-img's nfs:// driver.
    # nfs-common: mount.nfs for a volume-nfs backend with `access = "mount"`.
    lvm2 e2fsprogs
    nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind nfs-common
    busybox-static cpio
    # etcd-server: the fleet registry's tests start their own etcd; protobuf-compiler: protoc,
    # which the etcd-client crate's build needs for etcd's gRPC API.
    etcd-server protobuf-compiler
    sqlite3
    iproute2 nftables
    openssl curl wrk
    # python3: cloud-init's readers in the e2e test and scripts/bench.sh; python3-venv for the
    # schemathesis venv below (Debian 12's pip refuses to install into the system).
    python3 python3-venv
    # nginx: the baseline of the metadata bench (agent/benches/metadata.rs), which starts its own
    # nginx with its own config inside a namespace; the distribution's service is not wanted.
    nginx
    # cloud-init: a real metadata client for the metadata tests (tests/cloudinit_readers.py);
    # without systemd its units only get enabled as symlinks, nothing runs.
    cloud-init
    procps psmisc
    # chromium + chromium-driver: the node page test (tests/e2e/node_page.rs) drives a real
    # headless Chromium through chromedriver's WebDriver API.
    chromium chromium-driver
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# Both qemu packages must be from the same release: a backported qemu-utils alone counts as missing.
if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    missing+=(qemu-utils qemu-system-x86)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Pin the qemu packages to the distribution's own release (never a backport).
    pins=()
    for q in qemu-utils qemu-system-x86 qemu-block-extra; do
        v=$(apt-cache madison "$q" | awk -F'|' '$2 !~ /bpo/ {gsub(/ /,"",$2); print $2; exit}')
        if [ -n "$v" ]; then pins+=("$q=$v"); else pins+=("$q"); fi
    done
    filtered=()
    for p in "${missing[@]}"; do
        case "$p" in qemu-utils|qemu-system-x86|qemu-block-extra) ;; *) filtered+=("$p") ;; esac
    done
    apt-get install -y -q --no-install-recommends --allow-downgrades \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${filtered[@]}" "${pins[@]}"
else
    log "all Debian packages present"
fi

# Installing nginx may start the distribution's nginx on port 80 of the host namespace (where
# invoke-rc.d's policy allows it; there is no systemd here). Only the one this run installed is
# stopped, by the PID in its pid file, and only if that PID is an nginx.
if [[ " ${missing[*]-} " == *" nginx "* ]] && [ -s /run/nginx.pid ]; then
    pid=$(cat /run/nginx.pid)
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
        log "stopping the nginx service the package started (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 50); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
    fi
fi

# schemathesis (PyPI), the OpenAPI fuzzer of tests/e2e/fuzz.rs, in its own venv at a fixed path.
SCHEMATHESIS_VERSION=4.32.5
VENV=/opt/hyperlet-venv
if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The wasm target for plugins.
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        log "adding rust target wasm32-wasip2"
        rustup target add wasm32-wasip2
    fi
else
    echo "rustup not found: install the Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi

# /dev/kvm as udev sets it on a normal Debian host (root:kvm 0660). Without udev it stays
# root-only; libvirt then sees that QEMU cannot open it, discards its capability cache on every
# lookup and re-probes QEMU, which makes each domain start take tens of seconds.
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi

# libvirt daemons: there is no systemd on these machines, so start them by hand if needed.
mkdir -p /run/libvirt
if ! pgrep -x virtlogd >/dev/null; then
    log "starting virtlogd"
    virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd"
    libvirtd -d
fi
for _ in $(seq 1 50); do
    if virsh -c qemu:///system version >/dev/null 2>&1; then
        log "libvirtd is answering"
        exit 0
    fi
    sleep 0.2
done
echo "libvirtd did not answer on qemu:///system within 10 s; check /var/log/libvirt/libvirtd.log" >&2
exit 1
