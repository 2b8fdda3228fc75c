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
import errno
import logging
import mmap
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from bootmedia import blockdev, fs
from bootmedia.apply.check import check_image, check_plan
from bootmedia.apply.plan import ApplyPlan, check_target_again
from bootmedia.directio import AlignedBuffers
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.errors import BootmediaError, ImageError, stopped
from bootmedia.image.view import ImageArea, clean_leftovers, mounted_view
from bootmedia.layout.fat import rebuild_fat
from bootmedia.layout.refile import prepare_refile
from bootmedia.layout.shrink import (
    Prepared,
    ShrinkStats,
    copy_prepared,
    copy_ranges,
    fix_moved_boot_sectors,
    prepare_shrink,
    verify_ranges,
)
from bootmedia.pipeline import OrderedPool, default_threads
from bootmedia.progress import Reporter, human_bytes
from bootmedia.repo.manifest import RAW, SWAP, USED, Area, Manifest
from bootmedia.repo.maps import ZERO_HASH, Extent
from bootmedia.repo.packs import chunk_hash
from bootmedia.repo.reader import PackReader
from bootmedia.repo.store import Location, Repository
from bootmedia.run import require_tools
from bootmedia.table import (
    read_table,
    same_layout,
    write_table,
)

log = logging.getLogger("bootmedia.apply")
MiB = 1 << 20
BOOT_CODE = 440  # MBR bytes before the disk signature and the partition entries
UNTOUCHED = "nothing was written: the target is as it was"


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


