"""Pack files: append-only files of zstd-compressed chunks, each record self-describing.

A pack can be read without any index: a header, then records of
    magic "BMCR" | blake3 (32) | raw length u32 | stored length u32 | flags u32 | crc32 of the header
followed by the zstd frame. So the repository index is a cache that can always be rebuilt from
the packs alone (see docs/FORMAT.md).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
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


# ---- format version 2: frames of blocks ---------------------------------------------------
#
# header   8 bytes  magic "BMPACK\0\2", 16 bytes pack uuid
# record   "BMFR" | block count u32 | raw length u32 | stored length u32 | flags u32 | crc32
#          block table: count x (BLAKE3-256 32 bytes | length u32), then its crc32
#          the zstd frame of the blocks' bytes, one after another (stored length bytes)

PACK2_MAGIC = b"BMPACK\x00\x02"
FRAME_MAGIC = b"BMFR"
FRAME_HEAD = struct.Struct("<4sIIII")  # magic, count, raw_len, stored_len, flags
FRAME_HEAD_SIZE = FRAME_HEAD.size + 4
BLOCK_ENTRY = struct.Struct("<32sI")
MAX_FRAME_BLOCKS = 4096
MAX_FRAME_RAW = 64 << 20


@dataclass(frozen=True)
class Frame:
    """One v2 record: where it starts in its pack and what it holds."""

    offset: int  # of the record header within the pack
    blocks: tuple[tuple[bytes, int], ...]  # (hash, length), in frame order
    raw_len: int
    stored_len: int
    flags: int

    @property
    def header_len(self) -> int:
        return FRAME_HEAD_SIZE + BLOCK_ENTRY.size * len(self.blocks) + 4

    @property
    def length(self) -> int:
        """The whole record: header, block table and payload."""
        return self.header_len + self.stored_len

    @property
    def end(self) -> int:
        return self.offset + self.length

    def starts(self) -> Iterator[tuple[bytes, int, int]]:
        """(hash, offset in the decompressed frame, length) of each block."""
        pos = 0
        for digest, n in self.blocks:
            yield digest, pos, n
            pos += n


def frame_header(blocks: list[tuple[bytes, int]], stored_len: int, flags: int) -> bytes:
    raw = sum(n for _, n in blocks)
    head = FRAME_HEAD.pack(FRAME_MAGIC, len(blocks), raw, stored_len, flags)
    table = b"".join(BLOCK_ENTRY.pack(d, n) for d, n in blocks)
    return head + struct.pack("<I", zlib.crc32(head)) + table + struct.pack("<I", zlib.crc32(table))


def parse_frame_head(buf: bytes | memoryview) -> tuple[int, int, int, int] | None:
    """(count, raw_len, stored_len, flags) from the fixed part of a record header, or None
    when it is not one (bad magic, CRC or bounds)."""
    if len(buf) < FRAME_HEAD_SIZE:
        return None
    head = bytes(buf[: FRAME_HEAD.size])
    (crc,) = struct.unpack_from("<I", buf, FRAME_HEAD.size)
    if zlib.crc32(head) != crc:
        return None
    magic, count, raw_len, stored_len, flags = FRAME_HEAD.unpack(head)
    if (
        magic != FRAME_MAGIC
        or not 1 <= count <= MAX_FRAME_BLOCKS
        or not 1 <= raw_len <= MAX_FRAME_RAW
        or stored_len > raw_len + (raw_len >> 7) + 1024
        or flags & ~FLAG_ZSTD
    ):
        return None
    return count, raw_len, stored_len, flags


def parse_frame(buf: bytes | memoryview, offset: int) -> Frame | None:
    """The record whose header and block table start buf, or None when damaged."""
    fixed = parse_frame_head(buf)
    if fixed is None:
        return None
    count, raw_len, stored_len, flags = fixed
    table_end = FRAME_HEAD_SIZE + BLOCK_ENTRY.size * count
    if len(buf) < table_end + 4:
        return None
    table = bytes(buf[FRAME_HEAD_SIZE:table_end])
    (crc,) = struct.unpack_from("<I", buf, table_end)
    if zlib.crc32(table) != crc:
        return None
    blocks = tuple(BLOCK_ENTRY.iter_unpack(table))
    if sum(n for _, n in blocks) != raw_len or any(n == 0 for _, n in blocks):
        return None
    return Frame(offset, blocks, raw_len, stored_len, flags)


def decode_frame(
    frame: Frame, payload: bytes | memoryview, dctx: zstandard.ZstdDecompressor
) -> bytes:
    """A frame's decompressed bytes (zstd's content checksum checked). ImageError if damaged;
    the block hashes are checked by the caller, for the blocks it uses."""
    if len(payload) != frame.stored_len:
        raise ImageError("truncated frame")
    if frame.flags & FLAG_ZSTD:
        try:
            data = dctx.decompress(payload, max_output_size=frame.raw_len)
        except zstandard.ZstdError as exc:
            raise ImageError(f"frame does not decompress ({exc})") from None
    else:
        data = bytes(payload)
    if len(data) != frame.raw_len:
        raise ImageError("frame has the wrong length")
    return data


def decode_frame_into(
    frame: Frame,
    payload: bytes | memoryview,
    dctx: zstandard.ZstdDecompressor,
    out: memoryview,
) -> memoryview:
    """decode_frame() into the caller's buffer (an aligned one, for O_DIRECT writes): the
    frame's bytes as a view of out. zstd's content checksum is checked, as there."""
    if len(payload) != frame.stored_len:
        raise ImageError("truncated frame")
    want = frame.raw_len
    if len(out) < want:
        raise ImageError("frame larger than its index entry says")
    if not frame.flags & FLAG_ZSTD:
        out[:want] = payload
        return out[:want]
    try:
        reader = dctx.stream_reader(payload, read_across_frames=False)
        got = 0
        while got < want:
            n = reader.readinto(out[got:want])
            if not n:
                break
            got += n
        # One byte more must be the end: a frame longer than it says is damaged, and the
        # checksum is only checked once the frame's end has been read.
        if got != want or reader.read(1):
            raise ImageError("frame has the wrong length")
    except zstandard.ZstdError as exc:
        raise ImageError(f"frame does not decompress ({exc})") from None
    return out[:want]


def check_frame_blocks(frame: Frame, data: bytes) -> None:
    view = memoryview(data)
    for digest, start, n in frame.starts():
        if chunk_hash(view[start : start + n]) != digest:
            raise ImageError("block checksum mismatch")


WRITEBACK = 32 << 20  # bytes appended between two writeback starts (sync_file_range)
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux), or None where there is none."""
    try:
        # the process's own symbols (libc among them): no search, no ldconfig run
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing these bytes to the disk now, without waiting for it
    (sync_file_range(SYNC_FILE_RANGE_WRITE)): a pack's bytes then go out while the capture
    goes on, instead of all at its final fsync, and the page cache does not fill with them.
    Only a hint: the fsync that seals the pack is what makes it durable. False where the
    filesystem cannot (a network or FUSE one may refuse: EINVAL, ESPIPE, ENOSYS,
    EOPNOTSUPP) or libc has
    no such call; any other error is raised (EIO: the disk failed)."""
    fn = _sync_file_range()
    if fn is None:
        return False
    if fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ESPIPE, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err))


class PackWriter2:
    """Appends frame records to one v2 pack. Not thread-safe: the ordered writer owns it.
    Every WRITEBACK bytes it starts the kernel writing what it appended (start_writeback), so
    the fsync that seals the pack has little left to wait for."""

    def __init__(self, directory: Path, max_size: int) -> None:
        self.id = uuid.uuid4()
        self.name = f"pack-{self.id.hex}.bmp"
        self.path = directory / self.name
        self.max_size = max_size
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.size = 0
        self._flushed = 0  # bytes whose writeback was started
        self._writeback = True  # until the filesystem refuses it
        self._write(PACK_HEADER.pack(PACK2_MAGIC, self.id.bytes))

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)

    def fits(self, length: int) -> bool:
        return self.size + length <= self.max_size or self.size <= PACK_HEADER.size

    def append(
        self,
        blocks: list[tuple[bytes, int]],
        payload: bytes,
        flags: int,
        head: bytes | None = None,
    ) -> Frame:
        """One frame record. `head`: its frame_header(), when a worker built it already."""
        if head is None:
            head = frame_header(blocks, len(payload), flags)
        frame = Frame(self.size, tuple(blocks), sum(n for _, n in blocks), len(payload), flags)
        n = os.writev(self._fd, [head, payload])  # one call, no copy to join them
        if n < len(head) + len(payload):  # a short write: the rest, the slow way
            rest = memoryview(head + payload)[n:]
            while rest:
                rest = rest[os.write(self._fd, rest) :]
        self.size += len(head) + len(payload)
        if self._writeback and self.size - self._flushed >= WRITEBACK:
            self._writeback = start_writeback(self._fd, self._flushed, self.size - self._flushed)
            self._flushed = self.size
        return frame

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def pack_version(head: bytes) -> int:
    """1 or 2 from a pack's first bytes; ImageError for anything else."""
    if len(head) < PACK_HEADER.size or head[:6] != PACK_MAGIC[:6]:
        raise ImageError("not a bootmedia pack")
    if head[:8] == PACK_MAGIC:
        return 1
    if head[:8] == PACK2_MAGIC:
        return 2
    raise ImageError(f"unknown pack format version {head[6:8].hex()}")


