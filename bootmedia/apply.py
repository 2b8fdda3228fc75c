"""Apply: restore an image onto a disk (or one partition onto an existing partition).

Order of writes, chosen so that an interrupted restore never looks like a good disk:
  1. the old table's first and last MiB are zeroed and a BOOTMEDIA-INCOMPLETE marker is put in
     the MBR boot-code area (sfdisk keeps those 440 bytes, so the marker survives step 4);
  2. every partition's extents are written, flushed, and read back against their hashes;
  3. the partition table is written, swap recreated, the grown filesystem grown;
  4. last, the image's own boot code replaces the marker, and is read back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from bootmedia import blockdev, fs
from bootmedia.disks import Disk, check_writable, find_disk, live_system_disks
from bootmedia.disks.files import file_disk
from bootmedia.disks.model import INCOMPLETE_MARKER, Partition
from bootmedia.disks.system import read_swaps
from bootmedia.errors import BootmediaError, ImageError, Refused, UsageError
from bootmedia.image.view import ImageArea, mounted_view
from bootmedia.layout import FIT, KEEP, LayoutPlan, PartInfo, plan_layout
from bootmedia.layout.fat import rebuild_fat
from bootmedia.layout.shrink import (
    Prepared,
    ShrinkStats,
    copy_prepared,
    copy_ranges,
    fix_moved_boot_sectors,
    prepare_shrink,
    verify_ranges,
)
from bootmedia.mounts import mounts_of
from bootmedia.net.mount import label as repo_label  # a share's URL, not its mount point
from bootmedia.pipeline import OrderedPool, default_threads
from bootmedia.progress import Reporter, human_bytes
from bootmedia.repo.manifest import RAW, SWAP, USED, Area, Manifest, Table
from bootmedia.repo.maps import Extent
from bootmedia.repo.packs import chunk_hash, decode
from bootmedia.repo.store import Location, Repository
from bootmedia.run import require_tools
from bootmedia.table import (
    last_partition,
    read_table,
    render_sfdisk,
    same_layout,
    translate,
    write_table,
)

log = logging.getLogger("bootmedia.apply")
MiB = 1 << 20
BOOT_CODE = 440  # MBR bytes before the disk signature and the partition entries


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
    layout: LayoutPlan | None = None  # the target's table when it is not the image's (issue 10)
    rebuild: tuple[int, ...] = ()  # FAT partitions made anew for the target's sector size

    def offset_of(self, area: Area) -> int:
        """Where an area starts on the target: the layout's new start, else where it was."""
        if self.layout is not None and area.number:
            return self.layout.change(area.number).new_start
        return area.offset

    def action(self, area: Area) -> str:
        if area.number in self.rebuild:
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
        else:
            lines.append(f"Target: {self.target_label()}")
            lines.append("EVERYTHING on the target is overwritten:")
            if self.disk or self.file_partitions:
                for p in self.disk.partitions if self.disk else self.file_partitions:
                    desc = " ".join(x for x in (p.fstype, p.label and f"'{p.label}'") if x)
                    lines.append(f"  - {p.name} {human_bytes(p.size)} {desc}".rstrip())
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
        lines += [f"Note: {n}" for n in self.notes]
        return lines

    def command(self) -> str:
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
            argv += self.layout.command().split()
        if not self.verify:
            argv.append("--no-verify")
        if self.discard:
            argv.append("--discard")
        if self.disk:
            argv += ["--confirm", self.disk.serial[-4:] if self.disk.serial else self.disk.name]
        return shlex.join(argv)


@dataclass(frozen=True)
class ApplyResult:
    image: str
    target: str
    serial: str
    by_id: str
    written: int
    verified: bool
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    shrinks: tuple[ShrinkStats, ...] = ()  # what shrinking took: overlay used, memory, time


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
    )


def _plan_partition(
    repo: Path, m: Manifest, number: int, target: str, grow: bool, verify: bool, discard: bool
) -> ApplyPlan:
    area = m.area(f"p{number}")
    if area is None or area.mode not in (USED, RAW, SWAP):
        raise UsageError(f"image {m.name} has no partition {number} with data to restore")
    if not os.path.exists(target):
        raise UsageError(f"{target}: no such partition")
    if blockdev.is_block(target):
        _check_partition_writable(target, repo)
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
    )


def _check_partition_writable(node: str, repo: Path) -> None:
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


# ---- the job ------------------------------------------------------------------------------


