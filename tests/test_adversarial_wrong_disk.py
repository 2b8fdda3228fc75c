"""Adversarial review, wrong disk: a target that another loop device is set up over.

A loop device over a disk (or over one of its partitions) reads and writes that disk's bytes:
whatever uses it (a filesystem mounted from it, an image repository on it, a second name for
the source of a clone) would be overwritten under its feet. The kernel does not list a loop
device among a disk's holders and apply's exclusive open does not see it, so before this
check a restore onto such a disk, and a clone onto a loop device over its own source, ran and
said "verified".
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.capture import capture_image, plan_capture
from bootmedia.lab import SamplePart
from tests.sample import bootmedia

MiB = 1 << 20
pytestmark = pytest.mark.root
LAYOUT = (SamplePart(1, "ext4", 0),)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wrongdisk")
    source = lab.make_file(root / "source.img", 32 * MiB)
    lab.populate_sample_file(source, layout=LAYOUT, fill=0.2)
    capture_image(plan_capture(str(source), root / "repo", "img"))
    return root / "repo"


def _sha(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _over(node: str) -> str:
    """A loop device over a block device node (no partition scan)."""
    return subprocess.run(
        ["losetup", "--find", "--show", node], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("over", ["disk", "partition"])
def test_apply_refuses_a_target_with_a_loop_device_over_it(
    repo: Path, loopdev: Callable[..., str], over: str
) -> None:
    target = loopdev(32 * MiB)
    # The target holds a partition (from a first restore) so a loop device can sit on it.
    first = bootmedia("apply", str(repo), "img", target, "--confirm", Path(target).name, "-q")
    assert first.returncode == 0, first.stderr
    other = _over(target if over == "disk" else f"{target}p1")
    try:
        before = _sha(target)
        proc = bootmedia("apply", str(repo), "img", target, "--confirm", Path(target).name, "-q")
        assert proc.returncode != 0, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert Path(other).name in lines[0] and "loop device" in lines[0], lines[0]
        assert _sha(target) == before  # nothing written
        listed = bootmedia("disks", "--include-loop", target)
        assert "bootmedia will not write here" in listed.stdout, listed.stdout
    finally:
        lab.detach(other)


def test_clone_refuses_a_target_that_is_a_loop_device_over_the_source(
    loopdev: Callable[..., str],
) -> None:
    source = loopdev(48 * MiB)
    lab.populate_sample_disk(source, layout=LAYOUT, fill=0.2)
    before = _sha(source)
    alias = _over(source)
    try:
        proc = bootmedia("clone", source, alias, "--confirm", Path(alias).name, "-q")
        assert proc.returncode != 0, proc.stdout
        assert "same disk" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert _sha(source) == before
    finally:
        lab.detach(alias)
