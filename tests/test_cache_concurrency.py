"""Jobs that open the same format-2 repository at once share one index cache file. Found by the
customize e2e on the live system: the home screen and the unattended job opened the stick's
repository together, both inserted the same pack into a fresh cache, the collision was taken
for damage, the cache was set aside under the other job, and both crashed ("attempt to write a
readonly database")."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from bootmedia.repo.idx import parse_idx
from bootmedia.repo.store import Repository
from tests.minirepo import make_repo_v2


def test_many_jobs_opening_one_repository_at_once_share_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("BOOTMEDIA_CACHE_DIR", str(cache))
    root, _ = make_repo_v2(tmp_path / "repo")
    errors: list[BaseException] = []

    def job(gate: threading.Barrier) -> None:
        try:
            gate.wait()
            with Repository.open(root) as repo:
                m = repo.image("img")
                for area in m.areas:
                    for e in repo.extents(m, area.name):
                        assert e.is_zero or repo.locate(e.hash) is not None
        except BaseException as exc:
            errors.append(exc)

    for _ in range(15):
        for f in cache.glob("*"):
            f.unlink()  # a fresh cache each round: every job has packs to load
        gate = threading.Barrier(8)
        threads = [threading.Thread(target=job, args=(gate,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
    assert not list(cache.glob("*.damaged-*")), "contention was taken for damage"


def test_a_pack_id_taken_again_after_its_pack_went_names_the_new_pack(tmp_path: Path) -> None:
    """The cache names packs from a dict of packs.id -> name; SQLite gives a forgotten pack's
    id to the next pack, and a lookup must then name that pack, not the one that went."""
    roots = [make_repo_v2(tmp_path / n, n)[0] for n in ("a", "b", "c")]
    packs = {n: sorted((tmp_path / n / "packs").glob("pack-*")) for n in ("b", "c")}

    def hashes(root: Path) -> set[bytes]:
        idx = next((root / "packs").glob("*.idx"))
        return {e.hash for e in parse_idx(idx.read_bytes(), idx.name)[1]}

    held = {r.name: hashes(r) for r in roots}  # before any pack is copied

    def first_hash(n: str) -> tuple[str, bytes]:
        """A block only n's pack holds (the minirepo's random ones)."""
        idx = next(p for p in packs[n] if p.suffix == ".idx")
        others = set().union(*(h for k, h in held.items() if k != n))
        return idx.with_suffix(".bmp").name, min(held[n] - others)

    for p in packs["b"]:
        shutil.copy(p, roots[0] / "packs")
    with Repository.open(roots[0]) as r:
        b_name, b_hash = first_hash("b")
        assert r.cache.locate_many([b_hash])[b_hash][0] == b_name
        b_id = r.cache._db.execute("SELECT id FROM packs WHERE name=?", (b_name,)).fetchone()
        for p in packs["b"]:
            (roots[0] / "packs" / p.name).unlink()
        for p in packs["c"]:
            shutil.copy(p, roots[0] / "packs")
        r.cache.sync()
        c_name, c_hash = first_hash("c")
        c_id = r.cache._db.execute("SELECT id FROM packs WHERE name=?", (c_name,)).fetchone()
        assert c_id == b_id, "the scenario needs the id taken again"
        assert r.cache.locate_many([c_hash])[c_hash][0] == c_name
        assert r.cache.locate_many([b_hash]) == {}
