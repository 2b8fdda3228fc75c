"""Read a sample of the disk back after a wipe: a wipe is only "done" when the bytes say so.

The sample is the first and the last MiB (partition tables, GPT backup, most boot sectors)
plus a spread of random blocks. What counts as a pass depends on the method:
- zeros:   zero, discard and quick must read back as zeros;
- pattern: random must read back exactly the keystream it wrote;
- changed: hardware erases (NVMe format/sanitize, ATA erase) may leave zeros, ones or noise,
           so every sampled block that held data before must read differently afterwards.
           That is the check that catches an erase which silently did nothing.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import blake3

from bootmedia.blockdev import flush
from bootmedia.progress import human_bytes

MiB = 1 << 20
EDGE = MiB  # the first and last MiB, read whole
BLOCK = 64 * 1024  # each random sample
DEFAULT_SAMPLES = 256  # 16 MiB of random samples: seconds on any disk


@dataclass(frozen=True)
class Verification:
    method: str  # "zeros", "pattern", "changed", "signatures"
    passed: bool | None  # None: inconclusive (nothing to compare against)
    blocks: int
    bytes_read: int
    seed: int
    failures: tuple[str, ...] = ()
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_ranges(size: int, samples: int, seed: int, align: int = 4096) -> list[tuple[int, int]]:
    """(offset, length) pairs: first MiB, last MiB, then `samples` random aligned blocks."""
    edge = min(EDGE, size)
    ranges = [(0, edge)]
    if size <= edge:
        return ranges  # the first "MiB" is the whole disk
    ranges.append((size - edge, edge))
    rng = random.Random(seed)
    slots = (size - BLOCK) // align
    if slots > 0:
        for _ in range(samples):
            ranges.append((rng.randrange(slots + 1) * align, BLOCK))
    return ranges


def read_ranges(path: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Drop the page cache first: the check must read the device, not what we just wrote.
        flush(fd)
        return [os.pread(fd, length, offset) for offset, length in ranges]
    finally:
        os.close(fd)


def fingerprint(path: str, ranges: list[tuple[int, int]]) -> list[str]:
    """BLAKE3 of each sampled block before a hardware erase, to compare with afterwards."""
    return [blake3.blake3(block).hexdigest() for block in read_ranges(path, ranges)]


def _where(offset: int) -> str:
    return f"offset {offset} ({human_bytes(offset)})"


def check_zeros(path: str, ranges: list[tuple[int, int]], seed: int) -> Verification:
    blocks = read_ranges(path, ranges)
    bad = [
        f"{_where(off)}: not zero"
        for (off, _), b in zip(ranges, blocks, strict=True)
        if b.strip(b"\0")
    ]
    total = sum(len(b) for b in blocks)
    summary = (
        f"{len(blocks)} blocks ({human_bytes(total)}) read back as zeros"
        if not bad
        else f"{len(bad)} of {len(blocks)} sampled blocks still hold data"
    )
    return Verification("zeros", not bad, len(blocks), total, seed, tuple(bad[:10]), summary)


def check_pattern(
    path: str, ranges: list[tuple[int, int]], seed: int, expected: Callable[[int, int], bytes]
) -> Verification:
    blocks = read_ranges(path, ranges)
    bad = [
        f"{_where(off)}: differs from the written pattern"
        for (off, length), b in zip(ranges, blocks, strict=True)
        if b != expected(off, length)
    ]
    total = sum(len(b) for b in blocks)
    summary = (
        f"{len(blocks)} blocks ({human_bytes(total)}) match the random pattern written"
        if not bad
        else f"{len(bad)} of {len(blocks)} sampled blocks do not hold the pattern written"
    )
    return Verification("pattern", not bad, len(blocks), total, seed, tuple(bad[:10]), summary)


def _uniform(block: bytes) -> bool:
    # A block of one repeated byte (zeros, 0xff) carries no data: an unchanged one proves nothing.
    return not block or block.count(block[:1]) == len(block)


def check_changed(
    path: str, ranges: list[tuple[int, int]], seed: int, before: list[bytes]
) -> Verification:
    after = read_ranges(path, ranges)
    total = sum(len(b) for b in after)
    informative = [i for i, b in enumerate(before) if not _uniform(b)]
    zeros = all(not b.strip(b"\0") for b in after)
    if not informative:
        return Verification(
            "changed",
            None,
            len(after),
            total,
            seed,
            (),
            "inconclusive: the sampled blocks were already blank before the wipe"
            + ("; they read as zeros now" if zeros else ""),
        )
    bad = [
        f"{_where(ranges[i][0])}: still holds its old content"
        for i in informative
        if before[i] == after[i]
    ]
    if bad:
        summary = (
            f"{len(bad)} of {len(informative)} sampled blocks that held data are unchanged: "
            "the erase did not erase them"
        )
    else:
        tail = "; the disk reads as zeros" if zeros else "; the disk reads as noise (crypto erase)"
        summary = f"all {len(informative)} sampled blocks that held data changed{tail}"
    return Verification("changed", not bad, len(after), total, seed, tuple(bad[:10]), summary)


def keystream(key: bytes) -> Callable[[int, int], bytes]:
    """The random method's bytes: BLAKE3 in XOF mode, seekable, so any block can be recomputed."""
    hasher = blake3.blake3(key=key)
    return lambda offset, length: hasher.digest(length=length, seek=offset)
