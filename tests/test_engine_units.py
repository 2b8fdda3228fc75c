"""The format and the copy loop, without root or devices."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from bootmedia.errors import ImageError, UsageError
from bootmedia.pipeline import OrderedPool
from bootmedia.progress import Progress, Reporter
from bootmedia.repo.manifest import (
    RAW,
    Area,
    Manifest,
    SourceDisk,
    Table,
    TablePartition,
    dump_manifest,
    load_manifest,
)
from bootmedia.repo.maps import ZERO_HASH, MapWriter, read_map
from bootmedia.repo.packs import PackWriter, chunk_hash, scan_pack
from bootmedia.repo.store import Repository
from bootmedia.table import render_sfdisk, translate


def _manifest(**kw: object) -> Manifest:
    table = Table("gpt", "A-B", 512, 34, 1000, (TablePartition(1, 2048, 4096, "L", "U1", "root"),))
    base = dict(
        name="img",
        description="d",
        created="2026-01-01T00:00:00+00:00",
        tool="t",
        chunk_size=1 << 20,
        source=SourceDisk("/dev/x", "M", "S", 1 << 30, 512, 4096),
        table=table,
        areas=(Area("p1", 2048 * 512, 4096 * 512, RAW, number=1),),
    )
    base.update(kw)
    return Manifest(**base)  # type: ignore[arg-type]


def test_manifest_round_trip_and_corruption(tmp_path: Path) -> None:
    m = _manifest()
    path = tmp_path / "img" / "manifest.json"
    path.parent.mkdir()
    path.write_bytes(dump_manifest(m))
    assert load_manifest(path) == m
    data = json.loads(path.read_text())
    data["manifest"]["description"] = "tampered"
    path.write_text(json.dumps(data))
    with pytest.raises(ImageError, match="checksum mismatch"):
        load_manifest(path)
    data["version"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(ImageError, match="unknown format version 7"):
        load_manifest(path)
    path.write_text("{trunc")
    with pytest.raises(ImageError, match="not valid JSON"):
        load_manifest(path)


def test_required_size_includes_gpt_backup() -> None:
    assert _manifest().required_size == (2048 + 4096) * 512 + 33 * 512


def test_maps_stream_and_detect_damage(tmp_path: Path) -> None:
    w = MapWriter(tmp_path / "p1.map")
    for i in range(10000):
        w.add(i << 20, 1 << 20, ZERO_HASH if i % 3 == 0 else chunk_hash(str(i).encode()))
    digest = w.close()
    extents = list(read_map(tmp_path / "p1.map", digest))
    assert len(extents) == 10000 and extents[3].is_zero and not extents[4].is_zero
    with open(tmp_path / "p1.map", "r+b") as f:
        f.seek(5000)
        f.write(b"\xff")
    with pytest.raises(ImageError, match="damaged"):
        list(read_map(tmp_path / "p1.map", digest))


def test_pack_scan_stops_at_a_torn_record(tmp_path: Path) -> None:
    import zstandard

    pack = PackWriter(tmp_path, 1 << 30)
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    blobs = [bytes([i]) * 5000 + b"x" * i for i in range(5)]
    for b in blobs:
        pack.append(chunk_hash(b), len(b), cctx.compress(b), 1)
    pack.sync()
    pack.close()
    assert [r.hash for r in scan_pack(pack.path)] == [chunk_hash(b) for b in blobs]
    size = pack.path.stat().st_size
    with open(pack.path, "r+b") as f:
        f.truncate(size - 3)  # a crash in the middle of the last record
    assert len(list(scan_pack(pack.path))) == 4


def test_repository_rules(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a bootmedia repository"):
        Repository.open(tmp_path)
    with pytest.raises(UsageError, match="pack size"):
        Repository.init(tmp_path / "r", pack_size=5 << 30)  # FAT32 cannot hold it
    repo = Repository.init(tmp_path / "r")
    with pytest.raises(UsageError, match="bad image name"):
        repo.new_image_dir("../evil")
    from bootmedia.errors import BootmediaError

    with pytest.raises(BootmediaError, match="busy"):
        Repository.open(tmp_path / "r", write=True)  # one writer at a time
    repo.close()
    (tmp_path / "r" / "bootmedia-repo.json").write_text(
        '{"format": "bootmedia-repo", "version": 3}'
    )
    with pytest.raises(ImageError, match="unknown repository format version 3"):
        Repository.open(tmp_path / "r")


def test_chunks_are_stored_once(tmp_path: Path) -> None:
    import zstandard

    repo = Repository.init(tmp_path / "r", pack_size=16 << 20, version=1)
    w = repo.chunk_writer()
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    data = b"abc" * 1000
    assert w.put(chunk_hash(data), len(data), cctx.compress(data))
    assert not w.put(chunk_hash(data), len(data), cctx.compress(data))
    w.close()
    assert repo.has(chunk_hash(data)) and w.new_chunks == 1
    repo.close()


def test_ordered_pool_keeps_order_and_raises_errors() -> None:
    def slow_square(x: int) -> int:
        threading.Event().wait(0.001 * (x % 3))
        if x == 57:
            raise ValueError("boom")
        return x * x

    out = [r for _, r in OrderedPool(slow_square, threads=4, depth=5).run(range(50))]
    assert out == [x * x for x in range(50)]
    with pytest.raises(ValueError, match="boom"):
        list(OrderedPool(slow_square, threads=4).run(range(100)))

    def bad_items():
        yield 1
        raise OSError("read error on the source disk")

    with pytest.raises(OSError, match="read error"):
        list(OrderedPool(slow_square).run(bad_items()))


def test_ordered_pool_bounds_the_bytes_in_flight() -> None:
    """With a weight, at most `budget` bytes are submitted and not yet consumed (one item
    alone may weigh more): a hostile image of 64 MiB frames cannot hold depth x 64 MiB."""
    lock = threading.Lock()
    inflight = [0]
    peak = [0]

    def work(w: int) -> int:
        with lock:
            inflight[0] += w
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.001)
        return w

    weights = [3, 5, 40, 2, 7, 9, 1, 30, 4, 6] * 5
    got = []
    for item, w in OrderedPool(work, threads=4, depth=8, weight=lambda w: w, budget=20).run(
        weights
    ):
        assert item == w
        got.append(w)
        with lock:
            inflight[0] -= w
    assert got == weights
    assert 20 <= peak[0] <= 40  # the budget held; a 40 alone went through on its own
    # Without a weight, the depth alone bounds it (8 items in flight at most, plus the one
    # being consumed and the one the reader holds).
    peak[0] = 0
    for _item, w in OrderedPool(work, threads=4, depth=8).run(weights):
        with lock:
            inflight[0] -= w
    assert peak[0] > 40


def test_ordered_pool_stops_on_cancel() -> None:
    cancel = threading.Event()
    seen: list[int] = []
    pool: OrderedPool[int, int] = OrderedPool(lambda x: x, threads=2, depth=2)
    for item, _ in pool.run(range(10**9), cancel):
        seen.append(item)
        if item == 10:
            cancel.set()
    assert 10 <= len(seen) < 100


def test_sfdisk_script_keeps_identity_and_grows() -> None:
    table = Table(
        "gpt",
        "DISK-ID",
        512,
        2048,
        0,
        (
            TablePartition(1, 2048, 1024, "U", "UUID-1", 'EFI "sys"'),
            TablePartition(3, 4096, 8192, "L", "UUID-3", "root", "GUID:63"),
        ),
    )
    script = render_sfdisk(table, grow=3)
    assert "label-id: DISK-ID" in script
    # The name keeps its quotes (issue 8 item 8: they used to be dropped, and apply failed).
    assert 'part1 : start=2048, size=1024, type=U, uuid=UUID-1, name="EFI \\x22sys\\x22"' in script
    assert "part3 : start=4096, type=L" in script and "size=8192" not in script
    assert 'attrs="GUID:63"' in script
    t4k = translate(table, 4096)
    assert [(p.start, p.size) for p in t4k.partitions] == [(256, 128), (512, 1024)]


def test_reporter_eta_and_cancel() -> None:
    events: list[Progress] = []
    r = Reporter(callback=events.append, total=100, interval=0)
    with r.step("Writing"), r.step("p1"):
        r.advance(50)
    assert events[-1].done == 50 and "Writing › p1" in events[-1].steps
    r.cancel.set()
    from bootmedia.errors import Cancelled

    with pytest.raises(Cancelled):
        r.check_cancel()
