"""The layout planner on tables that sfdisk wrote on real loop devices (512 and 4096-byte sectors)."""

from __future__ import annotations

import pytest

from bootmedia.errors import UsageError
from bootmedia.layout import FIT, KEEP, REST, PartInfo, parse_size, plan_layout
from bootmedia.repo.manifest import SWAP, USED, Table
from bootmedia.table import read_table, render_sfdisk, write_table

MiB = 1 << 20
GiB = 1 << 30
pytestmark = pytest.mark.root

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC = "EBD0A0A2-B9E5-4433-87C0-68B6B7C7EB99"
RECOVERY = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
LINUX = "0FC63DAF-8483-4772-8E79-3D69E4C7D8E4"


def _table(loopdev, size: int, sector: int, script: str) -> Table:
    dev = loopdev(size, sector)
    write_table(dev, script)
    table = read_table(dev)
    assert table is not None
    return table


def _windows(loopdev, sector: int) -> Table:
    u = MiB // sector
    return _table(
        loopdev,
        4 * GiB,
        sector,
        "label: gpt\nlabel-id: 11111111-2222-3333-4444-555555555555\n"
        f"start={u}, size={100 * u}, type={ESP}, uuid=AAAAAAAA-0000-0000-0000-000000000001\n"
        f"size={16 * u}, type={MSR}\n"
        f'size={3300 * u}, type={BASIC}, name="Basic data partition"\n'
        f"type={RECOVERY}, attrs=RequiredPartition\n",
    )


WIN_INFO = {
    1: PartInfo(1, "vfat", USED, used=20 * MiB),
    2: PartInfo(2, "", "raw"),
    3: PartInfo(3, "ntfs", USED, used=1 * GiB, min_size=1100 * MiB),
    4: PartInfo(4, "ntfs", USED, used=400 * MiB, min_size=500 * MiB),
}


@pytest.mark.parametrize("sector", [512, 4096])
def test_windows_onto_smaller_disk(loopdev, sector: int) -> None:
    src = _windows(loopdev, sector)
    target = int(2.5 * GiB)
    plan = plan_layout(src, WIN_INFO, target, sector, FIT)
    c = {ch.number: ch for ch in plan.changes}
    # ESP, MSR and recovery keep their sizes; C: takes the rest; recovery sits at the end.
    assert c[1].new_size == c[1].old_size and c[1].new_start == c[1].old_start
    assert c[2].new_size == 16 * MiB and c[2].action == "same"
    assert c[4].new_size == c[4].old_size and c[4].role == "recovery"
    assert c[3].action == "shrink" and c[3].new_size < c[3].old_size
    assert c[4].new_start == c[3].new_start + c[3].new_size
    tail = target - (c[4].new_start + c[4].new_size)
    assert 0 <= tail - (sector + 128 * 128) < MiB, "recovery ends within 1 MiB of the disk's end"
    assert all(ch.new_start % MiB == 0 for ch in plan.changes)
    assert c[4].moved and "moves" in c[4].describe()
    # The table keeps every id and writes on a real disk of that size exactly as planned.
    dst = loopdev(target, sector)
    write_table(dst, render_sfdisk(plan.table))
    got = read_table(dst)
    assert got is not None and got.id == src.id
    assert [(p.start, p.size, p.uuid, p.name) for p in got.partitions] == [
        (p.start, p.size, p.uuid, p.name) for p in plan.table.partitions
    ]
    text = "\n".join(plan.summary())
    assert "ntfs shrinks" in text and "unchanged" in text


def test_windows_onto_larger_disk_grows_c(loopdev) -> None:
    src = _windows(loopdev, 512)
    plan = plan_layout(src, WIN_INFO, 8 * GiB, 512, FIT)
    c3, c4 = plan.change(3), plan.change(4)
    assert c3.action == "grow" and c3.new_size > 7 * GiB
    assert c4.action == "move" and c4.new_size == c4.old_size
    assert 8 * GiB - (c4.new_start + c4.new_size) < 2 * MiB


def test_too_small_names_the_shortfall(loopdev) -> None:
    src = _windows(loopdev, 512)
    with pytest.raises(
        UsageError, match=r"target too small.*short by .*partition 3 \(ntfs\) needs"
    ):
        plan_layout(src, WIN_INFO, 1 * GiB, 512, FIT)
    with pytest.raises(UsageError, match="short by"):
        plan_layout(src, WIN_INFO, 2 * GiB, 512, KEEP)


def test_keep_is_the_image_table(loopdev) -> None:
    src = _windows(loopdev, 512)
    plan = plan_layout(src, WIN_INFO, 8 * GiB, 512, KEEP)
    assert plan.identical and plan.table.partitions == src.partitions


