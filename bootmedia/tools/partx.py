"""Telling the kernel about a partition table: the one re-read.

sfdisk asks the kernel to re-read a table itself, but BLKRRPART fails while any partition of
the disk is busy, and a loop device without udev gets no nodes from it. `partx -u` updates the
kernel's partitions one by one, which works even while another partition is busy; it only
updates partitions the kernel knows, so `partx -a` then adds new ones (an MBR's logical
partitions behind a new extended one, a stick's new data partition), complaining harmlessly
about those that exist already. `udevadm settle` then waits for udev, where
one runs, so that /dev/disk/by-* links exist; on a machine without udev it fails harmlessly.
Last, devtmpfs creates the nodes asynchronously: wait for them.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterable
from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.run import run


def expected_nodes(dev: str) -> list[str]:
    """The partition nodes the kernel knows for dev (from sysfs)."""
    name = Path(dev).name
    sysdir = Path("/sys/class/block") / name
    return sorted(f"/dev/{p.name}" for p in sysdir.glob(f"{name}p*"))


def partition_path(disk: str, number: int) -> str:
    """/dev/sda + 1 -> /dev/sda1; /dev/nvme0n1 or /dev/loop3 + 1 -> ...p1. A link such as
    /dev/disk/by-id/ata-MODEL_SERIAL names the disk, not its partitions' prefix: the kernel
    names partitions after the node it points to (".../ata-X_SERIAL" + "3" is no device)."""
    if os.path.islink(disk):
        disk = os.path.realpath(disk)
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def reread(
    disk: str,
    numbers: Iterable[int] = (),
    *,
    record: list[str] | None = None,
    timeout: float = 10.0,
) -> None:
    """Make the kernel's partition nodes match the table on disk. With numbers, wait for those
    nodes and fail with one line if they do not appear; record collects the commands run."""
    steps = [["partx", "-u", disk], ["partx", "-a", disk], ["udevadm", "settle", "--timeout=10"]]
    for argv in steps:
        if record is not None:
            record.append(shlex.join(argv))
        run(argv, check=False)
    wanted = [partition_path(disk, n) for n in numbers]
    deadline = time.monotonic() + timeout
    while True:
        nodes = wanted or expected_nodes(disk)
        missing = [n for n in nodes if not Path(n).exists()]
        if not missing:
            return
        if time.monotonic() > deadline:
            if wanted:
                raise BootmediaError(f"{disk}: the kernel did not create {', '.join(missing)}")
            return
        time.sleep(0.05)


def settle(disk: str, timeout: float = 30.0) -> None:
    """Let udev finish what a job's writes queued before the disk is looked at again. Closing
    a disk that was opened for writing makes udev re-read its table: the partitions go and
    come back, and meanwhile its database has them without their filesystems. Then wait for
    the partition nodes. Where no udev runs, `udevadm settle` fails harmlessly."""
    run(["udevadm", "settle", f"--timeout={int(timeout)}"], check=False)
    deadline = time.monotonic() + timeout
    while any(not Path(n).exists() for n in expected_nodes(disk)):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def forget(disk: str, record: list[str] | None = None) -> None:
    """After a table is erased: drop the kernel's partitions (BLKRRPART, else partx -d)."""
    argv = ["blockdev", "--rereadpt", disk]
    if record is not None:
        record.append(shlex.join(argv))
    if run(argv, check=False).returncode != 0:
        if record is not None:
            record.append(shlex.join(["partx", "-d", disk]))
        run(["partx", "-d", disk], check=False)
