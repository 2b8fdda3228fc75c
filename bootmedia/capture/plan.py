"""The capture plan: look at the source (table, filesystems, used blocks) and decide what to read."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import unicodedata
from array import array
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from bootmedia import blockdev
from bootmedia.disks.files import attached_loops, extract, is_image_file, probe_at
from bootmedia.disks.model import Disk, unfinished_refusal
from bootmedia.errors import BootmediaError, UsageError
from bootmedia.fs import block_size, can_map, probe, used_ranges
from bootmedia.identity import source_identity
from bootmedia.mounts import mounts_of
from bootmedia.net.mount import label as repo_label  # a share's URL, not its mount point
from bootmedia.net.url import REMOTE_FILE
from bootmedia.pipeline import default_threads
from bootmedia.progress import human_bytes
from bootmedia.repo.manifest import (
    RAW,
    SKIP,
    SWAP,
    USED,
    Area,
    SourceDisk,
    Table,
    check_description,
    check_image_name,
)
from bootmedia.table import BIOS_GRUB, SWAP_TYPES, is_extended, read_table
from bootmedia.text import printable

log = logging.getLogger("bootmedia.capture")

ESTIMATED_RATIO = 2.5  # a typical compression ratio, for the space estimate only
HEAD_SIZE = 1 << 20  # MBR boot code and the post-MBR gap where GRUB's core.img can live

# zstd level 2, not 3: a quarter less compression CPU for an image 3.7% bigger, still within
# 1.05x of Clonezilla's (measured on bench.py's disk; see docs/FORMAT.md)
DEFAULT_LEVEL = 2


@dataclass(frozen=True)
class AreaPlan:
    area: Area
    device: str  # node to probe (the partition), reads go through the whole disk
    ranges: array | None = None  # used (offset, length) pairs, flattened; None = read all  # type: ignore[type-arg]

    @property
    def read_bytes(self) -> int:
        if self.area.mode == RAW:
            return self.area.size
        if self.area.mode == USED and self.ranges is not None:
            return sum(self.ranges[1::2])
        return 0


@dataclass(frozen=True)
class CapturePlan:
    source: str
    repo: Path
    name: str
    description: str
    level: int
    threads: int
    disk: SourceDisk
    table: Table | None
    areas: tuple[AreaPlan, ...]

    @property
    def total_bytes(self) -> int:
        return sum(a.read_bytes for a in self.areas)

    def summary(self) -> list[str]:
        d = self.disk
        lines = [
            f"Capture {d.model or '?'} (serial {d.serial or 'none'}, {human_bytes(d.size)}) at {self.source}",
            f"into {self.repo} as image '{self.name}', zstd level {self.level}, {self.threads} threads",
            f"Partition table: {self.table.label if self.table else 'none (whole disk)'}",
        ]
        for a in self.areas:
            ar = a.area
            what = {
                USED: "used blocks",
                RAW: "every byte (zeros skipped)",
                SWAP: "swap: uuid+label only",
                SKIP: "container, nothing to read"
                if self.table is None or ar.number not in self.skipped
                else "not chosen (--partitions), nothing read",
            }[ar.mode]
            lines.append(
                f"  {ar.name:<10} {ar.fstype or '-':<8} {human_bytes(ar.size):>10}  {what}"
                + (f", {human_bytes(a.read_bytes)} to read" if a.read_bytes else "")
            )
        lines.append(f"Total to read: {human_bytes(self.total_bytes)}")
        warning = self.space_warning()
        if warning:
            lines.append(warning)
        return lines

    @property
    def skipped(self) -> tuple[int, ...]:
        """Partitions left out with --partitions (an extended container is not one of them)."""
        return tuple(
            a.area.number
            for a in self.areas
            if a.area.mode == SKIP
            and self.table is not None
            and not any(
                p.number == a.area.number and is_extended(p, self.table)
                for p in self.table.partitions
            )
        )

    @property
    def estimated_bytes(self) -> int:
        """What the capture may add at most, roughly: the data at 2.5:1, no dedup assumed."""
        return int(self.total_bytes / ESTIMATED_RATIO)

    def space_warning(self) -> str:
        """A line when the estimate is more than the destination's free space, else ''."""
        where = self.repo
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            return ""
        if self.estimated_bytes <= free:
            return ""
        return (
            f"Warning: this may not fit: up to about {human_bytes(self.estimated_bytes)} to "
            f"store (less if the repository already holds some of it), "
            f"{human_bytes(free)} free at {where}"
        )

    def command(self) -> list[str]:
        argv = ["bootmedia", "capture", self.source, repo_label(self.repo), "--name", self.name]
        if self.skipped and self.table is not None:
            chosen = [
                a.area.number
                for a in self.areas
                if a.area.number and a.area.number not in self.skipped
            ]
            argv += ["--partitions", ",".join(str(n) for n in chosen)]
        if self.description:
            argv += ["--description", self.description]
        if self.level != DEFAULT_LEVEL:
            argv += ["--level", str(self.level)]
        return argv

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": "capture",
            "source": self.source,
            "repo": str(self.repo),
            "name": self.name,
            "description": self.description,
            "level": self.level,
            "threads": self.threads,
            "disk": asdict(self.disk),
            "table": asdict(self.table) if self.table else None,
            "areas": [
                {**asdict(a.area), "device": a.device, "read_bytes": a.read_bytes}
                for a in self.areas
            ],
            "total_bytes": self.total_bytes,
        }


