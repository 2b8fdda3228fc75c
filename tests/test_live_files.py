"""The live image's recipe, checked without building it (tests/e2e builds and boots it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIVE = ROOT / "live"
SCRIPTS = [
    ROOT / "build_iso.sh",
    LIVE / "bootstrap.sh",
    LIVE / "configure.sh",
    LIVE / "overlay/usr/local/bin/bootmedia-launch",
    LIVE / "overlay/usr/local/sbin/bootmedia-boot-setup",
]


def packages() -> set[str]:
    lines = (LIVE / "packages.txt").read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines} - {""}


def test_every_disk_tool_the_engine_and_wipe_need_is_in_the_image() -> None:
    needed = {
        "partclone", "fdisk", "gdisk", "parted", "util-linux", "e2fsprogs", "dosfstools",
        "mtools", "ntfs-3g", "exfatprogs", "btrfs-progs", "xfsprogs", "nvme-cli", "hdparm",
        "udpcast", "zstd", "linux-image-amd64", "live-boot", "systemd-sysv", "udev",
        "console-setup", "python3", "python3-venv",
    }  # fmt: skip
    assert needed <= packages(), needed - packages()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_are_strict(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text or "set -uo pipefail" in text
    assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_kernel_command_line_has_both_consoles() -> None:
    cfg = (LIVE / "grub.cfg").read_text()
    assert "console=tty0 console=ttyS0,115200" in cfg
    assert "boot=live" in cfg
    assert "terminal_output console serial" in cfg


def test_both_consoles_log_in_and_start_the_tui() -> None:
    system = LIVE / "overlay/etc/systemd/system"
    for unit in ("getty@tty1.service.d", "serial-getty@ttyS0.service.d"):
        assert "--autologin root" in (system / unit / "autologin.conf").read_text()
    profile = (LIVE / "overlay/root/.bash_profile").read_text()
    assert "/dev/tty1 | /dev/ttyS0) exec /usr/local/bin/bootmedia-launch" in profile
    launch = (LIVE / "overlay/usr/local/bin/bootmedia-launch").read_text()
    assert "bootmedia tui" in launch


def test_data_partition_is_mounted_by_label_when_it_appears() -> None:
    rule = (LIVE / "overlay/etc/udev/rules.d/90-bootmedia-data.rules").read_text()
    assert 'ENV{ID_FS_LABEL}=="BOOTMEDIA"' in rule and "run-bootmedia-data.mount" in rule
    mount = (LIVE / "overlay/etc/systemd/system/run-bootmedia-data.mount").read_text()
    assert "What=/dev/disk/by-label/BOOTMEDIA" in mount
    assert "Where=/run/bootmedia/data" in mount  # the unit's name must match Where=


def test_console_font_is_one_that_exists_in_every_size_the_launcher_picks() -> None:
    setup = (LIVE / "overlay/etc/default/console-setup").read_text()
    assert 'CODESET="Vietnamese"' in setup and 'FONTFACE="Terminus"' in setup
    launch = (LIVE / "overlay/usr/local/bin/bootmedia-launch").read_text()
    assert "Vietnamese-Terminus$font.psf.gz" in launch
    fonts = Path("/usr/share/consolefonts")
    if not fonts.is_dir():
        pytest.skip("console-setup fonts are not installed on this host")
    for size in ("16", "32x16", "28x14", "24x12", "22x11", "20x10", "18x10"):
        assert (fonts / f"Vietnamese-Terminus{size}.psf.gz").exists()


def test_launcher_restarts_the_tui_gives_a_shell_and_comes_back(tmp_path: Path) -> None:
    """bootmedia-launch with a fake TUI: it crashes three times in a row (restarted, then the
    technician gets a shell), then quits normally (a shell; `exit` returns to the TUI)."""
    pexpect = pytest.importorskip("pexpect")
    runs = tmp_path / "runs"
    fake = tmp_path / "fake-tui"
    fake.write_text(
        "#!/bin/bash\n"
        'n=$(( $(cat "$1" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$1"\n'
        'echo "fake tui run $n"\n'
        'case "$n" in 1|2|3) exit 1 ;; 4) exit 0 ;; *) exec sleep 60 ;; esac\n'
    )
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
        "TERM": "xterm",
        "BOOTMEDIA_TUI_COMMAND": f"bash {fake} {runs}",
    }
    launcher = LIVE / "overlay/usr/local/bin/bootmedia-launch"
    child = pexpect.spawn("bash", [str(launcher)], env=env, timeout=30, encoding="utf-8")
    try:
        child.expect("fake tui run 1")
        child.expect(r"the TUI stopped \(exit 1\); restarting in 3 seconds")
        child.expect("fake tui run 2")
        child.expect("fake tui run 3")
        child.expect(r"the TUI keeps stopping \(exit 1\)")
        child.sendline("exit")
        child.expect("fake tui run 4")
        child.expect("root shell. Type 'exit' to return to bootmedia.")
        child.sendline("echo inside-$BOOTMEDIA_SHELL")
        child.expect("inside-1")
        child.sendline("exit")
        child.expect("fake tui run 5")
    finally:
        child.terminate(force=True)
    assert runs.read_text().strip() == "5"
