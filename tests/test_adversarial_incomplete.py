"""Adversarial review: a disk that carries BOOTMEDIA-INCOMPLETE (a restore or clone to it was
killed) holds no whole disk. Before these checks, capture took it as an image without a word,
apply of that image wrote everything and then failed at the very end ("the incomplete marker
is still on the target after writing", the target lost), and clone copied it, said "verified",
and left a target that `bootmedia disks` reports as an incomplete restore."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.capture import capture_image, plan_capture
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.lab import SamplePart
from tests.sample import bootmedia

MiB = 1 << 20
LAYOUT = (SamplePart(1, "ext4", 0),)
MARK = INCOMPLETE_MARKER + b" image=old started=2026-12-02T10:00:00+00:00"


def _mark(path: str | Path) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, MARK, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("incomplete")
    source = lab.make_file(root / "source.img", 32 * MiB)
    lab.populate_sample_file(source, layout=LAYOUT, fill=0.2)
    _mark(source)
    return source


@pytest.mark.real_tools
def test_capture_refuses_a_disk_marked_incomplete(marked: Path, tmp_path: Path) -> None:
    proc = bootmedia("capture", "--name", "img", str(marked), str(tmp_path / "repo"), "-q")
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "BOOTMEDIA-INCOMPLETE" in lines[0] and str(marked) in lines[0], lines[0]
    assert not (tmp_path / "repo" / "images" / "img").exists()


@pytest.mark.real_tools
def test_apply_refuses_an_image_of_an_incomplete_disk_before_writing(
    marked: Path, tmp_path: Path
) -> None:
    # The disk was marked only after the plan was made (a repository written before capture
    # checked this holds such images too).
    clean = lab.make_file(tmp_path / "clean.img", 32 * MiB)
    lab.populate_sample_file(clean, layout=LAYOUT, fill=0.2)
    plan = plan_capture(str(clean), tmp_path / "repo", "img")
    _mark(clean)
    capture_image(plan)
    target = lab.make_file(tmp_path / "target.img", 32 * MiB)
    with open(target, "r+b") as f:
        f.write(b"\x5a" * MiB)
    before = _sha(target)
    proc = bootmedia(
        "apply", str(tmp_path / "repo"), "img", str(target), "--confirm", "target.img", "-q"
    )
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(err) == 1, proc.stderr
    assert "BOOTMEDIA-INCOMPLETE" in err[0]
    assert "its old contents are gone" not in err[0], err[0]
    assert _sha(target) == before  # refused before the first write


@pytest.mark.root
def test_clone_refuses_a_source_marked_incomplete(loopdev: Callable[..., str]) -> None:
    source = loopdev(48 * MiB)
    lab.populate_sample_disk(source, layout=LAYOUT, fill=0.2)
    _mark(source)
    target = loopdev(48 * MiB)
    before = _sha(target)
    proc = bootmedia("clone", source, target, "--confirm", Path(target).name, "-q")
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "BOOTMEDIA-INCOMPLETE" in lines[0] and source in lines[0], lines[0]
    assert _sha(target) == before
