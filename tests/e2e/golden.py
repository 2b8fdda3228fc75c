"""A small bootable Linux disk for the e2e tests: the "golden image" a technician restores.

Debian 12 minbase with the cloud kernel (virtio built in, small), on a GPT disk with a BIOS boot
partition, an EFI system partition and an ext4 root, so it boots by BIOS and by UEFI. GRUB is
installed from the host (grub-install for BIOS; grub-mkstandalone + mtools for UEFI, because the
host has no vfat driver). It prints a login prompt on ttyS0, which is what the tests wait for.

The debootstrap'd tree is cached under CACHE_DIR keyed by a hash of its inputs; the disk itself
is made fresh every run.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from tests.e2e.harness import run

CACHE_DIR = Path("/var/cache/bootmedia-build")
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("linux-image-cloud-amd64", "systemd-sysv", "udev", "e2fsprogs")
DISK_SIZE = 640 << 20
ESP_SIZE = 40 << 20  # FAT32's minimum is about 33 MiB
HOSTNAME = "golden"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69ED7D8E47"
VERSION = "1"  # bump to rebuild the cached tree


def _key() -> str:
    text = "\n".join([VERSION, MIRROR, *PACKAGES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def golden_tree(cache_dir: Path = CACHE_DIR) -> Path:
    """The golden system's files (debootstrap, ~1.5 min; cached)."""
    tree = cache_dir / f"golden-{_key()}"
    if (tree / ".complete").exists():
        return tree
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = tree.with_name(tree.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            "bookworm",
            str(tmp),
            MIRROR,
        ]
    )
    # What the golden machine needs to boot to a login prompt, and nothing to read.
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt"):
        shutil.rmtree(tmp / sub, ignore_errors=True)
    for lists in (tmp / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    (tmp / "etc/hostname").write_text(HOSTNAME + "\n")
    run(["chroot", str(tmp), "passwd", "-d", "root"])
    (tmp / ".complete").touch()
    tmp.rename(tree)
    return tree


def build_golden_disk(path: Path, cache_dir: Path = CACHE_DIR) -> Path:
    """Write the golden disk image to path (a file of DISK_SIZE bytes)."""
    from bootmedia import lab

    tree = golden_tree(cache_dir)
    lab.make_file(path, DISK_SIZE)
    layout = (
        "label: gpt\n"
        f"size=1MiB, type={BIOS_BOOT}, name=bios\n"
        f"size={ESP_SIZE >> 20}MiB, type={ESP}, name=esp\n"
        f"type={LINUX}, name=root\n"
    )
    run(["sfdisk", "--quiet", str(path)], input=layout)
    with lab.loop_disk(path) as dev, tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        esp, root = f"{dev}p2", f"{dev}p3"
        run(["mkfs.ext4", "-q", "-L", "golden-root", root])
        uuid = run(["blkid", "-o", "value", "-s", "UUID", root]).stdout.strip()
        mnt = Path(tmp) / "root"
        mnt.mkdir()
        run(["mount", root, str(mnt)])
        try:
            run(["cp", "-a", f"{tree}/.", str(mnt)])
            (mnt / ".complete").unlink()
            (mnt / "etc/fstab").write_text(f"UUID={uuid} / ext4 defaults 0 1\n")
            kernel = sorted((mnt / "boot").glob("vmlinuz-*"))[-1].name
            initrd = "initrd.img-" + kernel.removeprefix("vmlinuz-")
            grub_cfg = (
                "serial --unit=0 --speed=115200\n"
                "terminal_input serial console\n"
                "terminal_output serial console\n"
                "set timeout=1\n"
                "menuentry golden {\n"
                f"    search --no-floppy --fs-uuid --set=root {uuid}\n"
                f"    linux /boot/{kernel} root=UUID={uuid} ro console=tty0 console=ttyS0,115200\n"
                f"    initrd /boot/{initrd}\n"
                "}\n"
            )
            (mnt / "boot/grub").mkdir(parents=True, exist_ok=True)
            (mnt / "boot/grub/grub.cfg").write_text(grub_cfg)
            run(
                [
                    "grub-install",
                    "--target=i386-pc",
                    f"--boot-directory={mnt}/boot",
                    "--modules=part_gpt ext2 search_fs_uuid",
                    dev,
                ]
            )
            # UEFI: one standalone GRUB (its modules in a memdisk, so the prefix stays there)
            # with a tiny config that finds the root and reads its grub.cfg.
            early = Path(tmp) / "early.cfg"
            early.write_text(
                f"search --no-floppy --fs-uuid --set=root {uuid}\n"
                "configfile ($root)/boot/grub/grub.cfg\n"
            )
            efi = Path(tmp) / "BOOTX64.EFI"
            run(
                [
                    "grub-mkstandalone",
                    "--format=x86_64-efi",
                    f"--output={efi}",
                    "--modules=part_gpt ext2 search_fs_uuid",
                    "--locales=",
                    "--fonts=",
                    f"boot/grub/grub.cfg={early}",
                ]
            )
            # mtools wants a file (it asks a block device for its geometry and fails on loop).
            esp_img = Path(tmp) / "esp.img"
            run(["mkfs.fat", "-F", "32", "-n", "ESP", "-C", str(esp_img), str(ESP_SIZE >> 10)])
            run(["mmd", "-i", str(esp_img), "::/EFI", "::/EFI/BOOT"])
            run(["mcopy", "-i", str(esp_img), str(efi), "::/EFI/BOOT/BOOTX64.EFI"])
            run(["dd", f"if={esp_img}", f"of={esp}", "bs=1M", "conv=fsync", "status=none"])
        finally:
            run(["umount", str(mnt)])
    return path
