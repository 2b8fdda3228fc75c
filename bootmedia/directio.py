"""O_DIRECT for the copy loops: page-aligned buffers, reused, and a second descriptor of an
open disk or file that bypasses the page cache.

Writes from an aligned buffer through such a descriptor go to the device without a copy into
the page cache, so the writer is never throttled behind the cache's writeback and the cache
does not fill with what is only written once. Whatever is not aligned to the device's logical
sectors goes through the ordinary descriptor; a final fsync covers both.
"""

from __future__ import annotations

import mmap
import os
import threading

from bootmedia import blockdev

MiB = 1 << 20
ALIGN = 4096  # buffers are page-aligned (mmap), which covers 512- and 4096-byte sectors


class AlignedBuffers:
    """Page-aligned buffers, reused: no allocation per piece on the hot path. A buffer goes
    back once what it holds is written; how many are out at once is bounded by the pool that
    hands them out (bytes in flight)."""

    KEEP = 32  # free buffers kept for reuse; more are left to the garbage collector

    def __init__(self) -> None:
        self._free: dict[int, list[memoryview]] = {}
        self._kept = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> memoryview:
        size = max(MiB, 1 << (max(n, 1) - 1).bit_length())
        with self._lock:
            free = self._free.get(size)
            if free:
                self._kept -= 1
                return free.pop()
        return memoryview(mmap.mmap(-1, size))

    def give(self, buf: memoryview | None) -> None:
        if buf is None:
            return
        with self._lock:
            if self._kept < self.KEEP:
                self._free.setdefault(len(buf), []).append(buf)
                self._kept += 1


def reopen(fd: int, write: bool) -> int:
    """fd's file opened again with O_DIRECT (through /proc, so a renamed path or a partition
    node makes no difference; never exclusive, the first descriptor holds any claim), or -1
    where the filesystem refuses O_DIRECT."""
    mode = os.O_WRONLY if write else os.O_RDONLY
    try:
        return os.open(f"/proc/self/fd/{fd}", mode | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return -1


def sector_of(fd: int) -> int:
    """The unit O_DIRECT offsets and lengths must be multiples of."""
    return max(512, blockdev.sector_sizes(fd)[0])
