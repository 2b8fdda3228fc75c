"""The in-process writers: one pass of zeros or of a keystream over a whole disk or a range."""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable

from bootmedia.errors import BootmediaError
from bootmedia.progress import Reporter

CHUNK = 4 << 20
# Without O_DIRECT, fsync this often so that a cancel (or a slow USB stick) never leaves
# gigabytes of dirty pages to flush before the job can stop.
SYNC_EVERY = 256 << 20


def _open(path: str) -> tuple[int, bool]:
    """Open for writing with O_EXCL (the kernel refuses while anything holds the disk) and, where
    the device allows it, O_DIRECT so the throughput shown is the disk's, not the page cache's."""
    base = os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, base | os.O_DIRECT), True
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise BootmediaError(f"{path}: device is busy (mounted or in use)") from None
        if exc.errno != errno.EINVAL:
            raise BootmediaError(f"{path}: cannot open for writing: {exc.strerror}") from None
    return os.open(path, base), False


def write_range(
    path: str,
    start: int,
    length: int,
    reporter: Reporter,
    pattern: Callable[[int, int], bytes] | None = None,
) -> int:
    """Write zeros (pattern=None) or pattern(offset, n) over [start, start+length). Returns bytes
    written. Offsets and lengths must be multiples of the logical sector size."""
    fd, direct = _open(path)
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT requires; starts as zeros
    view = memoryview(buf)
    written = unsynced = 0
    try:
        pos, end = start, start + length
        while pos < end:
            reporter.check_cancel()
            n = min(CHUNK, end - pos)
            if pattern is not None:
                buf[:n] = pattern(pos, n)
            done = os.pwritev(fd, [view[:n]], pos)
            if done <= 0:
                raise BootmediaError(f"{path}: write stopped at offset {pos}")
            pos += done
            written += done
            unsynced += done
            reporter.advance(done)
            if not direct and unsynced >= SYNC_EVERY:
                os.fsync(fd)
                unsynced = 0
        os.fsync(fd)  # the disk's own write cache too
    except OSError as exc:
        raise BootmediaError(
            f"{path}: write failed at offset {start + written}: {exc.strerror}"
        ) from None
    finally:
        view.release()
        buf.close()
        os.close(fd)
    return written
