"""Kills in the middle of a shrink (issue 10): `bootmedia apply` onto a smaller disk is stopped at
a random moment while its image view is up (the view started, the shrinker running or its blocks
being copied), with SIGTERM, with SIGKILL, and with a SIGKILL of the job and its view server
both. Afterwards no loop device is left over the view, no mount, no overlay, no record; the
target is either untouched or marked incomplete, as the job said; and after the double SIGKILL
the next restore cleans what the view left (if it was still up), says so in one line, and
succeeds."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bootmedia.capture import capture_image, plan_capture
from bootmedia.disks.model import INCOMPLETE_MARKER
from tests import disklayouts as D

MiB = 1 << 20
ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.root


def _backing(dev: str) -> str:
    """The loop device's backing file; a dead view's file is the same when the kernel shows
    it as "<path> (deleted)"."""
    p = Path(f"/sys/block/{Path(dev).name}/loop/backing_file")
    try:
        return p.read_text().strip().removesuffix(" (deleted)")
    except OSError:
        return ""


def _running(pid: int) -> bool:
    """Alive and not a zombie (here the orphans' new parent may reap them late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _mounts() -> str:
    return Path("/proc/mounts").read_text()


def _apply(repo: Path, dst: str, env: dict[str, str]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bootmedia", "apply", str(repo), "img", dst]
    return subprocess.Popen(
        [*argv, "--confirm", Path(dst).name],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "SIGKILL-both"])
def test_a_kill_during_shrink_leaves_nothing_behind(loopdev, tmp_path: Path, how: str) -> None:
    src = loopdev(480 * MiB)
    D.build(src, "gpt", (D.Part(1, "ext4", D.LINUX, 0, 120),))
    before = D.sums(f"{src}p1", "ext4")
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    dst = loopdev(300 * MiB)
    runtime = tmp_path / "run"
    env = {**os.environ, "BOOTMEDIA_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(ROOT)}
    env.pop("BOOTMEDIA_NO_TOOLS", None)
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 1.5)

    job = _apply(repo, dst, env)
    seen: dict[str, Any] = {}
    loops: set[str] = set()
    deadline = time.monotonic() + 60
    while "server" not in seen and time.monotonic() < deadline and job.poll() is None:
        for rec in runtime.glob("*.json"):
            try:
                seen = json.loads(rec.read_text())
            except (OSError, ValueError):
                continue
        time.sleep(0.01)
    assert seen, f"the shrink's view never started: {job.communicate()}"
    kill_at = time.monotonic() + delay
    while time.monotonic() < kill_at and job.poll() is None:
        for rec in runtime.glob("*.json"):
            try:
                seen = json.loads(rec.read_text())
            except (OSError, ValueError):
                continue
            loops.update(str(x) for x in seen.get("loops", []))
        time.sleep(0.01)
    server = int(seen.get("server", 0) or 0)
    mount = str(seen["mount"])
    overlay = Path(str(seen["overlay"]))
    own = (mount + "/area.img", "/area.img")
    finished = job.poll() is not None  # the whole restore was quicker than the delay
    view_up = False  # whether anything of the view was still there when both were stopped
    if not finished and how == "SIGKILL-both":
        # Both stopped first: neither may see the other die and clean up.
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGSTOP)
        job.send_signal(signal.SIGSTOP)
        # Frozen now. The delay may have run past the shrink: its view closed, and the job was
        # writing the shrunk blocks or the partition table; then there is no view to clean up.
        # A running server alone is not something left: the test kills it below, and it may
        # be past its own cleanup (its overlay removed, only its exit to go).
        view_up = mount in _mounts() or overlay.exists() or any(_backing(d) in own for d in loops)
        job.send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGKILL)
    elif not finished:
        job.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
    _, err = job.communicate(timeout=60)
    try:
        if finished:
            assert job.returncode == 0, err
        elif how == "SIGTERM":
            last = err.strip().splitlines()[-1]
            assert job.returncode == 130, err
            assert last.startswith("bootmedia: cancelled: stopped by SIGTERM; "), err
            with open(dst, "rb") as f:
                head = f.read(len(INCOMPLETE_MARKER))
            if "nothing was written" in last:
                assert head == bytes(len(head)), "the job said it wrote nothing"
            else:
                assert "marked incomplete (BOOTMEDIA-INCOMPLETE)" in last, last
                assert head == INCOMPLETE_MARKER
        else:
            assert job.returncode == -signal.SIGKILL
        if how != "SIGKILL-both" or finished:
            # The job unwound (SIGTERM), or its view server saw it die (SIGKILL) and cleaned.
            for _ in range(150):
                if not _running(server) and mount not in _mounts():
                    break
                time.sleep(0.1)
            assert not _running(server), f"the view server outlived its job ({seed=})"
            assert mount not in _mounts(), f"the view is still mounted ({seed=}): {err}"
            assert not [d for d in loops if _backing(d) in own], f"loop left ({seed=})"
            assert not overlay.exists(), f"the overlay is left ({seed=})"
            assert not list(runtime.glob("*.json")), f"the view's record is left ({seed=})"
            # Its log and stats beside the overlay (in /dev/shm/bootmedia, or the stick's).
            left = list(overlay.parent.glob(f"view-{job.pid}-*"))
            assert not left, f"the view's files are left ({seed=}): {left}"
        else:
            # Nobody was left to clean up: the next restore does, says so, and succeeds.
            again = _apply(repo, dst, env)
            out2, err2 = again.communicate(timeout=120)
            assert again.returncode == 0, err2
            said = [line for line in (out2 + err2).splitlines() if "left an image view" in line]
            if view_up:
                assert len(said) == 1 and f"(pid {job.pid})" in said[0], out2 + err2
            else:
                assert not said, f"nothing of the view was left, yet ({seed=}): {said}"
            assert not [d for d in loops if _backing(d) in own], f"loop left ({seed=}): {said}"
            assert mount not in _mounts() and not Path(mount).exists(), said
            assert not overlay.exists(), said
            assert not list(runtime.glob("*.json"))
            assert not list(overlay.parent.glob(f"view-{job.pid}-*")), said
            assert D.check(f"{dst}p1", "ext4") == ""
            assert D.sums(f"{dst}p1", "ext4") == before
    finally:
        for d in loops:
            if _backing(d) in own:
                subprocess.run(["losetup", "-d", d], capture_output=True, check=False)
        if mount in _mounts():
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
