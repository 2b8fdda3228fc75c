"""Peak memory is a constant of the pipeline, not of the disk: capture and apply of a 3 GiB disk
stay far below 256 MiB."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from tests.conftest import root_only

MiB = 1 << 20
pytestmark = root_only
ROOT = Path(__file__).resolve().parent.parent


def _peak_rss(argv: list[str], tmp: Path) -> int:
    env = dict(os.environ, BOOTMEDIA_LOG_DIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "bootmedia", *argv], cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss * 1024


def test_peak_rss_is_bounded(loopdev, tmp_path: Path) -> None:
    src = loopdev(3 << 30)  # sparse: reads of the holes are fast, but every byte is examined
    rng = random.Random(1)
    fd = os.open(src, os.O_RDWR)
    for i in range(24):
        os.pwrite(fd, rng.randbytes(8 * MiB), i * 128 * MiB)
    os.close(fd)
    repo = tmp_path / "repo"
    rss_capture = _peak_rss(["capture", src, str(repo), "--name", "big", "-q"], tmp_path)
    dst = loopdev(3 << 30)
    rss_apply = _peak_rss(
        ["apply", str(repo), "big", dst, "--confirm", Path(dst).name, "-q"], tmp_path
    )
    assert rss_capture < 256 * MiB, rss_capture
    assert rss_apply < 256 * MiB, rss_apply
