"""Partition plans from recorded disks: exact sectors, scripts and refusals, without root."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bootmedia.disks import Disk, build_disks
from bootmedia.errors import UsageError
from bootmedia.partition import plan_partition
from bootmedia.partition.layouts import parse_size
from bootmedia.plan import shell

MiB = 1 << 20
MACHINES = Path(__file__).parent / "fixtures" / "machines"


def recorded(machine: str, name: str) -> Disk:
    blockdev = json.loads((MACHINES / f"{machine}.json").read_text())["blockdev"]
    return next(d for d in build_disks(blockdev) if d.name == name)


SDA = recorded("imsm", "sda")  # 1 TB SATA, 512-byte sectors
NVME = recorded("imsm", "nvme0n1")


def test_uefi_on_a_512_disk() -> None:
    plan = plan_partition(SDA, "uefi")
    esp, root = plan.partitions
    assert (esp.start, esp.sectors, esp.path) == (2048, 512 * MiB // 512, "/dev/sda1")
    assert root.start == 2048 + esp.sectors
    # The root ends on a MiB boundary before the backup GPT (33 sectors at the end).
    assert (root.start + root.sectors) % 2048 == 0
    assert (root.start + root.sectors) <= SDA.size // 512 - 33
    script = plan.sfdisk_script()
    assert "label: gpt" in script
    assert (
        'start=2048, size=1048576, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"'
        in script
    )
    assert plan.mkfs_commands() == [
        ["mkfs.vfat", "-F", "32", "-n", "ESP", "/dev/sda1"],
        ["mkfs.ext4", "-F", "-q", "-L", "root", "/dev/sda2"],
    ]


def test_4k_sectors_and_nvme_partition_names() -> None:
    disk = dataclasses.replace(NVME, logical_sector_size=4096, physical_sector_size=4096)
    plan = plan_partition(disk, "windows")
    esp, msr, win = plan.partitions
    assert (esp.start, esp.sectors) == (256, 260 * MiB // 4096)
    assert (msr.start, msr.sectors) == (256 + esp.sectors, 16 * MiB // 4096)
    assert [p.path for p in plan.partitions] == [
        "/dev/nvme0n1p1",
        "/dev/nvme0n1p2",
        "/dev/nvme0n1p3",
    ]
    ntfs = plan.mkfs_commands()[-1]
    assert ntfs[ntfs.index("--sector-size") + 1] == "4096"
    assert ntfs[ntfs.index("--partition-start") + 1] == str(win.start)


def test_bios_is_mbr_and_bootable() -> None:
    plan = plan_partition(SDA, "bios", fs="ntfs")
    (part,) = plan.partitions
    assert plan.table == "dos" and part.type == "7" and part.bootable
    assert part.sfdisk_line().endswith("type=7, bootable")
    huge = dataclasses.replace(SDA, size=3 * 10**12)
    with pytest.raises(UsageError, match=r"MBR .* cannot address 3.0 TB"):
        plan_partition(huge, "bios")


def test_layout_that_does_not_fit() -> None:
    small = dataclasses.replace(SDA, size=100 * MiB)
    with pytest.raises(UsageError, match="layout 'uefi' does not fit: it needs at least"):
        plan_partition(small, "uefi")


def test_bad_layout_choices() -> None:
    with pytest.raises(UsageError, match="unknown layout 'macos'"):
        plan_partition(SDA, "macos")
    with pytest.raises(
        UsageError, match="layout 'data' takes --fs exfat or ntfs or ext4, not 'zfs'"
    ):
        plan_partition(SDA, "data", fs="zfs")
    with pytest.raises(UsageError, match="no such layout file"):
        plan_partition(SDA, "/nonexistent/layout.toml")


def test_toml_layout(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(
        'table = "gpt"\n'
        '[[partition]]\nsize = "256MiB"\ntype = "esp"\nfs = "vfat"\nlabel = "EFI"\n'
        '[[partition]]\nsize = "64MiB"\nfs = "swap"\n'
        '[[partition]]\nsize = "rest"\nfs = "ext4"\nlabel = "data"\nname = "lab data"\n'
    )
    plan = plan_partition(SDA, str(path))
    assert [p.fs for p in plan.partitions] == ["vfat", "swap", "ext4"]
    assert plan.partitions[1].type == "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
    assert plan.partitions[2].name == "lab data"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('table = "apm"\n[[partition]]\nfs = "ext4"\n', "table must be gpt or dos"),
        ('[[partition]]\nsize = "rest"\n[[partition]]\nsize = "1GiB"\n', "only the last partition"),
        ('[[partition]]\nsize = "big"\n', "size 'big'"),
        ('[[partition]]\nfs = "hfs"\n', "fs 'hfs' is not one of"),
        ('[[partition]]\ncolour = "red"\n', "unknown key 'colour'"),
        ('table = "dos"\n[[partition]]\ntype = "msr"\n', "does not exist on an MBR"),
        ("[[partition]\n", "not a valid TOML layout"),
        ('table = "gpt"\n', "no [[partition]] entries"),
    ],
)
def test_toml_layout_errors(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=error.replace("[", r"\[")):
        plan_partition(SDA, str(path))


def test_sizes() -> None:
    assert parse_size("512MiB", "x") == 512 * MiB
    assert parse_size("1.5GiB", "x") == 3 << 29
    assert parse_size("2TB", "x") == 2 * 10**12
    assert parse_size(4096, "x") == 4096
    assert parse_size("rest", "x") is None


def test_plan_summary_and_equivalent_command() -> None:
    plan = plan_partition(SDA, "bios", fs="ntfs")
    assert plan.summary() == plan.render().splitlines()
    assert "MBR: one bootable ntfs partition" in plan.render()
    assert shell(plan) == (
        "bootmedia partition /dev/disk/by-id/ata-TOSHIBA_DT01ACA100_Y6AKDK9MS "
        "--layout bios --fs ntfs --confirm K9MS"
    )
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["commands"][0] == "sfdisk --wipe always --wipe-partitions always /dev/sda"
    assert data["partitions"][0]["bootable"] is True
