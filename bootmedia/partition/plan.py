"""The partition plan: exact sectors for every partition, rendered as an sfdisk script + mkfs."""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any

from bootmedia.blockdev import partition_path
from bootmedia.disks import Disk
from bootmedia.errors import UsageError
from bootmedia.partition.layouts import TYPES, Layout, PartSpec, get_layout
from bootmedia.progress import human_bytes, human_size

MiB = 1 << 20
GPT_ENTRIES_BYTES = 128 * 128  # the partition entry array, at both ends of the disk
MIN_SIZE = {
    "ext4": 8 * MiB,
    "ntfs": 8 * MiB,
    "exfat": 8 * MiB,
    "xfs": 300 * MiB,
    "btrfs": 128 * MiB,
}


def _min_size(fs: str, sector: int) -> int:
    if fs == "vfat":
        # FAT32 needs at least 65525 clusters; at one sector per cluster that is 65525 sectors
        # plus the FATs and reserved area.
        return (65536 + 1024) * sector
    return MIN_SIZE.get(fs, MiB)


@dataclass(frozen=True)
class PlannedPartition:
    number: int
    path: str
    start: int  # sectors of the disk's logical sector size
    sectors: int
    type: str  # as sfdisk takes it: GUID (gpt) or hex byte (dos)
    fs: str
    label: str
    name: str
    bootable: bool

    def sfdisk_line(self) -> str:
        fields = [f"start={self.start}", f"size={self.sectors}", f"type={self.type}"]
        if self.name:
            fields.append(f'name="{self.name}"')
        if self.bootable:
            fields.append("bootable")
        return ", ".join(fields)


@dataclass(frozen=True)
class PartitionPlan:
    disk: Disk
    layout: Layout
    table: str
    sector_size: int
    partitions: tuple[PlannedPartition, ...]
    layout_arg: str = ""  # what the user chose: "uefi", "/path/lab.toml"
    fs: str | None = None

    def summary(self) -> list[str]:
        """The plan in words (the TUI's summary screen; the lines of render())."""
        return self.render().splitlines()

    def command(self) -> list[str]:
        """The CLI command that does the same, for the log and for the technician to reuse."""
        disk = self.disk
        who = disk.by_id[0] if disk.by_id else disk.path
        code = disk.serial[-4:] if disk.serial else disk.name
        argv = ["bootmedia", "partition", who, "--layout", self.layout_arg or self.layout.name]
        argv += ["--fs", self.fs] if self.fs else []
        return [*argv, "--confirm", code]

    def sfdisk_script(self) -> str:
        lines = [f"# bootmedia layout {self.layout.name}: {self.layout.description}"]
        lines += [f"label: {self.table}", "unit: sectors", ""]
        lines += [p.sfdisk_line() for p in self.partitions]
        return "\n".join(lines) + "\n"

    def sfdisk_command(self) -> list[str]:
        # --wipe: remove old signatures from the disk; --wipe-partitions: and from where the new
        # partitions start, or blkid would report an old ext4 under a new FAT (and mount it).
        return ["sfdisk", "--wipe", "always", "--wipe-partitions", "always", self.disk.path]

    def mkfs_commands(self) -> list[list[str]]:
        return [argv for p in self.partitions if (argv := mkfs_command(p, self.sector_size))]

    def render(self) -> str:
        lines = [
            f"partition {self.disk.label()}",
            f"layout: {self.layout.name} ({self.layout.description})",
        ]
        for p in self.partitions:
            size = human_bytes(p.sectors * self.sector_size)
            lines.append(f"  {p.path}  {size:>10}  {p.fs:6} {p.label or '-'}  {p.name}")
        lines += [
            "",
            f"$ {shlex.join(self.sfdisk_command())} <<EOF",
            self.sfdisk_script().rstrip(),
            "EOF",
        ]
        lines += [f"$ {shlex.join(argv)}" for argv in self.mkfs_commands()]
        if self.disk.transport == "file":
            lines.append(
                "(an image file: each mkfs runs on a scratch file copied in at its offset)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk": self.disk.to_dict(),
            "layout": self.layout.name,
            "table": self.table,
            "sector_size": self.sector_size,
            "sfdisk_script": self.sfdisk_script(),
            "commands": [shlex.join(self.sfdisk_command())]
            + [shlex.join(c) for c in self.mkfs_commands()],
            "partitions": [p.__dict__ for p in self.partitions],
        }


