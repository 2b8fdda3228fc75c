"""Hostile review: SIGKILL a job while the loop device over its image view is attached (as it
is through a whole shrink). The view's server follows the job, but the loop device must not be
left behind holding the dead FUSE file (and the mount with it)."""

from __future__ import annotations

import os
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
    """The backing file; a dead view's is the same when shown as "<path> (deleted)"."""
    p = Path(f"/sys/block/{Path(dev).name}/loop/backing_file")
    return p.read_text().strip().removesuffix(" (deleted)") if p.exists() else ""


def _running(pid: int) -> bool:
    """Alive and not a zombie (here the orphans' new parent may reap them late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_job_leaves_no_loop_device_over_its_view(loopdev, tmp_path: Path) -> None:
    src = loopdev(128 * MiB)
    D.build(src, "gpt", (D.Part(1, "ext4", D.LINUX, 0, 20),))
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    work = tmp_path / "w"
    runtime = tmp_path / "run"
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
        env={**os.environ, "BOOTMEDIA_RUNTIME_DIR": str(runtime)},
    )
    assert job.stdout is not None
    pid, dev = job.stdout.readline().split()
    view_file = _backing(dev)
    assert view_file.startswith(str(runtime)), view_file
    job.send_signal(signal.SIGKILL)
    job.wait()
    try:
        for _ in range(100):
            if not _running(int(pid)) and _backing(dev) not in (view_file, "/area.img"):
                break
            time.sleep(0.1)
        assert not _running(int(pid)), "the view server outlived its job"
        # Once its mount is gone, a loop device over the file names it "/area.img".
        assert _backing(dev) not in (view_file, "/area.img"), f"{dev} is still attached"
        assert str(runtime) not in Path("/proc/mounts").read_text(), "the view is unmounted"
        assert not list(work.glob("overlay-*")), "the overlay is removed"
        assert not list(runtime.glob("*.json")), "the view's record is removed"
    finally:
        if _backing(dev) in (view_file, "/area.img"):
            subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
        for mnt in runtime.glob("*-p1-*"):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
