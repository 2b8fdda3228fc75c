#!/usr/bin/env bash
# Build the bootmedia live system: a hybrid ISO that boots by BIOS and UEFI, from a CD or written
# raw to a USB stick, plus the kernel, initrd and squashfs for network boot (docs/LIVE.md).
#
#   sudo ./build_iso.sh            -> out/bootmedia.iso, out/netboot/{vmlinuz,initrd.img,filesystem.squashfs}
#
# Stages:
#   1. base system: debootstrap + live/packages.txt (slow, ~1.5 min). Cached under $CACHE_DIR,
#      keyed by a hash of its inputs; a changed package list or mirror builds a new one.
#   2. bootmedia: the wheel built from this tree and its dependencies (downloaded on the host,
#      because the chroot has no route to the package index) go into /opt/bootmedia.
#   3. live/overlay/ + live/configure.sh, then squashfs (zstd) and grub-mkrescue.
#
# Environment: OUT_DIR (out), BUILD_DIR (build/live), CACHE_DIR (/var/cache/bootmedia-build),
# MIRROR (http://deb.debian.org/debian), NO_CACHE=1 to rebuild stage 1 from scratch.
set -euo pipefail

cd "$(dirname "$0")"
repo=$PWD
OUT_DIR=$(realpath -m "${OUT_DIR:-out}")
BUILD_DIR=$(realpath -m "${BUILD_DIR:-build/live}")
CACHE_DIR=$(realpath -m "${CACHE_DIR:-/var/cache/bootmedia-build}")
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PYTHON_VERSION=3.11 # Debian 12's python3 in the live system

# shellcheck source=live/cleanup.sh
. live/cleanup.sh

start=$(date +%s)
say() { printf '[%4ds] %s\n' "$(($(date +%s) - start))" "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "build_iso.sh: needs root (debootstrap, chroot)" >&2
    exit 1
fi
for tool in debootstrap mksquashfs grub-mkrescue xorriso mformat; do
    if ! command -v "$tool" >/dev/null; then
        echo "build_iso.sh: $tool is missing; run scripts/deps.sh" >&2
        exit 1
    fi
done
for dir in /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi; do
    if [ ! -d "$dir" ]; then
        echo "build_iso.sh: $dir is missing (grub-pc-bin, grub-efi-amd64-bin); run scripts/deps.sh" >&2
        exit 1
    fi
done

host_python=python3
[ -x "$repo/.venv/bin/python" ] && host_python="$repo/.venv/bin/python"

mkdir -p "$OUT_DIR" "$BUILD_DIR" "$CACHE_DIR"
# One build at a time: the cleanup below would otherwise unmount a running build's chroot.
exec 9>"$CACHE_DIR/build.lock"
if ! flock -n 9; then
    echo "build_iso.sh: another build is running (lock $CACHE_DIR/build.lock)" >&2
    exit 1
fi
# A build killed inside a chroot leaves proc, sys, dev... mounted under these: unmount first.
unmount_under "$BUILD_DIR" "$CACHE_DIR"/base-*.tmp

# ---- stage 1: the base system (cached) -------------------------------------------------------
key=$(cat live/bootstrap.sh live/packages.txt <(echo "$MIRROR") <(debootstrap --version) |
    sha256sum | cut -c1-16)
base="$CACHE_DIR/base-$key"
if [ -n "${NO_CACHE:-}" ] || [ ! -e "$base/.complete" ]; then
    say "stage 1: base system $key (not cached: building)"
    remove_build_dir "$base" "$base.tmp"
    live/bootstrap.sh "$base.tmp" "$MIRROR"
    touch "$base.tmp/.complete"
    mv "$base.tmp" "$base"
    # Keep only the newest two bases.
    ls -1dt "$CACHE_DIR"/base-* 2>/dev/null | grep -v '\.' | tail -n +3 | while IFS= read -r old; do
        remove_build_dir "$old"
    done
else
    say "stage 1: base system $key (cached)"
fi

rootfs="$BUILD_DIR/rootfs"
# A clean environment: the host's PIP_*, PYTHON* or proxy settings mean nothing in there.
in_chroot() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 \
        chroot "$rootfs" "$@"
}
remove_build_dir "$rootfs"
cp -a "$base" "$rootfs"
rm -f "$rootfs/.complete"