@dataclass(frozen=True)
class Damage:
    """A stretch of a pack that holds no readable record."""

    offset: int
    length: int
    why: str


def scan_frames(
    read: Callable[[int, int], bytes], size: int, verify: bool = True
) -> Iterator[Frame | Damage]:
    """Every record of a v2 pack, in order. After a damaged record the scan resynchronises on
    the next record magic whose header, table and (with verify) frame check, and reports the
    bytes skipped as Damage, so one bad record costs only itself."""
    dctx = zstandard.ZstdDecompressor()
    pos = PACK_HEADER.size
    bad_from = -1
    bad_why = ""
    window = 4 << 20
    while pos < size:
        head = read(pos, min(FRAME_HEAD_SIZE + BLOCK_ENTRY.size * MAX_FRAME_BLOCKS + 4, size - pos))
        frame = parse_frame(head, pos)
        why = "damaged record header"
        if frame is not None:
            if frame.end > size:
                frame, why = None, "record cut short (interrupted write)"
            elif verify:
                payload = read(pos + frame.header_len, frame.stored_len)
                try:
                    check_frame_blocks(frame, decode_frame(frame, payload, dctx))
                except ImageError as exc:
                    frame, why = None, f"damaged frame ({exc})"
        if frame is not None:
            if bad_from >= 0:
                yield Damage(bad_from, pos - bad_from, bad_why)
                bad_from = -1
            yield frame
            pos = frame.end
            continue
        if bad_from < 0:
            bad_from, bad_why = pos, why
        # resynchronise: the next magic after this position
        nxt = -1
        scan = pos + 1
        while scan < size:
            buf = read(scan, min(window, size - scan))
            i = buf.find(FRAME_MAGIC)
            if i >= 0:
                nxt = scan + i
                break
            scan += max(1, len(buf) - len(FRAME_MAGIC) + 1)
        if nxt < 0:
            break
        pos = nxt
    if bad_from >= 0:
        yield Damage(bad_from, size - bad_from, bad_why)


