"""Adversarial review, kills: a restore by files SIGKILLed in the middle of its copy.

The job had set up a loop device over the target's partition range and mounted the new XFS
there; a SIGKILL left both behind (docs/LAYOUT.md said so). Since a disk with a loop device
over it is refused, the rerun then stopped at "is in use by loop device ...": the technician
had to find and detach it by hand. Now the job records that loop device where the next job
looks for a killed job's leftovers, and the rerun unmounts and detaches it (waiting for it to
go while it is still held), says so, and restores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia.targetloops import records_dir
from tests.disktools import sh
from tests.sample import bootmedia

MiB = 1 << 20
pytestmark = pytest.mark.root


def _loops_over(target: str) -> list[str]:
    out = []
    for b in Path("/sys/block").glob("loop*"):
        try:
            if (b / "loop" / "backing_file").read_text().strip() == target:
                out.append(f"/dev/{b.name}")
        except OSError:
            continue
    return out


def _namespaces_holding(devs: list[str]) -> list[str]:
    """Processes in another mount namespace that have one of these devices mounted."""
    nums = {Path(f"/sys/block/{Path(d).name}/dev").read_text().strip() for d in devs}
    ours = os.readlink("/proc/self/ns/mnt")
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "ns" / "mnt") == ours:
                continue
            lines = (proc / "mountinfo").read_text().splitlines()
        except OSError:
            continue
        if any(line.split()[2] in nums for line in lines):
            found.append(f"pid {proc.name} ({(proc / 'comm').read_text().strip()})")
    return found


def _mounted_from(devs: list[str]) -> bool:
    return any(line.split()[0] in devs for line in Path("/proc/mounts").read_text().splitlines())


@pytest.mark.parametrize("held", [False, True])
def test_a_restore_by_files_killed_mid_copy_is_cleaned_by_the_rerun(
    loopdev: Callable[..., str], tmp_path: Path, held: bool
) -> None:
    """held: something keeps the leftover loop device open for 2 s more (as a lazily
    unmounted filesystem does while it writes its log): the rerun waits for it to go instead
    of forgetting it and then refusing the target it is still over."""
    src = loopdev(800 * MiB)
    sh("sfdisk", "-q", src, input="label: gpt\n\nsize=+, type=L\n")
    sh("partx", "-u", src)
    node = f"{src}p1"
    sh("mkfs.xfs", "-q", "-f", "-L", "xkill", node)
    mnt = tmp_path / "fill"
    mnt.mkdir()
    sh("mount", node, str(mnt))
    try:
        for i in range(40):  # enough files that the copy takes a moment
            (mnt / f"f{i}").write_bytes(os.urandom(2 * MiB))
    finally:
        sh("umount", str(mnt))
    proc = bootmedia("capture", "--name", "img", src, str(tmp_path / "repo"), "-q")
    assert proc.returncode == 0, proc.stderr
    target = loopdev(420 * MiB)
    argv = ["apply", str(tmp_path / "repo"), "img", target, "--confirm", Path(target).name]
    env = dict(os.environ, BOOTMEDIA_LOG_DIR="/tmp/bm-test-log")
    job = subprocess.Popen(
        ["python", "-m", "bootmedia", *argv, "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    try:
        deadline = time.monotonic() + 60
        while not _mounted_from(_loops_over(target)):  # the new XFS is mounted: the copy
            assert job.poll() is None and time.monotonic() < deadline, "never reached the copy"
            time.sleep(0.01)
        job.send_signal(signal.SIGKILL)  # only the job, as a crash would
        job.wait()
        assert _loops_over(target)  # what the kill leaves
        listed = json.loads(bootmedia("disks", "--include-loop", "--json", target).stdout)
        assert listed["disks"][0]["incomplete_restore"] is True
        holders: list[int] = []
        if held:
            holders = [os.open(dev, os.O_RDONLY) for dev in _loops_over(target)]

            def let_go() -> None:
                for fd in holders:
                    os.close(fd)

            threading.Timer(2.0, let_go).start()
        with open(target, "rb") as f:
            head = f.read(MiB)
        rerun = bootmedia(*argv)
        if rerun.returncode != 0 and "still held" in rerun.stderr:
            # On a shared machine another process's new mount namespace (unshare) can take a
            # copy of the job's mount: the filesystem then lives on there and the tool must
            # refuse the target. Check it is so, and that nothing was written.
            elsewhere = _namespaces_holding(_loops_over(target))
            assert elsewhere, rerun.stderr
            with open(target, "rb") as f:
                assert f.read(MiB) == head
            pytest.skip(f"the leftover is mounted in another mount namespace: {elsewhere[0]}")
        assert rerun.returncode == 0 and "verified" in rerun.stdout, rerun.stderr
        said = rerun.stdout + rerun.stderr
        # The rerun cleaned it and said so (unless a job of someone else on this machine,
        # which runs the same cleanup, came first).
        assert ("a killed bootmedia job" in said and "detached /dev/loop" in said) or (
            not list(records_dir().glob(f"{job.pid}-*.json"))
        ), said
        assert not _loops_over(target)
        assert not _mounted_from(_loops_over(target))
    finally:
        if job.poll() is None:
            job.kill()
        for dev in _loops_over(target):
            subprocess.run(["umount", "-l", dev], capture_output=True, check=False)
            subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
