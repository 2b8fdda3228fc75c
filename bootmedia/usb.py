"""The bootmedia stick: the hybrid live ISO written raw, plus a data partition for images.

grub-mkrescue (xorriso) makes a hybrid ISO whose first sectors carry a protective MBR with GRUB's
BIOS boot code and a GPT (entries for the EFI system partition and for the ISO's own areas, with
room for 176 entries), and whose last sectors carry the backup GPT. Written to a bigger stick,
everything after the ISO is free; the only thing in the way is the backup GPT, which sits at the
end of the ISO instead of the end of the stick. `sfdisk --relocate gpt-bak-std` moves it, and
`sfdisk --append` then adds partition 5 after the ISO, aligned to 1 MiB. sfdisk rewrites only the
protective MBR's partition entry, so the boot code in its first 440 bytes survives (the tests
check that).

The live system mounts the partition labelled BOOTMEDIA at /run/bootmedia/data (live/overlay's
fstab and bootmedia-launch); repositories, logs, wipe reports and unattended results go there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootmedia import blockdev
from bootmedia.errors import BootmediaError, UsageError
from bootmedia.progress import Reporter, human_bytes, human_size
from bootmedia.run import require_tools, run, run_text

if TYPE_CHECKING:
    from bootmedia.disks.model import Disk

log = logging.getLogger("bootmedia.usb")

DATA_LABEL = "BOOTMEDIA"
DATA_DIR = Path("/run/bootmedia/data")
DATA_FILESYSTEMS = ("exfat", "ext4", "none")
ALIGN = 1 << 20
MIN_DATA = 64 << 20  # below this a data partition is useless for images
CHUNK = 4 << 20
SYNC_EVERY = 64 << 20  # fsync this often, so cancelling a slow stick does not hang for minutes

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

TOOLS = ("sfdisk", "partx", "blkid", "wipefs")
MKFS = {"exfat": "mkfs.exfat", "ext4": "mkfs.ext4"}


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
    proc = run(["sfdisk", "--json", str(path)], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise UsageError(
            f"{path}: an ISO without a partition table cannot boot from a stick "
            "(build it with build_iso.sh, which makes a hybrid image)"
        )
    table = json.loads(proc.stdout)["partitiontable"]
    if int(table.get("sectorsize", 512)) != 512:
        raise UsageError(f"{path}: unexpected sector size {table.get('sectorsize')}")
    return IsoFacts(path, size, table["label"], len(table.get("partitions", ())))


def _align_up(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class UsbPlan:
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

    def command(self) -> str:
        hint = self.disk.serial or self.disk.name
        return (
            f"bootmedia make-usb {self.iso.path} {self.disk.path} --data-fs {self.data_fs} "
            f"--confirm {hint}"
        )

    def sfdisk_line(self) -> str:
        """The sfdisk --append script for the data partition (sectors of 512 bytes)."""
        ptype = (GPT_TYPES if self.iso.table == "gpt" else MBR_TYPES)[self.data_fs]
        line = f"start={self.data_start // 512}, type={ptype}"
        if self.iso.table == "gpt":
            line += f', name="{DATA_LABEL}"'
        return line + "\n"


def plan_usb(iso: IsoFacts, disk: Disk, data_fs: str = "exfat") -> UsbPlan:
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
    return UsbPlan(iso, disk, data_fs, start, size if data_fs != "none" else 0, iso.partitions + 1)


# ---------------------------------------------------------------- the steps


def write_image(plan: UsbPlan, reporter: Reporter) -> None:
    """Copy the ISO to the start of the stick, then read it back and compare every byte."""
    fd = blockdev.open_device(plan.disk.path, write=True)
    try:
        with reporter.step("Writing the live system"), open(plan.iso.path, "rb") as src:
            pos = synced = 0
            while chunk := src.read(CHUNK):
                reporter.check_cancel()
                _pwrite_all(fd, chunk, pos)
                pos += len(chunk)
                reporter.advance(len(chunk))
                if pos - synced >= SYNC_EVERY:
                    os.fsync(fd)
                    synced = pos
            blockdev.flush(fd)
        with reporter.step("Reading it back"), open(plan.iso.path, "rb") as src:
            pos = 0
            while chunk := src.read(CHUNK):
                reporter.check_cancel()
                if os.pread(fd, len(chunk), pos) != chunk:
                    raise BootmediaError(
                        f"{plan.disk.ident}: the stick returned different data at "
                        f"{human_bytes(pos)} than was written: a faulty or fake-capacity stick"
                    )
                pos += len(chunk)
                reporter.advance(len(chunk))
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def add_data_partition(plan: UsbPlan) -> str:
    """Make room after the ISO and add the data partition; returns its device path."""
    dev = plan.disk.path
    if plan.iso.table == "gpt":
        # The ISO's backup GPT sits where the ISO ends; GPT wants it at the end of the disk.
        run(["sfdisk", "--quiet", "--relocate", "gpt-bak-std", dev])
        for number in range(1, plan.iso.partitions + 1):
            run(
                [
                    "sfdisk",
                    "--quiet",
                    "--no-reread",
                    "--part-attrs",
                    dev,
                    str(number),
                    ISO_PART_ATTRS,
                ]
            )
    # --no-reread/--no-tell-kernel: the kernel learns the table from partx below, because
    # sfdisk's BLKRRPART fails on a disk whose ISO partitions are busy or cached.
    run(
        ["sfdisk", "--quiet", "--append", "--no-reread", "--no-tell-kernel", dev],
        input=plan.sfdisk_line().encode(),
    )
    _rescan(dev)
    part = blockdev.partition_path(dev, plan.data_number)
    if not Path(part).exists():
        raise BootmediaError(f"{part} did not appear after adding the data partition")
    return part


def _rescan(dev: str) -> None:
    # partx tells the kernel about each partition; udevadm settle then waits for udev (where one
    # runs) to create the nodes and by-label links before mkfs looks for them.
    run(["partx", "-u", dev], check=False)
    run(["partx", "-a", dev], check=False)
    run(["udevadm", "settle", "--timeout=10"], check=False)


def format_data(plan: UsbPlan, part: str) -> None:
    require_tools(MKFS[plan.data_fs])
    run(["wipefs", "--all", "--quiet", part])
    if plan.data_fs == "exfat":
        run(["mkfs.exfat", "-L", DATA_LABEL, part])
    else:
        # -m 0: no blocks reserved for root on a data-only filesystem.
        run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", DATA_LABEL, part])


def check_result(plan: UsbPlan, part: str) -> dict[str, Any]:
    """Read back what the stick now says: the table lists our partition, blkid sees the label."""
    table = json.loads(run_text(["sfdisk", "--json", plan.disk.path]))["partitiontable"]
    entry = next((p for p in table["partitions"] if p["node"] == part), None)
    if entry is None or int(entry["start"]) * 512 != plan.data_start:
        raise BootmediaError(f"{plan.disk.ident}: the partition table does not show {part}")
    label = run_text(["blkid", "-p", "-o", "value", "-s", "LABEL", part]).strip()
    fstype = run_text(["blkid", "-p", "-o", "value", "-s", "TYPE", part]).strip()
    if label != DATA_LABEL or fstype != plan.data_fs:
        raise BootmediaError(f"{part}: blkid reads {fstype or 'nothing'} {label!r} after mkfs")
    return entry


STICK_README = """\
This is a bootmedia stick. Boot a machine from it to capture, restore, wipe or verify disks.

  images/          image repositories (bootmedia capture ... /run/bootmedia/data/images)
  logs/            bootmedia.log of every session
  reports/         wipe reports
  results/         results of unattended jobs, one JSON file per machine
  bootmedia.toml   (optional) an unattended job; see bootmedia.toml.example
