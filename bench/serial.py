#!/usr/bin/env python3
"""The serial share of a capture: the ordered writer's thread (the main thread) against the
whole process, in CPU-seconds, from a cold cache. On n cores a capture takes at least
max(writer CPU, all CPU / n): the projection to 8 and 16 cores in the README.

    sudo .venv/bin/python bench/serial.py DISK [--rounds 3]

DISK is captured into a new scratch repository each round (bench.py's disk works; so does any
other). Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootmedia.capture.job import capture_image  # noqa: E402
from bootmedia.capture.plan import plan_capture  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("disk")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for r in range(args.rounds):
        repo = Path(tempfile.mkdtemp(prefix="bootmedia-serial-")) / "repo"
        try:
            plan = plan_capture(args.disk, repo, name="serial")
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            wall, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
            capture_image(plan)
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            main_cpu = time.thread_time() - main_cpu
            print(
                f"round {r + 1}: {wall:.2f} s, {cpu:.2f} CPU-s, writer thread {main_cpu:.2f} "
                f"CPU-s ({100 * main_cpu / cpu:.0f}%): on 8 cores >= {max(main_cpu, cpu / 8):.2f} "
                f"s, on 16 >= {max(main_cpu, cpu / 16):.2f} s"
            )
        finally:
            shutil.rmtree(repo.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