# ---- stage 2: bootmedia and its Python dependencies ------------------------------------------
say "stage 2: bootmedia wheel and dependencies"
wheels="$BUILD_DIR/wheels"
remove_build_dir "$wheels"
mkdir -p "$wheels"
"$host_python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$repo"
bootmedia_wheel=$(ls "$wheels"/bootmedia-*.whl)
# Third-party wheels are cached by the dependency list (pyproject.toml); the chroot cannot reach
# the index, so the host downloads wheels for the live system's Python.
dep_key=$(sed -n '/^dependencies/,/^]/p' pyproject.toml | cat - <(echo "$PYTHON_VERSION") | sha256sum | cut -c1-16)
dep_cache="$CACHE_DIR/wheels-$dep_key"
if [ ! -e "$dep_cache/.complete" ]; then
    rm -rf "$dep_cache"
    mkdir -p "$dep_cache"
    "$host_python" -m pip download --quiet --dest "$dep_cache" --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform linux_x86_64 \
        --python-version "$PYTHON_VERSION" --implementation cp "$bootmedia_wheel"
    rm -f "$dep_cache"/bootmedia-*.whl
    touch "$dep_cache/.complete"
fi
cp "$dep_cache"/*.whl "$wheels/"
mkdir -p "$rootfs/tmp/wheels"
cp "$wheels"/*.whl "$rootfs/tmp/wheels/"
in_chroot python3 -m venv /opt/bootmedia
in_chroot /opt/bootmedia/bin/pip install --quiet --no-index --no-cache-dir \
    --find-links /tmp/wheels "/tmp/wheels/$(basename "$bootmedia_wheel")"
rm -rf "$rootfs/tmp/wheels"
# customize edits Windows hives with Debian's python3-hivex (no PyPI package writes hives)
in_chroot /bin/bash -s /opt/bootmedia/bin/python <scripts/link-hivex.sh
in_chroot /opt/bootmedia/bin/bootmedia --version

# ---- stage 3: configuration, squashfs, ISO ---------------------------------------------------
say "stage 3: configure"
cp -a live/overlay/. "$rootfs/"
git -C "$repo" describe --always --dirty 2>/dev/null >"$rootfs/etc/bootmedia-build" || true
in_chroot /bin/bash -s <live/configure.sh

iso="$BUILD_DIR/iso"
remove_build_dir "$iso"
mkdir -p "$iso/live" "$iso/boot/grub"
kver=$(basename "$(ls -d "$rootfs"/lib/modules/*)")
cp "$rootfs/boot/vmlinuz-$kver" "$iso/live/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$iso/live/initrd.img"
cp live/grub.cfg "$iso/boot/grub/grub.cfg"

say "stage 3: squashfs (zstd)"
mksquashfs "$rootfs" "$iso/live/filesystem.squashfs" -comp zstd -Xcompression-level 15 \
    -b 1M -noappend -quiet -wildcards -e 'boot/vmlinuz*' -e 'boot/initrd.img*' -e 'tmp/*'
say "stage 3: hybrid ISO"
# Volume id is not BOOTMEDIA: that label belongs to the stick's data partition.
grub-mkrescue --output "$OUT_DIR/bootmedia.iso.tmp" "$iso" -- -volid BOOTMEDIA_LIVE \
    >"$BUILD_DIR/grub-mkrescue.log" 2>&1 || {
    cat "$BUILD_DIR/grub-mkrescue.log" >&2
    exit 1
}
mv "$OUT_DIR/bootmedia.iso.tmp" "$OUT_DIR/bootmedia.iso"

mkdir -p "$OUT_DIR/netboot"
cp "$iso/live/vmlinuz" "$iso/live/initrd.img" "$iso/live/filesystem.squashfs" "$OUT_DIR/netboot/"
# The iPXE script (docs/LIVE.md): firmware PXE -> iPXE -> this script -> kernel, initrd and
# squashfs over HTTP. ${base} is the HTTP folder holding these files (set it in a wrapper
# script or DHCP option; default: the boot server's /bootmedia); ${bootmedia-args} adds kernel
# parameters, e.g. an unattended job (bootmedia.job=restore bootmedia.repo=http://...).
cat >"$OUT_DIR/netboot/bootmedia.ipxe" <<'IPXE'
#!ipxe
isset ${base} || set base http://${next-server}/bootmedia
echo bootmedia: loading the live system from ${base}
kernel ${base}/vmlinuz boot=live fetch=${base}/filesystem.squashfs console=tty0 console=ttyS0,115200 quiet ${bootmedia-args}
initrd ${base}/initrd.img
boot
IPXE
(cd "$OUT_DIR" && sha256sum bootmedia.iso netboot/* >SHA256SUMS)

size=$(du -m "$OUT_DIR/bootmedia.iso" | cut -f1)
say "done: $OUT_DIR/bootmedia.iso (${size} MiB), netboot files in $OUT_DIR/netboot"
