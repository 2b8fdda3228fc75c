"""The apply plan: what will be written where, refused before anything is written if it cannot work."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bootmedia import blockdev, fs
from bootmedia.apply.check import check_plan
from bootmedia.apply.target import check_not_repository
from bootmedia.disks import Disk, check_confirm, check_writable, find_disk, live_system_disks
from bootmedia.disks.contents import overwritten_lines
from bootmedia.disks.files import file_disk, file_refusal
from bootmedia.disks.model import Partition
from bootmedia.disks.system import read_swaps
from bootmedia.errors import ImageError, Refused, UsageError
from bootmedia.layout import FIT, KEEP, LayoutPlan, PartInfo, plan_layout
from bootmedia.mounts import mounts_of
from bootmedia.net.mount import label as repo_label  # a share's URL, not its mount point
from bootmedia.progress import human_bytes
from bootmedia.repo.manifest import RAW, SWAP, USED, Area, Manifest, Table
from bootmedia.repo.store import Repository
from bootmedia.table import (
    last_partition,
    render_sfdisk,
    translate,
)

log = logging.getLogger("bootmedia.apply")


@dataclass(frozen=True)
class ApplyPlan:
    repo: Path
    image: Manifest
    target: str
    target_size: int
    sector_size: int
    disk: Disk | None  # None for an image file standing in for a disk
    table: Table | None  # in the target's sector size
    script: str  # the sfdisk script, "" when the image has no table or in partition mode
    grow: int | None = None  # partition number to grow to the end of the disk
    verify: bool = True
    discard: bool = False
    partition: int | None = None  # partition mode: restore only this area ...
    to: str | None = None  # ... onto this existing partition
    notes: tuple[str, ...] = ()
    file_partitions: tuple[Partition, ...] = ()  # what an image-file target holds now
    check_first: bool = False  # decompress and hash every chunk before touching the target
    # What --confirm must name: the disk, the image file, or the disk holding the partition.
    confirm_disk: Disk | None = None
    layout: LayoutPlan | None = None  # the target's table when it is not the image's (issue 10)
    rebuild: tuple[int, ...] = ()  # FAT partitions made anew for the target's sector size
    refile: tuple[int, ...] = ()  # ext4 with blocks below the target's sectors: restored by files

    def offset_of(self, area: Area) -> int:
        """Where an area starts on the target: the layout's new start, else where it was."""
        if self.layout is not None and area.number:
            return self.layout.change(area.number).new_start
        return area.offset

    def action(self, area: Area) -> str:
        if area.number in self.rebuild or area.number in self.refile:
            return "rebuild"
        return self.layout.change(area.number).action if self.layout and area.number else "same"

    @property
    def grows(self) -> tuple[int, ...]:
        """Partitions whose filesystem grows after the table is written."""
        if self.layout is not None:
            return tuple(c.number for c in self.layout.changes if c.action == "grow")
        return () if self.grow is None or self.partition is not None else (self.grow,)

    @property
    def areas(self) -> tuple[Area, ...]:
        if self.partition is not None:
            return tuple(a for a in self.image.areas if a.number == self.partition)
        return tuple(a for a in self.image.areas if a.name not in ("head", "gpt-backup"))

    @property
    def check_areas(self) -> tuple[Area, ...]:
        """Every area whose map is read while writing: the data areas, and on a whole disk
        the head (the boot code, written last)."""
        if self.partition is not None:
            return self.areas
        return self.areas + tuple(a for a in self.image.areas if a.name == "head")

    @property
    def write_bytes(self) -> int:
        """Bytes written from the image's chunks (a shrunk or rebuilt filesystem's are counted
        when it has been made, see ApplyResult.written)."""
        return sum(
            a.data_bytes
            for a in self.areas
            if a.mode in (USED, RAW) and self.action(a) not in ("shrink", "rebuild")
        )

    def target_label(self) -> str:
        return self.disk.label() if self.disk else self.target

    def summary(self) -> list[str]:
        m = self.image
        lines = [f"Image '{m.name}' ({m.created}), {m.description or 'no description'}"]
        if self.partition is not None:
            lines.append(
                f"Restore partition {self.partition} onto {self.to} (ALL of it is overwritten)"
            )
            if self.confirm_disk is not None:
                lines.append(f"  on {self.confirm_disk.label()}")
        else:
            lines.append(f"Target: {self.target_label()}")
            d = self.disk
            lines += (
                overwritten_lines(d.partitions, d.fstype, d.partition_table)
                if d
                else overwritten_lines(self.file_partitions)
            )
            lines.append(
                f"New layout ({self.table.label if self.table else 'no table'}, "
                f"{self.sector_size}-byte sectors):"
            )
            if self.layout is not None and not self.layout.identical:
                lines += self.layout.summary()
            else:
                for a in self.areas:
                    grown = " (grows to fill the disk)" if a.number == self.grow else ""
                    lines.append(
                        f"  {a.name:<6} {a.fstype or '-':<7} {human_bytes(a.size):>10}{grown}"
                    )
        lines.append(f"Data to write: {human_bytes(self.write_bytes)}")
        lines.append(
            "Verify: read back and check every written byte"
            if self.verify
            else "Verify: OFF (--no-verify): success will not be checked"
        )
        lines.append(
            "Check first: every chunk is decompressed and hashed before the target is touched"
            if self.check_first
            else "Check first: no (chunks are checked as they are written; a damaged image "
            "is found only after the target's old contents are gone; --check-first)"
        )
        lines += [f"Note: {n}" for n in self.notes]
        return lines

    def command(self) -> list[str]:
        argv = ["bootmedia", "apply", repo_label(self.repo), self.image.name]
        if self.partition is not None:
            argv += ["--partition", str(self.partition), "--to", str(self.to)]
        else:
            argv.append(self.disk.by_id[0] if self.disk and self.disk.by_id else self.target)
        if self.grow is not None:
            argv += (
                ["--grow"] if self.partition is not None else ["--grow-partition", str(self.grow)]
            )
        if self.layout is not None and (self.layout.policy != KEEP or self.layout.sizes):
            argv += self.layout.command()
        if not self.verify:
            argv.append("--no-verify")
        if self.discard:
            argv.append("--discard")
        if self.check_first:
            argv.append("--check-first")
        if self.confirm_disk is not None:
            argv += ["--confirm", confirm_code(self.confirm_disk)]
        return argv

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": "apply",
            "repo": str(self.repo),
            "image": self.image.name,
            "digest": self.image.digest,
            "target": self.target,
            "target_size": self.target_size,
            "sector_size": self.sector_size,
            "disk": self.disk.to_dict() if self.disk else None,
            "table": asdict(self.table) if self.table else None,
            "sfdisk_script": self.script,
            "grow": self.grow,
            "verify": self.verify,
            "discard": self.discard,
            "check_first": self.check_first,
            "partition": self.partition,
            "to": self.to,
            "layout": self.layout.to_dict() if self.layout is not None else None,
            "rebuild": list(self.rebuild),
            "refile": list(self.refile),
            "areas": [a.name for a in self.areas],
            "write_bytes": self.write_bytes,
            "notes": list(self.notes),
        }


