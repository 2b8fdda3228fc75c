"""The make-usb job: the hybrid live ISO written raw, plus a data partition for images.

grub-mkrescue (xorriso) makes a hybrid ISO whose first sectors carry a protective MBR with GRUB's
BIOS boot code and a GPT (entries for the EFI system partition and for the ISO's own areas, with
room for 176 entries), and whose last sectors carry the backup GPT. Written to a bigger stick,
everything after the ISO is free; the only thing in the way is the backup GPT, which sits at the
end of the ISO instead of the end of the stick. `sfdisk --relocate gpt-bak-std` moves it, and
`sfdisk --append` then adds partition 5 after the ISO, aligned to 1 MiB. sfdisk rewrites only the
protective MBR's partition entry, so the boot code in its first 440 bytes survives (the tests
check that).

The live system mounts the partition labelled BOOTMEDIA at bootmedia.stick.data.DATA_DIR
(/run/bootmedia/data); repositories, logs, wipe reports and unattended results go there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia import blockdev
from bootmedia.errors import BootmediaError
from bootmedia.progress import Reporter, human_bytes, human_size
from bootmedia.run import require_tools, run, run_cleanup
from bootmedia.scratch import new_scratch
from bootmedia.stick.data import DATA_LABEL
from bootmedia.stick.plan import ISO_PART_ATTRS, StickPlan
from bootmedia.tools import blkid, partx, sfdisk

log = logging.getLogger("bootmedia.stick")

CHUNK = 4 << 20
SYNC_EVERY = 64 << 20  # fsync this often, so cancelling a slow stick does not hang for minutes
TOOLS = ("sfdisk", "partx", "blkid", "wipefs")
MKFS = {"exfat": "mkfs.exfat", "ext4": "mkfs.ext4"}


# ---------------------------------------------------------------- the steps


def write_image(plan: StickPlan, reporter: Reporter) -> None:
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


def add_data_partition(plan: StickPlan) -> str:
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
    partx.reread(dev)


def format_data(plan: StickPlan, part: str) -> None:
    require_tools(MKFS[plan.data_fs])
    run(["wipefs", "--all", "--quiet", part])
    if plan.data_fs == "exfat":
        run(["mkfs.exfat", "-L", DATA_LABEL, part])
    else:
        # -m 0: no blocks reserved for root on a data-only filesystem.
        run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", DATA_LABEL, part])


def check_result(plan: StickPlan, part: str) -> dict[str, Any]:
    """Read back what the stick now says: the table lists our partition, blkid sees the label."""
    table = sfdisk.read(plan.disk.path) or {"partitions": []}
    entry = next((p for p in table["partitions"] if p["node"] == part), None)
    if entry is None or int(entry["start"]) * 512 != plan.data_start:
        raise BootmediaError(f"{plan.disk.ident}: the partition table does not show {part}")
    found = blkid.probe(part)
    label, fstype = found.get("LABEL", ""), found.get("TYPE", "")
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
    # A scratch, not a TemporaryDirectory: if the umount fails, its cleanup leaves the mount
    # (and the files on the stick) alone instead of deleting through it.
    with new_scratch("usb") as where:
        mnt = str(where)
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
            run_cleanup(["umount", mnt])
    return True


@dataclass(frozen=True)
class StickResult:
    data_partition: str  # "" with --data-fs none
    populated: bool
    lines: tuple[str, ...]


def make_stick(plan: StickPlan, reporter: Reporter) -> StickResult:
    """Write the stick as planned. Only returns when every step was checked."""
    require_tools(*TOOLS)
    reporter.add_total(2 * plan.iso.size)
    write_image(plan, reporter)
    _rescan(plan.disk.path)
    lines = [f"{plan.iso.path.name} written to {plan.disk.label()} and read back: identical"]
    if plan.data_fs == "none":
        return StickResult("", False, tuple(lines))
    with reporter.step("Adding the data partition"):
        part = add_data_partition(plan)
    with reporter.step(f"Formatting {DATA_LABEL} ({plan.data_fs})"):
        format_data(plan, part)
        entry = check_result(plan, part)
        populated = populate(part)
    size = int(entry["size"]) * 512
    lines.append(f"Data partition {part}: {human_size(size)} {plan.data_fs}, label {DATA_LABEL}")
    return StickResult(part, populated, tuple(lines))