def scan_pack_resync(path: Path) -> Iterator[Record | Damage]:
    """Format 1, for repair and collection: every good record of a pack and every damaged
    stretch between them. After damage the scan resynchronises on the next record magic whose
    header CRC holds and whose payload decompresses to its hash, so one bad record costs only
    itself (round 1 stopped there and lost every record after it). The pack is mapped, not
    read into memory."""
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < PACK_HEADER.size or f.read(len(PACK_MAGIC)) != PACK_MAGIC:
            yield Damage(0, size, "no format-1 pack header")
            return
        if size == PACK_HEADER.size:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos, bad = PACK_HEADER.size, -1
            while pos < size:
                record = _record_at(mm, pos, size, dctx)
                if record is None:
                    if bad < 0:
                        bad = pos
                    found = mm.find(RECORD_MAGIC, pos + 1)
                    pos = size if found < 0 else found
                    continue
                if bad >= 0:
                    yield Damage(bad, pos - bad, "no readable record here")
                    bad = -1
                yield record
                pos = record.end
            if bad >= 0:
                yield Damage(bad, size - bad, "no readable record here (or a torn end)")


def _record_at(
    mm: mmap.mmap, pos: int, size: int, dctx: zstandard.ZstdDecompressor
) -> Record | None:
    if pos + RECORD_SIZE > size:
        return None
    record = parse_record_header(mm[pos : pos + RECORD_SIZE], pos + RECORD_SIZE)
    if record is None or record.end > size:
        return None
    try:
        decode(record, mm[record.offset : record.end], dctx)
    except ImageError:
        return None
    return record
