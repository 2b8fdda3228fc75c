"""Single-instance storage: what a repository stores once, and what delete gives back."""

from __future__ import annotations

import json
import random
from pathlib import Path

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.repo.gc import collect
from bootmedia.repo.store import Repository
from bootmedia.verify import verify_repo
from tests import sample
from tests.conftest import root_only

MiB = 1 << 20
pytestmark = root_only


def _stored(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "packs").glob("pack-*.bmp"))


def test_recapture_adds_almost_nothing_and_small_changes_add_little(
    loopdev, tmp_path: Path
) -> None:
    src = loopdev(256 * MiB)
    layout = sample.build(src, "gpt")
    repo = tmp_path / "repo"
    first = capture_image(plan_capture(src, repo, "monday"))
    second = capture_image(plan_capture(src, repo, "tuesday"))
    assert second.new_bytes == 0
    assert second.stored_bytes == first.stored_bytes
    with Repository.open(repo) as r:  # every block found: the same statistics, no block new
        monday, tuesday = r.image("monday").stats, r.image("tuesday").stats
    assert tuesday.chunks == monday.chunks > 0 and tuesday.new_chunks == 0
    assert monday.new_chunks == monday.chunks and monday.new_bytes == first.new_bytes
    listing = json.loads(sample.bootmedia("images", str(repo), "--json").stdout)
    assert [i["name"] for i in listing["images"]] == ["monday", "tuesday"]
    # the second copy cost nothing (pack and record headers aside)
    assert abs(listing["dedup_saved_bytes"] - first.stored_bytes) < 0.01 * first.stored_bytes

    # change ~1% of the files on the ext4 partition, in place
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lab.run(["mount", f"{src}p2", str(mnt)])
    try:
        files = sorted(p for p in mnt.rglob("*") if p.is_file())
        rng = random.Random(9)
        for path in rng.sample(files, max(1, len(files) // 100)):
            data = bytearray(path.read_bytes())
            data[len(data) // 2 : len(data) // 2 + 100] = rng.randbytes(100)
            path.write_bytes(bytes(data))
    finally:
        lab.run(["umount", str(mnt)])
    before = _stored(repo)
    third = capture_image(plan_capture(src, repo, "wednesday"))
    added = _stored(repo) - before
    assert 0 < third.new_bytes <= added  # the rest is pack and record headers
    assert added < 0.05 * first.stored_bytes, f"changing 1% of files added {added} bytes"
    assert abs(third.stored_bytes - first.stored_bytes) < 0.05 * first.stored_bytes
    after = sample.sums(src, layout)  # the source is still readable and sane
    assert after
    assert verify_repo(repo).ok
    # the changed blocks were stored: the recaptured image restores byte for byte
    dst = loopdev(256 * MiB)
    assert apply_image(plan_apply(repo, "wednesday", dst)).verified
    assert sample.sums(dst, layout) == after


def test_delete_collects_only_unused_chunks(loopdev, tmp_path: Path) -> None:
    a = loopdev(128 * MiB)
    lab.populate_sample_disk(a, layout=(lab.SamplePart(1, "ext4", 0),), seed=1)
    b = loopdev(128 * MiB)
    lab.populate_sample_disk(b, layout=(lab.SamplePart(1, "ext4", 0),), seed=2)
    repo = tmp_path / "repo"
    capture_image(plan_capture(a, repo, "a"))
    size_a = _stored(repo)
    capture_image(plan_capture(b, repo, "b"))
    proc = sample.bootmedia("delete", str(repo), "a")
    assert proc.returncode == 0, proc.stderr
    assert "reclaimed" in proc.stdout and "note:" not in proc.stdout
    assert _stored(repo) < size_a * 1.2, "b's chunks stay, a's go"
    with Repository.open(repo) as r:
        assert [m.name for m in r.images()] == ["b"]
    assert verify_repo(repo).ok
    with Repository.open(repo, write=True) as r:
        assert collect(r).bytes_freed == 0  # nothing left to collect


def test_index_rebuilds_from_packs(loopdev, tmp_path: Path) -> None:
    src = loopdev(128 * MiB)
    lab.populate_sample_disk(src, layout=(lab.SamplePart(1, "ext4", 0),))
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    with Repository.open(repo) as r:
        cache = r.cache.path
    assert cache is not None and not (repo / "index.sqlite").exists()
    cache.unlink()
    assert verify_repo(repo).ok  # a reader rebuilds a missing cache from the .idx files
    for idx in (repo / "packs").glob("*.idx"):
        idx.unlink()
    proc = sample.bootmedia("repair", str(repo))  # .idx files rebuilt from the packs
    assert proc.returncode == 0 and "index rebuilt" in proc.stdout, proc.stdout + proc.stderr
    assert list((repo / "packs").glob("*.idx"))
    assert verify_repo(repo).ok
