"""Scratch space of killed jobs is the tool's to remove (bootmedia.scratch): a SIGKILLed capture's
scratch directory is removed by the next job, which says so in one line with the space freed;
a live job's scratch (and the files of a live owner's views) survive every sweep, however
concurrent; a directory with a mount inside is never walked into."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootmedia import scratch
from tests import disklayouts as D
from tests.scratchwait import scratch_of

MiB = 1 << 20
ROOT = Path(__file__).parents[1]


def _env(tmp: Path) -> dict[str, str]:
    """The children's temporary directory is the test's own: their sweeps see nobody else's."""
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    env.pop("BOOTMEDIA_NO_TOOLS", None)
    return env


def _sweep_in_child(tmp: Path, *extra: Path) -> str:
    code = "import sys; from pathlib import Path; from bootmedia.scratch import sweep; "
    code += "print(sweep([Path(p) for p in sys.argv[1:]]))"
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, extra)],
        env=_env(tmp), cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.fixture
def gone_process() -> tuple[int, str]:
    """The pid and start time of a real process that has ended."""
    p = subprocess.Popen(["sleep", "60"])
    started = scratch.start_time(p.pid)
    p.kill()
    p.wait()
    assert started and not scratch.alive(p.pid, started)
    return p.pid, started


@pytest.fixture
def live_process() -> Iterator[tuple[int, str]]:
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid, scratch.start_time(p.pid)
    p.kill()
    p.wait()


