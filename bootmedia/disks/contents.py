"""What is on a disk, in the words a technician scans a list for.

    from bootmedia.disks.contents import contents_summary
    contents_summary(disk)   # "vfat/EFI, ext4/root", "INCOMPLETE RESTORE: ...", "empty", ...
    overwritten_lines(disk.partitions, disk.fstype, disk.partition_table)   # for a plan

"empty" is said only when the disk reads as zeros at every sampled place: a disk with no
partition table and no filesystem signature can still hold a whole disk's worth of data (a raw
dd copy, a table that was zapped, LUKS without a header we know), and calling it empty is how
data gets lost. The samples are a few small reads spread over the disk, so listing stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from bootmedia.disks.model import Disk, Partition
from bootmedia.progress import human_bytes
from bootmedia.text import printable

EMPTY = "empty"
DATA_NO_TABLE = "no partition table, data present"
INCOMPLETE = "INCOMPLETE RESTORE"
UNREADABLE = "unknown (cannot be read)"

SAMPLES = 33  # evenly spread reads, the first and the last included
SAMPLE_BYTES = 64 << 10
HEAD_BYTES = 1 << 20  # the first MiB is read whole: tables, boot code and signatures live there


@dataclass(frozen=True)
class Sample:
    """Where a sampled read found data: byte offset of the first non-zero sample, or None."""

    data_at: int | None
    error: str = ""

    @property
    def zero(self) -> bool:
        return self.data_at is None and not self.error


def sample_offsets(size: int) -> list[tuple[int, int]]:
    """(offset, length) of each read: the first MiB, then SAMPLES reads spread to the end."""
    if size <= 0:
        return []
    reads = [(0, min(size, HEAD_BYTES))]
    last = max(0, size - SAMPLE_BYTES)
    for i in range(1, SAMPLES):
        offset = last if i == SAMPLES - 1 else (last * i // (SAMPLES - 1)) // 4096 * 4096
        if offset + SAMPLE_BYTES > HEAD_BYTES:
            reads.append((offset, min(SAMPLE_BYTES, size - offset)))
    return reads


def sample_disk(path: str, size: int) -> Sample:
    """Read the sampled places of a disk (or image file) and say where data was found."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return Sample(None, exc.strerror or str(exc))
    try:
        for offset, length in sample_offsets(size):
            chunk = os.pread(fd, length, offset)
            if chunk.count(0) != len(chunk):
                return Sample(offset)
    except OSError as exc:
        return Sample(None, exc.strerror or str(exc))
    finally:
        os.close(fd)
    return Sample(None)


def partitions_text(disk: Disk) -> str:
    """The partitions as fstype/label, shown as they are (a label is any text a device holds).
    A partition without a filesystem signature says "no fs" (a bare "?" read as an error)."""
    return printable(
        ", ".join(
            "/".join(x for x in (p.fstype or "no fs", p.label) if x) for p in disk.partitions
        ),
        300,
    )


def contents_summary(disk: Disk, sample: Sample | None = None) -> str:
    """One line for the Contents column. Reads the disk only when it has neither a partition
    table nor a filesystem signature (pass `sample` to use a read already made)."""
    if disk.partitions:
        what = partitions_text(disk)
    elif disk.fstype:
        what = f"{printable(disk.fstype, 16)} on the whole disk"
    elif disk.partition_table:
        what = f"{disk.partition_table} table, no partitions"
    else:
        sample = sample or sample_disk(disk.path, disk.size)
        if sample.error:
            what = f"{UNREADABLE}: {sample.error}"
        else:
            what = EMPTY if sample.zero else DATA_NO_TABLE
    if disk.incomplete_restore:
        # apply zeroes the old table and puts the marker at byte 0: whatever else the disk
        # shows, it holds a half-written image that will not boot.
        return INCOMPLETE if what in (EMPTY, DATA_NO_TABLE) else f"{INCOMPLETE}: {what}"
    return what


def overwritten_lines(parts: Sequence[Partition], fstype: str = "", table: str = "") -> list[str]:
    """What a restore or clone overwrites on its target, for the plan's summary: each partition,
    or in words what the target shows when it has none. It reads nothing: a target that shows
    no table and no filesystem may still hold data, and the line says that it goes too."""
    head = "EVERYTHING on the target is overwritten"
    if parts:
        lines = [f"{head}:"]
        for p in parts:
            desc = " ".join(x for x in (p.fstype, p.label and f"'{p.label}'") if x)
            lines.append(f"  - {p.name} {human_bytes(p.size)} {desc}".rstrip())
        return lines
    if fstype:
        return [f"{head}: the {printable(fstype, 16)} filesystem on the whole disk"]
    if table:
        return [f"{head}: its {printable(table, 8)} partition table (it holds no partitions)"]
    return [f"{head}: it shows no partition table and no filesystem (any data on it goes too)"]
