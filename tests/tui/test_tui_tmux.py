"""The real app in tmux as a technician meets it on the Linux console: TERM=linux, 80x25, keys
only. Drives a full restore on the demo lab with send-keys and reads the screen back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import needs_loop, sparse_copy

from app.glyphs import unsafe_glyphs
from bootmedia import lab

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    needs_loop,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
]


class Tmux:
    def __init__(self, name: str, socket: Path) -> None:
        self.name = name
        self.base = ["tmux", "-S", str(socket)]

    def run(self, *argv: str) -> str:
        proc = subprocess.run([*self.base, *argv], capture_output=True, text=True, check=True)
        return proc.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", self.name, key)
            time.sleep(0.15)

    def quit(self) -> None:
        """Ctrl+Q asks first while the demo lab is set up."""
        self.keys("C-q")
        self.wait("Quit bootmedia?", timeout=20)
        self.keys("y")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def wait(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if needle in text:
                return text
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} never appeared; the screen:\n{self.screen()}")


@pytest.fixture
def after_exit() -> str:
    return "stty -a; echo AFTER-THE-APP; sleep 60"  # what runs in the pane once the app is gone


@pytest.fixture
def console() -> tuple[str, int, int]:
    return ("linux", 80, 25)  # the Linux VT


@pytest.fixture
def tmux(tmp_path: Path, lab_template: Path, console: tuple[str, int, int], after_exit: str) -> Any:
    term, cols, rows = console
    demo_dir = tmp_path / "lab"
    shutil.copytree(lab_template, demo_dir, copy_function=sparse_copy)
    socket = tmp_path / "tmux.sock"
    t = Tmux("bm", socket)
    shell = tmp_path / "fake-shell"
    shell.write_text("#!/bin/sh\necho IN-THE-SHELL; sleep 1\n")
    shell.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": term}
    env.pop("COLORTERM", None)
    command = (
        f"TERM={term} SHELL={shell} {sys.executable} -m bootmedia --log-dir {tmp_path} "
        f"tui --demo --demo-dir {demo_dir}; {after_exit}"
    )
    subprocess.run(
        [*t.base, "new-session", "-d", "-s", "bm", "-x", str(cols), "-y", str(rows), command],
        check=True,
        env=env,
        cwd=ROOT,
    )
    t.demo_dir = demo_dir  # type: ignore[attr-defined]
    yield t
    subprocess.run([*t.base, "kill-server"], check=False)
    time.sleep(0.5)
    from bootmedia.demo import _detach_stale

    _detach_stale(demo_dir / "disks")  # in case the app did not get to close its lab


def test_full_restore_on_the_linux_console(tmux: Tmux, tmp_path: Path) -> None:
    home = tmux.wait("What do you want to do?")
    assert "DEMO LAB" in home
    assert not unsafe_glyphs(home), unsafe_glyphs(home)
    tmux.keys("r")
    tmux.wait("Which image should go onto the disk?")
    tmux.keys("Enter")
    picker = tmux.wait("can be chosen")
    assert "REFUSED" in picker  # the lab's stick
    assert "newpc-1.img" in picker
    tmux.keys("Enter")
    tmux.wait("Afterwards:")
    tmux.keys("Enter")
    summary = tmux.wait("and press Enter:")
    assert "bootmedia apply" in summary
    # The lab's disks have serials, so the demo confirms the way real hardware does.
    serial = re.search(r"last 4 characters of the serial (LB[0-9A-F]{6})", summary)
    assert serial, summary
    assert not re.search(r"Type its name loop\d+", summary)
    tmux.keys("nope", "Enter")
    tmux.wait("does not match. Nothing was written.")
    tmux.keys(serial.group(1)[-4:], "Enter")
    result = tmux.wait("OK: Restore finished", timeout=180)
    assert "read back and checked" in result
    assert not unsafe_glyphs(result), unsafe_glyphs(result)
    # Written and read back agree, next to each other (issue 13 item 10).
    written = re.search(r"Written: ([\d.]+ [kMG]B)", result)
    assert written and f"Read back and checked: {written.group(1)}" in result, result
    tmux.keys("Enter")
    tmux.wait("What do you want to do?")
    tmux.quit()
    time.sleep(3)  # the app detaches its lab on the way out
    image = tmux.demo_dir / "disks" / "newpc-1.img"  # type: ignore[attr-defined]
    reference = tmux.demo_dir / "disks" / "reference.img"  # type: ignore[attr-defined]
    with (
        lab.loop_disk(image, read_only=True) as dev,
        lab.loop_disk(reference, read_only=True) as ref,
    ):
        for part, fstype in (("p2", "ext4"), ("p3", "ntfs")):
            assert lab.file_checksums(dev + part, fstype) == lab.file_checksums(ref + part, fstype)


def test_shell_and_back(tmux: Tmux) -> None:
    tmux.wait("What do you want to do?")
    tmux.keys("s")
    tmux.wait("IN-THE-SHELL", timeout=20)  # the app gave the terminal to the shell
    home = tmux.wait("What do you want to do?", timeout=20)  # and took it back after exit
    assert "DEMO LAB" in home
    tmux.quit()


@pytest.mark.parametrize("console", [("vt100", 80, 24), ("xterm", 80, 24)], ids=["vt100", "xterm"])
def test_serial_console_80x24(tmux: Tmux, console: tuple[str, int, int]) -> None:
    home = tmux.wait("What do you want to do?")
    assert len(home.splitlines()) <= 24 and "Power off" in home
    tmux.keys("r")
    tmux.wait("Which image should go onto the disk?")
    tmux.keys("Enter")
    picker = tmux.wait("can be chosen")
    assert "REFUSED" in picker and "Enter Choose" in picker
    assert not unsafe_glyphs(picker), unsafe_glyphs(picker)
    if console[0] == "vt100":
        # Issue 13 item 11: a vt100 draws ASCII only: boxes in + - |, separators in -.
        for screen in (home, picker):
            assert screen.isascii(), {ch for ch in screen if not ch.isascii()}
        assert "+- What do you want to do? -" in home and "| newpc-1.img - LB" in picker
    else:
        assert "┌─ What do you want to do? ─" in home  # a UTF-8 terminal keeps its lines
    tmux.keys("Escape")
    tmux.wait("Which image should go onto the disk?")
    tmux.keys("Escape")
    tmux.wait("What do you want to do?")
    tmux.quit()


def test_quit_is_in_the_footer_and_asks_first(tmux: Tmux) -> None:
    """Issue 13 item 7."""
    home = tmux.wait("What do you want to do?")
    assert "^Q Quit" in home.splitlines()[-1] or "^Q Quit" in home
    tmux.keys("C-q")
    asked = tmux.wait("Quit bootmedia?")
    assert "virtual disks are" in asked  # ... detached: said before it happens
    tmux.keys("n")
    time.sleep(0.5)
    assert "What do you want to do?" in tmux.wait("What do you want to do?")
    tmux.keys("C-q")
    tmux.wait("Quit bootmedia?")
    tmux.keys("y")
    tmux.wait("AFTER-THE-APP", timeout=30)


def test_sigterm_restores_the_terminal(tmux: Tmux) -> None:
    """Issue 13 item 7: SIGTERM leaves like Ctrl+Q: echo and canonical mode are back."""
    tmux.wait("What do you want to do?")
    shell = int(tmux.run("display-message", "-p", "-t", tmux.name, "#{pane_pid}").strip())
    children = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(shell)], capture_output=True, text=True
    ).stdout.split("\n")
    pids = [int(line.split()[0]) for line in children if "python" in line]
    assert len(pids) == 1, children
    os.kill(pids[0], 15)
    text = tmux.wait("AFTER-THE-APP", timeout=30)
    flags = text.split()
    assert "echo" in flags and "-echo" not in flags, text
    assert "icanon" in flags and "-icanon" not in flags, text
    assert "What do you want to do?" not in text  # the alternate screen is gone
