"""run(daemon=True), the way sshfs is started: a program that leaves a child in the background
holding its stdout and stderr. run() returns when the program ends (not the child), with the
program's status and what it wrote, and a failure is the usual ToolError naming the command."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootmedia.errors import ToolError
from bootmedia.run import run

pytestmark = pytest.mark.real_tools


@pytest.fixture
def forks(tmp_path: Path) -> Iterator[str]:
    """A script whose background child keeps stdout and stderr open for 60 s (ended here)."""
    pidfile = tmp_path / "child.pid"
    yield f"sleep 60 & echo $! > {pidfile}; echo said-before-leaving >&2; exit $1"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_a_program_that_leaves_a_child_returns_at_its_own_end(forks: str) -> None:
    start = time.monotonic()
    proc = run(["sh", "-c", forks, "sh", "0"], daemon=True, timeout=30)
    assert time.monotonic() - start < 10, "run() waited for the background child"
    assert proc.returncode == 0
    assert proc.stderr == b"said-before-leaving\n"


def test_its_failure_names_the_command_and_its_stderr(forks: str) -> None:
    start = time.monotonic()
    with pytest.raises(ToolError) as err:
        run(["sh", "-c", forks, "sh", "3"], daemon=True, timeout=30)
    assert time.monotonic() - start < 10
    assert err.value.returncode == 3
    text = str(err.value)
    assert text.startswith("sh -c sleep 60 & ") and text.endswith(
        "failed (exit 3): said-before-leaving"
    ), text


def test_input_reaches_the_program() -> None:
    proc = run(["sh", "-c", "read x; echo got $x >&2"], input=b"secret\n", daemon=True, timeout=30)
    assert proc.stderr == b"got secret\n"
