#!/usr/bin/env python3
"""zstd levels on a disk's own used data: CPU-seconds and size of each level, in the frames a
capture compresses (the used blocks of each 1 MiB frame, unused bytes zeroed), one thread.

    sudo .venv/bin/python bench/levels.py DISK [--levels 1,2,3]

Reads the used data once (bootmedia's capture plan: the same frames as a capture) and
compresses every frame at each level in turn, timing only the compression (thread CPU time).
Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootmedia.capture import job  # noqa: E402
from bootmedia.capture.plan import plan_capture  # noqa: E402
from bootmedia.repo.manifest import USED  # noqa: E402

BLOCK, FRAME = 16 << 10, 1 << 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("disk")
    ap.add_argument("--levels", default="1,2,3")
    args = ap.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    cctx = {lv: zstandard.ZstdCompressor(level=lv, write_checksum=True) for lv in levels}
    cpu = dict.fromkeys(levels, 0.0)
    size = dict.fromkeys(levels, 0)
    raw = 0
    with tempfile.TemporaryDirectory(prefix="bootmedia-levels-") as tmp:
        plan = plan_capture(args.disk, Path(tmp) / "repo", name="levels")
    fd = os.open(args.disk, os.O_RDONLY)
    try:
        for a in plan.areas:
            if a.area.mode != USED or a.ranges is None:
                continue
            for f in job._iter_used(a, BLOCK, FRAME):
                buf = bytearray(f.span)
                for off, n in f.pieces:
                    buf[off : off + n] = os.pread(fd, n, f.base + f.offset + off)
                data = b"".join(bytes(buf[o : o + n]) for o, n in f.blocks)
                raw += len(data)
                for lv in levels:
                    t = time.thread_time()
                    size[lv] += len(cctx[lv].compress(data))
                    cpu[lv] += time.thread_time() - t
    finally:
        os.close(fd)
    print(f"{raw / 1e9:.2f} GB of used blocks in {FRAME >> 20} MiB frames")
    for lv in levels:
        print(
            f"level {lv}: {size[lv] / 1e6:.1f} MB, {cpu[lv]:.2f} CPU-s ({cpu[lv] / raw * 1e9:.2f} CPU-s/GB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
