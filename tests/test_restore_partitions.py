"""Choosing partitions: capture --partitions, apply --partitions onto a matching table."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.errors import UsageError
from bootmedia.layout.choose import apply_partitions, parse_numbers, plan_partitions
from bootmedia.repo.manifest import SKIP
from bootmedia.repo.store import Repository
from tests import disklayouts as D

MiB = 1 << 20
pytestmark = pytest.mark.root
PARTS = (
    D.Part(1, "vfat", D.ESP, 40, 2),
    D.Part(2, "ext4", D.LINUX, 120, 30),
    D.Part(3, "ntfs", D.BASIC, 100, 20),
    D.Part(4, "ext4", D.LINUX, 0, 10),
)


def _raw(dev: str, offset: int, length: int) -> str:
    with open(dev, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(length)).hexdigest()


def _span(dev: str, n: int) -> tuple[int, int]:
    name = Path(dev).name
    start = int(Path(f"/sys/class/block/{name}p{n}/start").read_text()) * 512
    return start, int(Path(f"/sys/class/block/{name}p{n}/size").read_text()) * 512


def test_parse_numbers() -> None:
    assert parse_numbers("1,3") == (1, 3)
    assert parse_numbers("2-4,6,2") == (2, 3, 4, 6)
    for bad in ("", "a", "0", "1-x"):
        with pytest.raises(UsageError):
            parse_numbers(bad)


def test_unticked_partitions_stay_byte_identical(loopdev, tmp_path: Path) -> None:
    src = loopdev(400 * MiB)
    D.build(src, "gpt", PARTS)
    sums = {p.number: D.sums(f"{src}p{p.number}", p.fstype) for p in PARTS}
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    part_plan = plan_capture(src, repo, "some", partitions=(2, 3))
    assert "--partitions 2,3" in shlex.join(part_plan.command())
    assert any("not chosen" in line for line in part_plan.summary())
    capture_image(part_plan)
    with Repository.open(repo) as r:
        some = r.image("some")
    assert [a.number for a in some.areas if a.mode == SKIP] == [1, 4]
    with pytest.raises(UsageError, match="no partition 9"):
        plan_capture(src, repo, "bad", partitions=(9,))

    dst = loopdev(400 * MiB)
    apply_image(plan_apply(repo, "img", dst))
    # The technician's disk since: new files on 2 and 3, and 1 and 4 as they are now.
    D.put_files(f"{dst}p2", "ext4", _tree(tmp_path / "new2"))
    D.put_files(f"{dst}p3", "ntfs", _tree(tmp_path / "new3"))
    keep = {n: _raw(dst, *_span(dst, n)) for n in (1, 4)}
    head = _raw(dst, 0, MiB)
    tail = _raw(dst, 399 * MiB, MiB)

    for name in ("img", "some"):
        with Repository.open(repo) as r:
            image = r.image(name)
        plan = plan_partitions(repo, image, dst, (2, 3))
        text = "\n".join(plan.summary())
        assert f"untouched {dst}p1" in text and f"untouched {dst}p4" in text
        assert "--partitions 2,3" in shlex.join(plan.command())
        results = apply_partitions(plan)
        assert all(r.verified for r in results)
        for n in (2, 3):
            assert D.sums(f"{dst}p{n}", PARTS[n - 1].fstype) == sums[n]
            assert D.check(f"{dst}p{n}", PARTS[n - 1].fstype) == ""
        assert {n: _raw(dst, *_span(dst, n)) for n in (1, 4)} == keep
        assert _raw(dst, 0, MiB) == head and _raw(dst, 399 * MiB, MiB) == tail

    with Repository.open(repo) as r:
        some = r.image("some")
    with pytest.raises(UsageError, match="partition 1 holds nothing"):
        plan_partitions(repo, some, dst, (1,))
    other = loopdev(400 * MiB)
    D.build(other, "gpt", (D.Part(1, "ext4", D.LINUX, 0, 0),))
    with pytest.raises(UsageError, match="tables differ"):
        plan_partitions(repo, some, other, (2,))
    dry = subprocess.run(
        [sys.executable, "-m", "bootmedia", "apply", str(repo), "img", dst, "--partitions",
         "2,3", "--dry-run"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"untouched {dst}p4" in dry.stdout


def _tree(root: Path) -> Path:
    (root / "since").mkdir(parents=True)
    (root / "since" / "note.txt").write_text("changed after the restore\n")
    return root
