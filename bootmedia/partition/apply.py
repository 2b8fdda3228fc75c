"""Apply a PartitionPlan, then check what landed on the disk against the plan."""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootmedia.disks import check_writable
from bootmedia.disks.files import TRANSPORT, extract, probe_at, write_at
from bootmedia.errors import BootmediaError
from bootmedia.partition.plan import PartitionPlan, PlannedPartition
from bootmedia.progress import Reporter
from bootmedia.run import require_tools, run
from bootmedia.tools import blkid, partx, sfdisk

# What blkid reports for the filesystems mkfs makes.
BLKID_TYPE = {
    "vfat": "vfat",
    "ext4": "ext4",
    "ntfs": "ntfs",
    "exfat": "exfat",
    "xfs": "xfs",
    "btrfs": "btrfs",
    "swap": "swap",
}


@dataclass(frozen=True)
class CreatedPartition:
    number: int
    path: str
    start: int  # sectors
    sectors: int
    type: str
    fstype: str
    uuid: str
    label: str


@dataclass
class PartitionResult:
    plan: PartitionPlan
    partitions: tuple[CreatedPartition, ...] = ()
    table_id: str = ""
    commands: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk": self.plan.disk.to_dict(),
            "layout": self.plan.layout.name,
            "table": self.plan.table,
            "table_id": self.table_id,
            "commands": self.commands,
            "partitions": [p.__dict__ for p in self.partitions],
        }

    def lines(self) -> list[str]:
        lines = [f"{self.plan.disk.path}: {self.plan.table} table {self.table_id}, checked"]
        for p in self.partitions:
            lines.append(f"  {p.path}  {p.fstype or '-':6} {p.label or '-':12} {p.uuid}")
        return lines

    def render(self) -> str:
        return "\n".join(self.lines())


def _run(result: PartitionResult, argv: list[str], **kwargs: Any) -> Any:
    result.commands.append(shlex.join(argv))
    return run(argv, **kwargs)


def reread_partitions(disk: str, numbers: list[int], result: PartitionResult | None = None) -> None:
    """Make the kernel's partition nodes match the new table before mkfs touches them
    (bootmedia.tools.partx says why each step is there)."""
    partx.reread(disk, numbers, record=result.commands if result is not None else None)


def _probe(plan: PartitionPlan, p: PlannedPartition, result: PartitionResult) -> dict[str, str]:
    """blkid of a new partition: its node, or its byte range when the disk is an image file."""
    if plan.disk.transport != TRANSPORT:
        result.commands.append(shlex.join(blkid.argv(p.path)))
        return blkid.probe(p.path, strict=False)
    offset, size = p.start * plan.sector_size, p.sectors * plan.sector_size
    result.commands.append(shlex.join(blkid.argv(plan.disk.path, offset, size)))
    return probe_at(plan.disk.path, offset, size)


def _fsck_vfat(plan: PartitionPlan, p: PlannedPartition, result: PartitionResult) -> bool:
    if plan.disk.transport != TRANSPORT:
        return bool(_run(result, ["fsck.vfat", "-n", p.path], check=False).returncode == 0)
    with tempfile.TemporaryDirectory(prefix="bootmedia-part-") as tmp:
        part = extract(
            plan.disk.path,
            p.start * plan.sector_size,
            p.sectors * plan.sector_size,
            Path(tmp) / "part.img",
        )
        return bool(_run(result, ["fsck.vfat", "-n", str(part)], check=False).returncode == 0)


def _mkfs_in_file(
    plan: PartitionPlan, p: PlannedPartition, argv: list[str], result: PartitionResult
) -> None:
    """An image file has no partition node for mkfs: make the filesystem in a sparse scratch
    file of the partition's size, then copy it into the image at the partition's offset."""
    offset, size = p.start * plan.sector_size, p.sectors * plan.sector_size
    # Beside the image: the same filesystem, so the scratch file fits where the image does.
    with tempfile.TemporaryDirectory(
        prefix=".bootmedia-mkfs-", dir=Path(plan.disk.path).parent
    ) as tmp:
        scratch = Path(tmp) / f"p{p.number}.img"
        with open(scratch, "wb") as f:
            f.truncate(size)
        _run(result, [*argv[:-1], str(scratch)])
        result.commands.append(
            f"(bootmedia) copy {scratch.name} into {plan.disk.path} at byte {offset}"
        )
        write_at(scratch, plan.disk.path, offset, size)


