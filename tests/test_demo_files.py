"""Plain image files as disks (the demo lab without root): capture from a file, restore onto a
file, verify, wipe and partition a file. No loop device is attached and nothing is mounted, so
these run as any user; test_demo_nonroot.py runs the same jobs as an unprivileged user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.disks.files import extract, file_disk, probe_at
from bootmedia.errors import Refused, UsageError
from bootmedia.partition import apply_partition, plan_partition
from bootmedia.progress import Reporter
from bootmedia.repo.manifest import RAW, SWAP, USED
from bootmedia.run import run, which
from bootmedia.table import read_table
from bootmedia.verify import verify_repo
from bootmedia.wipe import available_methods, plan_wipe, wipe_disk

TOOLS = ("sfdisk", "blkid", "mkfs.vfat", "mcopy", "mkfs.ext4", "debugfs", "mkntfs", "ntfscp")
pytestmark = [
    pytest.mark.real_tools,
    pytest.mark.skipif(any(which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)}"),
]
MiB = 1 << 20
FILESYSTEMS = ("vfat", "ext4", "ntfs")


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A sample PC disk as a plain file, and a repository holding 'golden' captured from it."""
    root = tmp_path_factory.mktemp("files")
    sample = lab.make_file(root / "reference.img", 160 * MiB)
    lab.populate_sample_file(sample, fill=0.2)
    capture_image(plan_capture(str(sample), root / "repo", "golden"))
    return sample, root / "repo"


def checksums(image: Path) -> dict[str, dict[str, str]]:
    return {
        p.name[-1]: lab.file_checksums_at(image, p.start, p.size, p.fstype)
        for p in file_disk(image).partitions
        if p.fstype in FILESYSTEMS
    }


def test_capture_from_a_file_maps_each_filesystem(golden: tuple[Path, Path]) -> None:
    sample, _ = golden
    plan = plan_capture(str(sample), golden[1] / "other", "again")
    modes = {a.area.name: (a.area.mode, a.area.fstype) for a in plan.areas}
    assert modes["p1"] == (USED, "vfat")
    assert modes["p2"] == (USED, "ext4")
    assert modes["p3"] == (USED, "ntfs")
    assert modes["p4"] == (SWAP, "swap")
    assert modes["p5"] == (RAW, "")
    # Free space is not read: each filesystem is filled to about a fifth.
    for a in plan.areas:
        if a.area.mode == USED:
            assert a.read_bytes < a.area.size * 0.6, a.area
            assert a.device == str(sample)  # the scratch copy used for the map is gone
    assert plan.disk.model == "image file" and plan.disk.size == 160 * MiB


def test_restore_onto_a_file_gives_the_same_files(
    golden: tuple[Path, Path], tmp_path: Path
) -> None:
    sample, repo = golden
    target = lab.make_file(tmp_path / "newpc.img", 1 << 30)
    plan = plan_apply(repo, "golden", str(target))
    assert plan.disk is None  # a file: no disk to protect
    result = apply_image(plan)
    assert result.verified
    src, dst = file_disk(sample), file_disk(target)
    assert [(p.start, p.size, p.fstype, p.uuid, p.label) for p in dst.partitions] == [
        (p.start, p.size, p.fstype, p.uuid, p.label) for p in src.partitions
    ]
    want = checksums(sample)
    assert sorted(want) == ["1", "2", "3"] and all(want.values())
    assert checksums(target) == want
    assert not dst.incomplete_restore
    assert verify_repo(repo, "golden").ok


def test_grow_onto_a_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    sample = lab.make_file(tmp_path / "small.img", 64 * MiB)
    lab.populate_sample_file(sample, layout=(lab.SamplePart(1, "ext4", 0),), fill=0.1)
    capture_image(plan_capture(str(sample), tmp_path / "repo", "small"))
    target = lab.make_file(tmp_path / "big.img", 128 * MiB)
    with pytest.raises(UsageError, match="image file"):
        plan_apply(tmp_path / "repo", "small", str(target), grow=True)
    apply_image(plan_apply(tmp_path / "repo", "small", str(target)))  # without grow it works
    assert checksums(target) == checksums(sample)


