"""udp-sender and udp-receiver fail like every other tool (bootmedia.run.stream()): the command
and its stderr, a non-zero exit, nothing written. Before, a udp-receiver that could not start
or died was taken for "no session" and the receiver restored everything from the fallback as
if nothing had happened; these tests give it a fallback and an image so that would show.

Real udpcast, in a namespace of the test's own with only its loopback: nothing leaves it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootmedia.capture import capture_image, plan_capture
from bootmedia.lab import SamplePart
from tests import sample
from tests.net.conftest import bootmedia_cmd, cli_env
from tests.net.netns import Netns, die_with_parent
from tests.scratchwait import scratch_of

pytestmark = [pytest.mark.root, pytest.mark.real_tools]
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
LAYOUT = (SamplePart(1, "ext4", 0),)


@pytest.fixture
def repo(loopdev, tmp_path: Path) -> Path:
    src = loopdev(40 * MiB)
    sample.build(src, "gpt", layout=LAYOUT)
    capture_image(plan_capture(src, tmp_path / "repo", "golden"))
    return tmp_path / "repo"


def start(ns: Netns, tmp: Path, *args: str, **more_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        bootmedia_cmd(ns, *args), env=cli_env(tmp, **more_env), cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent,
    )  # fmt: skip


def ended(proc: subprocess.Popen[str], seconds: float = 120) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running after {seconds} s: {err[-2000:]}")
    return proc.returncode, err


def kill_when_running(ns: Netns, program: str, seconds: float = 120) -> None:
    """SIGKILL the namespace's `program` once it runs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = subprocess.run(
            ["ip", "netns", "pids", ns.name], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == program:
                    time.sleep(1)  # well into its wait for the session
                    os.kill(int(pid), signal.SIGKILL)
                    return
        time.sleep(0.1)
    pytest.fail(f"{program} never ran in {seconds} s")


def receive(
    ns: Netns, tmp: Path, disk: str, repo: Path, *extra: str, **more_env: str
) -> subprocess.Popen[str]:
    return start(
        ns, tmp, "receive", disk, "--confirm", Path(disk).name, "--fallback", str(repo),
        "--image", "golden", "--rdv", "239.77.0.9", "--start-timeout", "60", "-q", *extra,
        **more_env,
    )  # fmt: skip


def untouched(disk: str) -> bool:
    return sample.read(disk, 0, 1 * MiB) == bytes(1 * MiB)


def test_a_udp_receiver_that_cannot_start_is_fatal_not_a_late_join(
    netns: Netns, repo: Path, loopdev, tmp_path: Path
) -> None:
    disk = loopdev(40 * MiB)
    rc, err = ended(receive(netns, tmp_path, disk, repo, "--interface", "nope0"))
    assert rc != 0, err
    line = err.strip().splitlines()[-1]
    assert "udp-receiver --nokbd" in line and "--interface nope0" in line, err
    assert "failed (exit 1): No suitable network interface found" in line, err
    assert "Traceback" not in err
    assert untouched(disk), "restored from the fallback although udp-receiver failed"


def test_a_udp_receiver_that_dies_is_fatal(
    netns: Netns, repo: Path, loopdev, tmp_path: Path
) -> None:
    disk = loopdev(40 * MiB)
    proc = receive(netns, tmp_path, disk, repo, "--interface", "lo")
    kill_when_running(netns, "udp-receiver")
    rc, err = ended(proc)
    assert rc != 0, err
    assert "udp-receiver --nokbd" in err and "failed (exit -9)" in err, err
    assert "UDP receiver for" in err, err  # its stderr up to its end
    assert "Traceback" not in err
    assert untouched(disk)


def test_a_udp_sender_that_cannot_start_is_fatal(netns: Netns, repo: Path, tmp_path: Path) -> None:
    rc, err = ended(start(netns, tmp_path, "cast", str(repo), "golden", "--interface", "nope0"))
    assert rc != 0, err
    line = err.strip().splitlines()[-1]
    assert "udp-sender --nokbd" in line and "--interface nope0" in line, err
    assert "failed (exit 1): No suitable network interface found" in line, err
    assert "Traceback" not in err


def test_a_udp_sender_that_dies_while_waiting_is_fatal(
    netns: Netns, repo: Path, tmp_path: Path
) -> None:
    proc = start(
        netns, tmp_path, "cast", str(repo), "golden", "--interface", "lo", "--receivers", "2",
        "--wait", "60", "--rdv", "239.77.0.9", "-q",
    )  # fmt: skip
    kill_when_running(netns, "udp-sender")
    rc, err = ended(proc)
    assert rc != 0, err
    assert "udp-sender --nokbd" in err and "failed (exit -9)" in err, err
    assert "Traceback" not in err


def test_a_killed_receivers_scratch_is_swept_by_the_next_job(
    netns: Netns, repo: Path, loopdev, tmp_path: Path
) -> None:
    """SIGKILL leaves the receiver's scratch (its stream's repository) in the temporary
    directory: the next job's sweep removes it, and says so (bootmedia.scratch)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    disk = loopdev(40 * MiB)
    rx = receive(netns, tmp_path, disk, repo, "--interface", "lo", TMPDIR=str(tmp))
    tx = None
    try:
        tx = start(netns, tmp_path, "cast", str(repo), "golden", "--interface", "lo",
                   "--receivers", "1", "--wait", "60", "--rdv", "239.77.0.9", "-q")  # fmt: skip
        work = scratch_of(rx, "receive", tmp, signal.SIGKILL)
        rx.communicate()
        assert work, f"no scratch named after the receiver's pid: {rx.returncode}"
    finally:
        if tx is not None:
            tx.kill()
            tx.communicate()
    assert work.is_dir(), "SIGKILL leaves it (nothing in the job can run)"
    code = "from bootmedia.scratch import new_scratch; new_scratch('probe', say=print).cleanup()"
    env = dict(os.environ, TMPDIR=str(tmp))
    nxt = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert nxt.stdout.startswith(f"removed {work} left by killed bootmedia jobs, "), nxt
    assert nxt.stdout.strip().endswith("freed"), nxt
    assert not work.exists()
