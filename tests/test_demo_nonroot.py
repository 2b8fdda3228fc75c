"""The demo lab as a user who is not root: tests/demo_as_user.py run by an unprivileged user.

As root, the script runs through `runuser -u USER` (BOOTMEDIA_TEST_USER, default nobody). The
user needs a python with bootmedia's dependencies that it can read: BOOTMEDIA_TEST_PYTHON, the
repository's .venv (scripts/deps.sh), this interpreter, /opt/bootmedia-venv (for machines where
the developer's python lives under /root, e.g. pyenv: `python3 -m venv /opt/bootmedia-venv &&
/opt/bootmedia-venv/bin/pip install zstandard blake3 psutil pyudev textual`), or the system's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
USER = os.environ.get("BOOTMEDIA_TEST_USER", "nobody")
CHECK = "import zstandard, blake3, psutil, textual"


def as_user(argv: list[str], home: Path) -> list[str]:
    env = ["env", f"HOME={home}", f"PYTHONPATH={REPO}", "PYTHONDONTWRITEBYTECODE=1"]
    if os.geteuid() != 0:
        return [*env, *argv]  # already unprivileged
    return ["runuser", "-u", USER, "--", *env, *argv]


def find_python(home: Path) -> str | None:
    candidates = [
        os.environ.get("BOOTMEDIA_TEST_PYTHON", ""),
        str(REPO / ".venv" / "bin" / "python"),
        sys.executable,
        "/opt/bootmedia-venv/bin/python",
        "/usr/bin/python3",
    ]
    for python in filter(None, candidates):
        if not os.path.exists(python):
            continue
        probe = subprocess.run(
            as_user([python, "-c", CHECK], home), capture_output=True, cwd=home, check=False
        )
        if probe.returncode == 0:
            return python
    return None


@pytest.fixture
def home() -> Iterator[Path]:
    # Not pytest's tmp_path: as root that lives in a directory only root may enter.
    path = Path(tempfile.mkdtemp(prefix="bootmedia-nonroot-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(path, USER)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(600)
def test_the_demo_works_for_a_user_who_is_not_root(home: Path) -> None:
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("as root this test needs runuser to become an unprivileged user")
    python = find_python(home)
    if python is None:
        pytest.skip(
            f"no python with bootmedia's dependencies that user {USER} can run "
            "(set BOOTMEDIA_TEST_PYTHON; see this file's docstring)"
        )
    proc = subprocess.run(
        as_user([python, "-m", "tests.demo_as_user", str(home / "lab")], home),
        capture_output=True,
        cwd=REPO,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert out["euid"] != 0
    assert out["use_loops"] is False  # plain image files, no loop devices
    assert out["app_disks"] == ["newpc-1.img", "newpc-2.img", "reference.img"]
    assert out["files"] > 20 and out["restored_same_files"] is True
    assert out["verify_ok"] is True
    assert out["capture_same_partitions"] is True
    assert out["wipe"] == "erased and verified"
    assert out["partitioned"] == ["vfat", "", "ntfs"]
    assert not list((home / "lab" / "disks").glob(".bootmedia-*"))  # no scratch files left
