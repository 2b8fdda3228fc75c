"""Discovery, safety refusals and hotplug on real loop devices with real filesystems."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.disks import (
    DiskMonitor,
    check_writable,
    find_disk,
    find_disks,
    write_refusal,
)
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.errors import Refused, UsageError
from tests.conftest import root_only
from tests.disktools import MiB, loopdev, sh

pytestmark = root_only
__all__ = ["loopdev"]  # the fixture, imported so that it shadows conftest's


def partitioned(loopdev: Callable[..., str], sector_size: int = 512) -> str:
    """A 64 MiB loop disk: GPT, an 8 MiB FAT partition and an ext4 partition."""
    dev = loopdev(64 * MiB, sector_size)
    sh("sfdisk", "-q", dev, input="label: gpt\n,8MiB,U\n,,L\n")
    lab.rescan(dev)
    sh("mkfs.vfat", "-n", "ESP", f"{dev}p1")
    sh("mkfs.ext4", "-q", "-L", "root", f"{dev}p2")
    return dev


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    points: list[Path] = []

    def mount(part: str) -> Path:
        where = tmp_path / f"mnt{len(points)}"
        where.mkdir()
        sh("mount", part, str(where))
        points.append(where)
        return where

    yield mount
    for where in reversed(points):
        subprocess.run(["umount", "-l", str(where)], check=False)


def mountinfo_with(tmp_path: Path, part: str, mountpoint: str, fstype: str = "vfat") -> Path:
    """This system's mountinfo plus one line claiming `part` is mounted at mountpoint."""
    st = os.stat(part)
    line = f"999 27 {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} / {mountpoint} ro - {fstype} {part} ro\n"
    path = tmp_path / "mountinfo"
    path.write_text(Path("/proc/self/mountinfo").read_text() + line)
    return path


def test_loop_disk_is_discovered_with_partitions(loopdev: Callable[..., str]) -> None:
    dev = partitioned(loopdev)
    disk = find_disk(dev)
    assert (disk.path, disk.transport, disk.size, disk.serial) == (dev, "loop", 64 * MiB, "")
    assert disk.partition_table == "gpt"
    assert [(p.number, p.fstype, p.label) for p in disk.partitions] == [
        (1, "vfat", "ESP"),
        (2, "ext4", "root"),
    ]
    assert disk.partitions[0].size == 8 * MiB and disk.partitions[0].start == MiB
    assert disk.backing_file.endswith(".img") and "loop" in disk.label()
    assert disk.name in {d.name for d in find_disks(include_loop=True)}
    assert disk.name not in {d.name for d in find_disks()}


def test_udev_source_reads_the_same_disk(loopdev: Callable[..., str]) -> None:
    from bootmedia.disks import build_disks
    from bootmedia.disks.sources import read_blockdev

    dev = partitioned(loopdev)
    name = Path(dev).name
    records = read_blockdev(lambda n: n == name, source="udev")
    (disk,) = build_disks(records, include_loop=True)
    assert disk.size == 64 * MiB and [p.number for p in disk.partitions] == [1, 2]


def test_4k_sector_loop(loopdev: Callable[..., str]) -> None:
    disk = find_disk(partitioned(loopdev, 4096))
    assert disk.logical_sector_size == 4096
    assert disk.partitions[0].start == MiB


def test_missing_disk_and_partition_are_usage_errors(loopdev: Callable[..., str]) -> None:
    with pytest.raises(UsageError, match="/dev/sdzz: no such disk"):
        find_disk("/dev/sdzz")
    dev = partitioned(loopdev)
    with pytest.raises(UsageError, match=f"is a partition: give the whole disk, {dev}"):
        find_disk(f"{dev}p1")


