"""A recorded machine for screenshots and snapshot tests: three disks (one the boot stick) and a
repository with one image. Installed by patching app.engine, so every screen runs unchanged."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app import engine
from app.engine import DiskRow, ImageRow
from app.jobs import Job, Outcome, restore_job
from bootmedia.apply import ApplyPlan
from bootmedia.disks.model import Disk, Partition
from bootmedia.progress import Progress, Reporter
from bootmedia.repo.manifest import Area, Manifest, SourceDisk, Stats, Table, TablePartition

GB = 1000**3
MB = 1000**2
REPO = Path("/run/bootmedia/data/images")

NVME = Disk(
    name="nvme0n1",
    path="/dev/nvme0n1",
    size=1000 * GB,
    model="Samsung SSD 980 PRO 1TB",
    serial="S5GXNF0R123456X",
    by_id=("/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNF0R123456X",),
    transport="nvme",
    partition_table="gpt",
    partitions=(
        Partition("nvme0n1p1", "/dev/nvme0n1p1", 1, 512 * MB, fstype="vfat", label="EFI"),
        Partition("nvme0n1p2", "/dev/nvme0n1p2", 2, 16 * MB),
        Partition("nvme0n1p3", "/dev/nvme0n1p3", 3, 999 * GB, fstype="ntfs", label="Windows"),
    ),
)
SATA = Disk(
    name="sda",
    path="/dev/sda",
    size=2000 * GB,
    model="WDC WD20EZBX-00A",
    serial="WD-WCC6Y7KL2F3A",
    by_id=("/dev/disk/by-id/ata-WDC_WD20EZBX-00A_WD-WCC6Y7KL2F3A",),
    transport="sata",
    rotational=True,
    partition_table="gpt",
    partitions=(Partition("sda1", "/dev/sda1", 1, 2000 * GB, fstype="ext4", label="data"),),
)
STICK = Disk(
    name="sdb",
    path="/dev/sdb",
    size=32 * GB,
    model="SanDisk Ultra",
    vendor="SanDisk",
    serial="4C530001230815115234",
    transport="usb",
    removable=True,
    partitions=(
        Partition(
            "sdb1",
            "/dev/sdb1",
            1,
            1 * GB,
            fstype="iso9660",
            label="BOOTMEDIA_LIVE",
            mountpoints=("/run/live/medium",),
        ),
        Partition(
            "sdb2",
            "/dev/sdb2",
            2,
            31 * GB,
            fstype="exfat",
            label="BOOTMEDIA",
            mountpoints=("/run/bootmedia/data",),
        ),
    ),
)
ROWS = [
    DiskRow(NVME),
    DiskRow(SATA),
    DiskRow(
        STICK, "sdb (4C530001230815115234): is the live boot medium (mounted at /run/live/medium)"
    ),
]

TABLE = Table(
    label="gpt",
    id="8A3C1E2B-0D4F-4E6A-9B7C-5D2E1F0A3B4C",
    sector_size=512,
    first_lba=2048,
    last_lba=1953525134,
    partitions=(
        TablePartition(1, 2048, 1048576, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        TablePartition(2, 1050624, 32768, "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"),
        TablePartition(3, 1083392, 250000000, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
    ),
)
MANIFEST = Manifest(
    name="golden-win11",
    description="Windows 11 23H2 + Office, lab image",
    created="2026-11-20T14:02:11+00:00",
    tool="bootmedia 0.1.0",
    chunk_size=1 << 20,
    source=SourceDisk(
        "/dev/nvme0n1", "Samsung SSD 980 PRO 1TB", "S5GXNF0R987654Y", 1000 * GB, 512, 512
    ),
    table=TABLE,
    areas=(
        Area(
            "p1",
            1048576,
            512 << 20,
            "used",
            1,
            "vfat",
            label="EFI",
            used=38 << 20,
            data_bytes=38 << 20,
        ),
        Area("p2", 537919488, 16 << 20, "raw", 2, data_bytes=1 << 20),
        Area(
            "p3",
            554696704,
            128000000000,
            "used",
            3,
            "ntfs",
            label="Windows",
            used=41 << 30,
            data_bytes=41 << 30,
        ),
    ),
    stats=Stats(data_bytes=41 << 30, stored_bytes=19 << 30, new_bytes=19 << 30),
)
IMAGE = ImageRow(REPO, MANIFEST)


class QuietMonitor:
    def poll(self, timeout: float = 0.0) -> list[object]:
        threading.Event().wait(timeout)
        return []

    def close(self) -> None:
        pass


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        engine, "list_disks", lambda session, for_write=True, check=None: list(ROWS)
    )
    monkeypatch.setattr(engine, "find_repositories", lambda session: [REPO])
    monkeypatch.setattr(engine, "list_images", lambda repos: [IMAGE])
    monkeypatch.setattr(engine, "disk_monitor", lambda session: QuietMonitor())


def restore_plan() -> ApplyPlan:
    return ApplyPlan(
        repo=REPO,
        image=MANIFEST,
        target=NVME.path,
        target_size=NVME.size,
        sector_size=512,
        disk=NVME,
        table=TABLE,
        script="",
        verify=True,
        check_first=True,  # the options screen's default, as plan_apply gets it from the TUI
        confirm_disk=NVME,  # as plan_apply sets it: the command line carries --confirm
    )


def recorded_restore_job() -> Job:
    return restore_job(restore_plan(), IMAGE, ROWS[0], verify=True, afterwards="stay")


PROGRESS = Progress(
    step="Writing p3 (ntfs), 3 of 3",
    done=23 * GB,
    total=82 * GB,
    rate=412 * MB,
    eta=147.0,
    elapsed=61.0,
    steps=(
        "Checking the image",
        "Marking the target incomplete",
        "Writing p1 (vfat), 1 of 3",
        "Writing p2, 2 of 3",
        "Writing p3 (ntfs), 3 of 3",
    ),
)
HISTORY = [380, 395, 410, 402, 388, 420, 415, 430, 398, 405, 412, 260, 300, 410, 425, 418]


def frozen_job(release: threading.Event) -> Job:
    """A job that shows one recorded Progress and waits (for the progress screenshot)."""

    def execute(reporter: Reporter) -> Outcome:
        for mib in HISTORY:
            reporter.callback(Progress(**{**PROGRESS.__dict__, "rate": float(mib * MB)}))
        while not (release.is_set() or reporter.cancel.wait(0.05)):
            pass
        return Outcome(True, "done")

    return Job("restore", "Restore golden-win11 onto nvme0n1", (), "", execute, "")


RESULT = Outcome(
    True,
    "Restore finished: every byte written was read back and checked",
    (
        "Image golden-win11 written to Samsung SSD 980 PRO 1TB · S5GXNF0R123456X · 1.0 TB · nvme · nvme0n1",
        "Written: 44.0 GB",
        "Throughput: 421.9 MB/s",
        "Time: 01:44",
    ),
)
