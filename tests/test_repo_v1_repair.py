"""Format 1's repair and collection after one damaged record (issue 8, item 10): round 1's
scan stopped at the first bad record, so one bad chunk cost every chunk after it, repair said
"index rebuilt" with exit 0, and `repair --gc` could drop a pack whose later records it had
never read. Format 2 has its own test in test_repo_v2.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bootmedia.cli import main
from bootmedia.repo.packs import Damage, scan_pack, scan_pack_resync
from bootmedia.repo.store import Repository
from tests.minirepo import make_repo


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