def suggest_name(disk: Disk, day: date, taken: Collection[str] = ()) -> str:
    """A name a technician recognises for a capture of `disk` (never its kernel name, which
    moves between boots), valid under the repository's rule: the disk's model, else a loop
    device's backing file, else its vendor, else "disk"; then the day. "Samsung-SSD-970-EVO-
    Plus-1TB-20261202"; the same disk on the same day gives the same name, followed by -2, -3
    ... when that is taken."""
    words = ""
    for what in (
        disk.model,
        Path(disk.backing_file).stem if disk.backing_file else "",
        disk.vendor,
    ):
        # Shown text first (no escapes, no bidi), then letters with their accents taken off.
        plain = unicodedata.normalize("NFKD", printable(what)).encode("ascii", "ignore").decode()
        words = re.sub(r"[^A-Za-z0-9._+]+", "-", plain).strip("-._+")[:40].rstrip("-._+")
        if words:
            break
    name = f"{words or 'disk'}-{day:%Y%m%d}"
    n = 1
    while (candidate := name if n == 1 else f"{name}-{n}") in taken:
        n += 1
    check_image_name(candidate)  # the rule every image name must meet, here for the form
    return candidate


def plan_capture(
    source: str,
    repo: str | Path,
    name: str,
    description: str = "",
    level: int = DEFAULT_LEVEL,
    threads: int | None = None,
    partitions: tuple[int, ...] | None = None,
) -> CapturePlan:
    """Look at the source (table, filesystems, used blocks) and decide what to read.
    With partitions, only those are read (Clonezilla's saveparts); the others stay in the
    table but hold nothing (mode skip), and a restore leaves them as the target has them."""
    check_image_name(name)  # before the name reaches a path (a 10,000-character name)
    check_description(description)
    if not 1 <= level <= 19:
        raise UsageError("--level must be between 1 and 19")
    if not os.path.exists(source):
        raise UsageError(f"{source}: no such disk")
    is_file = is_image_file(source)
    if not blockdev.is_block(source) and not is_file:
        raise UsageError(f"{source}: neither a disk nor an image file")
    unfinished = unfinished_refusal(source)
    if unfinished:
        raise UsageError(unfinished)
    repo = Path(repo)
    if (repo / REMOTE_FILE).is_file():  # an http(s) repository: refused now, not after a plan
        # imported here: the http client's imports are a tenth of a second of every capture's start
        from bootmedia.net.http_repo import open_http

        open_http(repo, write=True)
    if (repo / "images" / name).exists():
        raise UsageError(f"an image named {name!r} already exists in {repo}")
    disk = source_identity(source)
    table = read_table(source)
    blockdev.rescan(source)
    nodes = [source] + (
        [blockdev.partition_path(source, p.number) for p in table.partitions] if table else []
    )
    if is_file:
        # A file has no nodes of its own; it is mounted only through a loop device it backs.
        nodes = [n for loop in attached_loops(source) for n in (loop, *_partitions_of(loop))]
    rw = [m for m in mounts_of(nodes) if not m.read_only]
    if rw:
        m = rw[0]
        raise UsageError(
            f"{m.source} is mounted read-write at {m.mountpoint}: unmount it (or remount it "
            "read-only) so the image is consistent"
        )
    areas: list[AreaPlan | Future[AreaPlan]] = []
    # Mapping used blocks is mostly waiting on the disk: map all partitions at once.
    with tempfile.TemporaryDirectory(prefix="bootmedia-plan-") as work, ThreadPoolExecutor(4) as ex:
        if table is None:
            if partitions:
                raise UsageError(f"--partitions: {source} has no partition table")
            areas.append(_plan_area(Area("disk", 0, disk.size, RAW), source, Path(work)))
        else:
            ss = table.sector_size
            first = min((p.start * ss for p in table.partitions), default=HEAD_SIZE)
            areas.append(AreaPlan(Area("head", 0, min(HEAD_SIZE, first), RAW), source))
            numbers = {p.number for p in table.partitions}
            if partitions and not set(partitions) <= numbers:
                missing = ", ".join(str(n) for n in sorted(set(partitions) - numbers))
                raise UsageError(f"--partitions: {source} has no partition {missing}")
            for p in sorted(table.partitions, key=lambda p: p.number):
                area = Area(f"p{p.number}", p.start * ss, p.size * ss, RAW, number=p.number)
                node = blockdev.partition_path(source, p.number)
                if (partitions and p.number not in partitions) or is_extended(p, table):
                    areas.append(AreaPlan(replace(area, mode=SKIP), node))
                elif p.type.upper() == BIOS_GRUB:
                    areas.append(AreaPlan(area, node))
                else:
                    swap = p.type in SWAP_TYPES
                    plan_one = _plan_file_area if is_file else _plan_area
                    node = source if is_file else node
                    areas.append(ex.submit(plan_one, area, node, Path(work), swap))
            if table.label == "gpt":
                backup = (table.last_lba + 1) * ss
                areas.append(AreaPlan(Area("gpt-backup", backup, disk.size - backup, RAW), source))
        done = [a.result() if isinstance(a, Future) else a for a in areas]
    return CapturePlan(
        source,
        repo,
        name,
        description,
        level,
        threads or default_threads(),
        disk,
        table,
        tuple(done),
    )


