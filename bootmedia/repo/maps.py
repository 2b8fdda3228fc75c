"""Extent maps: which chunk goes where inside one area (a partition, or a boot area).

A map is a binary file, streamed on write and on read, so a 4 TB partition's map never has to
sit in memory: a header then fixed 44-byte records (offset u64, length u32, blake3 32 bytes).
A hash of 32 zero bytes means "this range is zeros": nothing is stored for it.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import blake3

from bootmedia.errors import ImageError
from bootmedia.repo.paths import is_plain_name

MAP_MAGIC = b"BMMAP\x00\x01\x00"
ENTRY = struct.Struct("<QI32s")
ZERO_HASH = bytes(32)


class Extent(NamedTuple):
    """A NamedTuple, not a dataclass: one per 16 KiB block, made fast (serial GIL work)."""

    offset: int  # bytes from the start of the area
    length: int
    hash: bytes  # ZERO_HASH for a run of zeros

    @property
    def is_zero(self) -> bool:
        return self.hash == ZERO_HASH


class MapWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._hash = blake3.blake3()
        self.count = 0
        self._put(MAP_MAGIC)

    def _put(self, data: bytes) -> None:
        self._f.write(data)
        self._hash.update(data)

    def add(self, offset: int, length: int, digest: bytes) -> None:
        self._put(ENTRY.pack(offset, length, digest))
        self.count += 1

    def add_packed(self, data: bytes, count: int) -> None:
        """`count` entries packed by the caller (ENTRY after ENTRY): one write for many."""
        self._put(data)
        self.count += count

    def close(self) -> str:
        """Flush to disk; returns the map's blake3 for the manifest."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return self._hash.hexdigest()


def read_map(path: Path, expected_hash: str | None = None) -> Iterator[Extent]:
    """Stream a map's extents. The whole file is checked against the manifest's hash first,
    so a damaged map is refused before anything is written from it."""
    if expected_hash is not None:
        check_map(path, expected_hash)
    f = _open(path)
    with f:
        if f.read(len(MAP_MAGIC)) != MAP_MAGIC:
            raise ImageError(
                f"{path.parent.name}/{path.name}: not an extent map of a known version"
            )
        while True:
            buf = f.read(ENTRY.size * 4096)
            if not buf:
                return
            if len(buf) % ENTRY.size:
                raise ImageError(f"{path.parent.name}/{path.name}: truncated extent map")
            for offset, length, digest in ENTRY.iter_unpack(buf):
                yield Extent(offset, length, digest)


def check_map(path: Path, expected_hash: str) -> None:
    h = blake3.blake3()
    with _open(path) as f:
        while buf := f.read(1 << 20):
            h.update(buf)
    if h.hexdigest() != expected_hash:
        raise ImageError(
            f"{path.parent.name}/{path.name}: extent map is damaged (checksum mismatch)"
        )


def _open(path: Path) -> BinaryIO:
    """A map for reading: a plain name, a regular file, never through a symlink (which could
    lead outside the repository) and never a FIFO or a device (an endless read)."""
    where = f"{path.parent.name}/{path.name}"
    if not is_plain_name(path.name):
        raise ImageError(f"{where}: refusing an extent map that is not a plain file name")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError(f"{path.parent.name}: missing extent map {path.name}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(
                f"{where}: extent map is a symbolic link: refused (it could lead outside the "
                "repository)"
            ) from None
        raise ImageError(f"{where}: extent map cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"{where}: extent map is not a regular file")
    return os.fdopen(fd, "rb")