def apply_image(plan: ApplyPlan, reporter: Reporter | None = None) -> ApplyResult:
    reporter = reporter or Reporter()
    started = time.monotonic()
    m = plan.image
    require_tools("sfdisk", "mkswap", "partx")
    for line in clean_leftovers():  # what a SIGKILLed job left: its views and loop devices
        reporter.message(line)
    repo = Repository.open(plan.repo)
    try:
        repo.hold(m.name, "restore")  # a delete of this image refuses while we read it
        for line in repo.take_notices():
            reporter.message(line)
    except BaseException:
        repo.close()
        raise
    packs = PackReader(repo)
    total = plan.write_bytes * (2 if plan.verify else 1)
    reporter.add_total(total + (plan.write_bytes if plan.check_first else 0))
    fd = -1
    touched = False  # from the first write on, a failure leaves the target incomplete
    shrinks = contextlib.ExitStack()
    shrink_stats: list[ShrinkStats] = []
    rebuilt_bytes = 0
    try:
        with reporter.step("Checking the image"):
            check_plan(plan)
            check_image(repo, m, plan.check_areas)
        if plan.check_first:
            with reporter.step("Checking every chunk before writing (--check-first)"):
                check_chunks(repo, packs, m, plan.areas, reporter)
        with reporter.step("Checking the target"):
            # Again, just before writing: a disk can be mounted or swapped since the plan.
            check_target_again(plan)
        # Shrinking happens in views of the image, before the first write to the target: a
        # filesystem that cannot be made small enough stops the job with the target untouched.
        prepared = _prepare_shrinks(plan, shrinks, reporter)
        rebuilt = _prepare_rebuilds(plan, shrinks, reporter)
        fd = blockdev.open_device(plan.target, write=True)
        target = _Target(fd)
        whole = plan.partition is None
        # Writes inside this region wait until everything else is written and verified, so
        # the target shows no valid signature there until the very end.
        defer_below = 4096 if whole else MiB
        touched = True
        with reporter.step("Marking the target incomplete"):
            if plan.discard:
                _discard(fd, reporter)
            if whole:
                mark_incomplete(fd, plan)
            else:
                blockdev.zero_range(fd, 0, min(MiB, plan.target_size))
                tail = max(0, plan.target_size - MiB)
                blockdev.zero_range(fd, tail, plan.target_size - tail)
                os.fsync(fd)
        deferred: list[_Item] = []
        data_areas = [
            a
            for a in plan.areas
            if a.mode in (USED, RAW) and plan.action(a) not in ("shrink", "rebuild")
        ]

        def base(area: Area) -> int:
            return plan.offset_of(area) if whole else 0

        for area in data_areas:
            label = area.name + (f" ({area.fstype})" if area.fstype else "")
            # No "i of n": swap and shrunk partitions are not in this list, and "Writing p5,
            # 4 of 4" (p4 being swap) reads as a partition missed.
            with reporter.step(f"Writing {label}"):
                items = _items(repo, m, area, base(area))
                _write_area(target, packs, items, base(area), defer_below, deferred, reporter)
        for area, image, ranges in rebuilt:
            with reporter.step(f"Writing the rebuilt FAT of {area.name}"):
                start = plan.offset_of(area)
                sums = copy_ranges(str(image), ranges, fd, start, reporter, area.name)
                rebuilt_bytes += sum(n for _, n in ranges)
                blockdev.flush(fd)
                if plan.verify:
                    verify_ranges(fd, start, sums, reporter, area.name)
        for p in prepared:
            with reporter.step(f"Writing the shrunk {p.area.fstype} of {p.area.name}"):
                shrink_stats.append(
                    copy_prepared(p, fd, plan.offset_of(p.area), reporter, plan.verify)
                )
        shrinks.close()
        blockdev.flush(fd)
        if plan.verify:
            for area in data_areas:
                with reporter.step(f"Verifying {area.name}"):
                    extents = repo.extents(m, area.name)
                    _verify_area(target, area, base(area), extents, reporter, defer_below)
        for area in plan.areas:
            if area.mode == SWAP:
                with reporter.step(f"Recreating swap on {area.name}"):
                    if plan.layout is not None:
                        area = replace(area, size=plan.layout.change(area.number).new_size)
                    _write_swap(fd, area, base(area), plan.target_size)
        if whole:
            write_partition_table(fd, plan, reporter)
        if plan.layout is not None and plan.grows:
            _finish_deferred(target, packs, deferred, plan.verify, reporter)
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
            fd = target.fd = blockdev.open_device(plan.target, write=True)
        if plan.layout is not None:
            fix_moved_boot_sectors(fd, plan.layout.changes)
        if plan.grow is not None and plan.layout is None:
            grown = m.area(f"p{plan.grow}")
            assert grown is not None
            node = plan.to or blockdev.partition_path(plan.target, plan.grow)
            with reporter.step(f"Growing {grown.fstype or 'swap'} on {node}"):
                if grown.mode == SWAP:
                    size = int((blockdev.sysfs_dir(node) / "size").read_text()) * 512
                    _write_swap(fd, replace(grown, size=size), base(grown), plan.target_size)
                else:
                    _finish_deferred(target, packs, deferred, plan.verify, reporter)
                    deferred = []
                    blockdev.flush(fd)
                    # Our exclusive open of the disk would make e2fsck & co. fail with EBUSY.
                    os.close(fd)
                    fd = -1
                    fs.grow(node, grown.fstype)
                    fd = target.fd = blockdev.open_device(plan.target, write=True)
        with reporter.step("Writing boot code and finishing"):
            _finish_deferred(target, packs, deferred, plan.verify, reporter)
            if whole and m.table is not None:
                _write_boot_area(target, repo, packs, m, plan)
            blockdev.flush(fd)
            if whole:
                head = os.pread(fd, len(INCOMPLETE_MARKER), 0)
                if head == INCOMPLETE_MARKER:
                    raise ImageError("the incomplete marker is still on the target after writing")
    except OSError as exc:
        if exc.errno == 28:
            err = BootmediaError(f"{plan.target}: no space left on device while writing")
        else:
            err = BootmediaError(f"writing {plan.target} failed: {exc.strerror or exc}")
        raise _said_lost(err, plan) if touched else err from None
    except BootmediaError as exc:
        if touched:
            raise _said_lost(exc, plan) from exc.__cause__
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (stop_on_signals)
        raise stopped(exc, lost_note(plan) if touched else UNTOUCHED) from None
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


def lost_note(plan: ApplyPlan) -> str:
    """What a failure after the first write leaves behind, in words for the technician."""
    if plan.partition is not None:
        return (
            f"{plan.to}: its old contents are gone (its first and last MiB are already "
            "zeroed); restore the partition again"
        )
    return (
        f"{plan.target}: its old contents are gone and the disk is marked incomplete "
        "(BOOTMEDIA-INCOMPLETE): it will not boot until an image is restored again"
    )


