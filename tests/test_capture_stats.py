"""An image's statistics (distinct blocks, their share of the stored bytes) against a count
made from its maps and the index, for a fresh capture, a recapture, blocks repeated inside the
image, packs sealed mid-capture, and the set of known blocks moved to scratch storage."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.capture import capture_image, job, plan_capture
from bootmedia.repo.manifest import USED
from bootmedia.repo.maps import ZERO_HASH
from bootmedia.repo.store import Repository
from tests import sample
from tests.conftest import root_only

MiB = 1 << 20
pytestmark = root_only


def _counted(repo: Path, name: str) -> tuple[int, int]:
    """(distinct non-zero blocks in the image's maps, the sum of their shares)."""
    with Repository.open(repo) as r:
        m = r.image(name)
        distinct = {
            e.hash for a in m.areas if a.map for e in r.extents(m, a.name) if e.hash != ZERO_HASH
        }
        shares = 0
        for d in distinct:
            loc = r.locate(d)
            assert loc is not None, "a block of the image is not in the repository"
            shares += loc.share
    return len(distinct), shares


def _check(repo: Path, name: str) -> int:
    with Repository.open(repo) as r:
        stats = r.image(name).stats
    chunks, shares = _counted(repo, name)
    assert stats.chunks == chunks
    # a block the repository had before counts at least 1 byte (its share can round to 0)
    assert shares <= stats.stored_bytes <= shares + chunks
    return chunks


def _repeat_files(dev: str, mnt: Path, copies: int) -> None:
    """Copies of the same files inside the image: blocks that come up more than once."""
    lab.run(["mount", f"{dev}p2", str(mnt)])
    try:
        files = sorted(p for p in mnt.rglob("*") if p.is_file() and p.stat().st_size > 64 << 10)
        assert files, "the sample disk has no file to copy"
        for i in range(copies):
            for p in files[:20]:
                shutil.copyfile(p, p.with_name(f"{p.name}.copy{i}"))
    finally:
        lab.run(["umount", str(mnt)])


@pytest.mark.parametrize("limit", [job._Tally.LIMIT, 50], ids=["in-memory", "spilled"])
def test_statistics_count_each_distinct_block_once(
    loopdev, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setattr(job._Tally, "LIMIT", limit)
    src = loopdev(256 * MiB)
    sample.build(src, "gpt")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _repeat_files(src, mnt, copies=3)
    repo = tmp_path / "repo"
    # small packs: several are sealed while the capture runs, and their blocks come up again
    Repository.init(repo, pack_size=16 * MiB).close()
    first = capture_image(plan_capture(src, repo, "first"))
    assert len(list((repo / "packs").glob("*.idx"))) >= 2
    chunks = _check(repo, "first")
    with Repository.open(repo) as r:
        assert r.image("first").stats.new_chunks == chunks  # each stored once
    # a recapture: every block was there before, plus a few new ones
    _repeat_files(src, mnt, copies=1)
    capture_image(plan_capture(src, repo, "second"))
    _check(repo, "second")
    with Repository.open(repo) as r:
        second = r.image("second").stats
    assert 0 < second.new_chunks < second.chunks
    assert first.stored_bytes > 0
    # spilling must have happened in the spilled run (and not in the other)
    assert (limit < 1000) == (second.chunks > limit)


def test_stale_bytes_beside_used_data_never_reach_a_block(loopdev, tmp_path: Path) -> None:
    """Two disks with the same filesystems, one with random bytes in everything the
    filesystems do not use (in the used blocks too, beside the used pieces: FAT's small
    clusters, ext4's and NTFS's 4 KiB ones): the same blocks, the second capture stores none."""
    src = loopdev(256 * MiB)
    sample.build(src, "gpt")
    dirty = loopdev(256 * MiB)
    with open(src, "rb") as clean_f, open(dirty, "r+b") as dirty_f:
        while chunk := clean_f.read(4 * MiB):
            dirty_f.write(chunk)
    lab.rescan(dirty)
    rng = random.Random(5)
    plan = plan_capture(dirty, tmp_path / "unused", "probe")
    fd = os.open(dirty, os.O_RDWR)
    scribbled = 0
    try:
        for a in plan.areas:
            if a.area.mode != USED or a.ranges is None:
                continue
            pos = 0
            for i in range(0, len(a.ranges), 2):
                s, n = a.ranges[i], a.ranges[i + 1]
                if s > pos:
                    os.pwrite(fd, rng.randbytes(s - pos), a.area.offset + pos)
                    scribbled += s - pos
                pos = s + n
            if a.area.size > pos:
                os.pwrite(fd, rng.randbytes(a.area.size - pos), a.area.offset + pos)
                scribbled += a.area.size - pos
        os.fsync(fd)
    finally:
        os.close(fd)
    assert scribbled > 64 * MiB
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "clean"))
    capture_image(plan_capture(dirty, repo, "dirty"))
    with Repository.open(repo) as r:
        clean, stale = r.image("clean"), r.image("dirty")
        assert stale.stats.new_chunks == 0, "stale bytes made new blocks"
        for area in clean.areas:
            if area.map:
                assert list(r.extents(clean, area.name)) == list(r.extents(stale, area.name))
