"""Pack files: append-only files of zstd-compressed chunks, each record self-describing.

A pack can be read without any index: a header, then records of
    magic "BMCR" | blake3 (32) | raw length u32 | stored length u32 | flags u32 | crc32 of the header
followed by the zstd frame. So the repository index is a cache that can always be rebuilt from
the packs alone (see docs/FORMAT.md).
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import zstandard

from bootmedia.errors import ImageError

PACK_MAGIC = b"BMPACK\x00\x01"  # magic + format version 1
PACK_HEADER = struct.Struct("<8s16s")  # magic, pack uuid
RECORD_MAGIC = b"BMCR"
RECORD = struct.Struct("<4s32sIII")  # magic, hash, raw_len, stored_len, flags
RECORD_SIZE = RECORD.size + 4  # + crc32 of the packed header
FLAG_ZSTD = 1


def chunk_hash(data: bytes | bytearray | memoryview) -> bytes:
    return blake3.blake3(data).digest()


@dataclass(frozen=True)
class Record:
    hash: bytes
    offset: int  # of the payload within the pack
    raw_len: int
    stored_len: int
    flags: int

    @property
    def end(self) -> int:
        return self.offset + self.stored_len


def pack_record_header(digest: bytes, raw_len: int, stored_len: int, flags: int) -> bytes:
    head = RECORD.pack(RECORD_MAGIC, digest, raw_len, stored_len, flags)
    return head + struct.pack("<I", zlib.crc32(head))


def parse_record_header(buf: bytes, payload_offset: int) -> Record | None:
    """The record whose header is buf, or None when it is not a valid header."""
    if len(buf) != RECORD_SIZE:
        return None
    head, crc = buf[: RECORD.size], struct.unpack("<I", buf[RECORD.size :])[0]
    if zlib.crc32(head) != crc:
        return None
    magic, digest, raw_len, stored_len, flags = RECORD.unpack(head)
    if magic != RECORD_MAGIC:
        return None
    return Record(digest, payload_offset, raw_len, stored_len, flags)


def decode(record: Record, payload: bytes, dctx: zstandard.ZstdDecompressor) -> bytes:
    """Decompress a payload and check it against its name. Raises ImageError when damaged."""
    if len(payload) != record.stored_len:
        raise ImageError("truncated chunk")
    if record.flags & FLAG_ZSTD:
        try:
            data = dctx.decompress(payload, max_output_size=record.raw_len)
        except zstandard.ZstdError as exc:
            raise ImageError(f"chunk does not decompress ({exc})") from None
    else:
        data = payload
    if len(data) != record.raw_len or chunk_hash(data) != record.hash:
        raise ImageError("chunk checksum mismatch")
    return data


class PackWriter:
    """Appends records to one pack file. Not thread-safe: the ordered writer owns it."""

    def __init__(self, directory: Path, max_size: int) -> None:
        self.id = uuid.uuid4()
        self.name = f"pack-{self.id.hex}.bmp"
        self.path = directory / self.name
        self.max_size = max_size
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.size = 0
        self._write(PACK_HEADER.pack(PACK_MAGIC, self.id.bytes))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)

    def fits(self, stored_len: int) -> bool:
        return (
            self.size + RECORD_SIZE + stored_len <= self.max_size or self.size <= PACK_HEADER.size
        )

    def append(self, digest: bytes, raw_len: int, payload: bytes, flags: int) -> Record:
        self._write(pack_record_header(digest, raw_len, len(payload), flags))
        record = Record(digest, self.size, raw_len, len(payload), flags)
        self._write(payload)
        return record

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def scan_pack(path: Path, start: int = 0, verify: bool = True) -> Iterator[Record]:
    """Yield the valid records of a pack from `start` (0 = from the header) until the first
    damaged or truncated one. With verify, each payload is decompressed and hashed, so a
    record torn by a crash or a full disk is never taken for a good one."""
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as f:
        if start == 0:
            header = f.read(PACK_HEADER.size)
            if len(header) != PACK_HEADER.size or PACK_HEADER.unpack(header)[0] != PACK_MAGIC:
                return
            start = PACK_HEADER.size
        f.seek(start)
        pos = start
        while True:
            record = parse_record_header(f.read(RECORD_SIZE), pos + RECORD_SIZE)
            if record is None:
                return
            payload = f.read(record.stored_len)
            if verify:
                try:
                    decode(record, payload, dctx)
                except ImageError:
                    return
            elif len(payload) != record.stored_len:
                return
            yield record
            pos = record.end


def read_pack_header(path: Path) -> uuid.UUID:
    with open(path, "rb") as f:
        header = f.read(PACK_HEADER.size)
    if len(header) != PACK_HEADER.size:
        raise ImageError(f"{path.name}: truncated pack header")
    magic, raw = PACK_HEADER.unpack(header)
    if magic[:6] != PACK_MAGIC[:6]:
        raise ImageError(f"{path.name}: not a bootmedia pack")
    if magic != PACK_MAGIC:
        raise ImageError(f"{path.name}: unknown pack format version {magic[6:].hex()}")
    return uuid.UUID(bytes=raw)