def check_result(plan: PartitionPlan, result: PartitionResult) -> None:
    """Compare `sfdisk -J` and blkid with the plan; raise BootmediaError on any difference."""
    result.commands.append(shlex.join(["sfdisk", "-J", plan.disk.path]))
    table = sfdisk.read(plan.disk.path) or {}
    problems = []
    if table.get("label") != plan.table:
        problems.append(f"table is {table.get('label')}, planned {plan.table}")
    found = {sfdisk.partition_number(p["node"]): p for p in table.get("partitions", [])}
    created = []
    for p in plan.partitions:
        got = found.get(p.number)
        if got is None:
            problems.append(f"partition {p.number} is missing")
            continue
        if (got["start"], got["size"]) != (p.start, p.sectors):
            problems.append(
                f"partition {p.number} is at {got['start']}+{got['size']}, planned {p.start}+{p.sectors}"
            )
        if str(got["type"]).lower() != p.type.lower():
            problems.append(f"partition {p.number} has type {got['type']}, planned {p.type}")
        probe = _probe(plan, p, result)
        want = BLKID_TYPE.get(p.fs, "")
        if probe.get("TYPE", "") != want:
            problems.append(
                f"{p.path} holds {probe.get('TYPE') or 'no filesystem'}, planned {want or 'none'}"
            )
        created.append(
            CreatedPartition(
                p.number,
                p.path,
                got["start"],
                got["size"],
                str(got["type"]),
                probe.get("TYPE", ""),
                probe.get("UUID", ""),
                probe.get("LABEL", ""),
            )
        )
        # A second opinion on FAT, read by dosfstools itself (no kernel vfat module needed).
        if p.fs == "vfat" and not _fsck_vfat(plan, p, result):
            problems.append(f"{p.path}: fsck.vfat -n found errors")
    if problems:
        raise BootmediaError(
            f"{plan.disk.path}: partitioning did not land as planned: " + "; ".join(problems)
        )
    result.partitions = tuple(created)
    result.table_id = str(table.get("id", ""))


def apply_partition(
    plan: PartitionPlan,
    reporter: Reporter,
    *,
    repo_path: str | Path | None = None,
    mountinfo: str | Path | None = None,
) -> PartitionResult:
    """Write the table, make the filesystems, check the result. Raises Refused before any write
    when the disk may not be written, BootmediaError/ToolError when a step fails."""
    check_writable(plan.disk, repo_path=repo_path, mountinfo=mountinfo)
    mkfs = plan.mkfs_commands()
    in_file = plan.disk.transport == TRANSPORT
    require_tools(
        "sfdisk",
        *([] if in_file else ["partx"]),
        "blkid",
        *{argv[0] for argv in mkfs},
        *(["fsck.vfat"] if any(p.fs == "vfat" for p in plan.partitions) else []),
    )
    result = PartitionResult(plan)
    with reporter.step("Writing the partition table"):
        _run(result, plan.sfdisk_command(), input=plan.sfdisk_script().encode())
        if not in_file:
            reread_partitions(plan.disk.path, [p.number for p in plan.partitions], result)
    by_path = {p.path: p for p in plan.partitions}
    for argv in mkfs:
        reporter.check_cancel()
        with reporter.step(f"Making {argv[0].split('.')[-1]} on {argv[-1]}"):
            if in_file:
                _mkfs_in_file(plan, by_path[argv[-1]], argv, result)
            else:
                _run(result, argv)
    with reporter.step("Checking the result (sfdisk -J, blkid)"):
        check_result(plan, result)
    return result
