"""File-backed virtual disks: the demo lab, the test suite and the benchmark all build on these."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from bootmedia.run import run, run_text


def can_use_loop() -> tuple[bool, str]:
    """Whether loop devices can be attached here, and why not."""
    if os.geteuid() != 0:
        return False, "needs root to attach loop devices"
    if not Path("/dev/loop-control").exists():
        return False, "no /dev/loop-control"
    return True, ""


def attach(image: str | Path, sector_size: int = 512, read_only: bool = False) -> str:
    """losetup a file as a disk with partitions scanned; returns /dev/loopN."""
    argv = ["losetup", "--find", "--show", "--partscan", "--sector-size", str(sector_size)]
    if read_only:
        argv.append("--read-only")
    dev = run_text([*argv, str(image)]).strip()
    rescan(dev)
    return dev


def rescan(dev: str) -> None:
    """Make the kernel's partition nodes match the table. There is no udev on a bare host, so
    partx does it; `udevadm settle` then waits for udev where one runs so the nodes exist."""
    run(["partx", "-u", dev], check=False)
    run(["udevadm", "settle", "--timeout=10"], check=False)
    # devtmpfs creates the nodes asynchronously; give it a moment.
    for _ in range(50):
        if all(Path(p).exists() for p in _expected_partitions(dev)):
            return
        time.sleep(0.05)


def _expected_partitions(dev: str) -> list[str]:
    name = Path(dev).name
    sysdir = Path("/sys/class/block") / name
    return sorted(f"/dev/{p.name}" for p in sysdir.glob(f"{name}p*"))


def detach(dev: str) -> None:
    run(["losetup", "--detach", dev], check=False)


@contextlib.contextmanager
def loop_disk(image: str | Path, sector_size: int = 512, read_only: bool = False) -> Iterator[str]:
    dev = attach(image, sector_size, read_only)
    try:
        yield dev
    finally:
        detach(dev)


def make_file(path: str | Path, size: int) -> Path:
    path = Path(path)
    with open(path, "wb") as f:
        f.truncate(size)
    return path
