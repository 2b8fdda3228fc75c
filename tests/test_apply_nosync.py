"""A restore never syncs the whole machine (issue 9): it fsyncs the target it writes, and its
partition-table step runs sfdisk with --no-tell-kernel (partx tells the kernel), so no process
of the job calls sync() or syncfs(). Checked with strace on the real CLI, children included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootmedia.capture import capture_image, plan_capture
from tests import disklayouts as D

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed"),
]
PARTS = (D.Part(1, "ext4", D.LINUX, 0, 40),)


def test_restore_calls_no_global_sync(loopdev, tmp_path: Path) -> None:
    src = loopdev(96 * MiB)
    D.build(src, "gpt", PARTS)
    want = D.sums(f"{src}p1", "ext4")
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    dst = loopdev(96 * MiB)
    trace = tmp_path / "strace.log"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=sync,syncfs", "-o", str(trace),
         sys.executable, "-m", "bootmedia", "apply", str(repo), "img", dst,
         "--confirm", Path(dst).name, "-q"],
        cwd=ROOT, env=dict(os.environ, BOOTMEDIA_LOG_DIR=str(tmp_path)),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout
    calls = [line for line in trace.read_text().splitlines() if "sync" in line]
    assert calls == [], calls
    assert D.sums(f"{dst}p1", "ext4") == want
