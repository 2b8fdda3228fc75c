"""The live system, booted for real under qemu (TCG), the way a technician meets it.

- BIOS from the ISO as a CD, with the stick's BOOTMEDIA data partition on a second disk; UEFI
  from a USB stick made by `bootmedia make-usb`, with the repository on its own data partition.
  Both with a blank target disk that has a serial. The TUI comes up on ttyS0 by itself; the test
  restores the golden image through it, reads "read back and checked" on the result screen,
  powers off from the menu, then (BIOS) boots the restored disk alone and sees its login
  prompt. Booting a restored disk under UEFI is tests/e2e/test_customize.py's last boot.
- Unattended, from a make-usb stick booted by BIOS: the stick's bootmedia.toml names a restore
  job; with no input at all the machine restores, writes a result file to the stick's data
  partition and powers off.
- Netboot (the kernel and initrd with fetch= over HTTP), a keymap from the command line, an
  exFAT partition and the TUI -> shell -> TUI round trip are in tests/e2e/test_net.py's boot.
- Screenshots of tty1 (the VGA console): home at 80x25 (BIOS, text mode), home on UEFI's
  framebuffer, a progress screen.

Each boot of the live system takes about a minute and a half under TCG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia import stick as sticks
from tests.e2e.conftest import ROOT, e2e, needs_ovmf
from tests.e2e.harness import VM, Drive, Screen, ScreenTimeout, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500), e2e]

TARGET_SERIAL = "E2E-TARGET-7Q3K"
DATA_SERIAL = "E2E-BOOTMEDIA"
BOOT_TIMEOUT = 360  # the ISO to the TUI, under TCG on a busy 2-core machine
RESTORE_TIMEOUT = 600


def _home(screen: Screen) -> None:
    screen.wait_for(r"What do you want to do\?", BOOT_TIMEOUT)
    # The home screen fills in the machine's disks and images after it appears.
    screen.wait_for(r"Images \(1\)", 120)
    screen.wait_for(r"golden", 30)


def _choose_grub_entry(screen: Screen, downs: int) -> None:
    screen.wait_for(r"GNU GRUB", 180, raw=True)
    screen.wait_for(r"automatically in", 30)
    screen.press(*(["down"] * downs), "enter")


def _press_until(screen: Screen, key: str, pattern: str, timeout: float, tries: int = 3) -> None:
    """Press a key until the screen moves on. Under TCG a key can arrive while a table is
    still being filled by its worker and do nothing; pressing again then is what a person does."""
    for attempt in range(tries):
        screen.press(key)
        try:
            screen.wait_for(pattern, timeout / tries)
            return
        except ScreenTimeout:
            if attempt == tries - 1:
                raise


def _restore_through_tui(screen: Screen) -> str:
    screen.press("r")
    screen.wait_for(r"Which image should go onto the disk\?", 60)
    screen.wait_for(r"golden", 60)
    screen.settle()
    _press_until(screen, "enter", r"Which disk gets golden\?", 90)
    screen.wait_for(TARGET_SERIAL[-8:], 60)
    screen.settle()
    # The details pane describes the highlighted disk: walk down to the target.
    for _ in range(4):
        details = screen.text().split("└")[0].rsplit("┌", 1)[-1]
        if TARGET_SERIAL in details:
            break
        screen.press("down")
        screen.settle()
    screen.press("enter")
    screen.wait_for(r"Verify after writing", 60)
    assert "[x] Verify" in screen.text()
    screen.press("enter")
    screen.wait_for(r"last 4 characters of the serial", 120)
    screen.settle()
    screen.type(TARGET_SERIAL[-4:])
    screen.press("enter")
    screen.wait_for(r"(OK|FAILED|CANCELLED): .*", RESTORE_TIMEOUT)
    # The first match can catch the line half drawn over the progress screen's ("OK: Restore
    # finfat), 2 of 3"): read it again once the screen has settled.
    screen.settle()
    text = screen.text()
    done = re.search(r"(OK|FAILED|CANCELLED): .*", text)
    assert done is not None, text
    return done.group(0) + "\n" + text


def _power_off_from_menu(vm: VM, screen: Screen) -> None:
    screen.press("enter")  # result -> home
    screen.wait_for(r"What do you want to do\?", 60)
    screen.press("o")  # Home's "Power off or reboot"
    screen.wait_for(r"Reboot or power off this machine now\?", 60)
    screen.press("o")  # power off
    assert vm.wait_exit(180) == 0


def _tty1_progress_screenshot(vm: VM, work: Path) -> None:
    """tty1 runs its own TUI: start a verify there with the VGA keyboard and photograph the
    progress screen. (The screen is only seen as pixels here; the PNG is for people.)"""
    vm.send_key("v")
    time.sleep(4)
    vm.send_key("ret")  # the one image
    time.sleep(6)
    vm.send_key("ret")  # start
    time.sleep(8)
    shot = vm.screendump(work / "tty1-progress.png")
    assert shot.stat().st_size > 2000  # more than a blank screen
    _keep_screenshot(shot, "tty1-progress.png")


def _boot_restored(work: Path, target: Path, firmware: str) -> str:
    vm = VM(work, firmware=firmware, drives=[Drive(target, "RESTORED")], name="restored")
    screen = vm.start()
    try:
        match = screen.wait_for(r"golden login:", 300, raw=True)
        return match.group(0)
    finally:
        vm.stop()


@pytest.mark.parametrize(
    ("firmware", "medium"),
    [("bios", "cd"), pytest.param("uefi", "usb", marks=needs_ovmf)],
    ids=["bios-cd", "uefi-usb"],
)
def test_restore_through_the_tui_then_boot_the_restored_disk(
    firmware: str, medium: str, live_iso: Path, disks: dict[str, Path]
) -> None:
    """BIOS boots the ISO as a CD with the data partition on a second disk; UEFI boots a USB
    stick made by `bootmedia make-usb`, with the repository on the stick's own data partition."""
    work = disks["dir"]
    target = Drive(disks["target"], TARGET_SERIAL)
    if medium == "cd":
        vm = VM(work, firmware=firmware, cdrom=live_iso, name=f"live-{firmware}")
        vm.drives = [target, Drive(disks["data"], DATA_SERIAL)]
        data_disk, data_part = disks["data"], 1
    else:
        stick = _make_stick(work, live_iso, disks["data"])
        vm = VM(work, firmware=firmware, name=f"live-{firmware}")
        vm.drives = [Drive(stick, "E2E-STICK-0001", usb=True), target]
        data_disk, data_part = stick, 5
    screen = vm.start()
    try:
        if firmware == "bios":
            # "safe graphics" keeps the VGA text mode: tty1 is 80x25, as on many real machines.
            _choose_grub_entry(screen, downs=2)
        _home(screen)
        text = screen.text()
        assert TARGET_SERIAL[:8] in text or "vda" in text
        name = "tty1-home.png" if firmware == "bios" else "tty1-home-uefi.png"
        _keep_screenshot(vm.steady_screendump(work / name), name)
        result = _restore_through_tui(screen)
        assert result.startswith("OK: Restore finished"), result
        assert "read back and checked" in result, result
        if firmware == "bios":
            _tty1_progress_screenshot(vm, work)
        _power_off_from_menu(vm, screen)
    finally:
        vm.stop()
    # The data partition kept the session's log.
    with lab.loop_disk(data_disk) as dev:
        logs = _read_from_ext4(f"{dev}p{data_part}", "logs/bootmedia.log", work)
    assert "apply" in logs or "restore" in logs.lower()
    if firmware == "bios":  # UEFI: test_customize boots its restored disk under OVMF
        assert "golden login:" in _boot_restored(work, disks["target"], firmware)


