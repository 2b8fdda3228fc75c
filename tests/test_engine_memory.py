"""Peak memory is a constant of the pipeline, not of the disk: capture and apply of a 3 GiB and a
12 GiB disk (sparse, the same 192 MiB of data spread over each) stay far below 256 MiB, and the
bigger disk needs no more memory than the smaller one (issue 8: "does not grow with the size")."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from tests.conftest import root_only

MiB = 1 << 20
GiB = 1 << 30
pytestmark = root_only
ROOT = Path(__file__).resolve().parent.parent
SLACK = 24 * MiB  # allocator and page-cache noise between two runs of the same program


# The peak RSS of a process started straight from pytest includes pytest's own: Linux keeps a
# process's high-water mark across exec, and subprocess spawns through vfork, so the child
# starts with the parent's (300 MiB late in a full suite run). So a small Python forks and
# execs bootmedia and reports the peak of that grandchild, which starts from its few MiB.
_MEASURE = """\
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "bootmedia", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss * 1024)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _peak_rss(argv: list[str], tmp: Path) -> int:
    env = dict(os.environ, BOOTMEDIA_LOG_DIR=str(tmp))
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    return int(proc.stdout.split()[-1])


def _round_trip(loopdev, tmp: Path, size: int) -> tuple[int, int]:
    src = loopdev(size)  # sparse: reads of the holes are fast, but every byte is examined
    rng = random.Random(1)
    fd = os.open(src, os.O_RDWR)
    step = size // 24
    for i in range(24):
        os.pwrite(fd, rng.randbytes(8 * MiB), i * step)
    os.close(fd)
    repo = tmp / f"repo-{size >> 30}g"
    rss_capture = _peak_rss(["capture", src, str(repo), "--name", "big", "-q"], tmp)
    dst = loopdev(size)
    rss_apply = _peak_rss(["apply", str(repo), "big", dst, "--confirm", Path(dst).name, "-q"], tmp)
    return rss_capture, rss_apply


def test_peak_rss_does_not_grow_with_the_disk(loopdev, tmp_path: Path) -> None:
    small = _round_trip(loopdev, tmp_path, 3 * GiB)
    big = _round_trip(loopdev, tmp_path, 12 * GiB)
    print(f"peak RSS capture/apply: 3 GiB {small}, 12 GiB {big}")
    for rss in (*small, *big):
        assert rss < 256 * MiB, rss
    assert big[0] <= small[0] + SLACK, f"capture: {big[0]} at 12 GiB vs {small[0]} at 3 GiB"
    assert big[1] <= small[1] + SLACK, f"apply: {big[1]} at 12 GiB vs {small[1]} at 3 GiB"
