"""Capture and restore real disks on loop devices, then check every byte that matters."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.errors import ImageError
from bootmedia.lab import SamplePart
from bootmedia.repo.store import Repository
from tests import sample
from tests.conftest import root_only

MiB = 1 << 20
pytestmark = root_only


@pytest.mark.parametrize(
    ("label", "sector"), [("gpt", 512), ("dos", 512), ("gpt", 4096), ("dos", 4096)]
)
def test_round_trip(loopdev, tmp_path: Path, label: str, sector: int) -> None:
    src = loopdev(256 * MiB, sector)
    layout = sample.build(src, label)
    before = sample.sums(src, layout)
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    with Repository.open(repo) as r:
        sizes = {a.fstype: a.min_size for a in r.image("img").areas if a.fstype}
    assert sizes["ext4"] and sizes["ntfs"], "ext4 and NTFS say how small they can get"

    dst = loopdev(256 * MiB, sector)
    lab.run(["dd", "if=/dev/urandom", f"of={dst}", "bs=1M", "count=256", "status=none"])  # old junk
    result = apply_image(plan_apply(repo, "img", dst))

    assert result.verified
    assert sample.table_dump(dst) == sample.table_dump(src)
    assert sample.read(dst, 0, 440) == sample.read(src, 0, 440), "MBR boot code differs"
    if label == "dos":
        assert sample.read(dst, sector, 64 << 10) == sample.read(src, sector, 64 << 10)
    assert sample.sums(dst, layout) == before
    assert all(before.values()), "the sample filesystems should hold files"
    assert sample.fsck_clean(dst, layout) == {}
    swap = next(p.number for p in layout if p.fstype == "swap")
    blk = subprocess.run(
        ["blkid", "-p", "-o", "export", f"{dst}p{swap}"], capture_output=True, text=True, check=True
    ).stdout
    src_blk = subprocess.run(
        ["blkid", "-p", "-o", "export", f"{src}p{swap}"], capture_output=True, text=True, check=True
    ).stdout
    uuid = next(line for line in src_blk.splitlines() if line.startswith("UUID="))
    assert "TYPE=swap" in blk and uuid in blk
    if label == "gpt":  # the unformatted partition went across raw, byte for byte
        assert sample.read(dst, *_part(src, 5)) == sample.read(src, *_part(src, 5))


def _part(dev: str, n: int) -> tuple[int, int]:
    name = Path(dev).name
    start = int(Path(f"/sys/class/block/{name}p{n}/start").read_text()) * 512
    size = int(Path(f"/sys/class/block/{name}p{n}/size").read_text()) * 512
    return start, size


def test_restore_to_larger_disk_grows_last_partition(loopdev, tmp_path: Path) -> None:
    layout = (SamplePart(1, "vfat", 40), SamplePart(2, "ext4", 0))
    src = loopdev(160 * MiB)
    sample.build(src, "gpt", layout)
    before = sample.sums(src, layout)
    capture_image(plan_capture(src, tmp_path / "repo", "img"))
    dst = loopdev(400 * MiB)
    plan = plan_apply(tmp_path / "repo", "img", dst, grow=True, discard=True)
    argv = plan.command()
    assert (
        plan.grow == 2 and argv[argv.index("--grow-partition") + 1] == "2" and "--discard" in argv
    )
    apply_image(plan)
    assert sample.fsck_clean(dst, layout) == {}
    assert sample.sums(dst, layout) == before
    out = subprocess.run(["dumpe2fs", "-h", f"{dst}p2"], capture_output=True, text=True).stdout
    blocks = int(next(x for x in out.splitlines() if x.startswith("Block count:")).split()[-1])
    bsize = int(next(x for x in out.splitlines() if x.startswith("Block size:")).split()[-1])
    assert blocks * bsize > 300 * MiB, "ext4 was not grown to fill the larger disk"
    # the GPT backup header moved to the end of the larger disk
    assert sample.read(dst, 400 * MiB - 512, 8) == b"EFI PART"


def test_512_image_onto_4096_disk_translates_the_table(loopdev, tmp_path: Path) -> None:
    layout = (SamplePart(1, "ext4", 0),)
    src = loopdev(96 * MiB, 512)
    sample.build(src, "gpt", layout)
    before = sample.sums(src, layout)
    capture_image(plan_capture(src, tmp_path / "repo", "img"))
    dst = loopdev(96 * MiB, 4096)
    plan = plan_apply(tmp_path / "repo", "img", dst)
    # The layout planner lays the table out anew for the target's sectors (bootmedia.layout);
    # either way the plan says so, and the files and fsck below must come through unchanged.
    assert any("translated" in n or "laid out anew" in n for n in plan.notes), plan.notes
    apply_image(plan)
    assert sample.sums(dst, layout) == before
    assert sample.fsck_clean(dst, layout) == {}


def test_small_block_filesystem_onto_4096_disk_is_planned_by_files(loopdev, tmp_path: Path) -> None:
    """An ext4 of 1 KiB blocks cannot be copied block for block onto 4 KiB sectors: the plan
    restores it by files (test_restore_any_disk.py runs such a restore), never as blocks."""
    src = loopdev(64 * MiB, 512)
    lab.run(["sfdisk", "-q", src], input=b"label: gpt\nsize=40MiB, type=L\n")
    lab.rescan(src)
    lab.run(["mkfs.ext4", "-q", "-b", "1024", f"{src}p1"])
    capture_image(plan_capture(src, tmp_path / "repo", "img"))
    dst = loopdev(64 * MiB, 4096)
    plan = plan_apply(tmp_path / "repo", "img", dst)
    assert plan.refile == (1,)
    p1 = plan.image.area("p1")
    assert p1 is not None and plan.action(p1) == "rebuild"


def test_misaligned_table_refuses_sector_size_change(loopdev, tmp_path: Path) -> None:
    src = loopdev(64 * MiB, 512)
    lab.run(["sfdisk", "-q", src], input=b"label: gpt\nstart=2049, size=20000, type=L\n")
    lab.rescan(src)
    capture_image(plan_capture(src, tmp_path / "repo", "img"))
    dst = loopdev(64 * MiB, 4096)
    with pytest.raises(ImageError, match="not aligned to 4096-byte sectors"):
        plan_apply(tmp_path / "repo", "img", dst)


def test_partition_onto_existing_partition(loopdev, tmp_path: Path) -> None:
    src = loopdev(256 * MiB)
    layout = sample.build(src, "gpt")
    before = sample.sums(src, layout)
    capture_image(plan_capture(src, tmp_path / "repo", "img"))
    dst = loopdev(256 * MiB)
    sample.build(dst, "gpt", seed=7)  # same layout, other files
    plan = plan_apply(tmp_path / "repo", "img", f"{dst}p2", partition=2)
    result = apply_image(plan)
    assert result.verified
    after = sample.sums(dst, layout)
    assert after[2] == before[2]
    assert after[1] != before[1], "only partition 2 may change"
    assert sample.fsck_clean(dst, layout) == {}


def test_whole_disk_without_table(loopdev, tmp_path: Path) -> None:
    src = loopdev(64 * MiB)
    data = random.Random(3).randbytes(8 * MiB)
    fd = os.open(src, os.O_RDWR)
    os.pwrite(fd, data, 20 * MiB)
    os.close(fd)
    result = capture_image(plan_capture(src, tmp_path / "repo", "raw"))
    assert result.data_bytes == 8 * MiB, "all-zero chunks are left out"
    dst = loopdev(64 * MiB)
    lab.run(["dd", "if=/dev/urandom", f"of={dst}", "bs=1M", "count=64", "status=none"])
    apply_image(plan_apply(tmp_path / "repo", "raw", dst))
    assert sample.read(dst, 0, 64 * MiB) == sample.read(src, 0, 64 * MiB)


def test_btrfs_xfs_exfat_round_trip(loopdev, tmp_path: Path) -> None:
    """The other filesystems partclone maps: real files on btrfs and xfs; exFAT checked by its
    own fsck (this kernel has no exFAT driver to mount it)."""
    src = loopdev(700 * MiB)
    lab.run(["sfdisk", "-q", src], input=b"label: gpt\nsize=300MiB\nsize=300MiB\nsize=64MiB\n")
    lab.rescan(src)
    lab.run(["mkfs.btrfs", "-q", "-L", "bt", f"{src}p1"])
    lab.run(["mkfs.xfs", "-q", "-L", "xf", f"{src}p2"])
    lab.run(["mkfs.exfat", "-L", "EX", f"{src}p3"])
    rng = random.Random(4)
    for n in (1, 2):
        mnt = tmp_path / f"m{n}"
        mnt.mkdir()
        lab.run(["mount", f"{src}p{n}", str(mnt)])
        for i in range(40):
            (mnt / f"f{i}").write_bytes(rng.randbytes(rng.randint(1, 2 << 20)))
        lab.run(["umount", str(mnt)])
    layout = (lab.SamplePart(1, "btrfs", 0), lab.SamplePart(2, "xfs", 0))
    before = {p.number: lab.file_checksums(f"{src}p{p.number}", p.fstype) for p in layout}
    plan = plan_capture(src, tmp_path / "repo", "img")
    assert [a.area.mode for a in plan.areas if a.area.number] == ["used", "used", "used"]
    capture_image(plan)
    dst = loopdev(700 * MiB)
    apply_image(plan_apply(tmp_path / "repo", "img", dst))
    after = {p.number: lab.file_checksums(f"{dst}p{p.number}", p.fstype) for p in layout}
    assert after == before and all(len(v) == 40 for v in after.values())
    lab.run(["btrfs", "check", "--readonly", f"{dst}p1"])
    lab.run(["xfs_repair", "-n", f"{dst}p2"])
    lab.run(["fsck.exfat", "-n", f"{dst}p3"])
    assert "EX" in lab.run_text(["blkid", "-p", "-s", "LABEL", "-o", "value", f"{dst}p3"])