def plan_apply(
    repo: str | Path,
    image: str,
    target: str,
    *,
    grow: bool = False,
    grow_partition: int | None = None,
    verify: bool = True,
    discard: bool = False,
    partition: int | None = None,
    layout: str | None = None,
    sizes: dict[int, int] | None = None,
    check_first: bool = False,
) -> ApplyPlan:
    """Decide what to write where, and refuse before anything is written if it cannot work.

    layout: "keep" (the image's table), "fit" (system partitions keep their size, data
    partitions shrink or grow to the target, see bootmedia.layout), or None: "fit" when the
    target's size differs from the image's and no --grow was asked for, else "keep".
    check_first: apply reads, decompresses and hashes every chunk before the first write."""
    plan = _plan(
        repo,
        image,
        target,
        grow=grow,
        grow_partition=grow_partition,
        verify=verify,
        discard=discard,
        partition=partition,
        layout=layout,
        sizes=sizes,
    )
    check_plan(plan)  # the layout, before anything is read or written
    return replace(plan, check_first=check_first)


def _plan(
    repo: str | Path,
    image: str,
    target: str,
    *,
    grow: bool = False,
    grow_partition: int | None = None,
    verify: bool = True,
    discard: bool = False,
    partition: int | None = None,
    layout: str | None = None,
    sizes: dict[int, int] | None = None,
) -> ApplyPlan:
    """Decide what to write where, and refuse before anything is written if it cannot work.

    layout: "keep" (the image's table), "fit" (system partitions keep their size, data
    partitions shrink or grow to the target, see bootmedia.layout), or None: "fit" when the
    target's size differs from the image's and no --grow was asked for, else "keep"."""
    repo = Path(repo)
    with Repository.open(repo) as r:
        m = r.image(image)
    if partition is not None:
        return _plan_partition(repo, m, partition, target, grow, verify, discard)
    if not os.path.exists(target):
        raise UsageError(f"{target}: no such disk")
    # The repository first: of all the reasons to refuse, that one names the real danger.
    check_not_repository(target, repo)
    disk = find_disk(target) if blockdev.is_block(target) else None
    check_writable(disk if disk is not None else target, repo_path=repo)
    fd = blockdev.open_device(target)
    try:
        size = blockdev.size_of(fd)
        ss = blockdev.sector_sizes(fd)[0]
    finally:
        os.close(fd)
    notes: list[str] = []
    table = m.table
    if layout is not None and layout not in (KEEP, FIT):
        raise UsageError(f"--layout {layout}: expected keep or fit")
    if (layout or sizes) and table is None:
        raise UsageError("--layout/--size need an image with a partition table")
    if layout is None and table is not None:
        # An image file cannot have its filesystems grown (no partition nodes): it is laid
        # out anew only when the image does not fit it as it is.
        differs = size < m.required_size or (size > m.source.size and disk is not None)
        layout = FIT if differs and not sizes and not grow and grow_partition is None else KEEP
    if sizes and layout == KEEP and (grow or grow_partition is not None):
        raise UsageError("--size and --grow do not go together: --size N=rest grows N")
    plan_lay: LayoutPlan | None = None
    rebuild: list[int] = []
    refile: list[int] = []
    if table is not None and (layout == FIT or sizes or table.sector_size != ss):
        plan_lay = plan_layout(
            table,
            {a.number: PartInfo.from_area(a) for a in m.areas if a.number},
            size,
            ss,
            layout or KEEP,
            sizes,
        )
        if plan_lay.identical and table.sector_size == ss:
            plan_lay = None
        elif disk is None and any(c.action == "grow" for c in plan_lay.changes):
            raise UsageError(
                f"growing filesystems needs a real block device as target; {target} is an "
                "image file: attach it with losetup, or restore it with --layout keep"
            )
    if plan_lay is not None:
        for c in plan_lay.changes:
            if c.action in ("grow", "shrink"):
                notes.append(
                    f"partition {c.number}: {c.fstype} {c.action}s from "
                    f"{human_bytes(c.old_size)} to {human_bytes(c.new_size)}"
                )
        table = plan_lay.table
        grow = False
        grow_partition = None
        if m.table is not None and m.table.sector_size != ss:
            notes.append(f"partition table laid out anew for {ss}-byte sectors")
            for a in m.areas:
                if not a.block_size or a.block_size >= ss:
                    continue
                if (
                    a.fstype == "vfat"
                    and a.mode == USED
                    and plan_lay.change(a.number).action
                    in (
                        "same",
                        "move",
                    )
                ):
                    rebuild.append(a.number)
                    notes.append(
                        f"{a.name}: FAT with {a.block_size}-byte sectors is made anew with "
                        f"{ss}-byte sectors (same volume id and label) and its files copied"
                    )
                    continue
                if (
                    a.fstype == "vfat"
                    and a.mode == USED
                    and plan_lay.change(a.number).action == ("shrink")
                ):
                    continue  # made anew smaller, with the target's sectors (layout.shrink)
                if a.fstype == "ext4" and a.mode == USED:
                    refile.append(a.number)  # bootmedia.layout.refile
                    notes.append(
                        f"{a.name}: ext4 with {a.block_size}-byte blocks is made anew with "
                        f"{max(4096, ss)}-byte blocks (same UUID, label and features) and its "
                        "files copied"
                    )
                    continue
                raise ImageError(
                    f"{a.name} holds {a.fstype} with {a.block_size}-byte blocks, which cannot "
                    f"work on a disk with {ss}-byte sectors, and restoring it file by file is "
                    f"not done here: restore it to a disk with {a.block_size}-byte sectors"
                )
    if table is not None and table.sector_size != ss:
        notes.append(
            f"partition table translated from {table.sector_size}-byte to {ss}-byte sectors"
        )
        table = translate(table, ss)
        for a in m.areas:
            if a.block_size and a.block_size < ss:
                raise ImageError(
                    f"{a.name} holds {a.fstype} with {a.block_size}-byte blocks, which cannot "
                    f"work on a disk with {ss}-byte sectors: restore to a {a.block_size}-byte-"
                    "sector disk"
                )
    elif table is None and m.source.logical_sector_size != ss:
        raise ImageError(
            f"image has {m.source.logical_sector_size}-byte sectors and no partition table; "
            f"the target has {ss}-byte sectors"
        )
    need = m.required_size
    if size < need and plan_lay is None:
        raise UsageError(
            f"target too small: image needs {human_bytes(need)} ({need} bytes), "
            f"{target} has {human_bytes(size)} ({size} bytes), short by "
            f"{human_bytes(need - size)}"
            + ("; --layout fit shrinks what can be shrunk" if table is not None else "")
        )
    grow_n: int | None = None
    if (grow or grow_partition is not None) and table is not None:
        last = last_partition(table)
        if grow_partition is not None and (last is None or last.number != grow_partition):
            raise UsageError(
                f"partition {grow_partition} cannot grow: only the last partition "
                f"({last.number if last else 'none'}) has free space after it"
            )
        area = m.area(f"p{last.number}") if last else None
        if last is None or area is None:
            notes.append("nothing to grow")
        elif area.mode == SWAP or (area.mode == USED and fs.grow_tool(area.fstype)):
            if disk is None:
                raise UsageError(
                    f"growing a filesystem needs a real block device as target; {target} is "
                    "an image file: restore it without grow"
                )
            grow_n = last.number
        else:
            notes.append(
                f"partition {last.number} ({area.fstype or 'no filesystem'}) keeps its size: "
                "no tool here can grow that filesystem"
            )
    script = render_sfdisk(table, grow=grow_n) if table else ""
    return ApplyPlan(
        repo,
        m,
        target,
        size,
        ss,
        disk,
        table,
        script,
        grow_n,
        verify,
        discard,
        notes=tuple(notes),
        file_partitions=file_disk(target).partitions if disk is None else (),
        layout=plan_lay,
        rebuild=tuple(rebuild),
        refile=tuple(refile),
        confirm_disk=disk if disk is not None else file_disk(target),
    )


