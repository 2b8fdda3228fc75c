"""Hostile review: a hook that exits 0 but leaves a child in the background held the output
pipe open, so the job waited the whole hook timeout (600 s) and then failed a hook that had
succeeded, and the child lived on (keeping the restored filesystem busy)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bootmedia.customize.hooks import run_hook
from bootmedia.errors import ToolError


def _hook(tmp_path: Path, body: str) -> str:
    p = tmp_path / "hook.sh"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.real_tools
def test_background_child_neither_blocks_nor_outlives_the_hook(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hook = _hook(tmp_path, f"sleep 300 &\necho $! > {pidfile}\necho started\nexit 0\n")
    t0 = time.monotonic()
    lines = run_hook(hook, {"BOOTMEDIA_DISK": "/dev/null"}, timeout=30)
    assert time.monotonic() - t0 < 10
    assert lines == ["started"]
    child = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)


@pytest.mark.real_tools
def test_hanging_hook_times_out_and_failure_keeps_output(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="timed out"):
        run_hook(_hook(tmp_path, "sleep 300\n"), {}, timeout=1)
    with pytest.raises(ToolError, match=r"exit 3.*boom"):
        run_hook(_hook(tmp_path, "echo boom >&2\nexit 3\n"), {}, timeout=30)
