"""Waiting for a running bootmedia job's scratch directory (bootmedia.scratch), for the tests
that stop or kill a job while it has one."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def scratch_of(
    job: subprocess.Popen[str], kind: str, tmp: Path, then: signal.Signals, seconds: float = 120
) -> Path | None:
    """`job`'s scratch directory in the temporary directory `tmp` once it appears (None if the
    job ended first, or after `seconds`); the job is sent `then` (SIGSTOP, SIGKILL) right then,
    before it can finish with it."""
    deadline = time.monotonic() + seconds
    found: list[Path] = []
    while not found and time.monotonic() < deadline and job.poll() is None:
        found = list(tmp.glob(f"bootmedia-{kind}-{job.pid}-*"))
        time.sleep(0.002)
    job.send_signal(then)
    return found[0] if found else None
