"""customize for real under OVMF: an unattended job restores a disk whose ESP has NO fallback
loader, names the machine from a CSV keyed by the VM's DMI serial (-smbios type=1,serial=...),
and creates the UEFI boot entry with efibootmgr. Then:
  - the same disk with fresh UEFI variables (no entry) does not boot: OVMF finds no loader;
  - the same disk with the variables the live system wrote boots to a login prompt showing the
    new name.
Three boots: the live system from the ISO as a CD (restore + customize + power off), the disk without the entry,
the disk with it. A hook records `efibootmgr -v` from inside the VM as a parser fixture.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from bootmedia import lab
from tests.e2e.conftest import ROOT, e2e, needs_ovmf
from tests.e2e.harness import VM, Drive, ScreenTimeout, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400), e2e, needs_ovmf]

SERIAL = "E2E-SMBIOS-0042"
NAME = "e2e-lab-42"
TARGET = "E2E-TARGET-0042"
IMAGE = "golden-nofb"
MiB = 1 << 20
JOB = f"""[job]
action = "restore"
image = "{IMAGE}"
repo = "images"
target = "serial:{TARGET}"
after = "poweroff"
countdown = 3

[job.customize]
names_csv = "names.csv"
boot_entry = true
hooks = ["hooks/10-record-nvram.sh"]
"""
HOOK = """#!/bin/sh
# Runs inside the live system after customize: keep the real efibootmgr output.
set -e
efibootmgr -v > /run/bootmedia/data/efibootmgr-after.txt
echo "hook saw $BOOTMEDIA_HOSTNAME on $BOOTMEDIA_DISK (ESP $BOOTMEDIA_ESP)"
"""


def _without_fallback(golden: Path, dest: Path) -> Path:
    """The golden disk with its only loader moved from EFI/BOOT/BOOTX64.EFI to
    EFI/debian/grubx64.efi: a disk that boots only through an NVRAM entry."""
    run(["cp", "--sparse=always", str(golden), str(dest)])
    with lab.loop_disk(dest) as dev:
        esp = f"{dev}p2"
        loader = dest.with_name("grubx64.efi")
        run(["mcopy", "-i", esp, "-n", "::/EFI/BOOT/BOOTX64.EFI", str(loader)])
        run(["mmd", "-i", esp, "::/EFI/debian"])
        run(["mcopy", "-i", esp, str(loader), "::/EFI/debian/grubx64.efi"])
        run(["mdel", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI"])
        run(["mrd", "-i", esp, "::/EFI/BOOT"])
        listing = run(["mdir", "-i", esp, "-/", "-b", "::/"]).stdout
    assert "BOOTX64" not in listing.upper() and "grubx64.efi" in listing
    return dest


def _data_disk(work: Path, disk: Path) -> Path:
    """The stick's data partition on a disk of its own (ext4, LABEL=BOOTMEDIA): a repository
    with the image, the names CSV, the hook and bootmedia.toml."""
    from bootmedia.cli import main

    data = lab.make_file(work / "data.img", 1024 * MiB)
    run(["sfdisk", "--quiet", str(data)], input="label: gpt\ntype=linux, name=BOOTMEDIA\n")
    mnt = work / "mnt-data"
    mnt.mkdir(exist_ok=True)
    with lab.loop_disk(data) as dev:
        run(["mkfs.ext4", "-q", "-L", "BOOTMEDIA", f"{dev}p1"])
        run(["mount", f"{dev}p1", str(mnt)])
        try:
            shutil.rmtree(mnt / "lost+found", ignore_errors=True)
            with lab.loop_disk(disk, read_only=True) as src:
                argv = ["--log-dir", str(work), "capture", src, str(mnt / "images")]
                assert main([*argv, "--name", IMAGE, "-q"]) == 0
            (mnt / "names.csv").write_text(
                f"serial,name\nE2E-OTHER-1,wrong-machine\n{SERIAL},{NAME}\n"
            )
            (mnt / "hooks").mkdir()
            (mnt / "hooks" / "10-record-nvram.sh").write_text(HOOK)
            (mnt / "hooks" / "10-record-nvram.sh").chmod(0o755)
            (mnt / "bootmedia.toml").write_text(JOB)
        finally:
            run(["umount", str(mnt)])
    return data


def _read(data: Path, rel: str, work: Path) -> str:
    mnt = work / "mnt-data"
    with lab.loop_disk(data) as dev:
        run(["mount", "-o", "ro", f"{dev}p1", str(mnt)])
        try:
            return (mnt / rel).read_text()
        finally:
            run(["umount", str(mnt)])


def test_unattended_customize_creates_the_boot_entry_and_names_the_machine(
    live_iso: Path, golden_disk: Path, work: Path
) -> None:
    folder = work / "customize"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    disk = _without_fallback(golden_disk, folder / "nofallback.img")
    data = _data_disk(folder, disk)
    target = lab.make_file(folder / "target.img", 1024 * MiB)
    nvram = folder / "machine-OVMF_VARS.fd"

    # 1. The live system (the ISO as a CD), unattended: restore, customize, power off.
    # No key is pressed.
    live = VM(
        folder,
        firmware="uefi",
        cdrom=live_iso,
        drives=[Drive(target, TARGET), Drive(data, "E2E-DATA-0042")],
        name="customize-live",
        extra=["-smbios", f"type=1,serial={SERIAL}"],
        vars_file=nvram,
    )
    live.start()
    try:
        assert live.wait_exit(1500) == 0
    finally:
        live.stop()
    result = json.loads(_read(data, "results/last.json", folder))
    assert result["status"] == "success", result
    assert result["machine"]["serial"] == SERIAL
    changes = "\n".join(c["what"] for c in result["customize"]["changes"])
    assert result["customize"]["name"] == NAME
    assert "UEFI Boot" in changes and "first in BootOrder" in changes
    assert result["customize"]["boot_entry"].startswith("Boot")
    nvram_text = _read(data, "efibootmgr-after.txt", folder)
    # The real output; tests/fixtures/efibootmgr/ovmf-after-customize.txt is one such run's.
    (ROOT / "build" / "e2e" / "efibootmgr-after-customize.txt").write_text(nvram_text)
    entry = result["customize"]["boot_entry"].removeprefix("Boot")
    assert f"BootOrder: {entry}" in nvram_text
    assert "\\EFI\\debian\\grubx64.efi" in nvram_text

    # 2. Without the entry (fresh variables), the same disk does not boot.
    bare = VM(folder, firmware="uefi", drives=[Drive(target, TARGET)], name="no-entry")
    screen = bare.start()
    try:
        # OVMF tries the disk's removable-media path (no BOOTX64.EFI), then falls to its shell.
        screen.wait_for(r"Shell>", 300, raw=True)
        with pytest.raises(ScreenTimeout):
            screen.wait_for(r"login:", 20, raw=True)
        raw = screen.raw.decode(errors="replace")
        (folder / "no-entry-screen.txt").write_text(screen.text())
    finally:
        bare.stop()
    assert 'BdsDxe: failed to load Boot0001 "UEFI Misc Device"' in raw
    assert "Not Found" in raw and "login:" not in raw

    # 3. With the variables bootmedia wrote, the same disk boots to the new name.
    booted = VM(
        folder,
        firmware="uefi",
        drives=[Drive(target, TARGET)],
        name="with-entry",
        vars_file=nvram,
    )
    screen = booted.start()
    started = time.monotonic()
    try:
        match = screen.wait_for(rf"{NAME} login:", 400, raw=True)
        raw = screen.raw.decode(errors="replace")
    finally:
        booted.stop()
    assert match.group(0) == f"{NAME} login:"
    assert f'BdsDxe: starting {result["customize"]["boot_entry"]} "debian"' in raw
    print(f"booted to '{match.group(0)}' in {time.monotonic() - started:.0f} s")
