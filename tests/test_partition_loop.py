"""Every layout on real loop devices at 512 and 4096-byte sectors, checked with sfdisk -J,
blkid and (for FAT, which has no kernel module here) fsck.vfat and mtools."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia.disks import find_disk
from bootmedia.errors import Refused
from bootmedia.partition import apply_partition, plan_partition
from bootmedia.partition.layouts import TYPES
from bootmedia.progress import Reporter
from tests.conftest import root_only
from tests.disktools import MiB, loopdev, sh
from tests.test_wipe_loop import one_line_error, run_cli

pytestmark = root_only
__all__ = ["loopdev"]

TOML = (
    'table = "gpt"\n'
    '[[partition]]\nsize = "300MiB"\ntype = "esp"\nfs = "vfat"\nlabel = "EFI"\n'
    '[[partition]]\nsize = "32MiB"\nfs = "swap"\nlabel = "swap"\n'
    '[[partition]]\nsize = "rest"\nfs = "ext4"\nlabel = "data"\n'
)

# layout, --fs, expected (GPT/MBR type alias, blkid TYPE, LABEL) per partition
CASES = [
    ("uefi", None, [("esp", "vfat", "ESP"), ("linux", "ext4", "root")]),
    (
        "windows",
        None,
        [("esp", "vfat", "SYSTEM"), ("msr", "", ""), ("basic-data", "ntfs", "Windows")],
    ),
    ("bios", "ext4", [("linux", "ext4", "system")]),
    ("bios", "ntfs", [("basic-data", "ntfs", "System")]),
    ("data", "exfat", [("basic-data", "exfat", "data")]),
    ("data", "ntfs", [("basic-data", "ntfs", "data")]),
    ("data", "ext4", [("linux", "ext4", "data")]),
    (
        "lab.toml",
        None,
        [("esp", "vfat", "EFI"), ("swap", "swap", "swap"), ("linux", "ext4", "data")],
    ),
]


def blkid(path: str) -> dict[str, str]:
    out = subprocess.run(
        ["blkid", "-p", "-o", "export", path], capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize(("layout", "fs", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_layout_on_loop(
    loopdev: Callable[..., str],
    tmp_path: Path,
    layout: str,
    fs: str | None,
    expected: list[tuple[str, str, str]],
    sector_size: int,
) -> None:
    dev = loopdev(700 * MiB, sector_size)
    if layout.endswith(".toml"):
        (tmp_path / layout).write_text(TOML)
        layout = str(tmp_path / layout)
    plan = plan_partition(find_disk(dev), layout, fs=fs)
    result = apply_partition(plan, Reporter())

    table = json.loads(sh("sfdisk", "-J", dev))["partitiontable"]
    assert table["sectorsize"] == sector_size
    assert table["label"] == ("dos" if layout == "bios" else "gpt")
    parts = table["partitions"]
    assert len(parts) == len(expected)
    for got, planned, (kind, fstype, label) in zip(parts, plan.partitions, expected, strict=True):
        guid, mbr = TYPES[kind]
        assert str(got["type"]).lower() == (mbr if layout == "bios" else guid.lower())
        assert (got["start"], got["size"]) == (planned.start, planned.sectors)
        assert got["start"] * sector_size % MiB == 0  # 1 MiB aligned at either sector size
        probe = blkid(got["node"])
        assert probe.get("TYPE", "") == fstype
        assert probe.get("LABEL", "") == label
        if fstype == "vfat":
            sh("fsck.vfat", "-n", got["node"])
            assert probe.get("VERSION") == "FAT32"
            # mtools reads the boot sector itself: FAT32 at the disk's own sector size.
            info = subprocess.run(
                ["minfo", "-i", got["node"], "::"], capture_output=True, text=True
            )
            assert f"sector size: {sector_size} bytes" in info.stdout
    if layout == "bios":
        assert parts[0].get("bootable") is True
    assert [p.fstype for p in result.partitions] == [e[1] for e in expected]
    assert find_disk(dev).partition_table == table["label"]


def test_refused_disk_is_not_partitioned(loopdev: Callable[..., str], tmp_path: Path) -> None:
    dev = loopdev(64 * MiB)
    sh("sfdisk", "-q", dev, input="label: dos\n,,83\n")
    sh("partx", "-u", dev)
    sh("mkfs.ext4", "-q", f"{dev}p1")
    plan = plan_partition(find_disk(dev), "data", fs="ext4")
    where = tmp_path / "mnt"
    where.mkdir()
    sh("mount", f"{dev}p1", str(where))
    try:
        with pytest.raises(Refused, match="is mounted on"):
            apply_partition(plan, Reporter())
        assert json.loads(sh("sfdisk", "-J", dev))["partitiontable"]["label"] == "dos"
        one_line_error(
            run_cli("partition", dev, "--layout", "data", "--confirm", Path(dev).name),
            3,
            f"partition {Path(dev).name}p1 is mounted on {where}",
        )
    finally:
        sh("umount", str(where))


def test_cli_partition_and_bad_input(loopdev: Callable[..., str], tmp_path: Path) -> None:
    dev = loopdev(64 * MiB)
    name = Path(dev).name
    dry = run_cli("partition", dev, "--layout", "data", "--dry-run")
    assert dry.returncode == 0 and "label: gpt" in dry.stdout and "mkfs.exfat -L data" in dry.stdout
    one_line_error(run_cli("partition", dev, "--layout", "uefi", "--dry-run"), 2, "does not fit")
    one_line_error(
        run_cli("partition", "/dev/sdzz", "--layout", "data"), 2, "/dev/sdzz: no such disk"
    )
    one_line_error(
        run_cli("partition", dev, "--layout", "data", "--confirm", "sda"), 2, "does not match"
    )
    one_line_error(run_cli("partition", dev, "--layout", "data"), 2, "add --confirm")
    one_line_error(
        run_cli("partition", dev, "--layout", "zfs-pool"), 2, "unknown layout 'zfs-pool'"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[[partition]]\nfs = "hfs"\n')
    one_line_error(run_cli("partition", dev, "--layout", str(bad)), 2, "fs 'hfs' is not one of")
    done = run_cli(
        "partition", dev, "--layout", "data", "--fs", "ext4", "--confirm", name, "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partitions"][0]["fstype"] == "ext4"