def test_size_options(loopdev) -> None:
    src = _windows(loopdev, 512)
    # C: fixed at 2 GiB; the recovery partition then takes the rest.
    plan = plan_layout(src, WIN_INFO, 8 * GiB, 512, FIT, {3: 2 * GiB, 4: REST})
    assert plan.change(3).new_size == 2 * GiB
    assert plan.change(4).action == "grow" and plan.change(4).new_size > 5 * GiB
    assert plan.command()[-2:] == ["--size", "4=rest"]
    with pytest.raises(UsageError, match="too small: its ntfs needs at least"):
        plan_layout(src, WIN_INFO, 8 * GiB, 512, FIT, {3: 500 * MiB})
    with pytest.raises(UsageError, match="only one partition"):
        plan_layout(src, WIN_INFO, 8 * GiB, 512, FIT, {3: REST, 4: REST})
    with pytest.raises(UsageError, match="no partition 9"):
        plan_layout(src, WIN_INFO, 8 * GiB, 512, FIT, {9: GiB})
    with pytest.raises(UsageError, match="cannot be shrunk"):
        plan_layout(src, WIN_INFO, 8 * GiB, 512, FIT, {2: MiB})
    assert parse_size("3=40G") == (3, 40 * GiB)
    assert parse_size("2=512MiB") == (2, 512 * MiB)
    assert parse_size("1=rest") == (1, REST)
    for bad in ("x=1G", "3", "3=lots", "3=0"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_two_data_partitions_share_proportionally(loopdev) -> None:
    u = 2048
    src = _table(
        loopdev,
        2 * GiB,
        512,
        f"label: gpt\nstart={u}, size={200 * u}, type={ESP}\nsize={400 * u}, type={LINUX}\n"
        f"size={1200 * u}, type={LINUX}\n",
    )
    info = {
        1: PartInfo(1, "vfat", USED, used=MiB),
        2: PartInfo(2, "ext4", USED, used=50 * MiB, min_size=60 * MiB),
        3: PartInfo(3, "btrfs", USED, used=100 * MiB),
    }
    plan = plan_layout(src, info, GiB, 512, FIT)
    c2, c3 = plan.change(2), plan.change(3)
    assert c2.action == c3.action == "shrink"
    ratio = c3.new_size / c2.new_size
    assert 2.9 < ratio < 3.1, "data partitions keep their proportions"
    # A partition whose share is below its minimum is pinned there; the other takes the rest.
    info[2] = PartInfo(2, "ext4", USED, used=350 * MiB, min_size=360 * MiB)
    plan = plan_layout(src, info, GiB, 512, FIT)
    assert plan.change(2).new_size == plan.change(2).minimum


def test_mbr_with_logical_partitions(loopdev) -> None:
    u = 2048
    src = _table(
        loopdev,
        2 * GiB,
        512,
        "label: dos\nlabel-id: 0x12345678\n"
        f"part1 : start={u}, size={500 * u}, type=83, bootable\n"
        f"part2 : start={501 * u}, size={1400 * u}, type=5\n"
        f"part5 : start={502 * u}, size={900 * u}, type=83\n"
        f"part6 : start={1403 * u}, size={300 * u}, type=82\n",
    )
    assert [p.number for p in src.partitions] == [1, 2, 5, 6]
    info = {
        1: PartInfo(1, "ext4", USED, used=100 * MiB, min_size=120 * MiB),
        5: PartInfo(5, "ext4", USED, used=200 * MiB, min_size=220 * MiB),
        6: PartInfo(6, "swap", SWAP),
    }
    plan = plan_layout(src, info, GiB, 512, FIT)
    c = {ch.number: ch for ch in plan.changes}
    assert c[2].action == "container"
    assert c[2].new_start < c[5].new_start
    assert 0 <= c[2].new_start + c[2].new_size - (c[6].new_start + c[6].new_size) <= MiB
    assert c[6].new_size == 300 * MiB, "swap keeps its size"
    assert c[1].action == c[5].action == "shrink"
    # The logical partitions keep their 1 MiB EBR gap, and sfdisk takes the table as planned.
    assert c[5].new_start - c[2].new_start == c[5].old_start - c[2].old_start
    dst = loopdev(GiB, 512)
    write_table(dst, render_sfdisk(plan.table))
    got = read_table(dst)
    assert got is not None
    assert [(p.number, p.start, p.size) for p in got.partitions] == [
        (p.number, p.start, p.size) for p in plan.table.partitions
    ]