def _said_lost(exc: BootmediaError, plan: ApplyPlan) -> BootmediaError:
    # Keep the error's class (and so its exit code); only the message grows.
    exc.args = (f"{exc}; {lost_note(plan)}",)
    return exc


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
            mounted_view(
                ImageArea(plan.repo, plan.image.name, area.name), work, 16 << 20, scratch=work
            ) as view,
        ):
            image = rebuild_fat(view.path, new_size, plan.sector_size, area.label, work)
        ranges = fs.fat_used(str(image)) or [(0, new_size)]
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
        if c.action != "shrink" and c.number not in plan.refile:
            continue
        area = plan.image.area(f"p{c.number}")
        assert area is not None
        source = ImageArea(plan.repo, plan.image.name, area.name)
        if c.number in plan.refile:  # blocks smaller than the target's sectors: by files
            with reporter.step(f"Checking that {area.name}'s files fit a new {area.fstype}"):
                p: Prepared = prepare_refile(
                    stack, source, area, c.new_size, work, plan.sector_size
                )
            reporter.add_total(p.used * (2 if plan.verify else 1))
            prepared.append(p)
            continue
        with reporter.step(f"Shrinking {area.fstype} of {area.name} to {human_bytes(c.new_size)}"):
            p = prepare_shrink(stack, source, area, c.new_size, work, plan.sector_size)
        reporter.add_total(p.used * (2 if plan.verify else 1))
        prepared.append(p)
    return prepared


def _discard(fd: int, reporter: Reporter) -> None:
    try:
        blockdev.discard(fd)
    except OSError as exc:
        reporter.message(f"discard not supported by the target ({exc.strerror}); continuing")


# ---- the copy loop: chunks -> pool (read, decompress, hash) -> one ordered writer ------------


class _Item(NamedTuple):
    area: Area
    base: int  # where the area starts on the target
    extent: Extent
    location: Location | None  # None for a run of zeros


def _items(repo: Repository, m: Manifest, area: Area, base: int) -> Iterator[_Item]:
    """The area's extents in map order, each with where its chunk is stored."""
    for e, loc in repo.located(m, area.name):
        yield _Item(area, base, e, loc)


@dataclass
class _Decoded:
    datas: list[bytes | None]  # per item: its bytes (a view into buf for a frame), None = zeros
    buf: memoryview | None = None  # the aligned buffer the views point into


class _Decoder:
    """A pool worker: read chunks from their pack, decompress them and check their hashes.
    A group of extents whose blocks share one stored frame (format 2) reads that frame once
    and decompresses it into a reused page-aligned buffer. Workers never touch the target;
    several pack reads are in flight and overlap with decompression."""

    def __init__(self, packs: PackReader, buffers: AlignedBuffers | None = None) -> None:
        self.packs = packs
        self.buffers = buffers or AlignedBuffers()

    def __call__(self, group: tuple[_Item, ...]) -> _Decoded:
        first = group[0].location
        if first is None or not first.is_frame:
            return _Decoded([self.one(item) for item in group])
        buf = self.buffers.take(first.frame_raw)
        try:
            frame = self.packs.frame_into(first, buf)
        except ImageError as exc:
            self.buffers.give(buf)
            e = group[0].extent
            raise ImageError(
                f"{group[0].area.name} offset {e.offset}: stored frame is damaged ({exc}) in "
                f"{first.pack} at byte {first.offset}"
            ) from None
        out: list[bytes | None] = []
        for item in group:
            loc, e = item.location, item.extent
            assert loc is not None
            block = frame[loc.in_frame : loc.in_frame + loc.raw_len]
            if len(block) != e.length or chunk_hash(block) != e.hash:
                self.buffers.give(buf)
                raise ImageError(
                    f"{item.area.name} offset {e.offset}: stored block is damaged (checksum "
                    f"mismatch) in {loc.pack} at byte {loc.offset}"
                )
            out.append(block)  # type: ignore[arg-type]  # a memoryview: written as it is
        return _Decoded(out, buf)

    @staticmethod
    def weight(group: tuple[_Item, ...]) -> int:
        """The bytes a group holds while in flight (its frame, decoded)."""
        first = group[0].location
        if first is not None and first.is_frame:
            return max(first.frame_raw, 1)
        return sum(i.extent.length for i in group if i.location is not None)

    def one(self, item: _Item) -> bytes | None:
        loc, e = item.location, item.extent
        if loc is None:
            return None
        try:
            data = self.packs.chunk(e.hash, loc)
        except ImageError as exc:
            raise ImageError(
                f"{item.area.name} offset {e.offset}: stored chunk is damaged ({exc}) in "
                f"{loc.pack} at byte {loc.offset}"
            ) from None
        if len(data) != e.length:
            raise ImageError(
                f"{item.area.name} offset {e.offset}: the map says {e.length} bytes, the "
                f"chunk holds {len(data)}"
            )
        return data


