#!/usr/bin/env bash
# Install everything bootmedia needs on a Debian 12 machine: the disk tools and a venv (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(
    partclone fdisk gdisk parted util-linux e2fsprogs dosfstools mtools ntfs-3g exfatprogs
    btrfs-progs xfsprogs xfsdump fatresize fuse3 nvme-cli hdparm zstd tmux udev kmod python3-venv
    # bench/: the second peer on ext4 (fsarchiver savefs -j2 -Z3); tests: strace shows that a
    # restore never calls a global sync()
    fsarchiver strace
    # build_iso.sh and the e2e tests (tests/e2e): the live image, and qemu to boot it
    debootstrap squashfs-tools xorriso grub-common grub2-common grub-pc-bin grub-efi-amd64-bin
    qemu-system-x86 ovmf
    # network repositories and multicast (bootmedia/net, bootmedia/cast) and their real-server
    # tests (tests/net): clients, and the servers the tests start inside network namespaces
    iproute2 sshfs openssh-client openssh-server cifs-utils nfs-common udpcast
    nginx-light samba smbclient nfs-ganesha nfs-ganesha-vfs dnsmasq-base ipxe nftables
    # customize (issue 12): offline Windows hive edits, UEFI boot entries; chntpw's reged is the
    # second, independent hive reader the tests check hivex's writes with
    python3-hivex libwin-hivex-perl chntpw efibootmgr
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
# hivex has no PyPI package that writes hives (the PyPI name "hivex" is an unrelated project), so
# Debian's python3-hivex bindings are linked into the venv: exactly those two files, not the whole
# system site-packages (see scripts/link-hivex.sh).
./scripts/link-hivex.sh .venv/bin/python
