"""The read-back checks on plain files (no root): what counts as erased, and what does not."""

from __future__ import annotations

import os
from pathlib import Path

from bootmedia.wipe import verify
from bootmedia.wipe.report import NOT_VERIFIED, OK, WipeReport

MiB = 1 << 20
SIZE = 8 * MiB


def image(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return str(path)


def test_sample_covers_both_ends_and_is_reproducible() -> None:
    ranges = verify.sample_ranges(SIZE, 16, seed=42)
    assert ranges[0] == (0, MiB) and ranges[1] == (SIZE - MiB, MiB)
    assert len(ranges) == 18
    assert all(off % 4096 == 0 and off + n <= SIZE for off, n in ranges)
    assert verify.sample_ranges(SIZE, 16, seed=42) == ranges
    assert verify.sample_ranges(SIZE, 16, seed=43) != ranges
    assert verify.sample_ranges(MiB // 2, 16, seed=1) == [(0, MiB // 2)]  # tiny disk: all of it


def test_zeros(tmp_path: Path) -> None:
    path = image(tmp_path, bytes(SIZE))
    ranges = verify.sample_ranges(SIZE, 32, seed=1)
    assert verify.check_zeros(path, ranges, 1).passed is True
    with open(path, "r+b") as f:
        f.seek(SIZE - 10)
        f.write(b"old data!")  # in the last MiB, which is always read
    result = verify.check_zeros(path, ranges, 1)
    assert result.passed is False and result.failures[0].startswith(f"offset {SIZE - MiB}")


def test_pattern(tmp_path: Path) -> None:
    stream = verify.keystream(b"k" * 32)
    path = image(tmp_path, stream(0, SIZE))
    ranges = verify.sample_ranges(SIZE, 32, seed=2)
    assert verify.check_pattern(path, ranges, 2, stream).passed is True
    other = verify.keystream(b"x" * 32)
    assert verify.check_pattern(path, ranges, 2, other).passed is False


def test_changed_catches_an_erase_that_did_nothing(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    path = image(tmp_path, data)
    ranges = verify.sample_ranges(SIZE, 32, seed=3)
    before = verify.read_ranges(path, ranges)
    result = verify.check_changed(path, ranges, 3, before)
    assert result.passed is False and "the erase did not erase them" in result.summary
    Path(path).write_bytes(bytes(SIZE))
    result = verify.check_changed(path, ranges, 3, before)
    assert result.passed is True and "reads as zeros" in result.summary


def test_changed_is_inconclusive_on_a_blank_disk(tmp_path: Path) -> None:
    """A new, all-zero disk proves nothing about the erase: never call that a pass."""
    path = image(tmp_path, bytes(SIZE))
    ranges = verify.sample_ranges(SIZE, 8, seed=4)
    result = verify.check_changed(path, ranges, 4, verify.read_ranges(path, ranges))
    assert result.passed is None and result.summary.startswith("inconclusive")


def test_report_text_and_status(tmp_path: Path) -> None:
    disk = {"name": "sdb", "serial": "S3Z9NB0K123456", "size": 500107862016, "label": "x"}
    report = WipeReport(disk=disk, method="zero", secure=False, started="2026-11-22T02:00:00+00:00")
    report.status = NOT_VERIFIED
    report.verification = {"method": "zeros", "passed": False, "summary": "3 of 258 blocks"}
    assert not report.ok and "FAILED (zeros): 3 of 258 blocks" in report.to_text()
    report.status = OK
    first, _ = report.write(tmp_path)
    second, _ = report.write(tmp_path)  # same second: both kept
    assert first.name == "wipe-S3Z9NB0K123456-zero-20261122T020000.json"
    assert second.name == "wipe-S3Z9NB0K123456-zero-20261122T020000-2.json"
