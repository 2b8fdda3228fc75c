"""Format 1's repair and collection after one damaged record (issue 8, item 10): round 1's
scan stopped at the first bad record, so one bad chunk cost every chunk after it, repair said
"index rebuilt" with exit 0, and `repair --gc` could drop a pack whose later records it had
never read. Format 2 has its own test in test_repo_v2.py."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from bootmedia.cli import main
from bootmedia.repo.packs import Damage, scan_pack, scan_pack_resync
from bootmedia.repo.store import Repository
from tests.minirepo import make_repo

MiB = 1 << 20


def _damage_third_record(repo: Path) -> tuple[Path, int]:
    (pack,) = sorted((repo / "packs").glob("pack-*.bmp"))
    records = list(scan_pack(pack))
    assert len(records) == 6
    data = bytearray(pack.read_bytes())
    third = records[2]
    data[third.offset + third.stored_len // 2] ^= 0xFF  # inside its zstd frame
    pack.write_bytes(bytes(data))
    return pack, third.offset


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parent.name == "packs" and p.suffix == ".bmp"
    }


def test_the_scan_resynchronises_after_a_damaged_record(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path / "repo")
    pack, at = _damage_third_record(repo)
    assert len(list(scan_pack(pack))) == 2  # round 1's scan: stops at the damage
    out = list(scan_pack_resync(pack))
    damage = [d for d in out if isinstance(d, Damage)]
    assert len(out) - len(damage) == 5
    assert len(damage) == 1 and damage[0].offset < at < damage[0].offset + damage[0].length


def test_repair_names_the_damage_and_the_image_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = make_repo(tmp_path / "repo")
    _damage_third_record(repo)
    code = main(["repair", str(repo)])
    out = capsys.readouterr().out
    assert code == 4
    assert "index rebuilt: 5 blocks in 1 packs" in out
    assert "DAMAGED pack-" in out
    assert "image img loses data: 1 blocks" in out
    with Repository.open(repo) as r:
        m = r.image("img")
        found = sum(r.has(e.hash) for a in m.areas for e in r.extents(m, a.name) if not e.is_zero)
    assert found == 5  # every readable chunk is indexed again, not only the first two


def test_gc_never_drops_a_pack_whose_records_it_could_not_all_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = make_repo(tmp_path / "repo")
    _damage_third_record(repo)
    before = _tree(repo)
    # An open of the damaged repository indexes only what precedes the damage; then the only
    # image is deleted: nothing listed needs the pack, but its later records were never read.
    assert main(["delete", str(repo), "img"]) == 0
    assert _tree(repo) == before
    assert main(["repair", "--gc", str(repo)]) == 4  # damage found; the pack kept whole
    assert _tree(repo) == before
    assert list((repo / "packs").glob("*.damaged"))


def test_a_full_disk_under_a_format_1_repository_is_collected(loopdev, tmp_path: Path) -> None:
    """Item 11 for format 1, whose index.sqlite lives on the repository's disk: after a capture
    fills that disk, `repair --gc` must still free the partial pack (SQLite cannot even start
    a transaction on a full disk)."""
    from bootmedia import lab
    from tests import sample

    src = loopdev(256 * MiB)
    sample.build(src, "gpt")
    small = loopdev(24 * MiB)
    lab.run(["mkfs.ext4", "-q", "-m", "0", small])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lab.run(["mount", small, str(mnt)])
    try:
        repo = mnt / "repo"
        Repository.init(repo, version=1).close()
        proc = sample.bootmedia("capture", src, str(repo), "--name", "img", "-q")
        assert proc.returncode != 0
        assert "destination full" in proc.stderr and "repair --gc" in proc.stderr, proc.stderr
        assert shutil.disk_usage(mnt).free < 1 * MiB
        proc = sample.bootmedia("repair", "--gc", str(repo))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not list((repo / "packs").glob("pack-*")), "the partial pack is gone"
        assert shutil.disk_usage(mnt).free > 16 * MiB
        with Repository.open(repo) as r:
            assert r.version == 1 and r.chunk_count() == 0
    finally:
        lab.run(["umount", str(mnt)])