"""

TOML_EXAMPLE = """\
# Rename to bootmedia.toml to make this stick restore machines with no questions asked.
# The technician still sees the job and a 10-second countdown that any key cancels.
[job]
action = "restore"
image = "golden"           # image name in the repository
repo = "images"            # repository directory on this partition
target = "internal"        # the one internal disk; or serial:XYZ, model:Samsung*, transport:nvme
after = "poweroff"         # poweroff | reboot | stay
countdown = 10
verify = true
"""


def populate(part: str) -> bool:
    """Lay out the data partition's folders and notes. Best effort: this host may lack the exFAT
    driver, and the live system makes the folders on first use anyway."""
    with tempfile.TemporaryDirectory(prefix="bootmedia-usb-") as mnt:
        if run(["mount", part, mnt], check=False).returncode != 0:
            log.info("%s: not mounted here; the live system will lay it out", part)
            return False
        try:
            root = Path(mnt)
            for sub in ("images", "logs", "reports", "results"):
                (root / sub).mkdir(exist_ok=True)
            (root / "README.txt").write_text(STICK_README)
            (root / "bootmedia.toml.example").write_text(TOML_EXAMPLE)
        finally:
            run(["umount", mnt], check=False)
    return True


@dataclass(frozen=True)
class UsbResult:
    data_partition: str  # "" with --data-fs none
    populated: bool
    lines: tuple[str, ...]


def make_usb(plan: UsbPlan, reporter: Reporter) -> UsbResult:
    """Write the stick as planned. Only returns when every step was checked."""
    require_tools(*TOOLS)
    reporter.add_total(2 * plan.iso.size)
    write_image(plan, reporter)
    _rescan(plan.disk.path)
    lines = [f"{plan.iso.path.name} written to {plan.disk.label()} and read back: identical"]
    if plan.data_fs == "none":
        return UsbResult("", False, tuple(lines))
    with reporter.step("Adding the data partition"):
        part = add_data_partition(plan)
    with reporter.step(f"Formatting {DATA_LABEL} ({plan.data_fs})"):
        format_data(plan, part)
        entry = check_result(plan, part)
        populated = populate(part)
    size = int(entry["size"]) * 512
    lines.append(f"Data partition {part}: {human_size(size)} {plan.data_fs}, label {DATA_LABEL}")
    return UsbResult(part, populated, tuple(lines))


# ---------------------------------------------------------------- on the live system


def data_dir(base: Path = DATA_DIR) -> Path | None:
    """The mounted data partition, or None (booted from CD or network without a stick)."""
    return base if base.is_dir() and os.path.ismount(base) else None


def ensure_data_mounted(base: Path = DATA_DIR) -> Path | None:
    """Mount LABEL=BOOTMEDIA at base if it is there and not mounted yet (a slow stick)."""
    if data_dir(base):
        return base
    proc = run(["blkid", "-L", DATA_LABEL], check=False)
    device = proc.stdout.decode().strip()
    if proc.returncode != 0 or not device:
        return None
    base.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(BootmediaError):
        run(["mount", "-o", "noatime", device, str(base)])
    return data_dir(base)


def reports_dir(kind: str = "reports") -> Path | None:
    """Where wipe reports (kind="reports") and job results go on the stick, made on demand."""
    base = data_dir()
    if base is None:
        return None
    path = base / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path
