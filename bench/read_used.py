#!/usr/bin/env python3
"""Read only what the filesystems use, as fast as this machine can: the floor under any capture.

    read_used.py PARTITION:DOMAIN_FILE ...

Each DOMAIN_FILE is partclone's domain map of PARTITION (`partclone.<fs> -D`); every range it
marks used ('+') is read with O_DIRECT in pieces of at most 4 MiB by 4 threads, into reused
aligned buffers, and nothing is done with the bytes. bench.py times it from a cold cache: a
capture cannot be faster, and a recapture that finds every block stored is this plus hashing.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

PIECE = 4 << 20
ALIGN = 4096


def pieces(spec: str) -> list[tuple[str, int, int]]:
    dev, domain = spec.split(":", 1)
    out = []
    with open(domain) as f:
        for line in f:
            p = line.split()
            if len(p) == 3 and p[2] == "+":
                start, length = int(p[0], 16), int(p[1], 16)
                s, e = start // ALIGN * ALIGN, -(-(start + length) // ALIGN) * ALIGN
                for o in range(s, e, PIECE):
                    out.append((dev, o, min(PIECE, e - o)))
    return out


def main() -> int:
    work = [p for spec in sys.argv[1:] for p in pieces(spec)]
    fds = {d: os.open(d, os.O_RDONLY | os.O_DIRECT) for d in {w[0] for w in work}}
    local = threading.local()

    def read(item: tuple[str, int, int]) -> int:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = memoryview(mmap.mmap(-1, PIECE))
        dev, off, n = item
        return os.preadv(fds[dev], [buf[:n]], off)

    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(read, work, chunksize=16))
    print(f"read {total} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
