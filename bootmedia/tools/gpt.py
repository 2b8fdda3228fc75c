"""GPT partition names, written into the table as the GPT holds them.

sfdisk takes names through its script, converts them itself, and cannot take every name a GPT
can hold (36 UTF-16 code units, any of them outside the Basic Multilingual Plane). So after
sfdisk wrote the table, the names are put into both entry arrays (primary and backup) here,
with both headers' CRC-32s recomputed, and the caller reads the table back with sfdisk -J.
"""

from __future__ import annotations

import os
import struct
import zlib

from bootmedia.errors import BootmediaError, ImageError

SIGNATURE = b"EFI PART"
NAME_OFFSET, NAME_BYTES = 56, 72  # in each partition entry


def encode_name(name: str) -> bytes:
    raw = name.encode("utf-16-le")
    if len(raw) > NAME_BYTES:
        raise ImageError(f"GPT name {name!r} is {len(raw) // 2} UTF-16 units; a GPT entry holds 36")
    return raw.ljust(NAME_BYTES, b"\0")


def _patch(fd: int, header_lba: int, ss: int, names: dict[int, bytes]) -> int:
    """Put names into the entry array of the header at header_lba; returns the other
    header's LBA (the backup's, read from this header)."""
    header = bytearray(os.pread(fd, ss, header_lba * ss))
    if header[:8] != SIGNATURE:
        raise BootmediaError(f"no GPT header at LBA {header_lba}")
    (size,) = struct.unpack_from("<I", header, 12)
    (other,) = struct.unpack_from("<Q", header, 32)
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if not 92 <= size <= ss or entry_size < 128 or count * entry_size > 1 << 20:
        raise BootmediaError(f"GPT header at LBA {header_lba} is malformed")
    entries = bytearray(os.pread(fd, count * entry_size, entries_lba * ss))
    for number, raw in names.items():
        if not 1 <= number <= count:
            raise BootmediaError(f"GPT has no entry {number}")
        at = (number - 1) * entry_size + NAME_OFFSET
        entries[at : at + NAME_BYTES] = raw
    struct.pack_into("<I", header, 88, zlib.crc32(entries))
    struct.pack_into("<I", header, 16, 0)
    struct.pack_into("<I", header, 16, zlib.crc32(header[:size]))
    os.pwrite(fd, entries, entries_lba * ss)
    os.pwrite(fd, header, header_lba * ss)
    return int(other)


def set_names(device: str, names: dict[int, str], sector_size: int) -> None:
    """Write each partition's name (partition number -> name) into both GPTs."""
    raw = {n: encode_name(name) for n, name in names.items()}
    if not raw:
        return
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        backup = _patch(fd, 1, sector_size, raw)
        _patch(fd, backup, sector_size, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
