#!/usr/bin/env bash
# Build hyperlet's tiny test guest from Debian packages (no internet needed beyond the Debian
# mirror):
#
#   tests/guest/build.sh OUTDIR
#
# produces
#   OUTDIR/vmlinuz      Debian's linux-image-<version>-amd64 kernel (direct kernel boot)
#   OUTDIR/initrd.img   gzip'd newc cpio: busybox-static, tests/guest/init as /init, the virtio
#                       (+ ACPI button, evdev, pvpanic) modules, qemu-ga with its libraries, and
#                       tests/guest/rootfs/ copied verbatim
#   OUTDIR/root.qcow2   an empty 64 MiB qcow2, the root disk image (tests use it as a backing file)
#   OUTDIR/VERSION      the stamp: package versions and a hash of this directory's sources
#
# Idempotent: when OUTDIR/VERSION matches what would be built, it does nothing. Everything it
# writes is world-readable (QEMU runs as libvirt-qemu).
#
# Needs: apt-get/apt-cache (root, or a user that can run `apt-get download`), dpkg-deb,
# busybox-static, cpio, gzip, xz-utils, qemu-img (qemu-utils), ldd (libc-bin), flock.
# Set HYPERLET_GUEST_KERNEL_PKG to pin the kernel package (default: what linux-image-amd64
# depends on).
set -euo pipefail

log() { printf '[guest] %s\n' "$*" >&2; }
die() { printf '[guest] error: %s\n' "$*" >&2; exit 1; }
trap 'printf "[guest] error: line %s failed: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The virtio drivers are modules in Debian's kernel; insmod order (dependencies first).
# button + evdev give the ACPI power button as /dev/input/event* for busybox acpid; the pvpanic
# drivers report a guest kernel panic to QEMU (libvirt <panic model='isa'/> or 'pvpanic' PCI),
# which turns into libvirt's "crashed" state and <on_crash> action.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    failover net_failover virtio_net virtio_blk virtio_console button evdev
    pvpanic pvpanic-mmio pvpanic-pci)

for tool in apt-get apt-cache dpkg-deb cpio gzip xz qemu-img ldd flock sha256sum; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: install apt dpkg cpio gzip xz-utils qemu-utils libc-bin util-linux coreutils (scripts/setup.sh does)"
done

umask 022
mkdir -p "$OUT"
chmod 0755 "$OUT"
OUT=$(cd "$OUT" && pwd)

# Serialise concurrent builds into the same OUTDIR.
exec 9>"$OUT/.build.lock"
flock 9

# --- What would be built --------------------------------------------------------------------

# One apt-cache call (~0.5 s): the kernel that linux-image-amd64 pins ("Depends:
# linux-image-6.1.0-N-amd64 (= V)") and qemu-guest-agent's candidate version.
# Prints "KPKG KVER QGA_VER" or fails.
resolve_packages() {
    apt-cache show --no-all-versions linux-image-amd64 qemu-guest-agent 2>/dev/null | awk '
        /^Package:/ { pkg = $2 }
        pkg == "linux-image-amd64" && /^Depends:/ {
            if (match($0, /linux-image-[0-9][^ ,]* \(= [^)]*\)/)) {
                split(substr($0, RSTART, RLENGTH), a, /[ ()=]+/)
                kpkg = a[1]; kver = a[2]
            }
        }
        pkg == "qemu-guest-agent" && /^Version:/ { qver = $2 }
        END { if (kpkg == "" || kver == "" || qver == "") exit 1; print kpkg, kver, qver }'
}

if ! resolved=$(resolve_packages); then
    log "apt-cache does not know the packages yet: apt-get update"
    apt-get update -q >&2 || die "apt-get update failed (needs root and the Debian mirror)"
    resolved=$(resolve_packages) ||
        die "apt-cache show linux-image-amd64 qemu-guest-agent: no kernel dependency or no version"
fi
read -r KPKG KVER QGA_VER <<<"$resolved"
QGA_PKG=qemu-guest-agent
if [ -n "${HYPERLET_GUEST_KERNEL_PKG:-}" ]; then
    KPKG=$HYPERLET_GUEST_KERNEL_PKG
    KVER=$(apt-cache show --no-all-versions "$KPKG" 2>/dev/null | awk '/^Version:/ { print $2; exit }' || true)
    [ -n "$KVER" ] || die "apt-cache has no version of $KPKG"
fi

BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found: apt-get install busybox-static"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked: apt-get install busybox-static (not busybox)"
fi

# Hash of this directory's sources (init, rootfs/, this script), names included.
sources_hash() {
    (
        cd "$HERE"
        find build.sh init rootfs -type f -print0 | LC_ALL=C sort -z |
            xargs -0 sha256sum
        find rootfs -perm -u+x -type f -print | LC_ALL=C sort
    ) | sha256sum | cut -d' ' -f1
}

STAMP="kernel=$KPKG $KVER
qemu-guest-agent=$QGA_VER
busybox=$(sha256sum "$BUSYBOX" | cut -d' ' -f1)
init=$(sha256sum "$HERE/init" | cut -d' ' -f1)
sources=$(sources_hash)"