def _plan_partition(
    repo: Path, m: Manifest, number: int, target: str, grow: bool, verify: bool, discard: bool
) -> ApplyPlan:
    area = m.area(f"p{number}")
    if area is None or area.mode not in (USED, RAW, SWAP):
        raise UsageError(f"image {m.name} has no partition {number} with data to restore")
    if not os.path.exists(target):
        raise UsageError(f"{target}: no such partition")
    check_not_repository(target, repo)
    if blockdev.is_block(target):
        check_partition_writable(target, repo)
        owner = find_disk("/dev/" + blockdev.sysfs_dir(target).parent.name)
    elif os.path.isfile(target):
        refusal = file_refusal(target)
        if refusal:
            raise Refused(refusal)
        owner = file_disk(target)
    else:
        raise UsageError(f"{target}: neither a partition nor an image file")
    fd = blockdev.open_device(target)
    try:
        size = blockdev.size_of(fd)
        ss = blockdev.sector_sizes(fd)[0]
    finally:
        os.close(fd)
    if size < area.size:
        raise UsageError(
            f"target too small: partition {number} is {human_bytes(area.size)}, "
            f"{target} has {human_bytes(size)}"
        )
    grow_n = number if grow and size > area.size and fs.grow_tool(area.fstype) else None
    return ApplyPlan(
        repo,
        m,
        target,
        size,
        ss,
        None,
        None,
        "",
        grow_n,
        verify,
        discard,
        partition=number,
        to=target,
        confirm_disk=owner,
    )


