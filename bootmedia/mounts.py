"""What is mounted where, read from /proc/self/mountinfo by device number (not by name, which
can be a symlink, a /dev/mapper alias or a by-uuid path)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    devno: int
    mountpoint: str
    source: str
    fstype: str
    read_only: bool


def _unescape(s: str) -> str:
    return (
        s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
    )


def read_mounts(path: str = MOUNTINFO) -> list[Mount]:
    mounts = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        major, minor = (int(x) for x in fields[2].split(":"))
        opts = fields[5].split(",") + fields[sep + 3].split(",")
        mounts.append(
            Mount(
                devno=os.makedev(major, minor),
                mountpoint=_unescape(fields[4]),
                source=_unescape(fields[sep + 2]),
                fstype=fields[sep + 1],
                read_only="ro" in opts,
            )
        )
    return mounts


def devno(path: str) -> int:
    return os.stat(path).st_rdev


def mounts_of(devices: list[str], mountinfo: str = MOUNTINFO) -> list[Mount]:
    """Mounts whose source is one of these block devices."""
    wanted = {devno(d) for d in devices if os.path.exists(d)}
    return [m for m in read_mounts(mountinfo) if m.devno in wanted]


def disk_of_path(path: str | Path) -> str | None:
    """The whole-disk /dev node holding a file's filesystem, when it is on a local disk."""
    dev = os.stat(path).st_dev
    sys_dir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sys_dir.exists():
        return None
    real = sys_dir.resolve()
    if (real / "partition").exists():
        real = real.parent
    return f"/dev/{real.name}"


def swaps() -> list[str]:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split()[0] for line in lines if line.strip()]
