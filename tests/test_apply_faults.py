"""Issue 8, apply side: each fault ends in a refusal that names the problem, and the target (or
the repository) is byte-identical afterwards.

  2  a target that holds, or lies inside, the repository (symlink, bind mount, loop backing file)
  3  partition and image-file targets need --confirm, with the same rule as a whole disk
  4  extents and areas are bounds-checked against their area, the table and the target
  5  an area mode apply does not know is refused by name
  6  every map (the head's too) and the partition table are checked before the first write
  7  --check-first; and after a failed apply, the message says what the target is left as
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.errors import ImageError, Refused, UsageError
from bootmedia.lab import SamplePart
from bootmedia.repo.manifest import Manifest, dump_manifest, load_manifest
from bootmedia.repo.maps import ZERO_HASH, MapWriter
from bootmedia.repo.store import Repository

MiB = 1 << 20
LAYOUT = (SamplePart(1, "ext4", 24), SamplePart(2, "ext4", 0))
pytestmark = pytest.mark.real_tools  # sfdisk, mkfs.ext4 and blkid on image files


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest() + f":{os.path.getsize(path)}"


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.suffix not in (".lock", ".sqlite-wal", ".sqlite-shm")
        and "locks" not in p.parts
    }


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("apply-faults")
    source = lab.make_file(root / "source.img", 64 * MiB)
    lab.populate_sample_file(source, layout=LAYOUT, fill=0.2)
    capture_image(plan_capture(str(source), root / "repo", "img"))
    return source, root / "repo"


@pytest.fixture
def repo(golden: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the repository, for tests that damage it."""
    copy = tmp_path / "repo"
    subprocess.run(["cp", "-a", "--sparse=always", str(golden[1]), str(copy)], check=True)
    return copy


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    """An image file holding old data that must survive every refusal."""
    path = tmp_path / "target.img"
    with open(path, "wb") as f:
        f.write(os.urandom(2 * MiB))
        f.truncate(64 * MiB)
        f.seek(63 * MiB)
        f.write(os.urandom(MiB))
    yield path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bootmedia", "--log-dir", "/tmp/bm-test-log", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def rewrite(repo: Path, change: object) -> None:
    """Replace the manifest of 'img' with change(manifest): a hostile but well-formed one."""
    path = repo / "images" / "img" / "manifest.json"
    m = load_manifest(path)
    path.write_bytes(dump_manifest(change(m)))  # type: ignore[operator]


def with_area(m: Manifest, name: str, **fields: Any) -> Manifest:
    areas = tuple(dataclasses.replace(a, **fields) if a.name == name else a for a in m.areas)
    return dataclasses.replace(m, areas=areas)


# ---- 2: never onto the repository itself -----------------------------------------------------


def pack_of(repo: Path) -> Path:
    return sorted((repo / "packs").glob("pack-*"))[0]


def test_a_pack_as_partition_target_is_refused(repo: Path) -> None:
    before = tree_digest(repo)
    pack = pack_of(repo)
    with pytest.raises(Refused, match="lies inside the image repository"):
        plan_apply(repo, "img", str(pack), partition=1)
    proc = cli("apply", str(repo), "img", "--partition", "1", "--to", str(pack), "--confirm", "x")
    assert proc.returncode == Refused.exit_code and "inside the image repository" in proc.stderr
    assert "verified" not in proc.stdout
    assert tree_digest(repo) == before


def test_a_symlink_to_a_pack_is_refused(repo: Path, tmp_path: Path) -> None:
    before = tree_digest(repo)
    link = tmp_path / "innocent.img"
    link.symlink_to(pack_of(repo))
    for partition in (1, None):
        with pytest.raises(Refused, match="inside the image repository"):
            plan_apply(repo, "img", str(link), partition=partition)
    assert tree_digest(repo) == before


def test_a_hard_link_to_a_pack_is_refused(repo: Path, tmp_path: Path) -> None:
    before = tree_digest(repo)
    link = tmp_path / "other-name.img"
    os.link(pack_of(repo), link)
    with pytest.raises(Refused, match="inside the image repository"):
        plan_apply(repo, "img", str(link), partition=2)
    assert tree_digest(repo) == before


@pytest.mark.root
def test_a_pack_through_a_bind_mount_is_refused(repo: Path, tmp_path: Path) -> None:
    before = tree_digest(repo)
    bind = tmp_path / "bind"
    bind.mkdir()
    subprocess.run(["mount", "--bind", str(repo), str(bind)], check=True)
    try:
        via = bind / "packs" / pack_of(repo).name
        assert os.path.realpath(via) != str(pack_of(repo))  # realpath alone cannot see it
        with pytest.raises(Refused, match="inside the image repository"):
            plan_apply(repo, "img", str(via), partition=1)
        # and the other way round: the repository named through the bind mount
        with pytest.raises(Refused, match="inside the image repository"):
            plan_apply(bind, "img", str(pack_of(repo)), partition=1)
    finally:
        subprocess.run(["umount", str(bind)], check=True)
    assert tree_digest(repo) == before