def _capture(src: str, repo: Path, name: str, tmp: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bootmedia", "capture", src, str(repo), "--name", name]
    return subprocess.Popen(
        argv, cwd=ROOT, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.root
def test_a_killed_captures_scratch_goes_at_the_next_job_and_a_live_ones_survives(
    loopdev, tmp_path: Path
) -> None:
    src = loopdev(200 * MiB)
    D.build(src, "gpt", (D.Part(1, "ext4", D.LINUX, 0, fill_mib=120),))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # Stopped, not dead: a live job, for as long as the sweeps below run. The capture reads
    # for about a second; on a loaded machine the test may not look in time: then again.
    for attempt in range(5):
        first = _capture(src, tmp_path / f"repo-{attempt}", "first", tmp)
        work = scratch_of(first, "capture", tmp, signal.SIGSTOP)
        if work is not None and (work / "seen.sqlite").exists():
            break
        first.send_signal(signal.SIGKILL)
        _, err = first.communicate()
        assert first.returncode in (0, -signal.SIGKILL), err
        for left in tmp.glob("bootmedia-capture-*"):  # a killed attempt's: not for the sweeps
            shutil.rmtree(left)
    try:
        assert work is not None and (work / "seen.sqlite").exists(), "never caught the scratch"
        # A sweep of its own, and a whole second capture (which sweeps as it starts), meanwhile.
        assert _sweep_in_child(tmp) == ""
        second = _capture(src, tmp_path / "repo2", "second", tmp)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err
        assert "left by killed bootmedia jobs" not in out + err
        assert work.is_dir() and (work / "seen.sqlite").exists(), "a live job's scratch went"
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert work.is_dir(), "SIGKILL leaves the scratch (nothing in the job can run)"
    size = sum(f.stat().st_blocks * 512 for f in work.iterdir())
    assert size > 0
    third = _capture(src, tmp_path / "repo3", "third", tmp)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    said = [line for line in (out + err).splitlines() if "left by killed bootmedia jobs" in line]
    assert len(said) == 1, out + err
    assert str(work) in said[0] and "freed" in said[0], said
    assert not work.exists()
    assert not list(tmp.glob("bootmedia-capture-*")), "the finished jobs' scratch is gone too"


def test_view_files_of_gone_owners_go_and_a_live_owners_stay(
    tmp_path: Path, gone_process: tuple[int, str], live_process: tuple[int, str]
) -> None:
    views = tmp_path / "shm"
    views.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = [views / f"view-{gone_process[0]}-{gone_process[1]}-p3-1.json",
            views / f"overlay-{gone_process[0]}-{gone_process[1]}-p3-1"]  # fmt: skip
    live = [views / f"view-{live_process[0]}-{live_process[1]}-p3-1.json",
            views / f"overlay-{live_process[0]}-{live_process[1]}-p3-1"]  # fmt: skip
    other = [views / "notes.txt", views / f"view-{gone_process[0]}-p3-1.json"]  # not ours
    for f in dead + live + other:
        f.write_bytes(os.urandom(10000))
    line = _sweep_in_child(tmp, views)
    assert line.startswith("removed 2 entries") and "left by killed bootmedia jobs" in line
    assert line.endswith("freed") and "kB" in line, line
    assert not any(f.exists() for f in dead)
    assert all(f.exists() for f in live + other)
    assert _sweep_in_child(tmp, views) == ""


def test_a_scratch_whose_lock_is_held_stays_though_its_pid_is_gone(
    tmp_path: Path, gone_process: tuple[int, str]
) -> None:
    """A live owner in another pid namespace: its pid means nothing here, its flock does."""
    work = tmp_path / f"bootmedia-receive-{gone_process[0]}-{gone_process[1]}-abc"
    work.mkdir()
    (work / "data").write_bytes(b"x" * 8192)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(work / scratch.LOCK)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        line = _sweep_in_child(tmp_path)
        assert line == f"left {work} (a mount inside, or in use)", line
        assert (work / "data").exists()
    finally:
        holder.kill()
        holder.wait()
    line = _sweep_in_child(tmp_path)
    assert line.startswith(f"removed {work} left by killed bootmedia jobs, "), line
    assert not work.exists()


@pytest.mark.root
@pytest.mark.parametrize("where", ["inside", "on"])
def test_a_mount_inside_a_dead_jobs_scratch_is_never_walked_into(
    tmp_path: Path, gone_process: tuple[int, str], where: str
) -> None:
    work = tmp_path / f"bootmedia-custom-{gone_process[0]}-{gone_process[1]}-abc"
    mnt = work / "mnt" if where == "inside" else work
    mnt.mkdir(parents=True)
    D.sh("mount", "-t", "tmpfs", "-o", "size=1m", "bootmedia-test", str(mnt))
    try:
        (mnt / "precious").write_text("a restored disk's file")
        line = _sweep_in_child(tmp_path)
        assert line == f"left {work} (a mount inside, or in use)", line
        assert (mnt / "precious").read_text() == "a restored disk's file"
    finally:
        D.sh("umount", str(mnt))
    assert _sweep_in_child(tmp_path).startswith(f"removed {work} ")
    assert not work.exists()


def test_a_scratch_is_named_after_its_owner_and_locked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile caches the directory it chose
    work = scratch.new_scratch("capture")
    try:
        pid, started = work.path.name.split("-")[2:4]
        assert int(pid) == os.getpid() and started == scratch.start_time(os.getpid())
        fd = os.open(work.path / scratch.LOCK, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        assert scratch.sweep() == "" and work.path.is_dir()
    finally:
        work.cleanup()
    assert not work.path.exists()


@pytest.mark.root
def test_a_killed_clones_scratch_goes_at_the_next_job(loopdev, tmp_path: Path) -> None:
    src, dst = loopdev(200 * MiB), loopdev(200 * MiB)
    D.build(src, "gpt", (D.Part(1, "ext4", D.LINUX, 0, fill_mib=120),))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    argv = [sys.executable, "-m", "bootmedia", "clone", src, dst, "--confirm", Path(dst).name]
    for _ in range(5):  # as above: a loaded machine may miss the scratch's lifetime
        job = subprocess.Popen(
            argv, cwd=ROOT, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        work = scratch_of(job, "clone", tmp, signal.SIGKILL)
        _, err = job.communicate()
        if work is not None:
            break
        assert job.returncode == 0, err
    assert work is not None and job.returncode == -signal.SIGKILL, err
    assert work.is_dir(), "SIGKILL leaves it (nothing in the job can run)"
    line = _sweep_in_child(tmp)
    assert line.startswith(f"removed {work} left by killed bootmedia jobs, "), line
    assert not work.exists()


@pytest.mark.root
def test_a_scratch_with_a_mount_left_on_it_is_not_deleted_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A job's own cleanup after an umount that failed (the stick's data partition, a restored
    filesystem): the mount and its files stay; a TemporaryDirectory deleted them."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    work = scratch.new_scratch("usb")
    D.sh("mount", "-t", "tmpfs", "-o", "size=1m", "bootmedia-test", str(work.path))
    try:
        (work.path / "README.txt").write_text("on the stick")
        work.cleanup()
        assert (work.path / "README.txt").read_text() == "on the stick"
        assert f"left {work.path}: a filesystem is still mounted in it" in caplog.text
    finally:
        D.sh("umount", str(work.path))
    shutil.rmtree(work.path)