class _Packs:
    """Reads stored chunks through the repository's storage (which keeps packs open)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def read(self, loc: Location, digest: bytes) -> bytes:
        return self.repo.read_payload(loc, digest)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Item:
    area: Area
    extent: Extent
    location: Location | None  # None for a run of zeros

    def load(self, packs: _Packs, dctx: zstandard.ZstdDecompressor) -> bytes:
        """Read the stored chunk and check it against its name."""
        loc, e = self.location, self.extent
        assert loc is not None
        try:
            return decode(loc.record(e.hash), packs.read(loc, e.hash), dctx)
        except ImageError as exc:
            raise ImageError(
                f"{self.area.name} offset {e.offset}: stored chunk is damaged ({exc}) in "
                f"{loc.pack} at byte {loc.offset}"
            ) from None


def check_image(repo: Repository, m: Manifest, areas: tuple[Area, ...]) -> None:
    """Before the first write: every map intact, every chunk indexed, every pack long enough."""
    ends: dict[str, int] = {}
    for a in areas:
        if not a.map:
            continue
        repo.check_map(m, a.name)
        for e in repo.extents(m, a.name):
            if e.is_zero:
                continue
            loc = repo.locate(e.hash)
            if loc is None:
                raise ImageError(
                    f"image {m.name}: {a.name} offset {e.offset}: chunk {e.hash.hex()[:16]} "
                    "is missing from the repository"
                )
            ends[loc.pack] = max(ends.get(loc.pack, 0), loc.offset + loc.stored_len)
    for pack, end in ends.items():
        rel = f"packs/{pack}"
        have = repo.storage.size(rel) if repo.storage.exists(rel) else -1
        if have < end:
            what = "missing" if have < 0 else f"truncated ({have} of at least {end} bytes)"
            raise ImageError(f"image {m.name}: pack {pack} is {what}")


def apply_image(plan: ApplyPlan, reporter: Reporter | None = None) -> ApplyResult:
    reporter = reporter or Reporter()
    started = time.monotonic()
    m = plan.image
    require_tools("sfdisk", "mkswap", "partx")
    repo = Repository.open(plan.repo)
    packs = _Packs(repo)
    reporter.add_total(plan.write_bytes * (2 if plan.verify else 1))
    fd = -1
    shrinks = contextlib.ExitStack()
    shrink_stats: list[ShrinkStats] = []
    rebuilt_bytes = 0
    try:
        with reporter.step("Checking the image"):
            check_image(repo, m, plan.areas)
            # Again, just before writing: a disk can be mounted or swapped since the plan.
            if plan.partition is None:
                check_writable(plan.disk or plan.target, repo_path=plan.repo)
            elif plan.to is not None and blockdev.is_block(plan.to):
                _check_partition_writable(plan.to, plan.repo)
        # Shrinking happens in views of the image, before the first write to the target: a
        # filesystem that cannot be made small enough stops the job with the target untouched.
        prepared = _prepare_shrinks(plan, shrinks, reporter)
        rebuilt = _prepare_rebuilds(plan, shrinks, reporter)
        fd = blockdev.open_device(plan.target, write=True)
        whole = plan.partition is None
        # Writes inside this region wait until everything else is written and verified, so
        # the target shows no valid signature there until the very end.
        defer_below = 4096 if whole else MiB
        with reporter.step("Marking the target incomplete"):
            if plan.discard:
                _discard(fd, reporter)
            blockdev.zero_range(fd, 0, min(MiB, plan.target_size))
            tail = max(0, plan.target_size - MiB)
            blockdev.zero_range(fd, tail, plan.target_size - tail)
            if whole:
                marker = (
                    INCOMPLETE_MARKER
                    + (
                        f" image={m.name} started={datetime.now(UTC).isoformat(timespec='seconds')}"
                    ).encode()
                )
                os.pwrite(fd, marker[:BOOT_CODE], 0)
            os.fsync(fd)
        deferred: list[tuple[Area, Extent]] = []
        data_areas = [
            a
            for a in plan.areas
            if a.mode in (USED, RAW) and plan.action(a) not in ("shrink", "rebuild")
        ]
        for i, area in enumerate(data_areas, 1):
            base = 0 if not whole else plan.offset_of(area)
            label = area.name + (f" ({area.fstype})" if area.fstype else "")
            with reporter.step(f"Writing {label}, {i} of {len(data_areas)}"):
                _write_area(fd, repo, packs, m, area, base, defer_below, deferred, reporter)
        for area, image, ranges in rebuilt:
            with reporter.step(f"Writing the rebuilt FAT of {area.name}"):
                base = plan.offset_of(area)
                sums = copy_ranges(str(image), ranges, fd, base, reporter, area.name)
                rebuilt_bytes += sum(n for _, n in ranges)
                blockdev.flush(fd)
                if plan.verify:
                    verify_ranges(fd, base, sums, reporter, area.name)
        for p in prepared:
            with reporter.step(f"Writing the shrunk {p.area.fstype} of {p.area.name}"):
                shrink_stats.append(
                    copy_prepared(p, fd, plan.offset_of(p.area), reporter, plan.verify)
                )
        shrinks.close()
        blockdev.flush(fd)
        if plan.verify:
            for i, area in enumerate(data_areas, 1):
                base = 0 if not whole else plan.offset_of(area)
                with reporter.step(f"Verifying {area.name}, {i} of {len(data_areas)}"):
                    _verify_area(fd, m, area, base, repo, reporter, skip_below=defer_below)
        for area in plan.areas:
            if area.mode == SWAP:
                with reporter.step(f"Recreating swap on {area.name}"):
                    if plan.layout is not None:
                        area = replace(area, size=plan.layout.change(area.number).new_size)
                    _write_swap(
                        fd, area, 0 if not whole else plan.offset_of(area), plan.target_size
                    )
        if whole and plan.script:
            with reporter.step("Writing the partition table"):
                os.fsync(fd)
                write_table(plan.target, plan.script)
                _check_table(plan)
        if plan.layout is not None and plan.grows:
            _finish_deferred(fd, repo, packs, m, deferred, plan, reporter)
            deferred = []
            blockdev.flush(fd)
            os.close(fd)  # our exclusive open would make e2fsck & co. fail with EBUSY
            fd = -1
            for n in plan.grows:
                grown = m.area(f"p{n}")
                assert grown is not None
                node = blockdev.partition_path(plan.target, n)
                with reporter.step(f"Growing {grown.fstype} on {node}"):
                    fs.grow(node, grown.fstype)
            fd = blockdev.open_device(plan.target, write=True)
        if plan.layout is not None:
            fix_moved_boot_sectors(fd, plan.layout.changes)
        if plan.grow is not None and plan.layout is None:
            grown = m.area(f"p{plan.grow}")
            assert grown is not None
            node = plan.to or blockdev.partition_path(plan.target, plan.grow)
            with reporter.step(f"Growing {grown.fstype or 'swap'} on {node}"):
                if grown.mode == SWAP:
                    size = int((blockdev.sysfs_dir(node) / "size").read_text()) * 512
                    base = 0 if plan.partition is not None else grown.offset
                    _write_swap(fd, replace(grown, size=size), base, plan.target_size)
                else:
                    _finish_deferred(fd, repo, packs, m, deferred, plan, reporter)
                    deferred = []
                    blockdev.flush(fd)
                    # Our exclusive open of the disk would make e2fsck & co. fail with EBUSY.
                    os.close(fd)
                    fd = -1
                    fs.grow(node, grown.fstype)
                    fd = blockdev.open_device(plan.target, write=True)
        with reporter.step("Writing boot code and finishing"):
            _finish_deferred(fd, repo, packs, m, deferred, plan, reporter)
            if whole and m.table is not None:
                _write_boot_area(fd, repo, packs, m, plan)
            blockdev.flush(fd)
            if whole:
                head = os.pread(fd, len(INCOMPLETE_MARKER), 0)
                if head == INCOMPLETE_MARKER:
                    raise ImageError("the incomplete marker is still on the target after writing")
    except OSError as exc:
        if exc.errno == 28:
            raise BootmediaError(f"{plan.target}: no space left on device while writing") from None
        raise BootmediaError(f"writing {plan.target} failed: {exc.strerror or exc}") from None
    finally:
        shrinks.close()
        if fd >= 0:
            os.close(fd)
        packs.close()
        repo.close()
    disk = plan.disk
    result = ApplyResult(
        image=m.name,
        target=plan.target if plan.partition is None else str(plan.to),
        serial=disk.serial if disk else "",
        by_id=disk.by_id[0] if disk and disk.by_id else "",
        written=plan.write_bytes + sum(s.used for s in shrink_stats) + rebuilt_bytes,
        verified=plan.verify,
        seconds=round(time.monotonic() - started, 3),
        notes=plan.notes,
        shrinks=tuple(shrink_stats),
    )
    log.info(
        "applied image %s to %s (serial %s, by-id %s): %s",
        m.name,
        result.target,
        result.serial or "none",
        result.by_id or "none",
        "verified" if result.verified else "NOT verified",
    )
    return result


def _prepare_rebuilds(
    plan: ApplyPlan, stack: contextlib.ExitStack, reporter: Reporter
) -> list[tuple[Area, Path, list[tuple[int, int]]]]:
    """FAT partitions made anew for the target's sector size, as files, before any write;
    each with the byte ranges its new FAT uses."""
    out: list[tuple[Area, Path, list[tuple[int, int]]]] = []
    for n in plan.rebuild:
        area = plan.image.area(f"p{n}")
        assert area is not None and plan.layout is not None
        work = Path(tempfile.mkdtemp(prefix="bootmedia-fat-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        new_size = plan.layout.change(n).new_size
        with (
            reporter.step(f"Rebuilding the FAT of {area.name} for {plan.sector_size}-byte sectors"),
            mounted_view(ImageArea(plan.repo, plan.image.name, area.name), work, 16 << 20) as view,
        ):
            image = rebuild_fat(view.path, new_size, plan.sector_size, area.label, work)
        ranges = fs.used_ranges(str(image), "vfat", work) or [(0, new_size)]
        reporter.add_total(sum(n for _, n in ranges) * (2 if plan.verify else 1))
        out.append((area, image, ranges))
    return out


def _prepare_shrinks(
    plan: ApplyPlan, stack: contextlib.ExitStack, reporter: Reporter
) -> list[Prepared]:
    prepared: list[Prepared] = []
    if plan.layout is None:
        return prepared
    work = Path(tempfile.mkdtemp(prefix="bootmedia-shrink-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    for c in plan.layout.changes:
        if c.action != "shrink":
            continue
        area = plan.image.area(f"p{c.number}")
        assert area is not None
        with reporter.step(f"Shrinking {area.fstype} of {area.name} to {human_bytes(c.new_size)}"):
            source = ImageArea(plan.repo, plan.image.name, area.name)
            p = prepare_shrink(stack, source, area, c.new_size, work)
        reporter.add_total(p.used * (2 if plan.verify else 1))
        prepared.append(p)
    return prepared


def _discard(fd: int, reporter: Reporter) -> None:
    try:
        blockdev.discard(fd)
    except OSError as exc:
        reporter.message(f"discard not supported by the target ({exc.strerror}); continuing")


def _items(
    repo: Repository,
    m: Manifest,
    area: Area,
    packs: _Packs,
    skip: set[int] | None = None,
    only_below: int | None = None,
) -> Iterator[_Item]:
    for e in repo.extents(m, area.name):
        if only_below is not None and e.offset >= only_below:
            continue
        if e.is_zero:
            yield _Item(area, e, None)
            continue
        loc = repo.locate(e.hash)
        if loc is None:
            raise ImageError(f"{area.name} offset {e.offset}: chunk missing from the repository")
        yield _Item(area, e, loc)


class _Writer:
    """Reads, decompresses, checks and writes one extent. Workers read the packs themselves, so
    several reads are in flight and they overlap with decompression and writing."""

    def __init__(self, fd: int, base: int, packs: _Packs) -> None:
        self.fd, self.base, self.packs = fd, base, packs
        self.local = threading.local()

    def __call__(self, item: _Item) -> int:
        e = item.extent
        if item.location is None:
            blockdev.zero_range(self.fd, self.base + e.offset, e.length)
            return e.length
        dctx = getattr(self.local, "dctx", None)
        if dctx is None:
            dctx = self.local.dctx = zstandard.ZstdDecompressor()
        view = memoryview(item.load(self.packs, dctx))
        pos = self.base + e.offset
        while view:
            n = os.pwrite(self.fd, view, pos)
            view, pos = view[n:], pos + n
        return e.length


def _write_area(
    fd: int,
    repo: Repository,
    packs: _Packs,
    m: Manifest,
    area: Area,
    base: int,
    defer_below: int,
    deferred: list[tuple[Area, Extent]],
    reporter: Reporter,
) -> None:
    def wanted() -> Iterator[_Item]:
        for item in _items(repo, m, area, packs):
            if base + item.extent.offset < defer_below:
                deferred.append((area, item.extent))
                continue
            yield item

    # Twice as many workers as cores: while one waits on a pack or the disk, another decodes.
    pool = OrderedPool(_Writer(fd, base, packs), default_threads() * 2)
    for item, n in pool.run(wanted(), reporter.cancel):
        reporter.check_cancel()
        if item.location is not None:
            reporter.advance(n)
    reporter.check_cancel()


def _finish_deferred(
    fd: int,
    repo: Repository,
    packs: _Packs,
    m: Manifest,
    deferred: list[tuple[Area, Extent]],
    plan: ApplyPlan,
    reporter: Reporter,
) -> None:
    whole = plan.partition is None
    for area, e in deferred:
        base = plan.offset_of(area) if whole else 0
        loc = repo.locate(e.hash) if not e.is_zero else None
        _Writer(fd, base, packs)(_Item(area, e, loc))
        blockdev.flush(fd)
        if plan.verify:
            _check_extent(fd, area, e, base)
        if loc is not None:
            reporter.advance(e.length * (2 if plan.verify else 1))


def _check_extent(fd: int, area: Area, e: Extent, base: int) -> None:
    data = os.pread(fd, e.length, base + e.offset)
    ok = (data == bytes(e.length)) if e.is_zero else (chunk_hash(data) == e.hash)
    if not ok:
        raise ImageError(
            f"verification failed: {area.name} at offset {e.offset} does not read back as "
            "written (bad target disk or cable?)"
        )


def _verify_area(
    fd: int,
    m: Manifest,
    area: Area,
    base: int,
    repo: Repository,
    reporter: Reporter,
    skip_below: int,
) -> None:
    def check(e: Extent) -> int:
        _check_extent(fd, area, e, base)
        return e.length

    extents = (e for e in repo.extents(m, area.name) if base + e.offset >= skip_below)
    for e, n in OrderedPool(check, default_threads() * 2).run(extents, reporter.cancel):
        reporter.check_cancel()
        if not e.is_zero:
            reporter.advance(n)


def _write_swap(fd: int, area: Area, base: int, target_size: int) -> None:
    """Swap holds nothing worth keeping: clear the old signatures at both ends and write a
    fresh header with the image's uuid and label (made by mkswap on a scratch file)."""
    blockdev.zero_range(fd, base, min(MiB, area.size))
    blockdev.zero_range(fd, base + max(0, area.size - MiB), min(MiB, area.size))
    with tempfile.NamedTemporaryFile(prefix="bootmedia-swap-") as tmp:
        tmp.truncate(area.size)
        tmp.flush()
        fs.make_swap(tmp.name, area.uuid, area.label)
        header = os.pread(tmp.fileno(), 64 << 10, 0)
    os.pwrite(fd, header, base)


