"""Clone one disk onto another: the used blocks, straight across, with no repository.

The same order of writes as apply, so an interrupted clone never looks like a good disk:
  1. filesystems that must shrink are shrunk in views of the source partitions (the source is
     never written), before the first write to the target;
  2. the target's first and last MiB are zeroed and BOOTMEDIA-INCOMPLETE is put in its MBR;
  3. every partition's used blocks are copied to their new place, flushed, and read back;
  4. the partition table is written and checked, filesystems grown, moved NTFS/FAT boot
     sectors told their new start;
  5. last, the source's boot code (and the post-MBR gap) replaces the marker, and is read back.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bootmedia import blockdev, fs
from bootmedia.clone.plan import ClonePlan
from bootmedia.disks import check_writable
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.errors import BootmediaError, ImageError, stopped
from bootmedia.image.view import DeviceArea, clean_leftovers
from bootmedia.layout.shrink import (
    Prepared,
    ShrinkStats,
    copy_prepared,
    copy_ranges,
    fix_moved_boot_sectors,
    prepare_shrink,
    verify_ranges,
)
from bootmedia.progress import Reporter
from bootmedia.repo.manifest import SWAP
from bootmedia.run import require_tools
from bootmedia.scratch import new_scratch
from bootmedia.table import read_table, same_layout, write_table

MiB = 1 << 20
BOOT_CODE = 440
UNTOUCHED = "nothing was written: the target is as it was"


@dataclass(frozen=True)
class CloneResult:
    source: str
    target: str
    serial: str
    written: int
    verified: bool
    seconds: float
    shrinks: tuple[ShrinkStats, ...] = ()


def clone_disk(plan: ClonePlan, reporter: Reporter | None = None) -> CloneResult:
    reporter = reporter or Reporter()
    started = time.monotonic()
    require_tools("sfdisk", "partx", "mkswap")
    reporter.add_total(plan.write_bytes * (2 if plan.verify else 1))
    stack = contextlib.ExitStack()
    scratch = new_scratch("clone", say=reporter.message)  # a kill's: the next job sweeps it
    stack.callback(scratch.cleanup)
    work = scratch.path
    fd = -1
    shrunk: list[ShrinkStats] = []
    written = plan.write_bytes
    touched = False  # from the first write on, a failure leaves the target incomplete
    for line in clean_leftovers():  # what a SIGKILLed job left: its views and loop devices
        reporter.message(line)
    try:
        prepared: list[Prepared] = []
        for part in plan.parts:
            c = plan.layout.change(part.area.number)
            if c.action != "shrink":
                continue
            a = part.area
            with reporter.step(f"Shrinking {a.fstype} of {a.name} in a view of {part.node}"):
                source = DeviceArea(part.node, a.size, a.name)
                p = prepare_shrink(stack, source, a, c.new_size, work, plan.sector_size)
            reporter.add_total(p.used * (2 if plan.verify else 1))
            written += p.used
            prepared.append(p)
        check_writable(plan.target_disk)  # again: a disk can be mounted since the plan
        fd = blockdev.open_device(plan.target, write=True)
        touched = True
        with reporter.step("Marking the target incomplete"):
            blockdev.zero_range(fd, 0, min(MiB, plan.target_size))
            tail = max(0, plan.target_size - MiB)
            blockdev.zero_range(fd, tail, plan.target_size - tail)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            os.pwrite(fd, (INCOMPLETE_MARKER + f" clone started={stamp}".encode())[:BOOT_CODE], 0)
            os.fsync(fd)
        copied = []
        for part in plan.parts:
            c = plan.layout.change(part.area.number)
            if not part.ranges or c.action == "shrink":
                continue
            with reporter.step(f"Copying {part.area.name} ({part.area.fstype or 'raw'})"):
                ranges = [(o, min(n, c.new_size - o)) for o, n in part.ranges if o < c.new_size]
                sums = copy_ranges(
                    part.node, ranges, fd, c.new_start, reporter, part.area.name, plan.verify
                )
                copied.append((part, c, sums))
        for p in prepared:
            c = plan.layout.change(p.area.number)
            with reporter.step(f"Writing the shrunk {p.area.fstype} of {p.area.name}"):
                shrunk.append(copy_prepared(p, fd, c.new_start, reporter, plan.verify))
        stack.close()
        blockdev.flush(fd)
        if plan.verify:
            for part, c, sums in copied:
                with reporter.step(f"Verifying {part.area.name}"):
                    verify_ranges(fd, c.new_start, sums, reporter, part.area.name)
        for part in plan.parts:
            if part.area.mode == SWAP:
                c = plan.layout.change(part.area.number)
                with reporter.step(f"Recreating swap on {part.area.name}"):
                    _write_swap(fd, c.new_start, c.new_size, part.area.uuid, part.area.label)
        with reporter.step("Writing the partition table"):
            os.fsync(fd)
            write_table(plan.target, plan.script)
            got = read_table(plan.target)
            diffs = same_layout(plan.layout.table, got) if got else ["no table"]
            if diffs:
                raise ImageError(f"{plan.target}: table differs after writing: {'; '.join(diffs)}")
        grows = [c for c in plan.layout.changes if c.action == "grow"]
        if grows:
            blockdev.flush(fd)
            os.close(fd)  # our exclusive open would make e2fsck & co. fail with EBUSY
            fd = -1
            for c in grows:
                node = blockdev.partition_path(plan.target, c.number)
                with reporter.step(f"Growing {c.fstype} on {node}"):
                    fs.grow(node, c.fstype)
            fd = blockdev.open_device(plan.target, write=True)
        fix_moved_boot_sectors(fd, plan.layout.changes)
        with reporter.step("Writing boot code and finishing"):
            _copy_boot_area(plan, fd)
    except OSError as exc:
        if exc.errno == 28:
            err = BootmediaError(f"{plan.target}: no space left on device while writing")
        else:
            err = BootmediaError(f"cloning to {plan.target} failed: {exc.strerror or exc}")
        if touched:
            err.args = (f"{err}; {lost_note(plan)}",)
        raise err from None
    except BootmediaError as exc:
        if touched:  # keep the error's class (and so its exit code); only the message grows
            exc.args = (f"{exc}; {lost_note(plan)}",)
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (stop_on_signals)
        raise stopped(exc, lost_note(plan) if touched else UNTOUCHED) from None
    finally:
        stack.close()
        if fd >= 0:
            os.close(fd)
    return CloneResult(
        plan.source,
        plan.target,
        plan.target_disk.serial,
        written,
        plan.verify,
        round(time.monotonic() - started, 3),
        tuple(shrunk),
    )


def lost_note(plan: ClonePlan) -> str:
    """What a failure after the first write leaves behind, in words for the technician."""
    return (
        f"{plan.target}: its old contents are gone and the disk is marked incomplete "
        "(BOOTMEDIA-INCOMPLETE): it will not boot until it is cloned or restored again"
    )


def _write_swap(fd: int, base: int, size: int, uuid: str, label: str) -> None:
    """Swap holds nothing worth keeping: a fresh header with the source's uuid and label."""
    blockdev.zero_range(fd, base, min(MiB, size))
    with tempfile.NamedTemporaryFile(prefix="bootmedia-swap-") as tmp:
        tmp.truncate(size)
        tmp.flush()
        fs.make_swap(tmp.name, uuid, label)
        header = os.pread(tmp.fileno(), 64 << 10, 0)
    os.pwrite(fd, header, base)


def _copy_boot_area(plan: ClonePlan, fd: int) -> None:
    """The source's MBR boot code, and (same sector size) the gap before the first partition
    (GRUB's core.img on BIOS disks), read back."""
    src = os.open(plan.source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        code = os.pread(src, BOOT_CODE, 0)
        t = plan.table
        ss = t.sector_size
        first = min(p.start for p in t.partitions) * ss
        new_first = min(p.start for p in plan.layout.table.partitions) * plan.sector_size
        gap_start = t.first_lba * ss if t.label == "gpt" else ss
        gap = b""
        if ss == plan.sector_size and gap_start < first <= new_first:
            gap = os.pread(src, first - gap_start, gap_start)
    finally:
        os.close(src)
    if gap:
        os.pwrite(fd, gap, gap_start)
    os.pwrite(fd, code, 0)
    blockdev.flush(fd)
    if os.pread(fd, BOOT_CODE, 0) != code or (gap and os.pread(fd, len(gap), gap_start) != gap):
        raise ImageError("verification failed: boot code does not read back as written")
