"""bootmedia.disks.contents: "empty" only when the sampled places read as zeros (issue 13 item 3).
Real image files and a real loop device; the CLI's `bootmedia disks` says the same."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootmedia import lab
from bootmedia.disks import INCOMPLETE_MARKER, find_disk
from bootmedia.disks.contents import (
    DATA_NO_TABLE,
    EMPTY,
    INCOMPLETE,
    contents_summary,
    sample_disk,
    sample_offsets,
)
from bootmedia.disks.files import file_disk

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


def test_samples_cover_the_whole_disk() -> None:
    reads = sample_offsets(1 << 30)
    assert reads[0] == (0, MiB)
    assert reads[-1][0] + reads[-1][1] == 1 << 30  # the very end is read
    gaps = [b[0] - (a[0] + a[1]) for a, b in itertools.pairwise(reads)]
    assert max(gaps) < 40 * MiB and sum(n for _, n in reads) < 4 * MiB


@pytest.mark.real_tools
def test_files_empty_data_and_incomplete(tmp_path: Path) -> None:
    blank = lab.make_file(tmp_path / "blank.img", 256 * MiB)
    assert contents_summary(file_disk(blank)) == EMPTY
    full = lab.make_file(tmp_path / "full.img", 256 * MiB)
    with open(full, "r+b") as f:  # a raw copy of something: no table, no signature
        f.seek(100 * MiB)
        f.write(os.urandom(32 * MiB))
    assert sample_disk(str(full), 256 * MiB).data_at is not None
    assert contents_summary(file_disk(full)) == DATA_NO_TABLE
    half = lab.make_file(tmp_path / "half.img", 256 * MiB)
    with open(half, "r+b") as f:
        f.write(INCOMPLETE_MARKER)
    assert contents_summary(file_disk(half)) == INCOMPLETE


def test_a_loop_device_and_the_cli_agree(loopdev: Any, tmp_path: Path) -> None:
    dev = loopdev(128 * MiB)
    with open(dev, "r+b") as f:
        f.seek(64 * MiB)
        f.write(os.urandom(8 * MiB))
    disk = find_disk(dev)
    assert not disk.partitions and not disk.fstype
    assert contents_summary(disk) == DATA_NO_TABLE
    out = subprocess.run(
        [sys.executable, "-m", "bootmedia", "disks", dev],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert f"contents: {DATA_NO_TABLE}" in out