def _write_boot_area(
    fd: int, repo: Repository, packs: _Packs, m: Manifest, plan: ApplyPlan
) -> None:
    """The MBR boot code and, when the geometry matches, the gap before the first partition
    (GRUB's core.img on BIOS/MBR disks)."""
    head = m.area("head")
    assert m.table is not None
    if head is None or not head.map:
        return
    data = bytearray(head.size)
    dctx = zstandard.ZstdDecompressor()
    for item in _items(repo, m, head, packs):
        if item.location is not None:
            chunk = item.load(packs, dctx)
            data[item.extent.offset : item.extent.offset + item.extent.length] = chunk
    os.pwrite(fd, bytes(data[:BOOT_CODE]), 0)
    src = m.table
    if src.sector_size == plan.sector_size:
        first = min((p.start for p in src.partitions), default=0) * src.sector_size
        gap_start = src.first_lba * src.sector_size if src.label == "gpt" else src.sector_size
        end = min(first, len(data))
        if (src.first_lba or src.label == "dos") and gap_start < end:
            os.pwrite(fd, bytes(data[gap_start:end]), gap_start)
    blockdev.flush(fd)
    if os.pread(fd, BOOT_CODE, 0) != bytes(data[:BOOT_CODE]):
        raise ImageError("verification failed: boot code does not read back as written")


def _check_table(plan: ApplyPlan) -> None:
    assert plan.table is not None
    got = read_table(plan.target)
    if got is None:
        raise ImageError(f"{plan.target}: no partition table after writing it")
    want = plan.table
    if plan.grow is not None and plan.layout is None:
        grown = next(p for p in got.partitions if p.number == plan.grow)
        want = replace(
            want,
            partitions=tuple(
                replace(p, size=grown.size) if p.number == plan.grow else p for p in want.partitions
            ),
        )
    diffs = same_layout(want, got)
    if diffs:
        raise ImageError(
            f"{plan.target}: partition table differs after writing: {'; '.join(diffs)}"
        )
