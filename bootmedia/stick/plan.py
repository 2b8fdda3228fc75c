"""The make-usb plan: the hybrid ISO at the start of the stick, a data partition after it."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootmedia.errors import BootmediaError, UsageError
from bootmedia.progress import human_bytes, human_size
from bootmedia.stick.data import DATA_LABEL
from bootmedia.tools import sfdisk

if TYPE_CHECKING:
    from bootmedia.disks.model import Disk

log = logging.getLogger("bootmedia.stick")

DATA_FILESYSTEMS = ("exfat", "ext4", "none")
ALIGN = 1 << 20
MIN_DATA = 64 << 20  # below this a data partition is useless for images

# GPT partition types: exFAT is "Microsoft basic data" (Windows and macOS mount it), ext4 is
# "Linux filesystem".
GPT_TYPES = {
    "exfat": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    "ext4": "0FC63DAF-8483-4772-8E79-3D69ED7D8E47",
}
MBR_TYPES = {"exfat": "7", "ext4": "83"}
# Attributes for the ISO's own GPT entries: required (0), read-only (60), hidden (62) and no
# drive letter (63), so Windows does not offer to "format" the ISO's gap partitions.
ISO_PART_ATTRS = "RequiredPartition,GUID:60,GUID:62,GUID:63"


@dataclass(frozen=True)
class IsoFacts:
    path: Path
    size: int
    table: str  # "gpt" or "dos"
    partitions: int


def inspect_iso(path: Path) -> IsoFacts:
    """Check that path is a hybrid ISO (ISO 9660 with a partition table) and describe it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(0x8001)
            magic = f.read(5)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    if magic != b"CD001":
        raise UsageError(f"{path}: not an ISO 9660 image")
    try:
        table = sfdisk.read(str(path))
    except BootmediaError:
        table = None
    if table is None:
        raise UsageError(
            f"{path}: an ISO without a partition table cannot boot from a stick "
            "(build it with build_iso.sh, which makes a hybrid image)"
        )
    if int(table.get("sectorsize", 512)) != 512:
        raise UsageError(f"{path}: unexpected sector size {table.get('sectorsize')}")
    return IsoFacts(path, size, table["label"], len(table.get("partitions", ())))


def _align_up(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class StickPlan:
    """What make-usb will write where. Shown by --dry-run; asserted on by the tests."""

    iso: IsoFacts
    disk: Disk
    data_fs: str  # exfat, ext4 or none
    data_start: int  # bytes from the start of the stick
    data_size: int  # bytes, approximate (sfdisk takes the rest of the stick)
    data_number: int  # partition number of the data partition

    def summary(self) -> list[str]:
        lines = [
            f"Stick: {self.disk.label()}",
            f"Write {self.iso.path.name} ({human_bytes(self.iso.size)}) to the start of "
            f"{self.disk.path}, then read it back and compare",
        ]
        if self.data_fs == "none":
            lines.append("No data partition")
        else:
            lines.append(
                f"Add partition {self.data_number} at {human_bytes(self.data_start)}: "
                f"{human_size(self.data_size)} {self.data_fs}, label {DATA_LABEL}"
            )
        lines.append(f"Everything now on {self.disk.path} is lost")
        return lines

    def command(self) -> list[str]:
        hint = self.disk.serial or self.disk.name
        return [
            "bootmedia",
            "make-usb",
            str(self.iso.path),
            self.disk.path,
            "--data-fs",
            self.data_fs,
            "--confirm",
            hint,
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": "make-usb",
            "iso": {**asdict(self.iso), "path": str(self.iso.path)},
            "disk": self.disk.to_dict(),
            "data_fs": self.data_fs,
            "data_label": DATA_LABEL,
            "data_start": self.data_start,
            "data_size": self.data_size,
            "data_number": self.data_number,
        }

    def sfdisk_line(self) -> str:
        """The sfdisk --append script for the data partition (sectors of 512 bytes)."""
        ptype = (GPT_TYPES if self.iso.table == "gpt" else MBR_TYPES)[self.data_fs]
        line = f"start={self.data_start // 512}, type={ptype}"
        if self.iso.table == "gpt":
            line += f', name="{DATA_LABEL}"'
        return line + "\n"


def plan_stick(iso: IsoFacts, disk: Disk, data_fs: str = "exfat") -> StickPlan:
    if data_fs not in DATA_FILESYSTEMS:
        raise UsageError(f"--data-fs {data_fs}: choose one of {', '.join(DATA_FILESYSTEMS)}")
    if disk.logical_sector_size != 512:
        raise UsageError(
            f"{disk.ident}: {disk.logical_sector_size}-byte sectors; the hybrid ISO's partition "
            "table is written for 512-byte sectors"
        )
    if disk.size < iso.size:
        raise UsageError(
            f"{disk.ident}: {human_size(disk.size)} is smaller than the image "
            f"({human_size(iso.size)})"
        )
    start = _align_up(iso.size)
    # GPT keeps its backup copy at the end: a header and 176 entries (45 sectors) here.
    size = max(0, (disk.size - 64 * 512 - start) // ALIGN * ALIGN)
    if data_fs != "none" and size < MIN_DATA:
        raise UsageError(
            f"{disk.ident}: only {human_bytes(size)} left after the image; a data partition "
            f"needs {human_bytes(MIN_DATA)} (or use --data-fs none)"
        )
    if data_fs != "none" and iso.table == "dos" and iso.partitions >= 4:
        raise UsageError(f"{iso.path}: its MBR has no free slot for a data partition")
    return StickPlan(
        iso, disk, data_fs, start, size if data_fs != "none" else 0, iso.partitions + 1
    )
