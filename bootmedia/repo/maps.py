"""Extent maps: which chunk goes where inside one area (a partition, or a boot area).

A map is a binary file, streamed on write and on read, so a 4 TB partition's map never has to
sit in memory: a header then fixed 44-byte records (offset u64, length u32, blake3 32 bytes).
A hash of 32 zero bytes means "this range is zeros": nothing is stored for it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3

from bootmedia.errors import ImageError

MAP_MAGIC = b"BMMAP\x00\x01\x00"
ENTRY = struct.Struct("<QI32s")
ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class Extent:
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
    try:
        f = open(path, "rb")  # noqa: SIM115 - generator closes it
    except FileNotFoundError:
        raise ImageError(f"{path.parent.name}: missing extent map {path.name}") from None
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
    try:
        with open(path, "rb") as f:
            while buf := f.read(1 << 20):
                h.update(buf)
    except FileNotFoundError:
        raise ImageError(f"{path.parent.name}: missing extent map {path.name}") from None
    if h.hexdigest() != expected_hash:
        raise ImageError(
            f"{path.parent.name}/{path.name}: extent map is damaged (checksum mismatch)"
        )