def test_a_loop_device_backed_by_a_pack_is_refused(repo: Path, loopdev) -> None:
    before = tree_digest(repo)
    pack = pack_of(repo)
    dev = loopdev(pack)
    with pytest.raises(Refused, match=f"inside the image repository .*through {pack}"):
        plan_apply(repo, "img", dev)
    assert tree_digest(repo) == before


def test_the_file_behind_the_repository_is_refused(golden, loopdev, tmp_path: Path) -> None:
    """The repository lives on a filesystem in a file (a loop device): that file, the loop
    device and its partition all hold the repository."""
    fsfile = lab.make_file(tmp_path / "fs.img", 96 * MiB)
    subprocess.run(["sfdisk", "-q", str(fsfile)], input=b"label: gpt\nsize=80MiB\n", check=True)
    dev = loopdev(fsfile)
    lab.rescan(dev)
    subprocess.run(["mkfs.ext4", "-q", f"{dev}p1"], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", f"{dev}p1", str(mnt)], check=True)
    try:
        repo = mnt / "repo"
        subprocess.run(["cp", "-a", str(golden[1]), str(repo)], check=True)
        # The mounted filesystem changes its own file (journal, times): compare the repository.
        before = tree_digest(repo)
        with pytest.raises(Refused, match="holds the image repository"):
            plan_apply(repo, "img", str(fsfile))
        with pytest.raises(Refused, match="holds the image repository"):
            plan_apply(repo, "img", str(fsfile), partition=1)
        with pytest.raises(Refused, match="holds the image repository"):
            plan_apply(repo, "img", dev)
        with pytest.raises(Refused, match="holds the image repository"):
            plan_apply(repo, "img", f"{dev}p1", partition=1)
        assert tree_digest(repo) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---- 3: --confirm for partitions and image files ---------------------------------------------


def test_an_image_file_target_needs_confirm(golden, target: Path) -> None:
    _, repo = golden
    before = digest(target)
    for extra in ([], ["--confirm", "wrong.img"], ["--confirm", ""]):
        proc = cli("apply", str(repo), "img", str(target), *extra)
        assert proc.returncode == UsageError.exit_code, proc.stderr
        assert "--confirm" in proc.stderr and "target.img" in proc.stderr
    assert digest(target) == before
    plan = plan_apply(repo, "img", str(target))
    assert plan.command()[-2:] == ["--confirm", "target.img"]


def test_a_partition_target_needs_confirm(golden, loopdev) -> None:
    _, repo = golden
    dev = loopdev(64 * MiB)
    subprocess.run(["sfdisk", "-q", dev], input=b"label: gpt\nsize=40MiB\n", check=True)
    lab.rescan(dev)
    part = f"{dev}p1"
    with open(part, "r+b") as f:
        f.write(os.urandom(MiB))
    before = digest(Path(dev))
    for extra in ([], ["--confirm", "nope"]):
        proc = cli("apply", str(repo), "img", "--partition", "2", "--to", part, *extra)
        assert proc.returncode == UsageError.exit_code, proc.stderr
        assert "--confirm" in proc.stderr and Path(dev).name in proc.stderr
    assert digest(Path(dev)) == before
    plan = plan_apply(repo, "img", part, partition=2)
    assert plan.command()[-2:] == ["--confirm", Path(dev).name]  # a loop disk has no serial
    proc = cli(*plan.command()[1:])
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout


# ---- 4, 5, 6: checked before the first write -------------------------------------------------


def refused_untouched(repo: Path, target: Path, match: str, **kw: object) -> None:
    before = digest(target)
    with pytest.raises(ImageError, match=match):
        apply_image(plan_apply(repo, "img", str(target), **kw))  # type: ignore[arg-type]
    assert digest(target) == before, "the target was written before the fault was found"


def test_an_area_beyond_its_disk_is_refused(repo: Path, target: Path) -> None:
    rewrite(repo, lambda m: with_area(m, "p2", offset=1 << 40))
    refused_untouched(repo, target, "beyond its own disk")


def test_an_area_that_is_not_its_partition_is_refused(repo: Path, target: Path) -> None:
    rewrite(repo, lambda m: with_area(m, "p1", offset=4 * MiB))
    refused_untouched(repo, target, "is not partition 1")


def test_a_huge_zero_extent_is_refused(repo: Path, target: Path) -> None:
    m = load_manifest(repo / "images" / "img" / "manifest.json")
    area = m.area("p1")
    assert area is not None
    w = MapWriter(repo / "images" / "img" / "evil.map")
    w.add(0, (4 << 30) - 1, ZERO_HASH)  # 4 GiB of zeros in a 24 MiB partition
    map_hash = w.close()
    rewrite(repo, lambda m: with_area(m, "p1", map="evil.map", map_hash=map_hash))
    refused_untouched(repo, target, "extent at 0[+]4294967295 lies outside its area")


def test_an_unknown_area_mode_is_refused_by_name(repo: Path, target: Path) -> None:
    rewrite(repo, lambda m: with_area(m, "p2", mode="zstd-frames"))
    before = digest(target)
    proc = cli("apply", str(repo), "img", str(target), "--confirm", "target.img")
    assert proc.returncode == ImageError.exit_code
    assert "'zstd-frames'" in proc.stderr and "verified" not in proc.stdout
    assert digest(target) == before


def test_the_apply_check_names_an_unknown_mode_too(golden, target: Path) -> None:
    """The loader refuses such a manifest; apply's own check does too, for a manifest that
    reached it another way (a newer reader's plan)."""
    plan = plan_apply(golden[1], "img", str(target))
    bad = dataclasses.replace(plan, image=with_area(plan.image, "p1", mode="future"))
    before = digest(target)
    with pytest.raises(ImageError, match="mode 'future'"):
        apply_image(bad)
    assert digest(target) == before


def test_a_damaged_head_map_is_found_before_writing(repo: Path, target: Path) -> None:
    head = repo / "images" / "img" / "head.map"
    data = bytearray(head.read_bytes())
    data[-5] ^= 0xFF
    head.write_bytes(bytes(data))
    refused_untouched(repo, target, "head")


def test_overlapping_partitions_are_refused(repo: Path, target: Path) -> None:
    def overlap(m: Manifest) -> Manifest:
        assert m.table is not None
        p1, p2 = m.table.partitions
        moved = dataclasses.replace(p2, start=p1.start + p1.size - 8)
        table = dataclasses.replace(m.table, partitions=(p1, moved))
        area = m.area("p2")
        assert area is not None
        ss = m.table.sector_size
        return with_area(dataclasses.replace(m, table=table), "p2", offset=moved.start * ss)

    rewrite(repo, overlap)
    refused_untouched(repo, target, "partitions 1 and 2 overlap")


def test_a_partition_past_the_target_is_refused(golden, tmp_path: Path) -> None:
    plan = plan_apply(golden[1], "img", str(lab.make_file(tmp_path / "t.img", 64 * MiB)))
    assert plan.table is not None
    last = plan.table.partitions[-1]
    table = dataclasses.replace(
        plan.table,
        partitions=(
            *plan.table.partitions[:-1],
            dataclasses.replace(last, size=last.size + 4096),
        ),
    )
    before = digest(Path(plan.target))
    with pytest.raises(ImageError, match="does not fit the target"):
        apply_image(dataclasses.replace(plan, table=table))
    assert digest(Path(plan.target)) == before


# ---- 7: --check-first, and what a failure leaves behind --------------------------------------


def damage_a_chunk(repo: Path) -> None:
    with Repository.open(repo) as r:
        m = r.image("img")
        locs = [r.locate(e.hash) for e in r.extents(m, "p2") if not e.is_zero]
    loc = max((x for x in locs if x is not None), key=lambda x: x.stored_len)
    pack, offset, length = loc.pack, loc.offset, loc.stored_len
    path = repo / "packs" / pack
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x10]))