def test_wipe_methods_for_a_file(golden: tuple[Path, Path], tmp_path: Path) -> None:
    target = tmp_path / "wipe.img"
    shutil.copyfile(golden[0], target)
    infos = {i.name: i for i in available_methods(file_disk(target))}
    assert [n for n, i in infos.items() if i.available] == ["quick", "zero", "random"]
    assert {i.reason for i in infos.values() if not i.available} == {"an image file, not a device"}
    disk = file_disk(target)
    ext4 = next(p for p in disk.partitions if p.fstype == "ext4")
    report = wipe_disk(plan_wipe(disk, "quick"), Reporter())
    assert report.ok, report.error
    assert read_table(str(target)) is None
    assert probe_at(target, ext4.start, ext4.size) == {}  # the partition's signature too
    report = wipe_disk(plan_wipe(file_disk(target), "zero", samples=16), Reporter())
    assert report.ok, report.error
    with open(target, "rb") as f:
        assert f.read(4 * MiB).count(0) == 4 * MiB


@pytest.mark.parametrize("layout", ["uefi", "windows"])
def test_partition_a_file(layout: str, tmp_path: Path) -> None:
    target = lab.make_file(tmp_path / "blank.img", 1 << 30)
    plan = plan_partition(file_disk(target), layout)
    result = apply_partition(plan, Reporter())
    got = [(p.fstype, p.label) for p in file_disk(target).partitions]
    if layout == "uefi":
        assert got == [("vfat", "ESP"), ("ext4", "root")]
        root = file_disk(target).partitions[1]
        part = extract(target, root.start, root.size, tmp_path / "root.img")
        run(["e2fsck", "-fn", str(part)])  # a clean filesystem (raises otherwise)
    else:
        assert got == [("vfat", "SYSTEM"), ("", ""), ("ntfs", "Windows")]
    assert len(result.partitions) == len(plan.partitions)
    assert not any(Path(tmp_path).glob(".bootmedia-mkfs-*"))  # scratch files removed
    # The file is still sparse: the scratch filesystems were copied in without their holes.
    assert os.stat(target).st_blocks * 512 < 64 * MiB


def test_the_commands_take_an_image_file(tmp_path: Path) -> None:
    """The TUI's summary shows `bootmedia wipe|partition FILE`: those commands must work."""
    target = lab.make_file(tmp_path / "cli.img", 256 * MiB)

    def bootmedia(*args: str) -> str:
        argv = [sys.executable, "-m", "bootmedia", "--log-dir", str(tmp_path), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    methods = bootmedia("wipe", str(target), "--list-methods")
    assert "an image file, not a device" in methods
    bootmedia("partition", str(target), "--layout", "bios", "--confirm", "cli.img")
    assert [(p.fstype, p.label) for p in file_disk(target).partitions] == [("ext4", "system")]
    bootmedia("wipe", str(target), "--method", "quick", "--confirm", "cli.img")
    assert file_disk(target).partitions == ()


@pytest.mark.skipif(not lab.can_use_loop()[0], reason="needs root and /dev/loop-control")
def test_a_file_attached_as_a_loop_device_is_refused(
    golden: tuple[Path, Path], tmp_path: Path
) -> None:
    """Writing the file under its loop device would change a disk the kernel may have mounted."""
    target = lab.make_file(tmp_path / "attached.img", 256 * MiB)
    source = tmp_path / "source.img"
    shutil.copyfile(golden[0], source)
    with lab.loop_disk(target) as dev, lab.loop_disk(source) as src_dev:
        with pytest.raises(Refused, match=f"attached as {dev}"):
            plan_apply(golden[1], "golden", str(target))
        with pytest.raises(Refused, match="attached as"):
            apply_partition(plan_partition(file_disk(target), "bios"), Reporter())
        plan_capture(str(source), tmp_path / "repo", "attached")  # reading is fine...
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        run(["mount", "-o", "rw", f"{src_dev}p2", str(mnt)])
        try:
            with pytest.raises(UsageError, match="mounted read-write"):  # ...unless mounted rw
                plan_capture(str(source), tmp_path / "repo", "mounted")
        finally:
            run(["umount", str(mnt)])
    assert file_disk(target).partitions == ()