def check_target_again(plan: ApplyPlan) -> None:
    """The target rules once more, just before the first write: a disk can be mounted or
    swapped on since the plan was made."""
    check_not_repository(plan.target, plan.repo)
    if plan.partition is None:
        check_writable(plan.disk or plan.target, repo_path=plan.repo)
    elif plan.to is not None and blockdev.is_block(plan.to):
        check_partition_writable(plan.to, plan.repo)
    elif plan.to is not None and (refusal := file_refusal(plan.to)):
        raise Refused(refusal)


def confirm_code(disk: Disk) -> str:
    """What the technician types to confirm: the serial's last 4 characters, else the kernel
    name (a disk without serial) or the file name (an image file)."""
    serial = "".join(disk.serial.split())
    return serial[-4:] if serial else disk.name


def check_confirmed(plan: ApplyPlan, text: str | None) -> None:
    """The CLI's rule for every apply, whatever the target: --confirm names what is written
    (a disk, the disk a partition is on, or an image file), exactly as for a whole disk."""
    if plan.confirm_disk is None:
        raise UsageError(f"{plan.target}: nothing to confirm the write against")
    what = f"overwrite partition {plan.to} of" if plan.partition is not None else "overwrite"
    check_confirm(plan.confirm_disk, text, what)


def check_partition_writable(node: str, repo: Path) -> None:
    sysdir = blockdev.sysfs_dir(node)
    if not (sysdir / "partition").exists():
        raise UsageError(f"{node} is a whole disk: --to takes a partition, e.g. {node}1")
    parent = sysdir.parent.name
    live = live_system_disks()
    if parent in live:
        raise Refused(f"{node}: its disk {live[parent]}")
    for m in mounts_of([node]):
        raise Refused(f"{node}: is mounted on {m.mountpoint}; unmount it first")
    if any(os.path.realpath(s) == os.path.realpath(node) for s in read_swaps()):
        raise Refused(f"{node}: is in use as swap; run swapoff first")
    if any((sysdir / "holders").iterdir()):
        raise Refused(f"{node}: is in use (LVM, RAID or encryption)")
    if (sysdir / "ro").read_text().strip() == "1":
        raise Refused(f"{node}: is read-only")
    if os.stat(repo).st_dev == os.stat(node).st_rdev:
        raise Refused(f"{node}: holds the image repository {repo}")
