"""The read-back of a shrunk (or cloned) filesystem keeps a bounded number of hashes: pieces are
read back in windows as the copy goes, not all at the end (one hash per piece was 25 MB per TB)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from bootmedia.layout import shrink
from bootmedia.progress import Reporter
from tests.disktools import is_direct

KiB = 1 << 10


def test_copy_ranges_reads_back_in_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pieces stand in for a large disk: 4096 pieces of 16 KiB are what 16 GiB is in 4 MiB.
    monkeypatch.setattr(shrink, "PIECE", 16 * KiB)
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(64 << 20)
    src.write_bytes(data)
    ranges = [(0, 32 << 20), (40 << 20, 24 << 20)]
    fd = os.open(dst, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 72 << 20)
        tracemalloc.start()
        left = shrink.copy_ranges(str(src), ranges, fd, 8 << 20, Reporter(), "p2", verify=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(left) < shrink.WINDOW, "only the last window's hashes are left to check"
        # All 3584 hashes held to the end took 641 KB here; a window of them and one piece, 81 KB.
        assert peak < 200 * KiB, f"peak {peak} bytes while copying"
        os.fsync(fd)
        shrink.verify_ranges(fd, 8 << 20, left, Reporter(), "p2")
    finally:
        os.close(fd)
    out = dst.read_bytes()
    assert out[8 << 20 : 40 << 20] == data[: 32 << 20]
    assert out[48 << 20 : 72 << 20] == data[40 << 20 : 64 << 20]
    assert out[40 << 20 : 48 << 20] == bytes(8 << 20), "nothing outside the ranges is written"


def test_copy_ranges_writes_aligned_pieces_with_o_direct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's aligned pieces go to the target through O_DIRECT from aligned buffers (no
    copy into the page cache); an unaligned tail goes buffered; every byte lands."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(20 << 20)
    src.write_bytes(data)
    writes: list[tuple[bool, int]] = []
    real = shrink._pwrite_all

    def recording(fd, view, pos):
        writes.append((is_direct(fd), len(view)))
        return real(fd, view, pos)

    monkeypatch.setattr(shrink, "_pwrite_all", recording)
    ranges = [(0, 12 << 20), (13 << 20, (7 << 20) - 1000)]  # the last piece ends unaligned
    fd = os.open(dst, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 24 << 20)
        left = shrink.copy_ranges(str(src), ranges, fd, 4 << 20, Reporter(), "p1", verify=True)
        os.fsync(fd)
        shrink.verify_ranges(fd, 4 << 20, left, Reporter(), "p1")
    finally:
        os.close(fd)
    assert writes and all(d for d, n in writes[:-1]) and not writes[-1][0], writes
    out = dst.read_bytes()
    assert out[4 << 20 : 16 << 20] == data[: 12 << 20]
    assert out[17 << 20 : (24 << 20) - 1000] == data[13 << 20 : (20 << 20) - 1000]