if [ -f "$OUT/VERSION" ] && [ "$(cat "$OUT/VERSION")" = "$STAMP" ] &&
    [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/root.qcow2" ]; then
    log "up to date: $OUT ($KPKG $KVER)"
    exit 0
fi

# --- Build ----------------------------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hyperlet-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 0755 "$WORK"

log "downloading $KPKG $KVER and $QGA_PKG $QGA_VER"
APT_OPTS=()
# apt drops to the _apt user for downloads when root; it cannot write our private temp dir.
[ "$(id -u)" -eq 0 ] && APT_OPTS+=(-o APT::Sandbox::User=root)
(cd "$WORK" && apt-get download -q "${APT_OPTS[@]}" "$KPKG=$KVER" "$QGA_PKG=$QGA_VER" >&2) ||
    die "apt-get download $KPKG $QGA_PKG failed (is the Debian mirror reachable? try apt-get update)"
mkdir "$WORK/kernel" "$WORK/qga"
dpkg-deb -x "$WORK/${KPKG}_"*.deb "$WORK/kernel"
dpkg-deb -x "$WORK/${QGA_PKG}_"*.deb "$WORK/qga"

vmlinuz=$(find "$WORK/kernel/boot" -name 'vmlinuz-*' | head -n1)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $KPKG"
krel=${vmlinuz##*/vmlinuz-}
moddir="$WORK/kernel/lib/modules/$krel"
[ -d "$moddir" ] || moddir="$WORK/kernel/usr/lib/modules/$krel"
[ -d "$moddir" ] || die "no modules directory for $krel in $KPKG"

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,etc,var,lib/modules,lib64}
ln -s ../run "$ROOT/var/run"
cp "$BUSYBOX" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
install -m 0755 "$HERE/init" "$ROOT/init"
cp -R "$HERE/rootfs/." "$ROOT/"
ln -s ../usr/sbin/chpasswd "$ROOT/sbin/chpasswd"
mkdir -p "$ROOT/etc/udhcpc"
ln -s ../../usr/share/udhcpc/default.script "$ROOT/etc/udhcpc/default.script"

# Kernel modules (plain or compressed), in insmod order.
: >"$ROOT/lib/modules/order"
builtin="$moddir/modules.builtin"
for m in "${MODULES[@]}"; do
    f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) -print -quit)
    if [ -z "$f" ]; then
        if [ -f "$builtin" ] && grep -q "/$m.ko\$" "$builtin"; then
            log "module $m is built into $krel"
        else
            log "module $m does not exist in $krel: skipped"
        fi
        continue
    fi
    case "$f" in
        *.ko.xz) xz -dc "$f" >"$ROOT/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" >"$ROOT/lib/modules/$m.ko" ;;
        *.ko.zst) command -v zstd >/dev/null || die "$f is zstd-compressed: apt-get install zstd"
            zstd -qdc "$f" >"$ROOT/lib/modules/$m.ko" ;;
        *) cp "$f" "$ROOT/lib/modules/$m.ko" ;;
    esac
    echo "$m" >>"$ROOT/lib/modules/order"
done

# qemu-ga and every library it links (same paths as on this Debian host) + the loader.
install -m 0755 "$WORK/qga/usr/sbin/qemu-ga" "$ROOT/usr/sbin/qemu-ga"
ldd_out=$(ldd "$WORK/qga/usr/sbin/qemu-ga") || die "ldd qemu-ga failed"
if grep -q 'not found' <<<"$ldd_out"; then
    die "qemu-ga needs libraries missing on this host:
$(grep 'not found' <<<"$ldd_out")
install them (e.g. apt-get install libglib2.0-0 liburing2 libnuma1 libudev1 — qemu-system-x86 pulls them in)"
fi
while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)

# Permissions: everything world-readable except the shadow file.
chmod -R u+rwX,go+rX,go-w "$ROOT"
chmod 0600 "$ROOT/etc/shadow"
chmod 1777 "$ROOT/tmp"

log "packing initrd ($(du -sh "$ROOT" | cut -f1) unpacked)"
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) |
    gzip -9n >"$WORK/initrd.img"

# Put each file in place with a rename, so a guest that is running from the old files (or an
# overlay backed by root.qcow2) keeps its open inode. root.qcow2 is always the same empty image:
# keep an existing one.
publish() { # SRC NAME
    install -m 0644 "$1" "$OUT/.$2.new"
    mv -f "$OUT/.$2.new" "$OUT/$2"
}
publish "$vmlinuz" vmlinuz
publish "$WORK/initrd.img" initrd.img
if ! qemu-img info "$OUT/root.qcow2" 2>/dev/null | grep -q '^virtual size: 64 MiB'; then
    qemu-img create -q -f qcow2 "$WORK/root.qcow2" 64M
    publish "$WORK/root.qcow2" root.qcow2
fi
printf '%s\n' "$STAMP" >"$WORK/VERSION"
publish "$WORK/VERSION" VERSION
log "built $OUT: vmlinuz ($krel), initrd.img ($(du -h "$OUT/initrd.img" | cut -f1)), root.qcow2"
