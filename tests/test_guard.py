"""The test guard itself: a test that did not ask for real tools cannot start one from bootmedia,
and one that asked can."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bootmedia import run as runner
from tests.conftest import ToolGuardError


def test_run_refuses_without_real_tools() -> None:
    with pytest.raises(runner.ToolsDisabledError, match="disabled in this test"):
        runner.run(["true"])


def test_a_direct_spawn_from_bootmedia_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Even a module that bypasses run()'s own check is stopped by the guard on Popen.
    monkeypatch.delenv("BOOTMEDIA_NO_TOOLS")
    with pytest.raises(ToolGuardError, match="did not ask for real tools"):
        runner.run(["true"])


def test_a_child_bootmedia_inherits_the_refusal() -> None:
    # The test itself may start processes; bootmedia inside that child may not run tools.
    code = "from bootmedia.run import run; run(['true'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "ToolsDisabledError" in proc.stderr


@pytest.mark.real_tools
def test_marked_tests_run_real_tools() -> None:
    assert runner.run(["true"]).returncode == 0


@pytest.mark.real_tools
def test_run_pipe_reports_whichever_side_failed() -> None:
    # The consumer succeeds on an empty stream (as xfsrestore does): the producer's failure
    # must still be the job's failure, with its own stderr.
    with pytest.raises(
        runner.ToolError, match=r"sh -c echo no dump >&2; exit 3 failed \(exit 3\): no dump"
    ):
        runner.run_pipe(["sh", "-c", "echo no dump >&2; exit 3"], ["cat"])
    with pytest.raises(runner.ToolError, match=r"sh -c cat; exit 5 failed \(exit 5\)"):
        runner.run_pipe(["echo", "data"], ["sh", "-c", "cat; exit 5"])
    with pytest.raises(runner.BootmediaError, match="no-such-tool-x is not installed"):
        runner.run_pipe(["echo"], ["no-such-tool-x"])
    runner.run_pipe(["echo", "data"], ["cat"])
