"""Pack index files (format 2): `packs/pack-<uuid>.idx`, written once when a pack is sealed.

    header   8 bytes  magic "BMIDX\0\2\0"
            16 bytes  the pack's uuid
             8 bytes  entry count (u64)
    entries  sorted by hash, 56 bytes each:
            32 bytes  BLAKE3-256 of the block
             8 bytes  offset of its frame record in the pack (u64)
             4 bytes  the record's whole length: header, block table and zstd frame (u32)
             4 bytes  the block's offset inside the decompressed frame (u32)
             4 bytes  the block's length (u32)
             4 bytes  the frame's decompressed length (u32)
    trailer 32 bytes  BLAKE3-256 of everything before it

Readers need only these files: the local SQLite cache is rebuilt from them. A damaged or
truncated file is refused as a whole (its pack can be scanned again: records describe
themselves).
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterable
from itertools import starmap
from pathlib import Path
from typing import NamedTuple

import blake3

from bootmedia.errors import ImageError

IDX_MAGIC = b"BMIDX\x00\x02\x00"
IDX_HEAD = struct.Struct("<8s16sQ")
IDX_ENTRY = struct.Struct("<32sQIIII")
IDX_TRAILER = 32
MAX_IDX = 1 << 30


class IdxEntry(NamedTuple):
    """One block's row, in IDX_ENTRY's field order (so a row packs as it is). A tuple, not a
    dataclass: a capture makes one per new block on its one serial thread."""

    hash: bytes
    frame_offset: int
    frame_len: int
    in_frame: int
    length: int
    frame_raw: int


def encode_idx(pack_id: uuid.UUID, entries: Iterable[IdxEntry]) -> bytes:
    """One .idx file's bytes. A hash stored twice in a pack keeps its first location."""
    best: dict[bytes, IdxEntry] = {}
    for e in entries:
        best.setdefault(e.hash, e)
    rows = sorted(best.values())  # by hash: each hash is there once, so it decides
    body = IDX_HEAD.pack(IDX_MAGIC, pack_id.bytes, len(rows)) + b"".join(
        starmap(IDX_ENTRY.pack, rows)
    )
    return body + blake3.blake3(body).digest()


def write_idx(path: Path, pack_id: uuid.UUID, entries: Iterable[IdxEntry]) -> None:
    """Written beside the pack through a temporary name, fsynced, renamed, directory fsynced:
    an .idx either exists whole or not at all."""
    write_idx_data(path, encode_idx(pack_id, entries))


def write_idx_data(path: Path, data: bytes) -> None:
    """write_idx() of bytes encode_idx() made."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def parse_idx(data: bytes, name: str) -> tuple[uuid.UUID, list[IdxEntry]]:
    """The entries of an .idx file's bytes. ImageError naming the file when it is damaged."""
    if len(data) < IDX_HEAD.size + IDX_TRAILER:
        raise ImageError(f"{name}: truncated pack index")
    body, trailer = data[:-IDX_TRAILER], data[-IDX_TRAILER:]
    magic, raw_id, count = IDX_HEAD.unpack_from(body)
    if magic[:5] != IDX_MAGIC[:5]:
        raise ImageError(f"{name}: not a bootmedia pack index")
    if magic != IDX_MAGIC:
        raise ImageError(f"{name}: unknown pack index version {magic[5:].hex()}")
    if len(body) != IDX_HEAD.size + count * IDX_ENTRY.size:
        raise ImageError(f"{name}: pack index has the wrong length")
    if blake3.blake3(body).digest() != trailer:
        raise ImageError(f"{name}: pack index is damaged (checksum mismatch)")
    out = []
    prev = b""
    for digest, off, flen, inf, n, raw in IDX_ENTRY.iter_unpack(memoryview(body)[IDX_HEAD.size :]):
        if digest <= prev or n == 0 or inf + n > raw or raw > (64 << 20) or flen == 0:
            raise ImageError(f"{name}: pack index has a bad entry")
        prev = digest
        out.append(IdxEntry(digest, off, flen, inf, n, raw))
    return uuid.UUID(bytes=raw_id), out