def mkfs_command(p: PlannedPartition, sector: int) -> list[str] | None:
    label = ["-L", p.label] if p.label else []
    if p.fs == "vfat":
        return ["mkfs.vfat", "-F", "32", *(["-n", p.label.upper()[:11]] if p.label else []), p.path]
    if p.fs == "ext4":
        return ["mkfs.ext4", "-F", "-q", *label, p.path]
    if p.fs == "ntfs":
        # --quick skips zeroing the whole partition (hours on a big disk). The start sector and
        # geometry go into the boot sector, which Windows' loader reads: mkfs.ntfs cannot always
        # find them on its own (loop devices, some USB bridges).
        return [
            "mkfs.ntfs", "--quick", "--force", *(["--label", p.label] if p.label else []),
            "--sector-size", str(sector), "--partition-start", str(p.start),
            "--heads", "255", "--sectors-per-track", "63", p.path,
        ]  # fmt: skip
    if p.fs == "exfat":
        return ["mkfs.exfat", *label, p.path]
    if p.fs == "xfs":
        return ["mkfs.xfs", "-f", "-q", *label, p.path]
    if p.fs == "btrfs":
        return ["mkfs.btrfs", "-f", "-q", *label, p.path]
    if p.fs == "swap":
        return ["mkswap", *label, p.path]
    return None


def _type_for(spec: PartSpec, table: str, where: str) -> str:
    if spec.type in TYPES:
        guid, mbr = TYPES[spec.type]
        value = guid if table == "gpt" else mbr
        if not value:
            raise UsageError(f"{where}: type {spec.type!r} does not exist on an MBR (dos) disk")
        return value
    if table == "gpt" and len(spec.type) == 36 and spec.type.count("-") == 4:
        return spec.type.upper()
    if (
        table == "dos"
        and len(spec.type) <= 2
        and all(c in "0123456789abcdefABCDEF" for c in spec.type)
    ):
        return spec.type.lower()
    raise UsageError(
        f"{where}: unknown partition type {spec.type!r} ({', '.join(TYPES)}, or a GUID/hex byte)"
    )


def plan_layout(disk: Disk, layout: Layout) -> PartitionPlan:
    """Place every partition at a 1 MiB boundary and check that the layout fits the disk."""
    sector = disk.logical_sector_size
    align = MiB // sector
    total = disk.size // sector
    if layout.table == "gpt":
        last_usable = total - 2 - GPT_ENTRIES_BYTES // sector  # backup entries + header at the end
    else:
        last_usable = total - 1
        if total > 1 << 32:
            raise UsageError(
                f"an MBR (dos) table cannot address {human_size(disk.size)} with "
                f"{sector}-byte sectors: use a GPT layout"
            )
        if len(layout.parts) > 4:
            raise UsageError(
                f"layout {layout.name!r}: an MBR (dos) table holds at most 4 partitions"
            )
    end_aligned = (last_usable + 1) // align * align
    parts: list[PlannedPartition] = []
    start = align
    needed = align * sector
    for number, spec in enumerate(layout.parts, 1):
        where = f"layout {layout.name!r} partition {number}"
        if spec.size is None and number != len(layout.parts):
            raise UsageError(f"{where}: only the last partition can take the rest of the disk")
        minimum = _min_size(spec.fs, sector)
        if spec.size is not None:
            sectors = -(-spec.size // (align * sector)) * align  # round up to whole MiB
            needed += sectors * sector
        else:
            sectors = end_aligned - start
            needed += minimum
        if spec.size is not None and spec.size < minimum:
            raise UsageError(f"{where}: {spec.fs} needs at least {human_bytes(minimum)}")
        parts.append(
            PlannedPartition(
                number=number,
                path=partition_path(disk.path, number),
                start=start,
                sectors=sectors,
                type=_type_for(spec, layout.table, where),
                fs=spec.fs,
                label=spec.label,
                name=spec.name if layout.table == "gpt" else "",
                bootable=spec.bootable and layout.table == "dos",
            )
        )
        start += sectors
    if start > end_aligned or parts[-1].sectors * sector < _min_size(parts[-1].fs, sector):
        raise UsageError(
            f"layout {layout.name!r} does not fit: it needs at least {human_bytes(needed + MiB)} "
            f"and {disk.label()} holds {human_bytes(disk.size)}"
        )
    return PartitionPlan(disk, layout, layout.table, sector, tuple(parts))


def plan_partition(disk: Disk, layout: str | Layout, *, fs: str | None = None) -> PartitionPlan:
    """The plan for laying out `disk`: a built-in layout name, a .toml path, or a Layout."""
    if isinstance(layout, Layout):
        return plan_layout(disk, layout)
    plan = plan_layout(disk, get_layout(layout, fs))
    return dataclasses.replace(plan, layout_arg=layout, fs=fs)