def _grouped(items: Iterable[_Item], limit: int = 64) -> Iterator[tuple[_Item, ...]]:
    """Consecutive extents whose blocks are in the same stored frame, together; so are
    consecutive runs of zeros (up to 64 MiB), which the target then zeroes in one call."""
    cur: list[_Item] = []
    key: object = None
    size = 0
    for item in items:
        loc = item.location
        if loc is None:
            k: object = _ZEROS
        elif loc.is_frame:
            k = (loc.pack, loc.offset)
        else:
            k = None
        full = len(cur) >= limit if k is not _ZEROS else size >= _ZERO_GROUP
        if cur and (k is None or k != key or full):
            yield tuple(cur)
            cur, size = [], 0
        cur.append(item)
        size += item.extent.length
        key = k
        if k is None:
            yield tuple(cur)
            cur, key, size = [], None, 0
    if cur:
        yield tuple(cur)


_ZEROS = object()
_ZERO_GROUP = 64 * MiB


_IOV_MAX = 1024


def _pwritev_all(fd: int, bufs: list[bytes], pos: int) -> None:
    """All of bufs at pos, in as few pwritev calls as the kernel takes."""
    views = [memoryview(b).cast("B") for b in bufs]
    while views:
        n = os.pwritev(fd, views, pos)
        if n <= 0:
            raise OSError(5, f"pwritev wrote nothing at byte {pos}")
        pos += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


_ZERO_MIB = bytes(MiB)


def _is_zeros(view: memoryview) -> bool:
    # bytes.startswith takes any buffer and compares with memcmp: no copy of the view.
    return all(_ZERO_MIB.startswith(view[i : i + MiB]) for i in range(0, len(view), MiB))


ALIGN = 4096  # O_DIRECT: offsets, lengths and memory aligned to this (512- and 4K-sector disks)


