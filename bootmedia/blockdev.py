"""Low-level facts and operations on block devices (and on image files that stand in for them)."""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.tools import partx
from bootmedia.tools.partx import partition_path

__all__ = ["partition_path"]

# From linux/fs.h
BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKPBSZGET = 0x127B
BLKFLSBUF = 0x1261
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F
BLKRRPART = 0x125F


def is_block(path: str | Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def open_device(path: str | Path, write: bool = False) -> int:
    """Open a disk (or an image file standing in for one). Missing paths are a one-line error."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC
    if write and is_block(path):
        # O_EXCL on a block device fails with EBUSY while anything has it mounted or claimed:
        # the kernel's own last line of defence against writing under a live filesystem.
        flags |= os.O_EXCL
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise BootmediaError(f"{path}: no such disk") from None
    except OSError as exc:
        if exc.errno == 16:
            raise BootmediaError(f"{path}: device is busy (mounted or in use)") from None
        raise BootmediaError(f"{path}: cannot open: {exc.strerror}") from None


def size_of(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return int(struct.unpack("Q", buf)[0])
    return st.st_size


def sector_sizes(fd: int) -> tuple[int, int]:
    """(logical, physical) sector size; 512/512 for a regular file."""
    if not stat.S_ISBLK(os.fstat(fd).st_mode):
        return 512, 512
    logical = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    physical = struct.unpack("i", fcntl.ioctl(fd, BLKPBSZGET, b"\0" * 4))[0]
    return int(logical), int(physical)


def flush(fd: int) -> None:
    """fsync, then drop the kernel's cached copy so the next read really comes from the device."""
    os.fsync(fd)
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        fcntl.ioctl(fd, BLKFLSBUF, 0)
    else:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset+length) read as zeros, cheaply where the device allows it."""
    if length <= 0:
        return
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        try:
            fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))
            return
        except OSError:
            pass  # not aligned or not supported: write zeros below
    zeros = bytes(min(length, 4 << 20))
    pos, end = offset, offset + length
    while pos < end:
        n = os.pwrite(fd, zeros[: min(len(zeros), end - pos)], pos)
        pos += n


def discard(fd: int, offset: int = 0, length: int | None = None) -> None:
    """BLKDISCARD the range (whole device by default). Raises OSError where unsupported."""
    if length is None:
        length = size_of(fd) - offset
    fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", offset, length))


def sysfs_dir(path: str | Path) -> Path:
    """/sys/dev/block/MAJ:MIN for a block device node."""
    st = os.stat(path)
    return Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}").resolve()


def rescan(dev: str) -> None:
    """Make the kernel's partition nodes match the table (bootmedia.tools.partx). An image
    file has no kernel partitions to update: nothing to do."""
    if is_block(dev):
        partx.reread(dev, timeout=2.5)
