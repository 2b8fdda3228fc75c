"""Restore some partitions of an image onto a disk whose table already matches it.

Each chosen partition is restored the way `apply --partition N --to PART` restores one
(its own checks, read-back verify); nothing outside the chosen partitions is written: not the
table, not the boot code, not the other partitions.

    plan = plan_partitions(repo, image, "/dev/sdb", (2, 3))   # refuses before any write
    apply_partitions(plan, reporter)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia import blockdev
from bootmedia.apply import ApplyPlan, ApplyResult, apply_image, plan_apply
from bootmedia.disks import Disk, find_disk
from bootmedia.errors import BootmediaError, UsageError
from bootmedia.progress import Reporter, human_bytes
from bootmedia.repo.manifest import RAW, SWAP, USED, Manifest
from bootmedia.table import read_table, translate

MAX_NUMBER = 256  # more than any GPT (128 by default) or MBR table here holds


def parse_numbers(text: str) -> tuple[int, ...]:
    """`1,3` or `2-4,6` -> (1, 3) / (2, 3, 4, 6)."""
    out: list[int] = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        a, sep, b = part.partition("-")
        if not a.isdigit() or (sep and not b.isdigit()):
            raise UsageError(f"--partitions {text}: expected numbers like 1,3 or 2-4")
        if int(b if sep else a) > MAX_NUMBER:  # 1-99999999999 would fill the memory first
            raise UsageError(f"--partitions {text}: no table has a partition {int(b or a)}")
        if sep and int(b) < int(a):
            raise UsageError(f"--partitions {text}: {part} counts down (write {b}-{a})")
        out += range(int(a), int(b) + 1) if sep else [int(a)]
    if not out or any(n < 1 for n in out):
        raise UsageError(f"--partitions {text}: expected numbers like 1,3 or 2-4")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class PartitionsPlan:
    repo: Path
    image: Manifest
    target: str
    disk: Disk
    numbers: tuple[int, ...]
    plans: tuple[ApplyPlan, ...]  # one per chosen partition, in partition mode
    untouched: tuple[str, ...]  # the target's partitions left exactly as they are

    def summary(self) -> list[str]:
        lines = [
            f"Image '{self.image.name}': restore partitions "
            f"{', '.join(str(n) for n in self.numbers)} onto {self.disk.label()}",
            "The disk's partition table already matches the image's; it is not written.",
        ]
        for p in self.plans:
            a = next(x for x in self.image.areas if x.number == p.partition)
            lines.append(
                f"  overwrite {p.to}: {a.fstype or 'raw'} {human_bytes(a.size)} "
                f"({human_bytes(a.data_bytes)} to write)"
            )
        lines += [f"  untouched {n}" for n in self.untouched]
        verify = all(p.verify for p in self.plans)
        lines.append(
            "Verify: read back and check every written byte"
            if verify
            else "Verify: OFF (--no-verify): success will not be checked"
        )
        return lines

    def command(self) -> list[str]:
        argv = ["bootmedia", "apply", str(self.repo), self.image.name]
        argv.append(self.disk.by_id[0] if self.disk.by_id else self.target)
        argv += ["--partitions", ",".join(str(n) for n in self.numbers)]
        if not all(p.verify for p in self.plans):
            argv.append("--no-verify")
        code = self.disk.serial[-4:] if self.disk.serial else self.disk.name
        return [*argv, "--confirm", code]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image.name,
            "target": self.target,
            "partitions": list(self.numbers),
            "untouched": list(self.untouched),
        }


def plan_partitions(
    repo: str | Path,
    image: Manifest,
    target: str,
    numbers: tuple[int, ...],
    verify: bool = True,
) -> PartitionsPlan:
    if not blockdev.is_block(target):
        raise UsageError(f"{target}: --partitions needs a disk (its partitions are restored)")
    if image.table is None:
        raise UsageError(f"image {image.name} has no partition table")
    disk = find_disk(target)
    have = read_table(target)
    if have is None:
        raise UsageError(
            f"{target} has no partition table: restore the whole image first (no --partitions)"
        )
    want = image.table
    if want.sector_size != have.sector_size:
        want = translate(want, have.sector_size)
    mine = {p.number: p for p in want.partitions}
    theirs = {p.number: p for p in have.partitions}
    for n in numbers:
        if n not in mine:
            raise UsageError(f"image {image.name} has no partition {n}")
        a = image.area(f"p{n}")
        if a is None or a.mode not in (USED, RAW, SWAP):
            raise UsageError(f"image {image.name}: partition {n} holds nothing to restore")
        t = theirs.get(n)
        if t is None or (t.start, t.size) != (mine[n].start, mine[n].size):
            where = f"starts at {t.start} with {t.size} sectors" if t else "is missing"
            raise UsageError(
                f"{target}: partition {n} {where}, the image's starts at {mine[n].start} with "
                f"{mine[n].size} sectors: the tables differ, restore the whole disk instead"
            )
    plans = tuple(
        plan_apply(repo, image.name, blockdev.partition_path(target, n), partition=n, verify=verify)
        for n in numbers
    )
    untouched = tuple(
        blockdev.partition_path(target, n) for n in sorted(theirs) if n not in numbers
    )
    return PartitionsPlan(Path(repo), image, target, disk, numbers, plans, untouched)


def restorable(repo: str | Path, image: Manifest, target: str) -> list[tuple[int, str]]:
    """The image's partitions that plan_partitions would take for this disk, each with a line
    describing it; [] when the disk's table does not match the image's (or it is in use)."""
    if image.table is None or not blockdev.is_block(target):
        return []
    areas = [a for a in image.areas if a.number and a.mode in (USED, RAW, SWAP)]
    try:
        plan_partitions(repo, image, target, tuple(a.number for a in areas))
    except BootmediaError:
        return []
    return [
        (
            a.number,
            f"partition {a.number}: {a.fstype or 'raw'}"
            + (f" '{a.label}'" if a.label else "")
            + f" {human_bytes(a.size)}",
        )
        for a in areas
    ]


def apply_partitions(plan: PartitionsPlan, reporter: Reporter | None = None) -> list[ApplyResult]:
    """Restore each chosen partition in turn; the first failure stops the job."""
    return [apply_image(p, reporter) for p in plan.plans]
