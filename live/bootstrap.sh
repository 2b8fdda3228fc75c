#!/usr/bin/env bash
# Stage 1 of the live image: a Debian 12 base system with every package in live/packages.txt.
# This is the slow stage (~1.5 min), so build_iso.sh caches its output keyed by a hash of this
# file, packages.txt and the mirror. Usage: live/bootstrap.sh ROOTFS MIRROR
set -euo pipefail

rootfs=$1
mirror=$2
suite=bookworm
here=$(cd "$(dirname "$0")" && pwd)

mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$')

echo "bootstrap: debootstrap $suite (minbase) into $rootfs"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror" >"$rootfs.debootstrap.log" 2>&1 || {
    tail -20 "$rootfs.debootstrap.log" >&2
    exit 1
}

cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
SOURCES

# Daemons must not start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod +x "$rootfs/usr/sbin/policy-rc.d"

# Answer the console questions up front: UTF-8, Terminus (covers box drawing and block
# elements the TUI draws), US keymap (changed at boot with bootmedia.keymap=).
chroot "$rootfs" debconf-set-selections <<'DEBCONF'
console-setup console-setup/charmap47 select UTF-8
console-setup console-setup/codeset47 select Guess optimal character set
console-setup console-setup/fontface47 select Terminus
console-setup console-setup/fontsize-fb47 select 8x16
console-setup console-setup/fontsize-text47 select 8x16
keyboard-configuration keyboard-configuration/layoutcode string us
keyboard-configuration keyboard-configuration/model select Generic 105-key PC
keyboard-configuration keyboard-configuration/xkb-keymap select us
DEBCONF

mounts=()
cleanup() {
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" || true; done
    mounts=()
}
trap cleanup EXIT
for fs in proc sys dev dev/pts; do
    mount --bind "/$fs" "$rootfs/$fs"
    mounts+=("$rootfs/$fs")
done

# A clean environment: the host's PIP_*, PYTHON* or proxy settings mean nothing in there.
in_chroot() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive chroot "$rootfs" "$@"
}
echo "bootstrap: apt-get install ${#packages[@]} packages"
in_chroot apt-get update -qq
in_chroot apt-get install -y -qq --no-install-recommends "${packages[@]}" >"$rootfs.apt.log" 2>&1 || {
    tail -30 "$rootfs.apt.log" >&2
    exit 1
}
in_chroot apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*

# Kernel modules a disk-imaging console never loads: sound, Wi-Fi, TV cards, big GPU
# drivers (the firmware framebuffer is enough for a text UI). Keeps the ISO small.
kver=$(basename "$(ls -d "$rootfs"/lib/modules/*)")
moddir="$rootfs/lib/modules/$kver/kernel"
rm -rf "$moddir/sound" "$moddir/net/wireless" "$moddir/net/mac80211" \
    "$moddir/drivers/net/wireless" "$moddir/drivers/media" "$moddir/drivers/staging" \
    "$moddir/drivers/infiniband" "$moddir/drivers/gpu/drm/amd" "$moddir/drivers/gpu/drm/nouveau" \
    "$moddir/drivers/gpu/drm/radeon" "$moddir/drivers/gpu/drm/i915" "$moddir/drivers/bluetooth" \
    "$moddir/drivers/isdn" "$moddir/drivers/iio"
in_chroot depmod "$kver"
in_chroot update-initramfs -u -k "$kver" >/dev/null
cleanup
trap - EXIT
echo "bootstrap: done ($(du -sh "$rootfs" | cut -f1))"