def _make_stick(work: Path, iso: Path, data_template: Path) -> Path:
    """A 1 GiB stick made by make-usb (ext4 data partition, so this host can fill it), holding
    the repository of the data disk."""
    from bootmedia.disks import find_disk
    from bootmedia.progress import Reporter

    stick = lab.make_file(work / "stick.img", 1024 << 20)
    mnt, src = work / "mnt-stick", work / "mnt-src"
    mnt.mkdir(exist_ok=True)
    src.mkdir(exist_ok=True)
    with lab.loop_disk(stick) as dev, lab.loop_disk(data_template, read_only=True) as data:
        plan = sticks.plan_stick(sticks.inspect_iso(iso), find_disk(dev), "ext4")
        result = sticks.make_stick(plan, Reporter())
        run(["mount", result.data_partition, str(mnt)])
        try:
            run(["mount", "-o", "ro", f"{data}p1", str(src)])
            try:
                run(["cp", "-a", str(src / "images"), str(mnt)])
            finally:
                run(["umount", str(src)])
        finally:
            run(["umount", str(mnt)])
    return stick


def test_unattended_restore_from_a_stick_powers_off_and_leaves_a_result(
    live_iso: Path, disks: dict[str, Path]
) -> None:
    """A make-usb stick booted by BIOS, whose bootmedia.toml names a restore job."""
    work = disks["dir"]
    job = (
        "[job]\n"
        'action = "restore"\n'
        'image = "golden"\n'
        'repo = "images"\n'
        'target = "internal"\n'
        'after = "poweroff"\n'
        "countdown = 5\n"
    )
    stick = _make_stick(work, live_iso, disks["data"])
    with lab.loop_disk(stick) as dev:
        _write_to_ext4(f"{dev}p5", "bootmedia.toml", job, work)
    vm = VM(
        work,
        firmware="bios",
        drives=[Drive(stick, "E2E-STICK-0002", usb=True), Drive(disks["target"], TARGET_SERIAL)],
        name="unattended",
    )
    vm.start()
    try:
        # No key is pressed from here on.
        assert vm.wait_exit(BOOT_TIMEOUT + RESTORE_TIMEOUT) == 0
    finally:
        vm.stop()
    with lab.loop_disk(stick) as dev:
        result = json.loads(_read_from_ext4(f"{dev}p5", "results/last.json", work))
    assert result["status"] == "success", result
    assert result["verified"] is True
    assert result["target"]["serial"] == TARGET_SERIAL
    assert result["job"]["image"] == "golden"
    with lab.loop_disk(disks["target"], read_only=True) as dev:
        table = json.loads(run(["sfdisk", "--json", dev]).stdout)["partitiontable"]
    assert [p["name"] for p in table["partitions"]] == ["bios", "esp", "root"]


# ---------------------------------------------------------------- helpers


def _read_from_ext4(part: str, name: str, work: Path) -> str:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    run(["mount", "-o", "ro", part, str(mnt)])
    try:
        return (mnt / name).read_text()
    finally:
        run(["umount", str(mnt)])


def _write_to_ext4(part: str, name: str, text: str, work: Path) -> None:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    run(["mount", part, str(mnt)])
    try:
        (mnt / name).write_text(text)
    finally:
        run(["umount", str(mnt)])


def _keep_screenshot(shot: Path, name: str) -> None:
    """Screenshots land in build/e2e; BOOTMEDIA_UPDATE_SCREENSHOTS=1 also refreshes docs/."""
    kept = ROOT / "build" / "e2e" / "screenshots" / name
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, kept)
    if os.environ.get("BOOTMEDIA_UPDATE_SCREENSHOTS"):
        docs = ROOT / "docs" / "screenshots" / name
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, docs)
