"""Builders shared by the engine tests: sample disks with real filesystems, and checks on them."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from bootmedia import lab
from bootmedia.lab import SamplePart

CHECKED = {
    "vfat": ["fsck.vfat", "-n"],
    "ext4": ["fsck.ext4", "-f", "-n"],
    "ntfs": ["ntfsfix", "-n"],
}

DOS_LAYOUT = (
    SamplePart(1, "vfat", 40),
    SamplePart(2, "ext4", 0),
    SamplePart(3, "ntfs", 48),
    SamplePart(4, "swap", 16),
)


def build(
    dev: str, label: str = "gpt", layout: tuple[SamplePart, ...] | None = None, seed: int = 1
) -> tuple[SamplePart, ...]:
    """Populate an attached disk, then put recognisable boot code in the MBR and the post-MBR
    gap so round trips can check them byte for byte."""
    layout = layout or (lab.DEFAULT_LAYOUT if label == "gpt" else DOS_LAYOUT)
    lab.populate_sample_disk(dev, label=label, layout=layout, seed=seed)
    rng = random.Random(seed)
    fd = os.open(dev, os.O_RDWR)
    try:
        os.pwrite(fd, rng.randbytes(440), 0)
        if label == "dos":
            ss = int(
                Path(f"/sys/class/block/{Path(dev).name}/queue/logical_block_size").read_text()
            )
            os.pwrite(fd, rng.randbytes(64 << 10), ss)  # where GRUB's core.img would live
        os.fsync(fd)
    finally:
        os.close(fd)
    return layout


def sums(dev: str, layout: tuple[SamplePart, ...]) -> dict[int, dict[str, str]]:
    return {
        p.number: lab.file_checksums(f"{dev}p{p.number}", p.fstype)
        for p in layout
        if p.fstype in CHECKED
    }


def fsck_clean(dev: str, layout: tuple[SamplePart, ...]) -> dict[int, str]:
    """Each filesystem's own checker, in no-change mode; returns the failures."""
    bad = {}
    for p in layout:
        if p.fstype in CHECKED:
            proc = subprocess.run(
                [*CHECKED[p.fstype], f"{dev}p{p.number}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0 or "BAD" in proc.stdout:
                bad[p.number] = proc.stdout[-500:] + proc.stderr[-500:]
    return bad


def table_dump(dev: str) -> list[str]:
    """sfdisk -d without the lines that name the device or depend on the disk's size."""
    out = subprocess.run(["sfdisk", "-d", dev], capture_output=True, text=True, check=True).stdout
    keep = []
    for line in out.splitlines():
        if line.startswith(("device:", "last-lba:")):
            continue
        keep.append(line.replace(dev, "DEV"))
    return keep


def read(dev: str, offset: int, length: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)


def bootmedia(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a technician runs it."""
    env = dict(
        os.environ, BOOTMEDIA_LOG_DIR=os.environ.get("BOOTMEDIA_LOG_DIR", "/tmp/bm-test-log")
    )
    return subprocess.run(
        ["python", "-m", "bootmedia", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
