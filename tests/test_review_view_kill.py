"""Hostile review: SIGKILL a job while the loop device over its image view is attached (as it
is through a whole shrink). The view's server follows the job, but the loop device must not be
left behind holding the dead FUSE file (and the mount with it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootmedia.capture import capture_image, plan_capture
from tests import disklayouts as D

MiB = 1 << 20
pytestmark = pytest.mark.root


def _backing(dev: str) -> str:
    p = Path(f"/sys/block/{Path(dev).name}/loop/backing_file")
    return p.read_text().strip() if p.exists() else ""


def test_a_killed_job_leaves_no_loop_device_over_its_view(loopdev, tmp_path: Path) -> None:
    src = loopdev(128 * MiB)
    D.build(src, "gpt", (D.Part(1, "ext4", D.LINUX, 0, 20),))
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    work = tmp_path / "w"
    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from bootmedia.image.view import ImageArea, mounted_view\n"
        f"with mounted_view(ImageArea({str(repo)!r}, 'img', 'p1'), Path({str(work)!r}), 1 << 20)"
        " as v:\n"
        "    with v.loop() as dev:\n"
        "        print(v.proc.pid, dev, flush=True)\n"
        "        time.sleep(600)\n"
    )
    job = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert job.stdout is not None
    pid, dev = job.stdout.readline().split()
    view_file = _backing(dev)
    assert view_file.startswith(str(work)), view_file
    job.send_signal(signal.SIGKILL)
    job.wait()
    try:
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() and _backing(dev) != view_file:
                break
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the view server outlived its job"
        assert _backing(dev) != view_file, f"{dev} is still attached to the dead view"
        assert not list(work.glob("overlay-*")), "the overlay is removed"
    finally:
        if _backing(dev) == view_file:
            subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
        for mnt in work.glob("view-*"):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