def _plan_area(area: Area, node: str, work: Path, swap_type: bool = False) -> AreaPlan:
    if not os.path.exists(node):
        raise BootmediaError(f"{node}: partition node missing (is the kernel's table current?)")
    fs = probe(node)
    area = replace(
        area, fstype=fs.type, uuid=fs.uuid, label=fs.label, block_size=block_size(node, fs.type)
    )
    if fs.type == "swap" or (swap_type and not fs.type):
        return AreaPlan(replace(area, mode=SWAP), node)
    if can_map(fs.type, node):
        pairs = array("Q")
        for start, length in _with_edges(used_ranges(node, fs.type, work), area.size):
            pairs.extend((start, length))
        used = sum(pairs[1::2])
        return AreaPlan(replace(area, mode=USED, used=used), node, pairs)
    log.info("%s: %s, captured raw", node, fs.type or "no filesystem recognised")
    return AreaPlan(area, node)


def _partitions_of(dev: str) -> list[str]:
    name = Path(dev).name
    return [f"/dev/{p.name}" for p in Path("/sys/class/block", name).glob(f"{name}p*")]


def _plan_file_area(area: Area, source: str, work: Path, swap_type: bool = False) -> AreaPlan:
    """A partition inside an image file: blkid probes it in place; a filesystem whose used
    blocks we map is copied (sparse) into the work directory, because partclone, ntfscat and
    the FAT reader take a path, not an offset. The copy is only looked at for the map: the
    capture itself reads the image file at the partition's offset, like a disk."""
    found = probe_at(source, area.offset, area.size)
    fstype = found.get("TYPE", "")
    if fstype and fstype != "swap" and can_map(fstype):
        part = extract(source, area.offset, area.size, work / f"{area.name}.part")
        try:
            return replace(_plan_area(area, str(part), work, swap_type), device=source)
        finally:
            part.unlink()
    area = replace(area, fstype=fstype, uuid=found.get("UUID", ""), label=found.get("LABEL", ""))
    if fstype == "swap" or (swap_type and not fstype):
        return AreaPlan(replace(area, mode=SWAP), source)
    log.info("%s at %d: %s, captured raw", source, area.offset, fstype or "nothing recognised")
    return AreaPlan(area, source)


EDGE = 64 << 10


def _with_edges(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The used ranges plus the first and last 64 KiB of the partition, merged and clipped.
    Filesystems keep things outside their allocation bitmaps at the edges (NTFS's backup boot
    sector sits in the partition's last sector), and a used-block map does not list them."""
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
    return merged