class _DirectReader:
    """Reads of the target that bypass the page cache (O_DIRECT), into one page-aligned
    buffer per thread, reused. read() gives None where O_DIRECT cannot serve the range (past
    the last aligned byte); the caller then reads buffered."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.limit = size & ~(ALIGN - 1)
        self.local = threading.local()

    @classmethod
    def open(cls, path: str, size: int) -> _DirectReader | None:
        try:  # not exclusive: our own write fd holds the exclusive claim
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            return None  # a filesystem without O_DIRECT (tmpfs): buffered reads
        return cls(fd, size)

    def close(self) -> None:
        os.close(self.fd)

    def read(self, offset: int, length: int) -> memoryview | None:
        lo = offset & ~(ALIGN - 1)
        hi = (offset + length + ALIGN - 1) & ~(ALIGN - 1)
        if hi > self.limit:
            return None
        local = self.local
        mm: mmap.mmap | None = getattr(local, "mm", None)
        if mm is None or len(mm) < hi - lo:
            if mm is not None:
                local.mmv.release()
                mm.close()
            mm = local.mm = mmap.mmap(-1, max(hi - lo, 2 * MiB))
            local.mmv = memoryview(mm)
        mmv: memoryview = local.mmv
        pos = lo
        while pos < hi:
            n = os.preadv(self.fd, [mmv[pos - lo : hi - lo]], pos)
            if n <= 0:
                raise OSError(5, f"short read at byte {pos} of the target")
            pos += n
        return mmv[offset - lo : offset - lo + length]


class _Target:
    """The one owner of the target: every write goes through here, in the order given.

    With a direct fd (the target reopened with O_DIRECT), decoded frames go to the device
    straight from their aligned buffers, not through the page cache: no copy into the cache,
    no writeback of it later, and no throttling of the writer behind the cache's writeback.
    Whatever is not aligned to the target's logical sectors goes through the buffered fd;
    the final fsync covers both."""

    def __init__(self, fd: int, direct: _DirectReader | None = None) -> None:
        self.fd = fd
        self.direct = direct
        self.dfd = -1
        self.sector = 512
        self.refused = False  # the target turned an O_DIRECT write down: buffered from then on

    def open_direct(self) -> None:
        """Start writing aligned runs with O_DIRECT, where the target takes it."""
        if self.refused or self.dfd >= 0:
            return
        try:  # not exclusive: the buffered fd holds the exclusive claim
            self.dfd = os.open(f"/proc/self/fd/{self.fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.dfd = -1  # a filesystem without O_DIRECT (tmpfs): buffered writes
            return
        self.sector = max(512, blockdev.sector_sizes(self.fd)[0])

    def close_direct(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1

    def write(self, item: _Item, data: bytes | None) -> None:
        e = item.extent
        pos = item.base + e.offset
        if data is None:
            blockdev.zero_range(self.fd, pos, e.length)
            return
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, pos)
            view, pos = view[n:], pos + n

    def _aligned(self, item: _Item, data: bytes, pos: int) -> bool:
        # A block decoded into an aligned buffer (a memoryview of it, at in_frame) of whole
        # sectors, going to a whole sector of the target.
        loc = item.location
        mask = self.sector - 1
        return (
            type(data) is memoryview
            and loc is not None
            and not (loc.in_frame & (ALIGN - 1))
            and not (len(data) & mask)
            and not (pos & mask)
        )

    def write_group(self, group: tuple[_Item, ...], datas: list[bytes | None]) -> None:
        """A decoded group in order: blocks that follow each other on the target go out in
        one pwritev, runs of zeros in one zero_range."""
        bufs: list[bytes] = []
        start = end = 0
        zero_start = zero_end = 0
        direct = False

        def flush_data() -> None:
            if not bufs:
                return
            if direct and self.dfd >= 0:
                try:
                    _pwritev_all(self.dfd, bufs, start)
                    bufs.clear()
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self.close_direct()  # the target takes no O_DIRECT after all: buffered
                    self.refused = True
            _pwritev_all(self.fd, bufs, start)
            bufs.clear()

        def flush_zeros() -> None:
            nonlocal zero_start, zero_end
            if zero_end > zero_start:
                blockdev.zero_range(self.fd, zero_start, zero_end - zero_start)
            zero_start = zero_end = 0

        use_direct = self.dfd >= 0
        for item, data in zip(group, datas, strict=True):
            e = item.extent
            pos = item.base + e.offset
            if data is None:
                flush_data()
                if zero_end != pos:
                    flush_zeros()
                    zero_start = pos
                zero_end = pos + e.length
                continue
            flush_zeros()
            aligned = use_direct and self._aligned(item, data, pos)
            if bufs and pos == end and len(bufs) < _IOV_MAX and aligned == direct:
                bufs.append(data)
            else:
                flush_data()
                bufs.append(data)
                start = pos
                direct = aligned
            end = pos + len(data)
        flush_data()
        flush_zeros()

    def check_run(self, run: _Run) -> int:
        """Extents that follow each other on the target: read back in one go, each checked.
        With a direct reader the bytes come from the device itself into a reused aligned
        buffer (O_DIRECT), not through the page cache."""
        name, base, extents = run
        start = base + extents[0].offset
        last = extents[-1]
        end = base + last.offset + last.length
        direct = self.direct
        if direct is not None and (view := direct.read(start, end - start)) is not None:
            pass
        else:
            view = memoryview(os.pread(self.fd, end - start, start))
        written = 0
        for e in extents:
            at = base + e.offset - start
            got = view[at : at + e.length]
            if e.hash == ZERO_HASH:
                ok = _is_zeros(got)
            else:
                ok = chunk_hash(got) == e.hash
                written += e.length
            if len(got) != e.length or not ok:
                raise ImageError(
                    f"verification failed: {name} at offset {e.offset} does not read "
                    "back as written (bad target disk or cable?)"
                )
        return written

    def check(self, item: _Item) -> int:
        """Read one extent back and compare it with its hash (or with zeros)."""
        e = item.extent
        data = os.pread(self.fd, e.length, item.base + e.offset)
        ok = (data == bytes(e.length)) if e.is_zero else (chunk_hash(data) == e.hash)
        if not ok:
            raise ImageError(
                f"verification failed: {item.area.name} at offset {e.offset} does not read "
                "back as written (bad target disk or cable?)"
            )
        return e.length


# Decoded frames waiting for the writer, at most: memory stays bounded in bytes whatever the
# frame sizes an image (or a hostile one) has.
IN_FLIGHT = 64 * MiB


def _workers() -> int:
    # Twice as many workers as cores: while one waits on a pack, another decompresses.
    return default_threads() * 2


def _write_area(
    target: _Target,
    packs: PackReader,
    items: Iterator[_Item],
    base: int,
    defer_below: int,
    deferred: list[_Item],
    reporter: Reporter,
) -> None:
    def wanted() -> Iterator[_Item]:
        if base >= defer_below:  # nothing of this area is deferred (every partition)
            yield from items
            return
        for item in items:
            if base + item.extent.offset < defer_below:
                deferred.append(item)
                continue
            yield item

    decoder = _Decoder(packs)
    pool = OrderedPool(decoder, _workers(), weight=_Decoder.weight, budget=IN_FLIGHT)
    target.open_direct()
    try:
        for group, decoded in pool.run(_grouped(wanted()), reporter.cancel):
            reporter.check_cancel()
            datas = decoded.datas
            target.write_group(group, datas)
            decoder.buffers.give(decoded.buf)
            written = zip(group, datas, strict=True)
            reporter.advance(sum(i.extent.length for i, d in written if d is not None))
    finally:
        target.close_direct()
    reporter.check_cancel()


def _finish_deferred(
    target: _Target,
    packs: PackReader,
    deferred: list[_Item],
    verify: bool,
    reporter: Reporter,
) -> None:
    decode = _Decoder(packs)
    for item in deferred:
        target.write(item, decode.one(item))
        blockdev.flush(target.fd)
        if verify:
            target.check(item)
        if item.location is not None:
            reporter.advance(item.extent.length * (2 if verify else 1))


class _Run(NamedTuple):
    """Extents that follow each other on the target, read back together."""

    area: str
    base: int
    extents: tuple[Extent, ...]


def _verify_area(
    target: _Target,
    area: Area,
    base: int,
    extents: Iterator[Extent],
    reporter: Reporter,
    skip_below: int,
) -> None:
    # Reading back is read-only, so the pool reads the target in parallel; nothing writes now.
    def runs() -> Iterator[_Run]:
        run: list[Extent] = []
        size = end = 0
        for e in extents:
            pos = base + e.offset
            if pos < skip_below:
                continue
            if run and (pos != end or size >= MiB):
                yield _Run(area.name, base, tuple(run))
                run, size = [], 0
            run.append(e)
            size += e.length
            end = pos + e.length
        if run:
            yield _Run(area.name, base, tuple(run))

    # The same file reopened with O_DIRECT (through /proc, so a path renamed meanwhile or a
    # partition node makes no difference).
    direct = _DirectReader.open(f"/proc/self/fd/{target.fd}", blockdev.size_of(target.fd))
    reader = _Target(target.fd, direct)
    try:
        for _, n in OrderedPool(reader.check_run, _workers()).run(runs(), reporter.cancel):
            reporter.check_cancel()
            reporter.advance(n)
    finally:
        if direct is not None:
            direct.close()


def check_chunks(
    repo: Repository, packs: PackReader, m: Manifest, areas: tuple[Area, ...], reporter: Reporter
) -> None:
    """--check-first: decompress and hash every chunk the image needs, writing nothing."""
    items = (i for a in areas if a.map for i in _items(repo, m, a, 0) if i.location is not None)
    decoder = _Decoder(packs)
    pool = OrderedPool(decoder, _workers(), weight=_Decoder.weight, budget=IN_FLIGHT)
    for group, decoded in pool.run(_grouped(items), reporter.cancel):
        reporter.check_cancel()
        decoder.buffers.give(decoded.buf)
        for item, data in zip(group, decoded.datas, strict=True):
            assert data is not None
            reporter.advance(item.extent.length)
    reporter.check_cancel()


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
    target: _Target, repo: Repository, packs: PackReader, m: Manifest, plan: ApplyPlan
) -> None:
    """The MBR boot code and, when the geometry matches, the gap before the first partition
    (GRUB's core.img on BIOS/MBR disks)."""
    head = m.area("head")
    assert m.table is not None
    if head is None or not head.map:
        return
    fd = target.fd
    data = bytearray(head.size)
    decode = _Decoder(packs)
    for item in _items(repo, m, head, 0):
        chunk = decode.one(item)
        if chunk is not None:
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


# ---- the steps a whole-disk restore ends with, for another writer of the data (cast receive) --

DEFER_BELOW = 4096  # a whole disk's first 4 KiB are written last


def mark_incomplete(fd: int, plan: ApplyPlan) -> None:
    """Step 1 of a whole-disk restore: zero the old table's first and last MiB and put the
    BOOTMEDIA-INCOMPLETE marker in the boot-code bytes."""
    blockdev.zero_range(fd, 0, min(MiB, plan.target_size))
    tail = max(0, plan.target_size - MiB)
    blockdev.zero_range(fd, tail, plan.target_size - tail)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    marker = INCOMPLETE_MARKER + f" image={plan.image.name} started={started_at}".encode()
    os.pwrite(fd, marker[:BOOT_CODE], 0)
    os.fsync(fd)


def verify_written(
    fd: int, repo: Repository, plan: ApplyPlan, reporter: Reporter, skip_below: int = DEFER_BELOW
) -> None:
    """Read every data area back (a whole disk) and compare it with its map."""
    target = _Target(fd)
    data_areas = [a for a in plan.areas if a.mode in (USED, RAW)]
    for area in data_areas:
        with reporter.step(f"Verifying {area.name}"):
            extents = repo.extents(plan.image, area.name)
            _verify_area(target, area, plan.offset_of(area), extents, reporter, skip_below)


def recreate_swap(fd: int, plan: ApplyPlan, reporter: Reporter) -> None:
    for area in plan.areas:
        if area.mode == SWAP:
            with reporter.step(f"Recreating swap on {area.name}"):
                start = plan.offset_of(area)
                if plan.layout is not None:
                    area = replace(area, size=plan.layout.change(area.number).new_size)
                _write_swap(fd, area, start, plan.target_size)


def write_partition_table(fd: int, plan: ApplyPlan, reporter: Reporter) -> None:
    if plan.script:
        with reporter.step("Writing the partition table"):
            os.fsync(fd)
            write_table(plan.target, plan.script, plan.table)
            _check_table(plan)


def finish_restore(
    fd: int,
    repo: Repository,
    plan: ApplyPlan,
    deferred: list[tuple[Area, Extent]],
    reporter: Reporter,
) -> None:
    """The last step: the deferred first bytes, the boot code, and the marker gone."""
    with reporter.step("Writing boot code and finishing"), PackReader(repo) as packs:
        target = _Target(fd)
        items = []
        for a, e in deferred:
            loc = None if e.is_zero else repo.locate(e.hash)
            if loc is None and not e.is_zero:
                raise ImageError(f"{a.name} offset {e.offset}: chunk missing from the repository")
            items.append(_Item(a, plan.offset_of(a), e, loc))
        _finish_deferred(target, packs, items, plan.verify, reporter)
        if plan.image.table is not None:
            _write_boot_area(target, repo, packs, plan.image, plan)
        blockdev.flush(fd)
        if os.pread(fd, len(INCOMPLETE_MARKER), 0) == INCOMPLETE_MARKER:
            raise ImageError("the incomplete marker is still on the target after writing")
