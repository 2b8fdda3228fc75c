"""May bootmedia write to this disk, and if not, why? Every write path asks before its first write.

The answer is computed from the system as it is now, not from the Disk snapshot the technician
picked minutes ago: a disk can be mounted, or sdb can become a different drive, in between.
"""

from __future__ import annotations

import os
from pathlib import Path

from bootmedia.disks import system
from bootmedia.disks.discover import find_disk
from bootmedia.disks.model import Disk
from bootmedia.errors import Refused, UsageError
from bootmedia.targetloops import dead_target_loops


def live_system_disks(mountinfo: str | Path | None = None) -> dict[str, str]:
    """Whole disks holding the running system, each with the reason in words."""
    found: dict[str, str] = {}
    for mount in system.read_mounts(mountinfo):
        if mount.mountpoint == "/":
            why = "holds the running system (/ is mounted from it)"
        elif mount.mountpoint in system.LIVE_MOUNTPOINTS:
            why = f"is the live boot medium (mounted at {mount.mountpoint})"
        elif mount.fstype == "squashfs":
            why = f"holds the live system's squashfs (mounted at {mount.mountpoint})"
        else:
            continue
        name = system.mount_device_name(mount)
        if name is None:
            continue  # overlay, tmpfs: no block device behind this mount
        for disk in system.whole_disks_of(name):
            found.setdefault(disk, why)
    return found


def _same_disk(old: Disk, new: Disk) -> bool:
    if old.serial or new.serial:
        return old.serial == new.serial and old.size == new.size
    if old.wwn or new.wwn:
        return old.wwn == new.wwn and old.size == new.size
    return old.size == new.size and old.backing_file == new.backing_file


def _current(disk: Disk | str | Path, mountinfo: str | Path | None) -> Disk | str:
    """The disk as it is now, or the refusal reason when it changed or vanished."""
    if isinstance(disk, Disk):
        try:
            now = find_disk(disk.path, mountinfo=mountinfo)
        except UsageError:
            return f"{disk.ident}: the disk is gone ({disk.path} no longer exists)"
        if not _same_disk(disk, now):
            return (
                f"{disk.ident}: {disk.path} is now a different disk ({now.label()}); "
                "list the disks again and pick it by its serial"
            )
        return now
    return find_disk(disk, mountinfo=mountinfo)


def write_refusal(
    disk: Disk | str | Path,
    *,
    repo_path: str | Path | None = None,
    mountinfo: str | Path | None = None,
    swaps: str | Path | None = None,
) -> str | None:
    """The reason bootmedia must not write to this disk ("<disk>: <reason>"), or None.

    A regular file (an image file standing in for a disk) is refused only while a loop device
    uses it. A path that is no disk at all raises UsageError.
    """
    path = disk.path if isinstance(disk, Disk) else disk
    if os.path.isfile(path):
        from bootmedia.disks.files import file_refusal

        return file_refusal(path)
    now = _current(disk, mountinfo)
    if isinstance(now, str):
        return now
    return snapshot_refusal(now, repo_path=repo_path, mountinfo=mountinfo, swaps=swaps)


def snapshot_refusal(
    now: Disk,
    *,
    repo_path: str | Path | None = None,
    mountinfo: str | Path | None = None,
    swaps: str | Path | None = None,
) -> str | None:
    """The same rules applied to a Disk just read (for listings); writers use write_refusal()."""
    who = now.ident
    live = live_system_disks(mountinfo)
    if now.name in live:
        return f"{who}: {live[now.name]}"
    repo_disks = system.disks_holding_path(repo_path, mountinfo) if repo_path else set()
    if now.name in repo_disks:
        return f"{who}: holds the image repository {repo_path}"
    if now.read_only:
        return f"{who}: is read-only (write-protect switch, or the kernel marked it read-only)"
    for mp in now.mountpoints:
        return f"{who}: is mounted on {mp}; unmount it first"
    for part in now.partitions:
        if part.mountpoints:
            where = part.mountpoints[0]
            return f"{who}: partition {part.name} is mounted on {where}; unmount it first"
    swap_names = {system.name_of_path(p) for p in system.read_swaps(swaps)}
    for name in (now.name, *(p.name for p in now.partitions)):
        if name in swap_names:
            return f"{who}: {name} is in use as swap; run swapoff first"
    if now.holders:
        return f"{who}: is in use by {', '.join(now.holders)} (LVM, RAID, multipath or encryption)"
    for part in now.partitions:
        if part.holders:
            return (
                f"{who}: partition {part.name} is in use by {', '.join(part.holders)} "
                "(LVM, RAID or encryption); close or deactivate it first"
            )
    # A killed job's own loop device over its target is no user's: the job cleans it first.
    leftover = {Path(loop).name for _, loop in dead_target_loops(cleaned=False)}
    over = system.loops_over({now.name, *(p.name for p in now.partitions)})
    over = [(loop, node) for loop, node in over if loop not in leftover]
    for loop, node in over:
        return (
            f"{who}: is in use by loop device /dev/{loop} (set up over {node}); detach it "
            f"first (losetup -d /dev/{loop})"
        )
    if now.size == 0:
        return f"{who}: has no medium"
    return None


def check_writable(
    disk: Disk | str | Path,
    *,
    repo_path: str | Path | None = None,
    mountinfo: str | Path | None = None,
    swaps: str | Path | None = None,
) -> None:
    """Raise Refused("<disk>: <reason>") unless bootmedia may write to the disk right now."""
    reason = write_refusal(disk, repo_path=repo_path, mountinfo=mountinfo, swaps=swaps)
    if reason:
        raise Refused(reason)


def confirm_matches(disk: Disk, text: str) -> bool:
    """Whether --confirm TEXT names this disk: its serial, the last 4 characters of the serial,
    or one of its /dev/disk/by-id names. The kernel name (loop3) counts only for a disk with no
    serial, because sdX is exactly the name that moves between boots."""
    text = text.strip()
    if not text:
        return False
    by_id = {*disk.by_id, *(Path(n).name for n in disk.by_id)}
    if text in by_id:
        return True
    if disk.serial:
        serial = disk.serial.casefold()
        value = text.casefold()
        return value == serial or (len(serial) >= 4 and value == serial[-4:])
    return text in (disk.name, disk.path)


def confirm_hint(disk: Disk) -> str:
    if disk.serial:
        return (
            f"its serial {disk.serial}, the last 4 characters {disk.serial[-4:]!r} or a by-id name"
        )
    return f"its kernel name {disk.name!r} (it has no serial)"


def check_confirm(disk: Disk, text: str | None, action: str = "erase") -> None:
    """The CLI guard for destructive commands: UsageError unless --confirm names the disk."""
    if not text:
        raise UsageError(
            f"this will {action} {disk.label()}: add --confirm with {confirm_hint(disk)}"
        )
    if not confirm_matches(disk, text):
        raise UsageError(
            f"--confirm {text!r} does not match {disk.label()}: give {confirm_hint(disk)}"
        )