def test_check_first_finds_a_damaged_chunk_before_touching_the_target(
    repo: Path, target: Path
) -> None:
    damage_a_chunk(repo)
    plan = plan_apply(repo, "img", str(target), check_first=True)
    assert any(line.startswith("Check first: every chunk") for line in plan.summary())
    assert "--check-first" in plan.command() and plan.to_dict()["check_first"] is True
    before = digest(target)
    with pytest.raises(ImageError, match="damaged") as err:
        apply_image(plan)
    assert "old contents are gone" not in str(err.value)
    assert digest(target) == before
    proc = cli(*plan.command()[1:])
    assert proc.returncode == ImageError.exit_code and "damaged" in proc.stderr
    assert digest(target) == before


def test_without_check_first_the_failure_says_the_target_is_gone(repo: Path, target: Path) -> None:
    damage_a_chunk(repo)
    plan = plan_apply(repo, "img", str(target))
    assert any("--check-first" in line for line in plan.summary())
    with pytest.raises(ImageError) as err:
        apply_image(plan)
    message = str(err.value)
    assert "damaged" in message
    assert "old contents are gone" in message and "marked incomplete" in message
    with open(target, "rb") as f:
        assert f.read(len(INCOMPLETE_MARKER)) == INCOMPLETE_MARKER