def test_incomplete_restore_marker(loopdev: Callable[..., str]) -> None:
    dev = loopdev(8 * MiB)
    with open(dev, "r+b") as f:
        f.write(INCOMPLETE_MARKER)
    assert find_disk(dev).incomplete_restore
    from bootmedia.cli import main

    proc = subprocess.run(
        ["python3", "-m", "bootmedia", "disks", dev], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "incomplete restore" in proc.stdout
    assert main(["disks", dev]) == 0


def test_writable_disk_passes(loopdev: Callable[..., str]) -> None:
    dev = partitioned(loopdev)
    assert write_refusal(dev) is None
    check_writable(find_disk(dev))


def test_refuses_mounted_partition(
    loopdev: Callable[..., str], mounted: Callable[[str], Path]
) -> None:
    dev = partitioned(loopdev)
    where = mounted(f"{dev}p2")
    with pytest.raises(Refused, match=f"partition {Path(dev).name}p2 is mounted on {where}"):
        check_writable(dev)


def test_refuses_swap(loopdev: Callable[..., str]) -> None:
    dev = loopdev(32 * MiB)
    sh("sfdisk", "-q", dev, input="label: gpt\n,,S\n")
    lab.rescan(dev)
    sh("mkswap", f"{dev}p1")
    if subprocess.run(["swapon", f"{dev}p1"], check=False).returncode != 0:
        pytest.skip("swapon is not permitted here")
    try:
        with pytest.raises(Refused, match="is in use as swap"):
            check_writable(dev)
    finally:
        subprocess.run(["swapoff", f"{dev}p1"], check=False)


def test_refuses_disk_holding_the_repository(
    loopdev: Callable[..., str], mounted: Callable[[str], Path]
) -> None:
    dev = partitioned(loopdev)
    repo = mounted(f"{dev}p2") / "repo"
    repo.mkdir()
    with pytest.raises(Refused, match=f"holds the image repository {repo}"):
        check_writable(dev, repo_path=repo)
    other = partitioned(loopdev)
    check_writable(other, repo_path=repo)


def test_refuses_read_only(loopdev: Callable[..., str]) -> None:
    dev = loopdev(8 * MiB, read_only=True)
    with pytest.raises(Refused, match="read-only"):
        check_writable(dev)


def test_refuses_live_medium(loopdev: Callable[..., str], tmp_path: Path) -> None:
    dev = partitioned(loopdev)
    info = mountinfo_with(tmp_path, f"{dev}p1", "/run/live/medium")
    reason = write_refusal(dev, mountinfo=info)
    assert reason == f"{Path(dev).name}: is the live boot medium (mounted at /run/live/medium)"
    with pytest.raises(Refused, match="live boot medium"):
        check_writable(find_disk(dev), mountinfo=info)


def test_refuses_disk_behind_the_live_squashfs(
    loopdev: Callable[..., str], mounted: Callable[[str], Path], tmp_path: Path
) -> None:
    """squashfs on loop0, whose backing file sits on the stick: the stick is refused."""
    stick = partitioned(loopdev)
    medium = mounted(f"{stick}p2")
    squash = lab.make_file(medium / "filesystem.squashfs", 4 * MiB)
    inner = loopdev(squash)
    info = mountinfo_with(tmp_path, inner, "/run/live/rootfs/filesystem.squashfs", "squashfs")
    reason = write_refusal(stick, mountinfo=info) or ""
    assert "holds the live system's squashfs" in reason


def test_refuses_when_the_disk_changed_under_the_same_name(loopdev: Callable[..., str]) -> None:
    disk = find_disk(partitioned(loopdev))
    swapped = dataclasses.replace(disk, serial="S3Z9NB0K123456")
    assert "is now a different disk" in (write_refusal(swapped) or "")


def test_hotplug_polling_sees_add_change_remove(loopdev: Callable[..., str]) -> None:
    monitor = DiskMonitor(include_loop=True, interval=0.1, use_udev=False)
    dev = loopdev(16 * MiB)
    name = Path(dev).name
    events = [e for e in monitor.poll(timeout=3) if e.name == name]
    assert [e.action for e in events] == ["add"]
    assert events[0].disk is not None and events[0].disk.size == 16 * MiB
    sh("sfdisk", "-q", dev, input="label: gpt\n,,L\n")
    lab.rescan(dev)
    events = [e for e in monitor.poll(timeout=3) if e.name == name]
    assert [e.action for e in events] == ["change"]
    lab.detach(dev)
    events = [e for e in monitor.poll(timeout=3) if e.name == name]
    assert [(e.action, e.disk) for e in events] == [("remove", None)]


def test_cli_disks_json_and_text(
    loopdev: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from bootmedia.cli import main

    dev = partitioned(loopdev)
    assert main(["disks", "--json", "--include-loop"]) == 0
    listed = {d["path"]: d for d in json.loads(capsys.readouterr().out)["disks"]}
    entry = listed[dev]
    assert entry["transport"] == "loop" and entry["refusal"] is None
    assert [p["fstype"] for p in entry["partitions"]] == ["vfat", "ext4"]
    assert main(["disks"]) == 0
    assert dev not in capsys.readouterr().out  # loop devices are hidden by default
    assert main(["disks", dev]) == 0
    text = capsys.readouterr().out
    assert f"{Path(dev).name}p1  vfat  ESP  8.4 MB" in text and "writable" in text


def test_hotplug_netlink_path(loopdev: Callable[..., str]) -> None:
    """The event-driven path; kernel uevents stand in for udevd, which this host lacks."""
    monitor = DiskMonitor(include_loop=True, interval=0.1, use_udev=True, netlink="kernel")
    dev = loopdev(16 * MiB)
    name = Path(dev).name
    events = [e for e in monitor.poll(timeout=3) if e.name == name]
    assert [e.action for e in events] == ["add"]
    lab.detach(dev)
    events = [e for e in monitor.poll(timeout=3) if e.name == name]
    assert [e.action for e in events] == ["remove"]
    monitor.close()


def test_image_file_target_has_no_disk_to_protect(tmp_path: Path) -> None:
    image = lab.make_file(tmp_path / "target.img", 8 * MiB)
    assert write_refusal(image) is None
    check_writable(str(image))
