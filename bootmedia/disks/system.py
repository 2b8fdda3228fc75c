"""What the running system does with its block devices: mounts, swap, holders, parent disks.

Paths are parameters so that tests can hand in a recorded mountinfo (the live-medium case
cannot be staged on a build machine) and so that nothing here needs root.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"
SWAPS = "/proc/swaps"
SYS_BLOCK = Path("/sys/class/block")

# Where live systems keep their boot medium and root: Debian live-boot, older live-boot,
# casper (Ubuntu), dracut's dmsquash-live, and the overlay/squashfs root itself.
LIVE_MOUNTPOINTS = (
    "/",
    "/run/live/medium",
    "/lib/live/mount/medium",
    "/run/live/rootfs",
    "/cdrom",
    "/run/initramfs/live",
    "/run/archiso/bootmnt",
)


@dataclass(frozen=True)
class Mount:
    devnum: str  # "8:1"; "0:NN" for filesystems without a block device (overlay, tmpfs, btrfs)
    mountpoint: str
    fstype: str
    source: str  # "/dev/sda1", "overlay", ...
    read_only: bool = False


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3:
            continue
        mounts.append(
            Mount(
                devnum=fields[2],
                mountpoint=_unescape(fields[4]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                read_only="ro" in fields[5].split(",")
                or "ro" in (fields[sep + 3].split(",") if len(fields) > sep + 3 else []),
            )
        )
    return mounts


def read_mounts(mountinfo: str | Path | None = None) -> list[Mount]:
    try:
        return parse_mountinfo(Path(mountinfo or MOUNTINFO).read_text())
    except OSError:
        return []


def read_swaps(swaps: str | Path | None = None) -> list[str]:
    """Device paths (or files) in use as swap right now."""
    try:
        lines = Path(swaps or SWAPS).read_text().splitlines()[1:]
    except OSError:
        return []
    return [_unescape(line.split()[0]) for line in lines if line.split()]


def name_of_devnum(devnum: str) -> str | None:
    """Kernel name for "MAJ:MIN", or None when no block device has that number."""
    link = Path("/sys/dev/block") / devnum
    try:
        return link.resolve(strict=True).name
    except OSError:
        return None


def name_of_path(path: str | Path) -> str | None:
    """Kernel name of the block device node at path (following symlinks), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return name_of_devnum(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


def mount_device_name(mount: Mount) -> str | None:
    """The kernel name of the block device a mount lives on, if it has one."""
    if not mount.devnum.startswith("0:"):
        name = name_of_devnum(mount.devnum)
        if name:
            return name
    # btrfs and some FUSE filesystems report an anonymous 0:NN; their source still names the node.
    if mount.source.startswith("/dev/"):
        return name_of_path(mount.source)
    return None


def holders_of(name: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(p.name for p in (SYS_BLOCK / name / "holders").iterdir()))
    except OSError:
        return ()


def slaves_of(name: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(p.name for p in (SYS_BLOCK / name / "slaves").iterdir()))
    except OSError:
        return ()


def backing_file_of(name: str) -> str:
    try:
        return (SYS_BLOCK / name / "loop" / "backing_file").read_text().strip()
    except OSError:
        return ""


def loops_over(names: set[str]) -> list[tuple[str, str]]:
    """Loop devices set up over one of these block devices (their backing file is its node),
    each with that node. The kernel lists no loop device among a disk's holders, and such a
    loop device claims nothing exclusively, yet every write to the disk changes its bytes."""
    found = []
    for sysdir in sorted(SYS_BLOCK.glob("loop*")):
        backing = backing_file_of(sysdir.name)
        if not backing:
            continue
        if name_of_path(backing.removesuffix(" (deleted)")) in names:
            found.append((sysdir.name, backing))
    return found


def block_chain(name: str) -> set[str]:
    """The block devices whose bytes are name's: itself, the disk a partition is on, and for a
    loop device set up over a device node, that device and its own chain (not the disk that
    holds a loop device's backing *file*: other files live there too)."""
    chain: set[str] = set()
    todo = [name]
    while todo:
        n = todo.pop()
        if n in chain:
            continue
        chain.add(n)
        sysdir = SYS_BLOCK / n
        if (sysdir / "partition").exists():
            todo.append(sysdir.resolve().parent.name)
        backing = backing_file_of(n)
        under = name_of_path(backing.removesuffix(" (deleted)")) if backing else None
        if under:
            todo.append(under)
    return chain


def whole_disks_of(name: str, _seen: frozenset[str] = frozenset()) -> set[str]:
    """The whole disks a block device lives on: a partition's parent, the disks under a dm/md
    device (through its slaves), and for a loop device the disk holding its backing file.

    A squashfs root sits on loop0, whose backing file sits on the live medium; following the
    chain is how the live stick gets refused even when only the squashfs is mounted.
    """
    if name in _seen:
        return set()
    seen = _seen | {name}
    sysdir = SYS_BLOCK / name
    if (sysdir / "partition").exists():
        return whole_disks_of(sysdir.resolve().parent.name, seen)
    slaves = slaves_of(name)
    if slaves:
        return set().union(*(whole_disks_of(s, seen) for s in slaves))
    backing = backing_file_of(name)
    if backing:
        disks = disks_holding_path(backing, _seen=seen)
        return {name} | disks
    return {name}


def disks_holding_path(
    path: str | Path, mountinfo: str | Path | None = None, _seen: frozenset[str] = frozenset()
) -> set[str]:
    """The whole disks that hold a file or directory (for the repository and loop backing files)."""
    try:
        st = os.stat(path)
    except OSError:
        return set()
    name = name_of_devnum(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if name is None:
        # Anonymous device (btrfs, overlay): find the mount the path lives under and use its source.
        real = os.path.realpath(path)
        best: Mount | None = None
        for mount in read_mounts(mountinfo):
            mp = mount.mountpoint
            inside = real == mp or real.startswith(mp.rstrip("/") + "/")
            if inside and (best is None or len(mp) > len(best.mountpoint)):
                best = mount
        name = mount_device_name(best) if best else None
    return whole_disks_of(name, _seen) if name else set()
