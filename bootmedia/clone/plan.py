"""The clone plan: what is read from the source disk and where it lands on the target."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bootmedia import blockdev, fs
from bootmedia.disks import Disk, check_writable, find_disk, system
from bootmedia.disks.contents import overwritten_lines
from bootmedia.disks.model import unfinished_refusal
from bootmedia.errors import UsageError
from bootmedia.layout import FIT, KEEP, LayoutPlan, PartInfo, plan_layout
from bootmedia.mounts import mounts_of
from bootmedia.progress import human_bytes
from bootmedia.repo.manifest import RAW, SKIP, SWAP, USED, Area, Table
from bootmedia.table import BIOS_GRUB, SWAP_TYPES, is_extended, read_table, render_sfdisk


@dataclass(frozen=True)
class ClonePart:
    area: Area  # the source partition, as capture would describe it
    node: str
    ranges: tuple[tuple[int, int], ...]  # used byte ranges (USED), or the whole partition (RAW)


@dataclass(frozen=True)
class ClonePlan:
    source: str
    source_disk: Disk
    target: str
    target_disk: Disk
    target_size: int
    sector_size: int
    table: Table  # the source's
    layout: LayoutPlan  # the target's table and every partition's move
    parts: tuple[ClonePart, ...]
    script: str
    verify: bool = True

    @property
    def write_bytes(self) -> int:
        return sum(
            sum(n for _, n in p.ranges)
            for p in self.parts
            if self.layout.change(p.area.number).action != "shrink"
        )

    def summary(self) -> list[str]:
        lines = [
            f"Clone {self.source_disk.label()}",
            f"   to {self.target_disk.label()}",
        ]
        t = self.target_disk
        lines += overwritten_lines(t.partitions, t.fstype, t.partition_table)
        lines += self.layout.summary()
        lines.append(f"Data to copy: {human_bytes(self.write_bytes)} (plus shrunk filesystems)")
        lines.append(
            "Verify: read back and check every written byte"
            if self.verify
            else "Verify: OFF (--no-verify): success will not be checked"
        )
        return lines

    def command(self) -> list[str]:
        def who(d: Disk) -> str:
            return d.by_id[0] if d.by_id else d.path

        argv = ["bootmedia", "clone", who(self.source_disk), who(self.target_disk)]
        if self.layout.policy != KEEP or self.layout.sizes:
            argv += self.layout.command()
        if not self.verify:
            argv.append("--no-verify")
        t = self.target_disk
        return [*argv, "--confirm", t.serial[-4:] if t.serial else t.name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "target_size": self.target_size,
            "layout": self.layout.to_dict(),
            "parts": [asdict(p.area) for p in self.parts],
            "verify": self.verify,
        }


def plan_clone(
    source: str,
    target: str,
    *,
    layout: str | None = None,
    sizes: dict[int, int] | None = None,
    verify: bool = True,
) -> ClonePlan:
    """Look at both disks and decide everything before the first write."""
    for path in (source, target):
        if not blockdev.is_block(path):
            raise UsageError(f"{path}: not a disk (clone copies one block device to another)")
    if os.stat(source).st_rdev == os.stat(target).st_rdev:
        raise UsageError("the source and the target are the same disk")
    src_disk, dst_disk = find_disk(source), find_disk(target)
    if any(p.name == Path(target).name for p in src_disk.partitions) or any(
        p.name == Path(source).name for p in dst_disk.partitions
    ):
        raise UsageError("the source and the target are the same disk")
    # A loop device over the other's node (or over one of its partitions) is the same disk
    # under a second name.
    if system.block_chain(src_disk.name) & system.block_chain(dst_disk.name):
        raise UsageError(
            f"the source and the target are the same disk ({source} and {target} reach the "
            "same device through a loop device)"
        )
    if _same_backing(src_disk, dst_disk):  # two loop devices over one file: one disk twice
        raise UsageError(
            f"the source and the target are the same disk ({source} and {target} are both "
            f"backed by {src_disk.backing_file})"
        )
    check_writable(dst_disk)
    unfinished = unfinished_refusal(source)
    if unfinished:
        raise UsageError(unfinished)
    table = read_table(source)
    if table is None:
        raise UsageError(f"{source}: has no partition table (clone works partition by partition)")
    blockdev.rescan(source)
    nodes = [blockdev.partition_path(source, p.number) for p in table.partitions]
    rw = [m for m in mounts_of([source, *nodes]) if not m.read_only]
    if rw:
        raise UsageError(
            f"{rw[0].source} is mounted read-write at {rw[0].mountpoint}: unmount it (or "
            "remount it read-only) so the copy is consistent"
        )
    fd = blockdev.open_device(target)
    try:
        size = blockdev.size_of(fd)
        ss = blockdev.sector_sizes(fd)[0]
    finally:
        os.close(fd)
    parts = []
    with tempfile.TemporaryDirectory(prefix="bootmedia-clone-") as work:
        for p in sorted(table.partitions, key=lambda p: p.number):
            node = blockdev.partition_path(source, p.number)
            parts.append(_plan_part(table, p.number, node, Path(work)))
    if layout is None:
        end = max(p.start + p.size for p in table.partitions) * table.sector_size
        layout = FIT if size < end or size > src_disk.size else KEEP
    lay = plan_layout(
        table,
        {p.area.number: PartInfo.from_area(p.area) for p in parts},
        size,
        ss,
        layout,
        sizes,
    )
    if table.sector_size != ss:
        for part in parts:
            a = part.area
            if a.block_size and a.block_size < ss:
                raise UsageError(
                    f"{a.name} holds {a.fstype} with {a.block_size}-byte blocks, which cannot "
                    f"work on a disk with {ss}-byte sectors"
                )
    return ClonePlan(
        source,
        src_disk,
        target,
        dst_disk,
        size,
        ss,
        table,
        lay,
        tuple(parts),
        render_sfdisk(lay.table),
        verify,
    )


def _same_backing(a: Disk, b: Disk) -> bool:
    if not a.backing_file or not b.backing_file:
        return False
    if a.backing_file == b.backing_file:
        return True
    try:
        sa, sb = os.stat(a.backing_file), os.stat(b.backing_file)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _plan_part(table: Table, number: int, node: str, work: Path) -> ClonePart:
    p = next(x for x in table.partitions if x.number == number)
    ss = table.sector_size
    area = Area(f"p{number}", p.start * ss, p.size * ss, RAW, number=number)
    if is_extended(p, table):
        return ClonePart(Area(area.name, area.offset, area.size, SKIP, number=number), node, ())
    if p.type.upper() == BIOS_GRUB:
        return ClonePart(area, node, ((0, area.size),))
    info = fs.probe(node)
    area = Area(
        area.name,
        area.offset,
        area.size,
        RAW,
        number=number,
        fstype=info.type,
        uuid=info.uuid,
        label=info.label,
        block_size=fs.block_size(node, info.type),
    )
    if info.type == "swap" or (p.type in SWAP_TYPES and not info.type):
        return ClonePart(_with(area, mode=SWAP), node, ())
    if fs.can_map(info.type, node):
        ranges = _with_edges(fs.used_ranges(node, info.type, work), area.size)
        used = sum(n for _, n in ranges)
        min_size = fs.min_size(node, info.type)
        return ClonePart(_with(area, mode=USED, used=used, min_size=min_size), node, ranges)
    return ClonePart(area, node, ((0, area.size),))


EDGE = 64 << 10


def _with_edges(ranges: list[tuple[int, int]], size: int) -> tuple[tuple[int, int], ...]:
    """The used ranges plus the partition's first and last 64 KiB (NTFS's backup boot sector
    and other things outside the allocation maps live at the edges), merged and clipped."""
    edges = [(0, min(EDGE, size)), (max(0, size - EDGE), min(EDGE, size))]
    merged: list[tuple[int, int]] = []
    for start, length in sorted([*ranges, *edges]):
        end = min(start + length, size)
        if end <= start:
            continue
        if merged and start <= merged[-1][0] + merged[-1][1]:
            s0, l0 = merged[-1]
            merged[-1] = (s0, max(s0 + l0, end) - s0)
        else:
            merged.append((start, end - start))
    return tuple(merged)


def _with(area: Area, **changes: Any) -> Area:
    return Area(**{**asdict(area), **changes})
